"""The runner protocols every backend returns, and the helpers the backends share."""

from __future__ import annotations

import importlib
import os
from typing import Any, Protocol

import numpy as np


class GraphRunner(Protocol):
    def run(self, *inputs: np.ndarray) -> list[np.ndarray]: ...


class LLMRunner(Protocol):
    chunk: int  # the most tokens one prefill call takes
    pads_chunks: bool  # a shorter call is padded to ``chunk`` rows (a graph with a fixed T)

    def step(self, embeds: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
    def reset(self) -> None: ...
    def snapshot(self) -> Any: ...
    def restore(self, state: Any) -> None: ...


def require(module: str, package: str, backend: str) -> Any:
    """Import a backend's runtime, or say which package to install.

    Raises:
        RuntimeError: the runtime is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise RuntimeError(
            f"backend {backend!r} needs the {package!r} package: "
            "pip install -c constraints.txt -e '.[export]'"
        ) from err


def check_signature(entry: Any, inputs: list[str], outputs: list[str] | int) -> None:
    """Refuse a graph file whose inputs and outputs are not the manifest's.

    A mismatch is a bad bundle, not a runtime error on the first request. ``outputs`` is a list of names, or
    a count where the runtime may drop an output's name (OpenVINO pass-through outputs).

    Raises:
        BundleError: the names or counts differ.
    """
    from xsam_edge.spec.bundle import BundleError

    want_in = [i["name"] for i in entry.inputs]
    want_out = [o["name"] for o in entry.outputs]
    got_out = outputs if isinstance(outputs, list) else None
    if (
        inputs != want_in
        or (got_out is not None and got_out != want_out)
        or (got_out is None and outputs != len(want_out))
    ):
        returns = outputs if got_out is not None else f"{outputs} outputs"
        raise BundleError(
            f"graph {entry.backend}/{entry.name}: the file takes {inputs} and returns {returns}; "
            f"the manifest says {want_in} → {want_out}"
        )


def threads() -> int:
    """Intra-op threads: ``XSAM_EDGE_THREADS``, or every core."""
    return int(os.environ.get("XSAM_EDGE_THREADS", "0")) or (os.cpu_count() or 1)


class HostCacheLLM:
    """An LLM runner over KV-I/O graphs; the cache lives on the host as two arrays (past keys, past values).

    ``prefill`` and ``decode`` are graph runners taking ``(embeds, positions, past_keys, past_values)`` and
    returning ``(projected, logits, present_keys, present_values)``; ``entry`` is the prefill graph's manifest
    entry (its fixed chunk length and cache shape).
    """

    def __init__(self, prefill: GraphRunner, decode: GraphRunner, entry: Any) -> None:
        self.prefill, self.decode = prefill, decode
        self.chunk = int(entry.inputs[0]["shape"][1])  # the prefill graph's fixed T
        self.pads_chunks = True
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
