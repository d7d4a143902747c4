"""One record per backend, in one registry: what export, quantization, runtime, bench and the CLI read.

A ``Backend`` names its parts by ``"module:attribute"`` references (or callables), loaded only when used, so
reading the registry imports no converter or runtime: ``xsam-edge export --help`` stays instant and a
machine without OpenVINO still lists it. Adding a backend is one folder under ``xsam_edge/backends/`` (its
record, exporter, quantize handler and runtime) and one line in ``backends/__init__.py``.
"""

from __future__ import annotations

import importlib
import importlib.util
import platform
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Ref = str | Callable[..., Any]
"""``"package.module:attribute"``, or the object itself."""

# graphs every backend exports; the LLM's graphs depend on where its cache lives (``Backend.llm_graphs``)
COMMON_GRAPHS = ("encode_image", "embed", "region", "segment")


def _resolve(ref: Ref) -> Any:
    if not isinstance(ref, str):
        return ref
    module, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Backend:
    """A backend: how a bundle's graphs are made, quantized and run there.

    Args:
        name (str): registry key, also the bundle's folder and ``GraphEntry.backend``.
        description (str): one line for ``--help`` and listings.
        llm_graphs (tuple[str, ...]): the LLM graphs it exports (``llm_prefill`` [+ ``llm_decode``] for a
            cache kept as program state, the ``llm_kvio_*`` pair for a cache passed in and out).
        stateful (bool): whether its LLM keeps the KV cache as program state between calls.
        schemes (tuple[str, ...]): quantization schemes its handler implements (``quantization.schemes``).
        requires (tuple[tuple[str, str], ...]): (import name, pip package) pairs it needs to export or run.
        platforms (tuple[str, ...]): ``platform.system()`` values its runtime runs on; empty: everywhere
            Python runs.
        host_cpu (bool): its runtime runs on a plain x86-64 / arm64 CPU (the ``x86-cpu`` bench profile).
        exporter (Ref): ``export(model, graph, slots, out_dir, **options) -> ExportedGraph``.
        quantizer (Ref): the handler class (``quantization.handler.QuantizeHandler``).
        runtime (Ref): the runtime class (``runtime.protocol``): ``graph(manifest, name)``, ``llm(manifest)``.
        pack (Ref | None): optional ``pack(entries, staging, **options) -> entries`` run after every graph is
            exported (Core ML merges its two LLM functions into one package).
        export_options (tuple[str, ...]): keyword options its exporter takes (``export_bundle(options=...)``).
        pack_options (tuple[str, ...]): keyword options its ``pack`` takes.
        weights (Ref | None): optional ``weights(file, function) -> {torch.export name: array}``, the
            decompressed parameters of one graph file, for a weight-only backend whose runtime cannot run
            here: ``quantization.replay`` scores its bundles in PyTorch (Core ML on Linux).
    """

    name: str
    description: str
    llm_graphs: tuple[str, ...]
    stateful: bool
    schemes: tuple[str, ...]
    requires: tuple[tuple[str, str], ...]
    exporter: Ref
    quantizer: Ref
    runtime: Ref
    platforms: tuple[str, ...] = ()
    host_cpu: bool = True
    pack: Ref | None = None
    export_options: tuple[str, ...] = ()
    pack_options: tuple[str, ...] = ()
    weights: Ref | None = None

    @property
    def graphs(self) -> tuple[str, ...]:
        """The graphs a bundle holds for this backend."""
        return (*COMMON_GRAPHS, *self.llm_graphs)

    def load_exporter(self) -> Callable[..., Any]:
        return _resolve(self.exporter)

    def load_pack(self) -> Callable[..., Any] | None:
        return None if self.pack is None else _resolve(self.pack)

    def load_weights(self) -> Callable[..., Any] | None:
        return None if self.weights is None else _resolve(self.weights)

    def quantize_handler(self) -> Any:
        """The quantize handler instance."""
        return _resolve(self.quantizer)()

    def runtime_class(self) -> type:
        return _resolve(self.runtime)

    def make_runtime(self, **options: Any) -> Any:
        """A runtime instance (``options``: its constructor's, e.g. ONNX Runtime providers).

        Raises:
            RuntimeError: this platform cannot run it, or a package it needs is missing (the runtime class
                says which and how to get it).
        """
        return self.runtime_class()(**options)

    def runs_here(self) -> bool:
        """Whether this OS can run the backend's runtime (its packages may still be missing)."""
        return not self.platforms or platform.system() in self.platforms

    def missing(self) -> list[str]:
        """The pip packages it needs that are not installed."""
        return [pkg for module, pkg in self.requires if importlib.util.find_spec(module) is None]


BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    """Add ``backend`` to the registry (a name already taken is an error: remove it first)."""
    if backend.name in BACKENDS:
        raise ValueError(f"backend {backend.name!r} is registered already")
    BACKENDS[backend.name] = backend
    return backend


def unregister(name: str) -> None:
    """Remove a registered backend (tests register fakes)."""
    BACKENDS.pop(name, None)


def get_backend(name: str) -> Backend:
    """The registered backend ``name``.

    Raises:
        ValueError: unknown name (lists the registered ones).
    """
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; registered backends: {', '.join(BACKENDS)}") from None


def backend_names() -> tuple[str, ...]:
    return tuple(BACKENDS)


def runnable_backends() -> tuple[str, ...]:
    """Backends whose runtime runs on this OS (Core ML: macOS only); their packages may be missing."""
    return tuple(name for name, b in BACKENDS.items() if b.runs_here())


def schemes_by_backend() -> dict[str, tuple[str, ...]]:
    return {name: b.schemes for name, b in BACKENDS.items()}
