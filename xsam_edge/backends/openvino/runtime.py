"""OpenVINO backend: IR on the CPU plugin; the LLM is one stateful IR (ReadValue / Assign caches)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from xsam_edge.backends.openvino.pack import ir_files
from xsam_edge.runtime.protocol import GraphRunner, LLMRunner, check_signature, require, threads
from xsam_edge.spec.bundle import BundleError, GraphEntry, Manifest


class _OvGraph:
    def __init__(self, compiled: Any, entry: GraphEntry) -> None:
        self.request = compiled.create_infer_request()
        self.inputs = [i["name"] for i in entry.inputs]
        # a port has several names (the converter's and ours): the manifest's name counts if the port has it
        want = dict(enumerate(self.inputs))
        names = [
            want[i] if want.get(i) in port.get_names() else port.get_any_name()
            for i, port in enumerate(compiled.inputs)
        ]
        check_signature(entry, names, len(compiled.outputs))
        self.outputs = [o["name"] for o in entry.outputs]

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        result = self.request.infer(dict(zip(self.inputs, inputs, strict=True)))
        # by position: the IR keeps the spec's output order, and a pass-through output can lose its name
        return [np.array(v) for v in result.to_tuple()[: len(self.outputs)]]


class _OvLLM:
    """The stateful IR: K/V caches are ReadValue/Assign state inside one ``InferRequest``."""

    def __init__(self, ov: Any, compiled: Any, entry: GraphEntry, chunk: int) -> None:
        self.ov = ov
        self.graph = _OvGraph(compiled, entry)
        self.chunk = chunk  # the IR takes any T up to the bundle's prefill length
        self.pads_chunks = False  # so a short chunk runs at its own length: no work on padding rows
        self.reset()

    def reset(self) -> None:
        self.graph.request.reset_state()

    def step(self, embeds: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        projected, logits = self.graph.run(embeds, positions)
        return projected, logits

    def snapshot(self) -> Any:
        return [np.array(s.state.data, copy=True) for s in self.graph.request.query_state()]

    def restore(self, state: Any) -> None:
        for variable, value in zip(self.graph.request.query_state(), state, strict=True):
            variable.state = self.ov.Tensor(value.copy())


class OpenVinoBackend:
    """OpenVINO IR on its CPU plugin.

    ``XSAM_EDGE_OV_PRECISION`` sets the inference precision hint (default ``f32``: on bf16-capable CPUs
    OpenVINO would otherwise pick bf16 by itself).
    """

    name = "openvino"

    def __init__(self, device: str = "CPU") -> None:
        self.ov = require("openvino", "openvino", self.name)
        self.core = self.ov.Core()
        if device not in self.core.available_devices:
            raise RuntimeError(
                f"OpenVINO sees no {device!r} device here (it has: {', '.join(self.core.available_devices)})"
            )
        self.device = device
        self.config = {
            "INFERENCE_PRECISION_HINT": os.environ.get("XSAM_EDGE_OV_PRECISION", "f32"),
            "INFERENCE_NUM_THREADS": threads(),
        }

    def _compile(self, manifest: Manifest, entry: GraphEntry) -> Any:
        config = self.config if self.device == "CPU" else {}  # the hints above are CPU plugin properties
        try:
            xml, weights = ir_files(entry.files)
        except ValueError as err:
            raise BundleError(f"graph openvino/{entry.name}: {err}") from err
        # the weights file the manifest names (a tied embed reads the LLM's), never one found beside the .xml
        paths = [str(manifest.path(f)) for f in (xml, weights) if f is not None]
        model = self.core.read_model(*paths)
        return self.core.compile_model(model, self.device, config)

    def graph(self, manifest: Manifest, name: str) -> GraphRunner:
        entry = manifest.graph(name, self.name)
        return _OvGraph(self._compile(manifest, entry), entry)

    def llm(self, manifest: Manifest) -> LLMRunner:
        entry = manifest.graph("llm_prefill", self.name)
        return _OvLLM(self.ov, self._compile(manifest, entry), entry, int(manifest.slots["prefill_len"]))
