"""Accuracy-aware precision: what quantizing each graph costs on the task metrics; a budget that holds.

The reference is the float export on the same backend and data (so export numerics cancel out); a drop is
reference − quantized of each task's primary metric, in points. ``sensitivity`` quantizes one graph at a time
(the others float) and measures its drop; ``fit_max_drop`` starts from the full recipe and, while the worst
task drop exceeds the budget, returns the most sensitive quantized graph to float.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xsam_edge.data.sample import Example
from xsam_edge.metrics import primary_metrics
from xsam_edge.model.xsam import XSam
from xsam_edge.tokenizer import XSamTokenizer

from .quantize import QuantizeResult, model_fingerprint, quantize_bundle
from .recipes import QUANT_GRAPHS, SUPPORTED, Recipe
from .schemes import Float16, Float32, Scheme

__all__ = ["BundleScore", "FitResult", "evaluate_bundle", "fit_max_drop", "sensitivity", "task_drops"]

log = logging.getLogger(__name__)
RUNNABLE = ("onnx", "openvino", "executorch")  # backends EdgeSession runs on this machine's OS (Linux)


@dataclass
class BundleScore:
    """Task metrics of one bundle on one backend, with the time the session took per request."""

    metrics: dict[str, dict[str, float]]
    seconds_per_request: float
    requests: int

    @property
    def primary(self) -> dict[str, float]:
        return primary_metrics(self.metrics)


def evaluate_bundle(
    bundle: str | os.PathLike, backend: str, examples: Sequence[Example], progress: bool = True
) -> BundleScore:
    """Every task's metrics for ``bundle`` answered by ``EdgeSession`` on ``backend``.

    Raises:
        RuntimeError: the backend cannot run here (Core ML on Linux).
        ValueError: no examples.
    """
    from xsam_edge.evaluate import predict_all
    from xsam_edge.metrics import evaluate
    from xsam_edge.runtime.session import EdgeSession

    if backend not in RUNNABLE:
        raise RuntimeError(
            f"{backend!r} bundles cannot be evaluated on this machine (runtimes here: {', '.join(RUNNABLE)})"
        )
    if not examples:
        raise ValueError("no examples to evaluate: the dataset is empty")
    session = EdgeSession(bundle, backend)
    start = time.perf_counter()
    results = predict_all(session, list(examples), progress)
    seconds = time.perf_counter() - start
    metrics = evaluate(list(zip(examples, results, strict=True)))
    return BundleScore(metrics, seconds / len(examples), len(examples))


def task_drops(reference: BundleScore, candidate: BundleScore) -> dict[str, float]:
    """Reference − candidate per task's primary metric, in points (positive = the candidate lost)."""
    ref, got = reference.primary, candidate.primary
    return {task: round(ref[task] - got.get(task, float("nan")), 2) for task in ref}


def _worst(drops: dict[str, float]) -> float:
    values = [v for v in drops.values() if v == v]  # NaN (a metric with no sample) is not a drop
    return max(values, default=0.0)


def _float_scheme(recipe: Recipe) -> Scheme:
    """The float scheme a graph falls back to: the recipe's default when it is float, else fp32."""
    if recipe.default.name == "fp16" and "fp16" in SUPPORTED[recipe.backend]:
        return Float16()
    return Float32()


def _only(recipe: Recipe, keep: Sequence[str]) -> Recipe:
    """``recipe`` with every graph outside ``keep`` in float."""
    fallback = _float_scheme(recipe)
    overrides = {g: fallback for g in QUANT_GRAPHS if g not in keep}
    return recipe.with_schemes(overrides, suffix="+only-" + "-".join(keep) if keep else "+float")


def _quantized_graphs(recipe: Recipe) -> list[str]:
    return [g for g in QUANT_GRAPHS if recipe.scheme_for(g).name not in ("fp32", "fp16")]


@dataclass
class _Scorer:
    """Quantize and evaluate with all but the recipe fixed: one model, one data set, one work folder.

    The model's weight fingerprint is taken once here, not once per bundle of a budget search.
    """

    model: XSam
    tokenizer: XSamTokenizer
    examples: Sequence[Example]
    work: Path
    slots: Any
    progress: bool
    fingerprint: str = ""

    def __post_init__(self) -> None:
        self.fingerprint = self.fingerprint or model_fingerprint(self.model)

    def bundle(self, recipe: Recipe, folder: Path) -> QuantizeResult:
        return quantize_bundle(
            self.model,
            self.tokenizer,
            recipe,
            folder,
            work_dir=self.work,
            slots=self.slots,
            progress=self.progress,
            fingerprint=self.fingerprint,
        )

    def score(self, recipe: Recipe, folder: Path) -> tuple[QuantizeResult, BundleScore]:
        """Quantize into ``folder`` (intermediates shared in ``work``) and evaluate the bundle."""
        result = self.bundle(recipe, folder)
        return result, evaluate_bundle(result.bundle, recipe.backend, self.examples, self.progress)


