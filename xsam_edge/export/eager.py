"""The edge graphs run eagerly in PyTorch behind the runtime's backend protocol.

``EdgeSession`` drives any backend through the same host code (chunked prefill, cache reuse, slot padding).
Run over the eager wrappers of ``graphs.py`` on the reference model (CPU or CUDA), it yields every graph
call's inputs and outputs exactly as a device session makes them: the per-graph golden tensors a device is
compared with. Nothing is exported or written; the manifest lives in memory (the tokenizer in a temp folder).
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np
import torch

from xsam_edge.model.xsam import XSam
from xsam_edge.runtime.protocol import HostCacheLLM
from xsam_edge.spec.bundle import GraphEntry, Manifest
from xsam_edge.spec.tokenizer import XSamTokenizer

from .graphs import SlotConfig, build_graph, graph_specs
from .to_bundle import bundle_manifest

EAGER = "eager"
_LLM_GRAPHS = ("llm_kvio_prefill", "llm_kvio_decode")


class EagerGraph:
    """One eager graph wrapper behind the runtime's ``GraphRunner`` protocol (numpy in, numpy out)."""

    def __init__(self, module: torch.nn.Module, device: torch.device) -> None:
        self.module, self.device = module, device

    @torch.no_grad()
    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        tensors = [torch.from_numpy(np.ascontiguousarray(x)).to(self.device) for x in inputs]
        outputs = self.module(*tensors)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        return [
            o.detach().float().cpu().numpy() if o.is_floating_point() else o.cpu().numpy() for o in outputs
        ]


class EagerBackend:
    """Runners over the eager graph wrappers of ``model`` (any device it sits on)."""

    name = EAGER

    def __init__(self, model: XSam, slots: SlotConfig) -> None:
        self.model, self.slots = model.eval(), slots
        self.device = next(model.parameters()).device

    def graph(self, manifest: Manifest, name: str) -> EagerGraph:
        return EagerGraph(build_graph(self.model, name, self.slots).to(self.device), self.device)

    def llm(self, manifest: Manifest) -> HostCacheLLM:
        graph = self.graph(manifest, _LLM_GRAPHS[0])  # one KV-I/O wrapper serves prefill and decode
        return HostCacheLLM(graph, graph, manifest.graph(_LLM_GRAPHS[0], EAGER))


def eager_manifest(
    model: XSam, tokenizer: XSamTokenizer, slots: SlotConfig, source: dict | None = None
) -> Manifest:
    """An in-memory manifest of the eager graphs (no files); its tokenizer sits in a temp folder.

    ``source`` is ``to_bundle.model_source(model)`` when the caller has it already. The temp folder goes
    when the manifest is collected (or at exit), so a long reference run does not leave one per model.
    """
    entries = []
    for name, spec in graph_specs(model.config, slots).items():
        data = spec.to_dict()
        entries.append(GraphEntry(name, EAGER, "fp32", [], data["inputs"], data["outputs"]))
    manifest = bundle_manifest(model, tokenizer, slots, entries, source=source)
    root = Path(tempfile.mkdtemp(prefix="xsam-eager-"))
    weakref.finalize(manifest, shutil.rmtree, root, ignore_errors=True)
    tokenizer.save(root)
    manifest.root = root
    return manifest
