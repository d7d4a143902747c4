"""Quantize a model into a bundle by a recipe: float export → calibration → one handler per graph → bundle.

The stage sits on top of export: it exports the float graphs (``export_bundle``), records calibration inputs
by running requests through a float session, hands each graph to its backend's handler, and packs the result
as a bundle with the recipe and every handler report in the manifest. Every intermediate lives in a work
folder keyed by the model's weight fingerprint and the code's (``code_digest``), so a killed run resumes and
the sensitivity pass can mix float and quantized graphs without quantizing anything twice.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from xsam_edge.backends import get_backend
from xsam_edge.files import atomic_write_text, staged_dir
from xsam_edge.model.checkpoint import model_fingerprint
from xsam_edge.model.xsam import XSam
from xsam_edge.spec.bundle import (
    GOLDEN_DIR,
    TOKENIZER_FILE,
    GraphEntry,
    Manifest,
    load_bundle,
    seal_bundle,
)
from xsam_edge.spec.tokenizer import XSamTokenizer

from .calibration import CalibrationSet, record_calibration
from .fallback import quantize_to_target
from .handler import GraphSource, QuantizeHandler, cannot_rank
from .recipes import QUANT_GRAPHS, Recipe
from .report import GraphQuantReport, LayerScore, files_bytes
from .schemes import Scheme

__all__ = [
    "GraphPart",
    "QuantizeResult",
    "assemble_bundle",
    "graph_entries",
    "layer_sensitivity",
    "model_fingerprint",
    "prepare",
    "quantize_bundle",
]

log = logging.getLogger(__name__)


@dataclass
class GraphPart:
    """One recipe graph, quantized: its manifest entries (files relative to ``root``) and the report."""

    root: Path
    entries: list[GraphEntry]
    report: GraphQuantReport


@dataclass
class QuantizeResult:
    """What ``quantize_bundle`` made."""

    bundle: Path
    recipe: Recipe
    reports: list[GraphQuantReport]
    fp32_bundle: Path
    work_dir: Path


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _handler(backend: str) -> QuantizeHandler:
    return get_backend(backend).quantize_handler()


def graph_entries(manifest: Manifest, backend: str, graph: str) -> list[GraphEntry]:
    """A bundle's entries a recipe graph covers (``llm`` covers every LLM entry of the backend)."""
    entries = [
        e
        for e in manifest.graphs
        if e.backend == backend and (e.name == graph or (graph == "llm" and e.name.startswith("llm")))
    ]
    if not entries:
        raise RuntimeError(f"the bundle has no {backend} graph for {graph!r}")
    return entries


# -- float export and calibration (cached in the work folder) ---------------------------------------------
def _float_bundle(
    model: XSam, tokenizer: XSamTokenizer, backends: list[str], work: Path, slots: Any, progress: bool
) -> Manifest:
    from xsam_edge.export.to_bundle import export_bundle

    path = work / "fp32"
    kept = None
    if (path / "manifest.json").is_file():
        kept = load_bundle(path)
        if set(backends) <= set(kept.backends):
            return kept
        # another recipe exported other backends here: copy their graphs, export only the missing ones
        backends = sorted(set(backends) - set(kept.backends))
    # each graph in the form its handler quantizes (Core ML: two single-function LLM packages, which
    # coremltools.optimize takes; the pack step merges them once quantized)
    options = {b: dict(_handler(b).float_export_options) for b in backends}
    export_bundle(
        model,
        tokenizer,
        path,
        backends=backends,
        slots=slots,
        progress=progress,
        options={b: o for b, o in options.items() if o},
        keep=kept,
    )
    return load_bundle(path)


def _calibration(recipe: Recipe, fp32: Path, work: Path, progress: bool) -> CalibrationSet:
    from xsam_edge.data.registry import load_dataset

    spec = recipe.calibration
    kv_caches = recipe.backend == "onnx"  # the only backend whose LLM graphs take the caches as inputs
    key = _key(spec.data, spec.images) if kv_caches else _key(spec.data, spec.images, "no-kv")
    path = work / f"calibration-{key}.npz"
    if path.is_file():
        return CalibrationSet.load(path)
    examples = load_dataset(spec.data, limit=spec.images)
    if not examples:
        raise ValueError(f"empty calibration set: {spec.data!r} gave no requests; give more images or data")
    calibration = record_calibration(fp32, examples, progress=progress, kv_caches=kv_caches)
    calibration.save(path)
    return calibration


