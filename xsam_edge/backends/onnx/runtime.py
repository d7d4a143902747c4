"""ONNX Runtime backend: the KV-I/O LLM pair, its cache held in ONNX Runtime values bound in and out."""

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


class BoundCacheLLM(HostCacheLLM):
    """The KV-I/O pair with the cache in two pairs of ``OrtValue`` buffers bound by I/O binding.

    Each call reads the cache from one pair and writes the updated cache into the other (ping-pong), so no
    cache-sized array is allocated, wrapped or copied on the host per step (``HostCacheLLM`` gets a fresh
    pair of cache arrays from every call). Only the small outputs (projected states, logits) come back.
    ONNX has no program state, so the graph itself still reads and writes the whole cache.
    """

    def __init__(self, ort: Any, prefill: _OrtGraph, decode: _OrtGraph, entry: GraphEntry) -> None:
        self.ort = ort
        super().__init__(prefill, decode, entry)

    def _buffers(self, keys: np.ndarray, values: np.ndarray) -> list[Any]:
        # ortvalue_from_numpy wraps the array without a copy and keeps it alive
        return [self.ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a)) for a in (keys, values)]

    def reset(self) -> None:
        self.pairs = [
            self._buffers(*(np.zeros(self.cache_shape, np.float32) for _ in range(2))) for _ in range(2)
        ]
        self.current = 0

    def step(self, embeds: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        graph = self.decode if embeds.shape[1] == 1 else self.prefill
        (x, pos, past_k, past_v), (projected, logits, present_k, present_v) = graph.inputs, graph.outputs
        source, target = self.pairs[self.current], self.pairs[1 - self.current]
        binding = graph.session.io_binding()
        binding.bind_cpu_input(x, np.ascontiguousarray(embeds, np.float32))
        binding.bind_cpu_input(pos, np.ascontiguousarray(positions, np.int64))
        binding.bind_ortvalue_input(past_k, source[0])
        binding.bind_ortvalue_input(past_v, source[1])
        binding.bind_output(projected)
        binding.bind_output(logits)
        binding.bind_ortvalue_output(present_k, target[0])
        binding.bind_ortvalue_output(present_v, target[1])
        graph.session.run_with_iobinding(binding)
        self.current = 1 - self.current
        out = binding.get_outputs()
        return out[0].numpy(), out[1].numpy()

    def snapshot(self) -> Any:
        keys, values = self.pairs[self.current]
        return keys.numpy().copy(), values.numpy().copy()

    def restore(self, state: Any) -> None:
        self.pairs[self.current] = self._buffers(state[0].copy(), state[1].copy())


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
        return BoundCacheLLM(self.ort, prefill, decode, manifest.graph(self.llm_graphs[0], self.name))
