"""Export a model to every requested backend and pack the graphs into one checksummed bundle.

Per backend the bundle holds the graphs its runtime drives: ONNX carries the LLM as the past/present KV-I/O
pair (ONNX has no program state), OpenVINO as one stateful IR made from that pair, ExecuTorch as one
``llm.pte`` whose methods (``prefill``, ``decode``, ``read_cache``, ``write_cache``) share the cache and are
listed in its manifest entry. Golden vectors (a few requests with the PyTorch model's outputs, grid region
sampler) let a device check itself.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from xsam_edge.backends import Backend, backend_names, get_backend
from xsam_edge.files import staged_dir
from xsam_edge.model.checkpoint import model_fingerprint
from xsam_edge.model.predictor import XSamPredictor
from xsam_edge.model.xsam import XSam
from xsam_edge.spec.bundle import GOLDEN_DIR, SCHEMA_VERSION, GraphEntry, Manifest, seal_bundle
from xsam_edge.spec.golden import save_golden
from xsam_edge.spec.preprocess import PreprocessSpec
from xsam_edge.spec.tokenizer import XSamTokenizer
from xsam_edge.spec.types import Box, Point, SegmentationRequest, Task

from .graphs import SlotConfig
from .placement import ExportedGraph

log = logging.getLogger(__name__)

ExportOptions = Mapping[str, Mapping[str, Any]]
"""Backend name → keyword options of its exporter and pack step (``Backend.export_options``)."""


def _split_options(backend: Backend, options: Mapping[str, Any]) -> tuple[dict, dict]:
    """A backend's options, split into its exporter's and its pack step's.

    Raises:
        ValueError: an option the backend does not take (lists the ones it does).
    """
    allowed = (*backend.export_options, *backend.pack_options)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"backend {backend.name!r} takes no export option {', '.join(unknown)}; "
            f"its options: {', '.join(allowed) or 'none'}"
        )
    exporter = {k: v for k, v in options.items() if k in backend.export_options}
    return exporter, {k: v for k, v in options.items() if k in backend.pack_options}


def default_golden_requests(image: np.ndarray, slots: SlotConfig) -> list[SegmentationRequest]:
    """A referring, a panoptic and an interactive request on ``image`` (decode-free, within the slots)."""
    h, w = image.shape[:2]
    categories = ["circle", "square", "triangle", "sky", "grass"][: slots.max_conditions]
    prompts = [Point(w / 2, h / 2), Box(w * 0.1, h * 0.1, w * 0.6, h * 0.5)]
    return [
        SegmentationRequest(image, Task.REFERRING, text="the red circle"),
        SegmentationRequest(image, Task.PANOPTIC, categories=categories),
        SegmentationRequest(image, Task.INTERACTIVE, prompts=prompts),
    ]


def export_bundle(
    model: XSam,
    tokenizer: XSamTokenizer,
    out: str | Path,
    backends: Sequence[str] | None = None,
    slots: SlotConfig | None = None,
    golden_requests: list[SegmentationRequest] | None = None,
    progress: bool = True,
    lineage: dict | None = None,
    options: ExportOptions | None = None,
    keep: Manifest | None = None,
) -> tuple[Path, list[ExportedGraph]]:
    """Export ``model`` to ``backends`` and write the bundle folder ``out`` (replaced atomically).

    Args:
        model (XSam): the model (FP32).
        tokenizer (XSamTokenizer): stored as ``tokenizer.json``.
        out (str | Path): bundle folder.
        backends (Sequence[str] | None): registered backends (``xsam_edge.backends``); ``None``: every one.
        slots (SlotConfig | None): fixed slot sizes (default ``SlotConfig()``).
        golden_requests (list[SegmentationRequest] | None): requests for the golden vectors (default: three
            requests on a ``shapes:val`` image).
        progress (bool): a progress bar per graph.
        lineage (dict | None): the teacher a distilled model came from (``checkpoint.read_lineage``).
        options (ExportOptions | None): per backend, its exporter's and pack step's keyword options, e.g.
            ``{"executorch": {"partitioner": "coreml"}, "coreml": {"multifunction": False}}``.
        keep (Manifest | None): a bundle of the same weights and slots (``out`` itself, say): its graphs for
            backends not in ``backends`` are copied into the new bundle instead of exported again. Adding a
            backend to a full-size model's bundle then costs that backend's export only.

    Returns:
        tuple[Path, list[ExportedGraph]]: the bundle folder and every exported graph (parity, placement).

    Raises:
        ValueError: an unknown backend, or a ``keep`` bundle of other weights or slots (nothing is written).
    """
    records = [get_backend(b) for b in (backend_names() if backends is None else backends)]
    if not records:
        raise ValueError(f"no backend to export to; registered backends: {', '.join(backend_names())}")
    options = options or {}
    unused = sorted(set(options) - {b.name for b in records})
    if unused:
        raise ValueError(f"export options for backends not exported: {', '.join(unused)}")
    split = {b.name: _split_options(b, options.get(b.name, {})) for b in records}
    backends = [b.name for b in records]
    slots = slots or SlotConfig()
    model = model.eval()
    source = model_source(model, lineage)
    kept = _kept_graphs(keep, backends, model, slots, source)
    target = Path(out).resolve()
    exported: list[ExportedGraph] = []
    with staged_dir(target) as staging:  # a failed export leaves nothing behind
        for entry in kept:
            for relative in entry.files:
                _copy_into(keep.path(relative), staging / relative)
        jobs = [(b, g) for b in records for g in b.graphs]
        bar = tqdm(jobs, desc="export", disable=not progress)
        for backend, graph in bar:
            bar.set_postfix_str(f"{backend.name}/{graph}")
            with torch.no_grad():
                exporter = backend.load_exporter()
                exported.append(
                    exporter(model, graph, slots, staging / backend.name, **split[backend.name][0])
                )
        tokenizer.save(staging)
        requests = golden_requests or default_golden_requests(_golden_image(), slots)
        _write_golden(model, tokenizer, requests, staging / GOLDEN_DIR)
        entries = _with_macs([graph_entry(g, staging) for g in exported], model, slots)
        for backend in records:  # a backend's own repacking (Core ML: one multifunction LLM package)
            pack = backend.load_pack()
            if pack is not None:
                entries = pack(entries, staging, **split[backend.name][1])
        manifest = bundle_manifest(
            model,
            tokenizer,
            slots,
            [*kept, *entries],
            golden=[f"{GOLDEN_DIR}/requests.json", f"{GOLDEN_DIR}/outputs.npz"],
            source=source,
        )
        seal_bundle(staging, manifest)
    shipped = {(e.backend, e.name): e.files for e in manifest.graphs}
    for graph in exported:  # point the results at the files' final place (a merged LLM: its package)
        files = shipped.get((graph.backend, graph.name)) or shipped.get((graph.backend, "llm"), [])
        graph.files = [target / f for f in files]
    return target, exported


def bundle_manifest(
    model: XSam,
    tokenizer: XSamTokenizer,
    slots: SlotConfig,
    graphs: list[GraphEntry],
    golden: list[str] | None = None,
    lineage: dict | None = None,
    source: dict | None = None,
) -> Manifest:
    """The manifest of ``model`` exported with ``slots`` (``files`` are filled when the bundle is finalised).

    ``source`` names the model the graphs came from (its weight fingerprint), so a golden reference made from
    another model is refused by the bench instead of reported as an accuracy drop. A caller that already has
    ``model_source(model, lineage)`` passes it as ``source`` (hashing a full-size model takes a while).
    """
    return Manifest(
        schema_version=SCHEMA_VERSION,
        model=model.config.to_dict(),
        preprocess=PreprocessSpec.from_config(model.config).to_dict(),
        template=model.config.tokens.template,
        tokens={
            "seg": tokenizer.seg_id,
            "phrase_start": tokenizer.phrase_start_id,
            "phrase_end": tokenizer.phrase_end_id,
            "bos": tokenizer.bos_id,
            "eos": tokenizer.eos_id,
            "pad": tokenizer.pad_id,
        },
        slots=slots.manifest_entry(model.config),
        graphs=graphs,
        files={},
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        golden=golden or [],
        source=source or model_source(model, lineage),
    )


def _kept_graphs(
    keep: Manifest | None, backends: Sequence[str], model: XSam, slots: SlotConfig, source: dict
) -> list[GraphEntry]:
    """The entries of ``keep`` for backends not being exported, if its weights and slots are the model's."""
    if keep is None:
        return []
    if keep.source.get("fingerprint") != source["fingerprint"]:
        raise ValueError(
            f"cannot keep the graphs of {keep.root}: they come from other weights "
            f"({keep.source.get('fingerprint')}, this model {source['fingerprint']}); export every backend"
        )
    wanted = slots.manifest_entry(model.config)
    if keep.slots != wanted:
        raise ValueError(f"cannot keep the graphs of {keep.root}: its slots {keep.slots} are not {wanted}")
    return [dataclasses.replace(e) for e in keep.graphs if e.backend not in backends]