# -- one graph --------------------------------------------------------------------------------------------
def _quantize_graph(
    model: XSam,
    fp32: Manifest,
    recipe: Recipe,
    graph: str,
    scheme: Scheme,
    calibration: CalibrationSet | None,
    slots: Any,
    work: Path,
) -> GraphPart:
    """Quantize (or copy, for fp32) one recipe graph into ``work/graphs/…``; reuse a finished one."""
    backend = recipe.backend
    keep_float = recipe.keep_float_for(graph)
    pack = get_backend(backend).load_pack()  # a backend's repacking after quantization (Core ML's LLM)
    key = _key(scheme.to_dict(), keep_float, "packed" if pack else "", recipe.targets.get(graph))
    folder = work / "graphs" / backend / f"{graph}-{scheme.label()}-{key}"
    done = folder / "part.json"
    if done.is_file():
        data = json.loads(done.read_text())
        return GraphPart(
            folder,
            [GraphEntry(**e) for e in data["entries"]],
            GraphQuantReport.from_dict(data["report"]),
        )
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    float_entries = graph_entries(fp32, backend, graph)
    fp32_files = {e.name: [fp32.path(f) for f in e.files] for e in float_entries}
    calib, holdout = calibration.split() if calibration is not None else ({}, {})
    start = time.perf_counter()

    if scheme.name == "fp32":  # nothing to quantize: the float files, as they are
        entries = []
        for e in float_entries:
            files = [_copy(fp32.path(f), folder) for f in e.files]
            entries.append(dataclasses.replace(e, files=[f.name for f in files]))
        report = GraphQuantReport(graph, backend, "fp32", [f for e in entries for f in e.files])
        report.bytes_fp32 = report.bytes_quant = files_bytes([folder / f for f in report.files])
    else:
        source = GraphSource(graph, files=fp32_files, model=model, slots=slots)
        target = recipe.targets.get(graph)
        fit = quantize_to_target(
            _handler(backend), source, scheme, keep_float, calib, holdout, folder, target
        )
        result, report = fit.result, fit.result.report
        if result.exported is not None:  # the handler lowered the graph itself (ExecuTorch)
            from xsam_edge.export.to_bundle import graph_entry

            entries = [graph_entry(result.exported, folder, precision=scheme.label())]
        else:
            entries = [
                dataclasses.replace(
                    e,
                    files=[
                        str(Path(f).resolve().relative_to(folder.resolve())) for f in result.files[e.name]
                    ],
                    precision=scheme.label(),
                    parity=[],
                )
                for e in float_entries
            ]
    report.seconds = report.seconds or time.perf_counter() - start
    report.bytes_fp32 = report.bytes_fp32 or files_bytes([f for fs in fp32_files.values() for f in fs])
    if pack is not None:
        packed = pack(entries, folder)
        if packed != entries:  # the float graphs packed alike, so the size compares one shipped form with one
            entries, report.bytes_fp32 = packed, _packed_float_bytes(pack, float_entries, fp32, folder)
            report.bytes_quant = files_bytes([folder / f for e in entries for f in e.files])
    report.files = [f for e in entries for f in e.files]
    atomic_write_text(
        done,
        json.dumps({"entries": [dataclasses.asdict(e) for e in entries], "report": report.to_dict()}),
    )
    return GraphPart(folder, entries, report)


def _packed_float_bytes(pack: Any, float_entries: list[GraphEntry], fp32: Manifest, folder: Path) -> int:
    """Bytes of the float graphs after the backend's pack step (Core ML: the two LLM packages merged)."""
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        copies = [
            dataclasses.replace(e, files=[_copy(fp32.path(f), Path(tmp)).name for f in e.files])
            for e in float_entries
        ]
        return files_bytes([Path(tmp) / f for e in pack(copies, Path(tmp)) for f in e.files])


def _copy(src: Path, folder: Path) -> Path:
    target = folder / src.name
    if src.is_dir():
        shutil.copytree(src, target)
    else:
        shutil.copy2(src, target)
    return target


# -- the bundle -------------------------------------------------------------------------------------------
def _float_macs(fp32: Manifest, entry: GraphEntry) -> int | None:
    same = [g for g in fp32.graphs if g.name == entry.name]
    return same[0].macs if same else None


