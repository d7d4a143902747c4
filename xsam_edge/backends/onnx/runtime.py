"""ONNX Runtime backend: the KV-I/O LLM pair, the cache kept on the host as two arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from xsam_edge.runtime.protocol import GraphRunner, HostCacheLLM, LLMRunner, check_signature, require, threads
from xsam_edge.spec.bundle import BundleError, GraphEntry, Manifest


class _OrtGraph:
    def __init__(self, ort: Any, path: str, entry: GraphEntry, providers: list[str]) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads()
        try:
            self.session = ort.InferenceSession(path, options, providers=providers)
        except Exception as err:  # a listed, checksummed file ONNX Runtime will not load is a bad bundle
            # (among others: external data that points outside the model's folder, which it refuses)
            raise BundleError(f"graph onnx/{entry.name}: ONNX Runtime cannot load {path}: {err}") from None
        self.inputs = [i.name for i in self.session.get_inputs()]
        check_signature(entry, self.inputs, [o.name for o in self.session.get_outputs()])
        self.outputs = [o["name"] for o in entry.outputs]

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.outputs, dict(zip(self.inputs, inputs, strict=True)))


class OnnxRuntimeBackend:
    """ONNX files on onnxruntime's execution providers (CPU by default; Jetson: TensorRT, CUDA, then CPU).

    Args:
        providers (tuple[str, ...]): execution providers in priority order; each must be available in this
            onnxruntime build.

    Raises:
        RuntimeError: onnxruntime is missing, or lacks a requested provider (the message lists what it has).
    """

    name = "onnx"
    llm_graphs = ("llm_kvio_prefill", "llm_kvio_decode")

    def __init__(self, providers: tuple[str, ...] = ("CPUExecutionProvider",)) -> None:
        self.ort = require("onnxruntime", "onnxruntime", self.name)
        available = self.ort.get_available_providers()
        missing = [p for p in providers if p not in available]
        if missing:
            raise RuntimeError(
                f"this onnxruntime has no {', '.join(missing)} (it has: {', '.join(available)}); install the "
                "onnxruntime build with those providers (onnxruntime-gpu; on Jetson, the JetPack wheel)"
            )
        self.providers = list(providers)

    def graph(self, manifest: Manifest, name: str) -> GraphRunner:
        entry = manifest.graph(name, self.name)
        return _OrtGraph(self.ort, str(manifest.path(entry.files[0])), entry, self.providers)

    def llm(self, manifest: Manifest) -> LLMRunner:
        prefill, decode = (self.graph(manifest, n) for n in self.llm_graphs)
        return HostCacheLLM(prefill, decode, manifest.graph(self.llm_graphs[0], self.name))
