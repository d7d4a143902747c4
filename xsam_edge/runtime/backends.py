"""Runtime backends: one class per runtime behind one small protocol; the registry is a plain mapping.

A backend loads a bundle's graph entries and returns runners:

- a graph runner: ``run(*inputs) -> list[np.ndarray]`` (inputs and outputs in the manifest's order);
- an LLM runner: ``step(embeds, positions) -> (projected, logits)`` plus ``reset()``, ``snapshot()`` and
  ``restore(state)``, so a session can keep the KV cache after the image prefix and reuse it.

Runtimes are imported lazily; a missing one raises an error naming the package to install.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Protocol

import numpy as np

from xsam_edge.bundle import GraphEntry, Manifest


class GraphRunner(Protocol):
    def run(self, *inputs: np.ndarray) -> list[np.ndarray]: ...


class LLMRunner(Protocol):
    chunk: int

    def step(self, embeds: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
    def reset(self) -> None: ...
    def snapshot(self) -> Any: ...
    def restore(self, state: Any) -> None: ...


def _require(module: str, package: str, backend: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise RuntimeError(
            f"backend {backend!r} needs the {package!r} package: "
            "pip install -c constraints.txt -e '.[export]'"
        ) from err


def _threads() -> int:
    return int(os.environ.get("XSAM_EDGE_THREADS", "0")) or (os.cpu_count() or 1)


# -- ONNX Runtime ------------------------------------------------------------------------------
class _OrtGraph:
    def __init__(self, ort: Any, path: str, entry: GraphEntry) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = _threads()
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o["name"] for o in entry.outputs]

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.outputs, dict(zip(self.inputs, inputs, strict=True)))


class _OrtLLM:
    """KV-I/O graphs; the cache lives on the host as two arrays (past keys, past values)."""

    def __init__(self, prefill: _OrtGraph, decode: _OrtGraph, entry: GraphEntry) -> None:
        self.prefill, self.decode = prefill, decode
        self.chunk = int(entry.inputs[0]["shape"][1])  # the prefill graph's fixed T
        self.cache_shape = tuple(entry.inputs[2]["shape"])
        self.reset()

    def reset(self) -> None:
        self.keys = np.zeros(self.cache_shape, np.float32)
        self.values = np.zeros(self.cache_shape, np.float32)

    def step(self, embeds: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        graph = self.decode if embeds.shape[1] == 1 else self.prefill
        projected, logits, self.keys, self.values = graph.run(embeds, positions, self.keys, self.values)
        return projected, logits

    def snapshot(self) -> Any:
        return (self.keys.copy(), self.values.copy())

    def restore(self, state: Any) -> None:
        self.keys, self.values = state[0].copy(), state[1].copy()


class OnnxRuntimeBackend:
    """ONNX files on onnxruntime's CPU provider (the Jetson route adds the CUDA / TensorRT providers)."""

    name = "onnx"
    llm_graphs = ("llm_kvio_prefill", "llm_kvio_decode")

    def __init__(self) -> None:
        self.ort = _require("onnxruntime", "onnxruntime", self.name)

    def graph(self, manifest: Manifest, name: str) -> GraphRunner:
        entry = manifest.graph(name, self.name)
        return _OrtGraph(self.ort, str(manifest.path(entry.files[0])), entry)

    def llm(self, manifest: Manifest) -> LLMRunner:
        prefill, decode = (self.graph(manifest, n) for n in self.llm_graphs)
        return _OrtLLM(prefill, decode, manifest.graph(self.llm_graphs[0], self.name))


# -- OpenVINO ----------------------------------------------------------------------------------
class _OvGraph:
    def __init__(self, compiled: Any, entry: GraphEntry) -> None:
        self.request = compiled.create_infer_request()
        self.inputs = [i["name"] for i in entry.inputs]
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

    def __init__(self) -> None:
        self.ov = _require("openvino", "openvino", self.name)
        self.core = self.ov.Core()
        self.config = {
            "INFERENCE_PRECISION_HINT": os.environ.get("XSAM_EDGE_OV_PRECISION", "f32"),
            "INFERENCE_NUM_THREADS": _threads(),
        }

    def _compile(self, manifest: Manifest, entry: GraphEntry) -> Any:
        return self.core.compile_model(str(manifest.path(entry.files[0])), "CPU", self.config)

    def graph(self, manifest: Manifest, name: str) -> GraphRunner:
        entry = manifest.graph(name, self.name)
        return _OvGraph(self._compile(manifest, entry), entry)

    def llm(self, manifest: Manifest) -> LLMRunner:
        entry = manifest.graph("llm_prefill", self.name)
        return _OvLLM(self.ov, self._compile(manifest, entry), entry, int(manifest.slots["prefill_len"]))


class _NotInRuntimeYet:
    """Backends whose bundles are exported but not yet run by this Python runtime (said, not faked)."""

    def __init__(self, name: str, why: str) -> None:
        raise RuntimeError(f"backend {name!r}: {why}")


class ExecuTorchBackend(_NotInRuntimeYet):
    name = "executorch"

    def __init__(self) -> None:
        super().__init__(self.name, "running bundles on the ExecuTorch Python runtime is not built yet")


class CoreMLBackend(_NotInRuntimeYet):
    name = "coreml"

    def __init__(self) -> None:
        import platform

        if platform.system() != "Darwin":
            super().__init__(
                self.name, "Core ML prediction needs macOS (coremltools cannot predict on Linux)"
            )
        super().__init__(self.name, "running bundles on Core ML is not built yet")


BACKENDS: dict[str, type] = {
    "onnx": OnnxRuntimeBackend,
    "openvino": OpenVinoBackend,
    "executorch": ExecuTorchBackend,
    "coreml": CoreMLBackend,
}


def get_backend(name: str) -> Any:
    """An instance of the backend registered as ``name``.

    Raises:
        ValueError: unknown name (lists the registered ones).
        RuntimeError: the backend's runtime is missing or cannot run here.
    """
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; registered backends: {', '.join(BACKENDS)}") from None
    return cls()