def assemble_bundle(fp32: Manifest, recipe: Recipe, parts: Mapping[str, GraphPart], out: str | Path) -> Path:
    """Write the bundle ``out``: the quantized graph parts, the float bundle's tokenizer and golden vectors.

    The golden vectors stay those of the float PyTorch model, so a device run of this bundle measures what
    quantization lost.
    """
    target = Path(out).resolve()
    with staged_dir(target) as staging:
        backend_dir = staging / recipe.backend
        backend_dir.mkdir()
        entries = []
        for graph in QUANT_GRAPHS:
            part = parts[graph]
            for entry in part.entries:
                files = []
                for f in entry.files:
                    _copy(part.root / f, backend_dir)
                    files.append(f"{recipe.backend}/{Path(f).name}")
                # the MACs of a call do not change with precision: the float export counted them
                macs = entry.macs if entry.macs is not None else _float_macs(fp32, entry)
                entries.append(dataclasses.replace(entry, files=files, macs=macs))
        entries = _share_tied_table(recipe.backend, entries, staging, parts)
        shutil.copy2(fp32.path(TOKENIZER_FILE), staging / TOKENIZER_FILE)
        if fp32.golden:
            shutil.copytree(fp32.path(GOLDEN_DIR), staging / GOLDEN_DIR)
        manifest = dataclasses.replace(
            fp32,
            graphs=entries,
            files={},
            quantization={
                "recipe": recipe.to_dict(),
                "reports": [parts[g].report.to_dict() for g in QUANT_GRAPHS],
            },
            root=None,
            sealed=False,
        )
        seal_bundle(staging, manifest)
    return target


def _share_tied_table(
    backend: str, entries: list[GraphEntry], staging: Path, parts: Mapping[str, GraphPart]
) -> list[GraphEntry]:
    """The backend's pack over the assembled bundle, where ``embed`` and the LLM part meet.

    Each part was packed alone, so a tied table (``embed``'s lookup, the LLM's head) that both parts hold
    byte for byte (float, fp16, or quantized alike) was stored in each: the pack stores it once.
    """
    info = get_backend(backend)
    pack = info.load_pack()
    if pack is None or "tied_embed" not in info.pack_options:
        return entries
    before = {e.name: e.files for e in entries}
    packed = pack(entries, staging, tied_embed=True)
    llm_files = {f for e in packed if e.name.startswith("llm") for f in e.files}
    for entry in packed:
        if entry.name == "embed" and entry.files != before["embed"]:
            report = parts["embed"].report
            report.bytes_quant = files_bytes([staging / f for f in entry.files if f not in llm_files])
            report.notes.append(
                f"its table is the LLM's tied head, stored once in {entry.files[-1]} (counted with the LLM)"
            )
    return packed


@functools.cache
def code_digest() -> str:
    """A digest of this package's Python sources: intermediates from other code are not reused.

    A graph part's cache key names its scheme and settings, not the code that quantized it: after an upgrade
    (or an edit) the same work folder would hand back parts the new code would not make.
    """
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def _work_folder(model: XSam, work_dir: Path, slots: Any, fingerprint: str | None) -> Path:
    """The intermediates of one model, slots and code version (float export, calibration, graph parts)."""
    fingerprint = fingerprint or model_fingerprint(model)
    key = _key(dataclasses.asdict(slots), code_digest())
    work = work_dir / f"{model.config.name}-{fingerprint}-{key}"
    work.mkdir(parents=True, exist_ok=True)
    return work


def _prepared(
    model: XSam,
    tokenizer: XSamTokenizer,
    recipe: Recipe,
    work_dir: Path,
    slots: Any,
    progress: bool,
    fingerprint: str | None,
    calibrate: bool = True,
) -> tuple[Path, Any, Manifest, CalibrationSet | None]:
    """What every entry point of the stage starts from, cached in the work folder.

    Returns the work folder, the slots, the float bundle, and the calibration set when the recipe needs one
    and ``calibrate`` is set (else ``None``).
    """
    from xsam_edge.export.graphs import SlotConfig

    slots = slots or SlotConfig()
    work = _work_folder(model, work_dir, slots, fingerprint)
    backends = sorted({recipe.backend} | ({"onnx"} if recipe.calibrated else set()))
    with torch.no_grad():
        fp32 = _float_bundle(model.eval(), tokenizer, backends, work, slots, progress)
        calibrated = recipe.calibrated and calibrate
        calibration = _calibration(recipe, fp32.root, work, progress) if calibrated else None
    return work, slots, fp32, calibration


def prepare(
    model: XSam,
    tokenizer: XSamTokenizer,
    recipe: Recipe,
    work_dir: str | os.PathLike,
    slots: Any = None,
    progress: bool = True,
    fingerprint: str | None = None,
    calibrate: bool = True,
) -> Path:
    """Export the float bundle and record calibration for ``recipe`` into its work folder; quantize nothing.

    A later ``quantize_bundle`` with the same ``work_dir``, ``slots`` and ``fingerprint`` finds both, and on
    backends whose quantizer works on files (ONNX, OpenVINO, Core ML) never touches the weights again: it can
    run in another process with the model built on the meta device. That is how a full-size model is quantized
    on a machine that cannot hold the model, its calibration and the quantizer's copies at once. With
    ``calibrate=False`` only the float export is made; a second call with the model on the meta device then
    records calibration while only the float sessions are in memory.

    Returns:
        Path: the work folder.
    """
    return _prepared(model, tokenizer, recipe, Path(work_dir), slots, progress, fingerprint, calibrate)[0]


