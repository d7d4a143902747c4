"""Score a weight-only bundle where its runtime cannot run: its own weights, decompressed, run in PyTorch.

Core ML predicts only on macOS, so on Linux the Apple recipes were not scored at all. They compress weights
only (fp16 compute, no activation quantization): a package computes what its float source computes, with the
weights it decompresses to and in fp16 arithmetic. ``WeightReplay`` is an ``EdgeSession`` runtime whose
graphs are the eager wrappers each package was converted from (``export.graphs``), each on its own copy of
the model, with every parameter the package stores replaced by the package's decompressed value
(``Backend.weights``). The first difference is reproduced exactly; the second is not (fp32 arithmetic here),
so a replayed score measures what compression costs, not fp16 numerics, and says so in its ``runner``.
Latency means nothing here and is not reported. A few small parameters (norm scales, biases) are folded into
other constants by the converter and keep the model's float values; the handlers compress only parameters
by name and above 2,048 elements, so no compressed weight is missed (``tests/test_coreml_tied.py``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from xsam_edge.backends import get_backend
from xsam_edge.export.eager import EAGER, EagerGraph
from xsam_edge.export.graphs import SlotConfig, build_graph, graph_specs
from xsam_edge.model.xsam import XSam
from xsam_edge.runtime.protocol import HostCacheLLM
from xsam_edge.spec.bundle import GraphEntry, Manifest

__all__ = ["REPLAY_RUNNER", "ReplayedGraph", "WeightReplay", "load_package_weights", "replayable"]

REPLAY_RUNNER = (
    "replay: the bundle's decompressed weights in the eager graphs, fp32 arithmetic (fp16 numerics and "
    "speed need the backend's own runtime)"
)
_LLM_FUNCTIONS = ("prefill", "decode")


@dataclass
class ReplayedGraph:
    """What one replayed graph took from its file: parameters, elements, and how far they moved."""

    graph: str
    file: str
    parameters: int = 0
    elements: int = 0
    max_abs_change: float = 0.0


def replayable(backend: str) -> bool:
    """Whether ``backend``'s bundles can be replayed (it reads its graph files' weights)."""
    return get_backend(backend).weights is not None


def load_package_weights(
    module: torch.nn.Module, weights: dict[str, np.ndarray], record: ReplayedGraph
) -> None:
    """Put ``weights`` (torch.export names, ``p_<path>``) into ``module``'s parameters, in place.

    Raises:
        ValueError: a weight names no parameter of ``module``, or has another shape: the file was not
            converted from this module, and replaying it would score something else.
    """
    by_export_name: dict[str, torch.nn.Parameter] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        by_export_name.setdefault("p_" + name.replace(".", "_"), param)
    unknown = sorted(set(weights) - set(by_export_name))
    if unknown:
        raise ValueError(
            f"{record.file}: {len(unknown)} weight(s) name no parameter of the {record.graph!r} graph "
            f"(e.g. {unknown[0]}): the bundle was not made from this model"
        )
    with torch.no_grad():
        for name, value in weights.items():
            param = by_export_name[name]
            if tuple(value.shape) != tuple(param.shape):
                raise ValueError(
                    f"{record.file}: {name} has shape {tuple(value.shape)}, the model's parameter "
                    f"{tuple(param.shape)}: the bundle was not made from this model"
                )
            new = torch.from_numpy(np.asarray(value, dtype=np.float32)).to(param.dtype)
            record.max_abs_change = max(record.max_abs_change, float((new - param).abs().max()))
            param.copy_(new)
            record.parameters += 1
            record.elements += param.numel()


class WeightReplay:
    """``EdgeSession`` runtime: a bundle's graphs as eager wrappers of ``model``, with the bundle's weights.

    Args:
        model (XSam): the model the bundle was exported from (float; it is copied, never changed).
        backend (str): the bundle's backend; it must read its files' weights (``Backend.weights``).

    Raises:
        ValueError: the backend cannot be replayed.
    """

    name = "replay"

    def __init__(self, model: XSam, backend: str) -> None:
        reader = get_backend(backend).load_weights()
        if reader is None:
            raise ValueError(f"backend {backend!r} cannot be replayed: it does not read its files' weights")
        self.model, self.backend = model.eval(), backend
        self.read: Callable[..., dict[str, np.ndarray]] = reader
        self.replayed: list[ReplayedGraph] = []

    def _wrapper(
        self, manifest: Manifest, entry: GraphEntry, wrapper: str, function: str | None
    ) -> EagerGraph:
        module = build_graph(copy.deepcopy(self.model), wrapper, SlotConfig(**manifest.slots))
        record = ReplayedGraph(entry.name if function is None else f"{entry.name}:{function}", entry.files[0])
        load_package_weights(module, self.read(manifest.path(entry.files[0]), function), record)
        self.replayed.append(record)
        return EagerGraph(module, torch.device("cpu"))

    def graph(self, manifest: Manifest, name: str) -> EagerGraph:
        """A graph's eager wrapper with its file's weights (a function of a shared file where it is one)."""
        entry = manifest.graph(name, self.backend)
        function = name if any(m["name"] == name for m in entry.methods) else None
        return self._wrapper(manifest, entry, name, function)

    def llm(self, manifest: Manifest) -> HostCacheLLM:
        """Prefill and decode, each with its own weights, over a host cache.

        From the ``llm`` entry's two functions (a packed bundle), or from the ``llm_prefill`` and
        ``llm_decode`` entries (a float export kept apart for compression).
        """
        have = {e.name: e for e in manifest.graphs if e.backend == self.backend}
        if "llm" in have:
            entry = have["llm"]
            functions = [m["name"] for m in entry.methods]
            if functions != list(_LLM_FUNCTIONS):
                raise ValueError(
                    f"the bundle's llm entry has functions {functions}, not {list(_LLM_FUNCTIONS)}"
                )
            parts = [(entry, f) for f in _LLM_FUNCTIONS]
        else:
            parts = [(manifest.graph(f"llm_{f}", self.backend), None) for f in _LLM_FUNCTIONS]
        prefill, decode = (self._wrapper(manifest, e, "llm_kvio_prefill", f) for e, f in parts)
        slots = SlotConfig(**manifest.slots)
        spec = graph_specs(self.model.config, slots)["llm_kvio_prefill"].to_dict()
        kvio = GraphEntry("llm_kvio_prefill", EAGER, "fp32", [], spec["inputs"], spec["outputs"])
        return HostCacheLLM(prefill, decode, kvio)

    def summary(self) -> dict[str, Any]:
        """Per graph: parameters and elements replayed, and the largest change from the float model."""
        return {
            r.graph: {
                "file": r.file,
                "parameters": r.parameters,
                "elements": r.elements,
                "max_abs_change": r.max_abs_change,
            }
            for r in self.replayed
        }
