"""Quantize a graph until its worst held-out sample holds a fidelity target, falling back layer by layer.

The loop every entry point shares (recipes with ``targets``, ``quantize_model`` with ``target_cosine``):

1. quantize the graph whole and measure it on held-out samples (never the calibration set);
2. if the worst sample's cosine is under the target, rank the quantized layers by measured sensitivity
   (the handler's ``rank_layers``: one pass of ONNX Runtime's QDQ debugger, or one quantization per layer);
3. keep the 1, 2, 4, … most sensitive layers float until the target holds, or ``max_float`` of the layers
   are float; the report names each layer kept float, its rank and why, and says when the target was missed.

Each trial lives in its own folder under ``out_dir``; the losing trials are removed.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from .handler import GraphSource, QuantizedGraph, QuantizeHandler, Samples
from .schemes import Scheme

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
    cosine = result.report.worst_cosine
    return -1.0 if math.isnan(cosine) else cosine


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
        out_dir (Path): folder for the trials (the kept one stays, in a subfolder ``trial-<k>``).
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

    def trial(k: int, extra: list[str]) -> tuple[QuantizedGraph, Path]:
        folder = out_dir / f"trial-{k}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        return handler.quantize(source, scheme, (*keep_float, *extra), calibration, holdout, folder), folder

    best, folder = trial(0, [])
    if target is None or _worst(best) >= target:
        return FallbackResult(best, folder, target is None or _worst(best) >= target, [])
    first = _worst(best)
    try:
        ranking = handler.rank_layers(
            source, scheme, keep_float, calibration, holdout, out_dir, best, progress
        )
    except ValueError as err:
        best.report.notes.append(
            f"target worst cosine {target} missed ({first:.4f}); no layer ranking: {err}"
        )
        return FallbackResult(best, folder, False, [])
    limit = max(1, int(len(ranking) * max_float))
    k, kept, met = 1, [], False
    while k <= limit:
        candidate, candidate_folder = trial(k, ranking[:k])
        log.info("%s: %d layer(s) float → worst cosine %.4f", source.name, k, _worst(candidate))
        if _worst(candidate) > _worst(best):
            shutil.rmtree(folder, ignore_errors=True)
            best, folder, kept = candidate, candidate_folder, ranking[:k]
        else:
            shutil.rmtree(candidate_folder, ignore_errors=True)
        if _worst(best) >= target:
            met = True
            break
        k = min(k * 2, limit) if k < limit else limit + 1
    report = best.report
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