def quantize_bundle(
    model: XSam,
    tokenizer: XSamTokenizer,
    recipe: Recipe,
    out: str | os.PathLike,
    work_dir: str | os.PathLike | None = None,
    slots: Any = None,
    progress: bool = True,
    fingerprint: str | None = None,
) -> QuantizeResult:
    """Export ``model`` with ``recipe`` into the bundle ``out`` (resumable through ``work_dir``).

    Args:
        model (XSam): the float model.
        tokenizer (XSamTokenizer): its tokenizer.
        recipe (Recipe): the recipe (validated when built).
        out (str | os.PathLike): the bundle folder (replaced atomically).
        work_dir (str | os.PathLike | None): intermediates (default: ``.<out>.work`` beside ``out``); a
            folder per model fingerprint, reused by later runs.
        slots (SlotConfig | None): fixed slot sizes (default ``SlotConfig()``).
        progress (bool): progress bars.
        fingerprint (str | None): ``model_fingerprint(model)`` when the caller already has it (hashing a
            full-size model's weights takes seconds; a budget search quantizes the same model many times).

    Returns:
        QuantizeResult: the bundle, the recipe and one report per graph.

    Raises:
        ValueError: the calibration data spec is wrong or gives no requests (checked before any export).
        FileNotFoundError: a calibration data path does not exist.
    """
    from xsam_edge.data.registry import parse_spec

    if recipe.calibrated:
        parse_spec(recipe.calibration.data)  # a bad spec fails here, before any export
    out = Path(out)
    work_dir = Path(work_dir) if work_dir else out.parent / f".{out.name}.work"
    model = model.eval()
    work, slots, fp32, calibration = _prepared(
        model, tokenizer, recipe, work_dir, slots, progress, fingerprint
    )
    parts: dict[str, GraphPart] = {}
    bar = tqdm(QUANT_GRAPHS, desc=f"quantize {recipe.name}", disable=not progress)
    with torch.no_grad():
        for graph in bar:
            scheme = recipe.scheme_for(graph)
            bar.set_postfix_str(f"{graph}: {scheme.label()}")
            parts[graph] = _quantize_graph(model, fp32, recipe, graph, scheme, calibration, slots, work)
    bundle = assemble_bundle(fp32, recipe, parts, out)
    return QuantizeResult(bundle, recipe, [parts[g].report for g in QUANT_GRAPHS], fp32.root, work)


def layer_sensitivity(
    model: XSam,
    tokenizer: XSamTokenizer,
    recipe: Recipe,
    graph: str,
    work_dir: str | os.PathLike,
    slots: Any = None,
    progress: bool = True,
    fingerprint: str | None = None,
) -> tuple[dict[str, float], list[LayerScore]]:
    """Rank the quantized layers of one graph of ``recipe`` by how much error each one causes.

    Uses the same cached float export and calibration set as ``quantize_bundle`` with this ``work_dir``.
    ExecuTorch ranks modules in PyTorch (the backend handler's ``layer_sensitivity``); ONNX and OpenVINO
    quantize the float file once as a whole and once per quantized op with that op alone kept float, the
    recipe's own scheme each time, and compare the outputs on the held-out samples in their runtime.

    Returns:
        tuple[dict[str, float], list[LayerScore]]: the whole graph's PSNR per output, and the layers, most
        sensitive (largest mean PSNR gain when kept float) first; each name is a ``float_layers`` entry.

    Raises:
        ValueError: a backend that cannot run here (Core ML), or the graph's scheme is float.
    """
    if not get_backend(recipe.backend).runs_here():
        raise cannot_rank(recipe.backend)
    scheme = recipe.scheme_for(graph)
    if scheme.name in ("fp32", "fp16"):
        raise ValueError(f"{graph} is {scheme.label()} in recipe {recipe.name!r}: it has no quantized layers")
    handler = _handler(recipe.backend)
    model = model.eval()
    work, slots, fp32, calibration = _prepared(
        model, tokenizer, recipe, Path(work_dir), slots, progress, fingerprint
    )
    calib, holdout = calibration.split() if calibration is not None else ({}, {})
    fp32_files = {e.name: [fp32.path(f) for f in e.files] for e in graph_entries(fp32, recipe.backend, graph)}
    source = GraphSource(graph, files=fp32_files, model=model, slots=slots)
    return handler.layer_sensitivity(
        source, scheme, recipe.keep_float_for(graph), calib, holdout, work, progress
    )
