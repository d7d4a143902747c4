"""Quantize a graph until its worst held-out sample holds a fidelity target, falling back layer by layer.

The loop every entry point shares (recipes with ``targets``, ``quantize_model`` with ``target_cosine``):

1. quantize the graph whole and measure it on held-out samples (never the calibration set); SmoothQuant's
   ``auto`` is decided here, once, and the later steps use its choice;
2. if the worst sample's cosine is under the target, rank the quantized layers by measured sensitivity
   (the handler's ``rank_layers``: one pass of ONNX Runtime's QDQ debugger, or one quantization per layer);
3. keep the 1, 2, 4, … most sensitive layers float until the target holds, or ``max_float`` of the layers
   are float; the report names each layer kept float, its rank and why, and says when the target was missed.

The whole-graph trial is written into ``out_dir`` itself; later trials into hidden subfolders, the kept one
moved up into ``out_dir`` at the end, so callers find the files where a plain quantization puts them.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .handler import SMOOTH_QUANT_AUTO, GraphSource, QuantizedGraph, QuantizeHandler, Samples
from .schemes import Int8Static, Scheme

__all__ = ["FallbackResult", "quantize_to_target"]

log = logging.getLogger(__name__)


@dataclass
class FallbackResult:
    """The kept trial, whether it met the target, and the layers it keeps float (most sensitive first)."""

    result: QuantizedGraph
    folder: Path
    target_met: bool
    float_layers: list[str]


def _worst(result: QuantizedGraph) -> float:
    return result.report.closeness[0]


def _decided(scheme: Scheme, whole: QuantizedGraph) -> tuple[Scheme, str | None]:
    """``smooth_quant="auto"`` as the whole-graph trial resolved it, and that trial's note.

    Each trial would otherwise quantize both ways again: twice the time of every fallback step.
    """
    if not (isinstance(scheme, Int8Static) and scheme.smooth_quant == "auto"):
        return scheme, None
    note = next((n for n in whole.report.notes if n.startswith(SMOOTH_QUANT_AUTO)), None)
    if note is None:
        return scheme, None
    chosen = "on" if note.startswith(f"{SMOOTH_QUANT_AUTO}on") else "off"
    return dataclasses.replace(scheme, smooth_quant=chosen), f"{note}; decided on the whole graph"


def _remove(result: QuantizedGraph, folder: Path, out_dir: Path) -> None:
    """Delete a losing trial: its subfolder, or (the whole-graph trial in ``out_dir``) its files."""
    if folder != out_dir:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for path in (Path(f) for files in result.files.values() for f in files):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _move_up(result: QuantizedGraph, folder: Path, out_dir: Path) -> QuantizedGraph:
    """The kept trial's files moved from its subfolder into ``out_dir``, every path in the result updated."""
    moved = {}
    for entry in folder.iterdir():
        target = out_dir / entry.name
        shutil.move(str(entry), target)
        moved[entry.resolve()] = target
    shutil.rmtree(folder, ignore_errors=True)

    def where(path: Any) -> Path:
        return moved.get(Path(path).resolve(), Path(path))

    files = {name: [where(f) for f in fs] for name, fs in result.files.items()}
    exported = result.exported
    if exported is not None:
        exported = dataclasses.replace(exported, files=[where(f) for f in exported.files])
    result.report.files = [str(where(f)) for f in result.report.files]
    return QuantizedGraph(files, result.report, exported)


def quantize_to_target(
    handler: QuantizeHandler,
    source: GraphSource,
    scheme: Scheme,
    keep_float: tuple[str, ...],
    calibration: Samples,
    holdout: Samples,
    out_dir: Path,
    target: float | None,
    max_float: float = 0.25,
    progress: bool = False,
) -> FallbackResult:
    """Quantize ``source`` by ``scheme``; with a ``target``, fall back layers until the worst cosine holds it.

    Args:
        handler (QuantizeHandler): the backend's handler.
        source (GraphSource): the graph.
        scheme (Scheme): the scheme.
        keep_float (tuple[str, ...]): patterns kept float from the start.
        calibration (Samples): calibration samples.
        holdout (Samples): held-out samples the target is measured on (required with a target).
        out_dir (Path): where the kept quantization's files end up (trials in hidden subfolders meanwhile).
        target (float | None): the worst held-out sample's cosine to reach; ``None``: quantize once.
        max_float (float): the largest fraction of the ranked layers the loop may keep float.
        progress (bool): progress bars for the ranking pass.

    Raises:
        ValueError: a target without held-out samples, or a target outside (0, 1].
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if target is not None:
        if not 0 < target <= 1:
            raise ValueError(f"a fidelity target is a cosine in (0, 1], got {target!r}")
        if not any(holdout.values()):
            raise ValueError(
                "a fidelity target needs held-out samples (kept out of calibration) to measure on"
            )

    def trial(k: int, extra: list[str], scheme: Scheme) -> tuple[QuantizedGraph, Path]:
        folder = out_dir / f".trial-{k}" if k else out_dir
        if k:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
        return handler.quantize(source, scheme, (*keep_float, *extra), calibration, holdout, folder), folder

    best, folder = trial(0, [], scheme)
    if target is None or _worst(best) >= target:
        return FallbackResult(best, folder, target is None or _worst(best) >= target, [])
    first = _worst(best)
    trial_scheme, smooth_note = _decided(scheme, best)
    try:
        ranking = handler.rank_layers(
            source, trial_scheme, keep_float, calibration, holdout, out_dir, best, progress
        )
    except ValueError as err:
        missed = f"target worst cosine {target} MISSED ({first:.4f})"
        best.report.notes.append(f"{missed}; no layer ranking: {err}")
        return FallbackResult(best, folder, False, [])
    limit = max(1, int(len(ranking) * max_float))
    k, kept, met = 1, [], False
    while k <= limit:
        candidate, candidate_folder = trial(k, ranking[:k], trial_scheme)
        log.info("%s: %d layer(s) float → worst cosine %.4f", source.name, k, _worst(candidate))
        if _worst(candidate) > _worst(best):
            _remove(best, folder, out_dir)
            best, folder, kept = candidate, candidate_folder, ranking[:k]
        else:
            _remove(candidate, candidate_folder, out_dir)
        if _worst(best) >= target:
            met = True
            break
        k = min(k * 2, limit) if k < limit else limit + 1
    if folder != out_dir:
        best = _move_up(best, folder, out_dir)
        folder = out_dir
    report = best.report
    if kept and smooth_note:
        report.notes.insert(0, smooth_note)
    for rank, layer in enumerate(kept, 1):
        why = f"fallback: sensitivity rank {rank} of {len(ranking)}, float to reach worst cosine {target}"
        tag = f"keep_float {layer!r}"  # how handlers list a keep-float match: say why instead
        hits = [i for i, entry in enumerate(report.kept_float) if tag in entry]
        for i in hits:
            report.kept_float[i] = report.kept_float[i].replace(tag, why)
        if not hits:
            report.kept_float.append(f"{layer}: {why}")
    verdict = "reached" if met else "MISSED"
    report.notes.append(
        f"target worst cosine {target} {verdict}: {first:.4f} whole → {_worst(best):.4f} with {len(kept)} of "
        f"{len(ranking)} ranked layer(s) float"
    )
    return FallbackResult(best, folder, met, kept)