def _copy_into(source: Path, target: Path) -> None:
    """Copy a graph file, or a folder (Core ML's ``.mlpackage``), to ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)


def model_source(model: XSam, lineage: dict | None = None) -> dict:
    """``{"name", "fingerprint", "teacher_fingerprint"}``: which weights a bundle or golden set came from.

    ``lineage`` is a distilled model folder's ``lineage.json`` (``checkpoint.read_lineage``); without it the
    model has no recorded teacher.
    """
    return {
        "name": model.config.name,
        "fingerprint": model_fingerprint(model),
        "teacher_fingerprint": (lineage or {}).get("teacher_fingerprint"),
    }


def _with_macs(entries: list[GraphEntry], model: XSam, slots: SlotConfig) -> list[GraphEntry]:
    """Each entry with the MACs of one call (counted once per graph name, on the eager wrapper)."""
    from .macs import graph_macs

    counted: dict[str, int] = {}
    for entry in entries:
        if entry.name not in counted:  # ExecuTorch's one ``llm`` program: counted as a prefill chunk
            counted[entry.name] = graph_macs(
                model, "llm_prefill" if entry.name == "llm" else entry.name, slots
            )
        entry.macs = counted[entry.name]
    return entries


def graph_entry(graph: ExportedGraph, root: Path, precision: str = "fp32") -> GraphEntry:
    """The manifest entry of an exported graph, its files relative to the bundle folder ``root``."""

    def specs(names: list[str], shapes: list, dtypes: list[str]) -> list[dict]:
        return [
            {"name": n, "shape": list(s), "dtype": d} for n, s, d in zip(names, shapes, dtypes, strict=True)
        ]

    data = graph.to_dict()
    return GraphEntry(
        name=graph.name,
        backend=graph.backend,
        precision=precision,
        files=[str(Path(f).relative_to(root)) for f in graph.files],
        inputs=specs(graph.inputs, graph.input_shapes, graph.input_dtypes),
        outputs=specs(graph.outputs, graph.output_shapes, graph.output_dtypes),
        states=[{"name": s} for s in graph.states],
        methods=graph.methods,
        route=graph.route,
        # identical outputs give an infinite PSNR; JSON has no infinity, so it is stored as null
        parity=[
            {**p, "psnr_db": p["psnr_db"] if np.isfinite(p["psnr_db"]) else None}
            for p in data.get("parity", [])
        ],
        placement=data.get("placement", {}),
    )


def _golden_image() -> np.ndarray:
    from xsam_edge.data.shapes import load_shapes

    return load_shapes("val", num_images=1)[0].request.image


def _write_golden(
    model: XSam, tokenizer: XSamTokenizer, requests: list[SegmentationRequest], folder: Path
) -> None:
    """The PyTorch model's outputs on ``requests`` with the grid sampler (the one the region graph uses)."""
    predictor = XSamPredictor(model, tokenizer, region_sampler="grid")
    outputs = []
    for request in requests:
        raw = predictor.run(request)
        result = predictor.segment(request)
        outputs.append(
            {"class_logits": raw.class_logits, "mask_logits": raw.mask_logits, "masks": result.masks}
        )
    save_golden(folder, requests, outputs)
