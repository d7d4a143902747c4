"""Core ML backend: bundles are exported and spec-checked, but not run here (prediction needs macOS)."""

from __future__ import annotations

import platform


class CoreMLBackend:
    """Says why Core ML bundles cannot run in this Python runtime instead of faking it."""

    name = "coreml"

    def __init__(self) -> None:
        if platform.system() != "Darwin":
            raise RuntimeError(
                f"backend {self.name!r}: Core ML prediction needs macOS (coremltools cannot predict on Linux)"
            )
        raise RuntimeError(f"backend {self.name!r}: running bundles on Core ML is not built yet")
