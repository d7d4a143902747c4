"""ExecuTorch backend: ``.pte`` programs on the ExecuTorch Python runtime (XNNPACK, portable kernels).

The runtime takes and returns torch tensors, so this backend imports torch, lazily, with the runtime; the
host code around it stays numpy. The LLM is one program, ``llm.pte``, whose methods share the K/V cache
buffers: ``prefill`` / ``decode`` run tokens, and since no ExecuTorch runtime lets a caller touch a program's
buffers, ``read_cache`` / ``write_cache`` copy the cache out and back in. That is how the session keeps the
cache after the image prefix, and the same calls give an Android or iOS app encode once, query many.
"""

from __future__ import annotations

import importlib
import os
import platform
from typing import Any

import numpy as np

from xsam_edge.backends.executorch.pack import data_file
from xsam_edge.runtime.protocol import GraphRunner, LLMRunner, require
from xsam_edge.spec.bundle import BundleError, GraphEntry, Manifest

LLM_PROGRAM = "llm"  # the joint program's graph name in the manifest (export.executorch.LLM_PROGRAM)
LLM_METHODS = ("prefill", "decode", "read_cache", "write_cache")


class _EtMethod:
    """One method of a loaded program, called with numpy arrays of the manifest's shapes and dtypes."""

    def __init__(
        self,
        torch: Any,
        program: Any,
        method: str,
        inputs: list[dict],
        dynamic_tokens: bool = False,
        files: list[str] | None = None,
    ) -> None:
        self.torch = torch
        self.name = method
        try:
            self.method = program.load_method(method)
        except RuntimeError as err:  # ExecuTorch's bare code (0x2 for a program without its .ptd)
            raise BundleError(
                f"ExecuTorch cannot load it from {files} (method {method!r}: {err}); a program that "
                "reads a tied table needs its exported .ptd listed after it; re-export the bundle"
            ) from None
        self.specs = [(tuple(i["shape"]), np.dtype(i["dtype"])) for i in inputs]
        # the token axis (axis 1 of the embeddings, axis 0 of the positions) takes 1 .. its listed size
        self.token_axes = [1 if len(shape) == 3 else 0 for shape, _ in self.specs] if dynamic_tokens else None

    def _fits(self, i: int, got: tuple[int, ...], shape: tuple[int, ...]) -> bool:
        if self.token_axes is None or len(got) != len(shape):
            return got == shape
        axis = self.token_axes[i]
        rest = all(g == s for d, (g, s) in enumerate(zip(got, shape, strict=True)) if d != axis)
        return rest and 1 <= got[axis] <= shape[axis]

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Execute once; outputs are copied out of the runtime's memory.

        Raises:
            ValueError: an input's count or shape differs from the manifest (a fixed shape, or for a dynamic
                prefill more tokens than its bound): ExecuTorch's own error is a bare code.
        """
        if len(inputs) != len(self.specs):
            raise ValueError(f"method {self.name!r} takes {len(self.specs)} inputs, got {len(inputs)}")
        tensors = []
        for i, (x, (shape, dtype)) in enumerate(zip(inputs, self.specs, strict=True)):
            if not self._fits(i, tuple(x.shape), shape):
                bound = " (the token axis at most)" if self.token_axes is not None else ""
                got = tuple(x.shape)
                raise ValueError(f"method {self.name!r} input {i} must be {shape}{bound}, got {got}")
            tensors.append(self.torch.from_numpy(np.ascontiguousarray(x, dtype=dtype)))
        return [np.array(o.numpy(), copy=True) for o in self.method.execute(tensors)]


class _EtLLM:
    """``llm.pte``: state inside the program; snapshots go through ``read_cache`` / ``write_cache``."""

    def __init__(self, torch: Any, program: Any, entry: GraphEntry) -> None:
        signatures = {m["name"]: m for m in entry.methods}
        missing = [m for m in LLM_METHODS if m not in signatures]
        if missing:
            raise RuntimeError(
                f"the bundle's executorch/{entry.name} program lacks the method(s) {', '.join(missing)}; "
                "re-export the bundle with this xsam_edge (xsam-edge export --backend executorch)"
            )
        dynamic = {m: bool(signatures[m].get("dynamic_tokens")) for m in LLM_METHODS}
        self.methods = {
            m: _EtMethod(torch, program, m, signatures[m]["inputs"], dynamic[m], entry.files)
            for m in LLM_METHODS
        }
        self.chunk = int(signatures["prefill"]["inputs"][0]["shape"][1])  # the prefill method's (largest) T
        # a dynamic prefill runs a short chunk at its own length; an older bundle's fixed T is padded
        self.pads_chunks = not dynamic["prefill"]
        self.empty = [np.zeros(i["shape"], np.dtype(i["dtype"])) for i in signatures["write_cache"]["inputs"]]
        self.reset()

    def reset(self) -> None:
        self.methods["write_cache"].run(*self.empty)  # stale slots are masked anyway; zeros keep it exact

    def step(self, embeds: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        method = self.methods["decode" if embeds.shape[1] == 1 else "prefill"]
        projected, logits = method.run(embeds, positions)
        return projected, logits

    def snapshot(self) -> Any:
        return self.methods["read_cache"].run()  # [keys, values], (L, kv_heads, max_seq, head_dim) each

    def restore(self, state: Any) -> None:
        self.methods["write_cache"].run(*state)


class ExecuTorchBackend:
    """ExecuTorch programs on the Python runtime's CPU kernels (XNNPACK where the export delegated).

    ``XSAM_EDGE_THREADS``, when set, resizes ExecuTorch's threadpool (process-wide: it is one pool).
    """

    name = "executorch"

    def __init__(self) -> None:
        runtime = require("executorch.runtime", "executorch", self.name)
        self.torch = importlib.import_module("torch")  # executorch depends on it
        # registers the portable quantized kernels (embedding_byte, dequantize_per_channel …) that quantized
        # programs call outside the XNNPACK delegate
        importlib.import_module("executorch.kernels.quantized")
        self.runtime = runtime.Runtime.get()
        wanted = int(os.environ.get("XSAM_EDGE_THREADS", "0"))
        if wanted:
            pool = importlib.import_module("executorch.extension.pybindings.portable_lib")
            if pool._threadpool_get_thread_count() != wanted:
                pool._unsafe_reset_threadpool(wanted)

    def _load(self, manifest: Manifest, entry: GraphEntry) -> Any:
        """Load the program; one lowered for Apple's Core ML delegate is refused off macOS with the reason.

        Raises:
            RuntimeError: the program's delegate is not registered in this platform's ExecuTorch runtime.
        """
        partitioner = entry.placement.get("partitioner", "xnnpack")
        if partitioner == "coreml" and platform.system() != "Darwin":
            raise RuntimeError(
                f"executorch/{entry.name} was lowered to the Core ML delegate, which only Apple devices run; "
                "export an XNNPACK bundle for this machine (xsam-edge export --et-partitioner xnnpack)"
            )
        data = data_file(entry.files)  # a tied table the program keeps outside (pack.py)
        path = str(manifest.path(entry.files[0]))
        return self.runtime.load_program(path, data_path=None if data is None else str(manifest.path(data)))

    def graph(self, manifest: Manifest, name: str) -> GraphRunner:
        entry = manifest.graph(name, self.name)
        return _EtMethod(self.torch, self._load(manifest, entry), "forward", entry.inputs, files=entry.files)

    def llm(self, manifest: Manifest) -> LLMRunner:
        entry = manifest.graph(LLM_PROGRAM, self.name)
        return _EtLLM(self.torch, self._load(manifest, entry), entry)
