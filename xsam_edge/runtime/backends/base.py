"""The runner protocols every backend returns, and the helpers the backends share."""

from __future__ import annotations

import importlib
import os
from typing import Any, Protocol

import numpy as np


class GraphRunner(Protocol):
    def run(self, *inputs: np.ndarray) -> list[np.ndarray]: ...


class LLMRunner(Protocol):
    chunk: int

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


def threads() -> int:
    """Intra-op threads: ``XSAM_EDGE_THREADS``, or every core."""
    return int(os.environ.get("XSAM_EDGE_THREADS", "0")) or (os.cpu_count() or 1)