def _sensitivity(scorer: _Scorer, recipe: Recipe, out: Path, reference: BundleScore) -> dict[str, Any]:
    graphs = {}
    for graph in _quantized_graphs(recipe):
        _, score = scorer.score(_only(recipe, [graph]), out / graph)
        drops = task_drops(reference, score)
        graphs[graph] = {"scheme": recipe.scheme_for(graph).label(), "drops": drops, "worst": _worst(drops)}
    ranked = dict(sorted(graphs.items(), key=lambda kv: -kv[1]["worst"]))
    return {"reference": reference.primary, "graphs": ranked}


def sensitivity(
    model: XSam,
    tokenizer: XSamTokenizer,
    recipe: Recipe,
    examples: Sequence[Example],
    out_dir: str | os.PathLike,
    slots: Any = None,
    progress: bool = True,
    work_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The drop each quantized graph of ``recipe`` causes alone (the other graphs float).

    Returns:
        dict[str, Any]: ``reference`` (the float bundle's primary metrics), ``graphs`` (graph → ``drops`` per
        task, ``worst`` drop, scheme) sorted most sensitive first.
    """
    out = Path(out_dir)
    scorer = _Scorer(
        model, tokenizer, examples, Path(work_dir) if work_dir else out / "work", slots, progress
    )
    _, reference = scorer.score(_only(recipe, []), out / "float")
    return _sensitivity(scorer, recipe, out, reference)


@dataclass
class FitResult:
    """The bundle that meets the budget (or the float one), how it got there, and its scores."""

    result: QuantizeResult
    recipe: Recipe
    reference: BundleScore
    score: BundleScore
    drops: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    sensitivity: dict[str, Any] = field(default_factory=dict)


def fit_max_drop(
    model: XSam,
    tokenizer: XSamTokenizer,
    recipe: Recipe,
    examples: Sequence[Example],
    max_drop: float,
    out: str | os.PathLike,
    work_dir: str | os.PathLike | None = None,
    slots: Any = None,
    progress: bool = True,
) -> FitResult:
    """Quantize by ``recipe``, then keep graphs float, most sensitive first, until every task drops ≤ budget.

    Args:
        model (XSam): the float model.
        tokenizer (XSamTokenizer): its tokenizer.
        recipe (Recipe): the starting recipe.
        examples (Sequence[Example]): the evaluation requests (a validation split, not the calibration one).
        max_drop (float): the budget, in points of each task's primary metric.
        out (str | os.PathLike): the final bundle (replaced atomically).
        work_dir (str | os.PathLike | None): the bundles of every step and the shared intermediates
            (default ``.<out>.fit`` beside ``out``); a rerun reuses them.
        slots (SlotConfig | None): fixed slot sizes.
        progress (bool): progress bars.

    Returns:
        FitResult: the final bundle and recipe, scores, per-task drops and every step taken.

    Raises:
        ValueError: a negative budget.
        RuntimeError: the recipe's backend cannot run here.
    """
    if max_drop < 0:
        raise ValueError(f"--max-drop is a budget in metric points and must be ≥ 0, got {max_drop}")
    if recipe.backend not in RUNNABLE:
        raise RuntimeError(
            f"an accuracy budget needs the {recipe.backend!r} runtime, which cannot run here; "
            f"runtimes here: {', '.join(RUNNABLE)}"
        )
    target = Path(out)
    out = Path(work_dir) if work_dir else target.parent / f".{target.name}.fit"
    scorer = _Scorer(model, tokenizer, examples, out / "work", slots, progress)
    _, reference = scorer.score(_only(recipe, []), out / "float")
    current = recipe
    result, score = scorer.score(current, out / "step-0")
    drops = task_drops(reference, score)
    history = [{"recipe": current.name, "kept_float": [], "drops": drops, "worst": _worst(drops)}]
    report: dict[str, Any] = {}
    kept: list[str] = []
    if _worst(drops) > max_drop:
        report = _sensitivity(scorer, recipe, out / "sensitivity", reference)
        fallback = _float_scheme(recipe)
        for graph in report["graphs"]:
            kept.append(graph)
            current = recipe.with_schemes({g: fallback for g in kept}, suffix=f"+float-{'-'.join(kept)}")
            result, score = scorer.score(current, out / f"step-{len(kept)}")
            drops = task_drops(reference, score)
            history.append(
                {"recipe": current.name, "kept_float": list(kept), "drops": drops, "worst": _worst(drops)}
            )
            log.info("kept %s float: worst drop %.2f", kept, _worst(drops))
            if _worst(drops) <= max_drop:
                break
    # the chosen step's bundle, re-assembled at ``out`` from the cached graph parts
    result = scorer.bundle(current, target)
    return FitResult(result, current, reference, score, drops, history, report)
