"""ONNX Runtime backend: the KV-I/O LLM pair, the cache kept on the host as two arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from xsam_edge.bundle import GraphEntry, Manifest

from .base import GraphRunner, LLMRunner, require, threads


class _OrtGraph:
    def __init__(self, ort: Any, path: str, entry: GraphEntry) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads()
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
        self.ort = require("onnxruntime", "onnxruntime", self.name)

    def graph(self, manifest: Manifest, name: str) -> GraphRunner:
        entry = manifest.graph(name, self.name)
        return _OrtGraph(self.ort, str(manifest.path(entry.files[0])), entry)

    def llm(self, manifest: Manifest) -> LLMRunner:
        prefill, decode = (self.graph(manifest, n) for n in self.llm_graphs)
        return _OrtLLM(prefill, decode, manifest.graph(self.llm_graphs[0], self.name))
