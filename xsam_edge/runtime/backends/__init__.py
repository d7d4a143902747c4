"""Runtime backends: one module per runtime behind one small protocol; the registry is a plain mapping.

A backend loads a bundle's graph entries and returns runners:

- a graph runner: ``run(*inputs) -> list[np.ndarray]`` (inputs and outputs in the manifest's order);
- an LLM runner: ``step(embeds, positions) -> (projected, logits)`` plus ``reset()``, ``snapshot()`` and
  ``restore(state)``, so a session can keep the KV cache after the image prefix and reuse it; ``chunk`` is
  the prefill length it takes.

Runtimes are imported lazily, when a backend is created; a missing one raises an error naming the package to
install. Only the ExecuTorch backend imports torch (its runtime takes torch tensors).
"""

from __future__ import annotations

import platform
from typing import Any

from .base import GraphRunner, LLMRunner
from .coreml import CoreMLBackend
from .executorch import ExecuTorchBackend
from .onnx import OnnxRuntimeBackend
from .openvino import OpenVinoBackend

__all__ = [
    "BACKENDS",
    "CoreMLBackend",
    "ExecuTorchBackend",
    "GraphRunner",
    "LLMRunner",
    "OnnxRuntimeBackend",
    "OpenVinoBackend",
    "get_backend",
    "runnable_backends",
]

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


def runnable_backends() -> tuple[str, ...]:
    """Backends ``EdgeSession`` can run on this OS (Core ML: macOS only); their packages may be missing."""
    return tuple(b for b in BACKENDS if b != "coreml" or platform.system() == "Darwin")
