"""Accuracy-aware precision: what quantizing each graph costs on the task metrics; a budget that holds.

The reference is the float export on the same backend and data (so export numerics cancel out); a drop is
reference − quantized of each task's primary metric, in points. ``sensitivity`` quantizes one graph at a time
(the others float) and measures its drop; ``fit_max_drop`` starts from the full recipe and, while the worst
task drop exceeds the budget, gives precision back where it costs most: first the most sensitive layers of
the most sensitive graph (where the backend quantizes modules), then that whole graph, then the next.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xsam_edge.backends import runnable_backends
from xsam_edge.data.sample import Example
from xsam_edge.files import atomic_write_text
from xsam_edge.metrics.tasks import primary_metrics
from xsam_edge.model.xsam import XSam
from xsam_edge.spec.tokenizer import XSamTokenizer

from .quantize import QuantizeResult, layer_sensitivity, model_fingerprint, quantize_bundle
from .recipes import QUANT_GRAPHS, Recipe, supported_schemes
from .report import LayerScore
from .schemes import Float16, Float32, Scheme

__all__ = ["BundleScore", "FitResult", "evaluate_bundle", "fit_max_drop", "sensitivity", "task_drops"]

log = logging.getLogger(__name__)


@dataclass
class BundleScore:
    """Task metrics of one bundle on one backend, with the time the session took per request."""

    metrics: dict[str, dict[str, float]]
    seconds_per_request: float
    requests: int
    runner: str = ""  # empty: the backend's own runtime; else how it was run (``replay.REPLAY_RUNNER``)
    results: list = field(default_factory=list, repr=False, compare=False)  # per example, for a bootstrap

    @property
    def primary(self) -> dict[str, float]:
        return primary_metrics(self.metrics)


def evaluate_bundle(
    bundle: str | os.PathLike,
    backend: str,
    examples: Sequence[Example],
    progress: bool = True,
    replay_model: XSam | None = None,
) -> BundleScore:
    """Every task's metrics for ``bundle`` answered by ``EdgeSession`` on ``backend``.

    Where the backend cannot run here but its files' weights can be read (Core ML on Linux), pass the model
    the bundle was made from as ``replay_model``: the bundle's decompressed weights then run in its eager
    graphs (``replay.WeightReplay``), and the score's ``runner`` says so.

    Raises:
        RuntimeError: the backend cannot run here, and cannot be replayed (no ``replay_model``).
        ValueError: no examples; a replayed bundle not made from ``replay_model``.
    """
    from xsam_edge.metrics.evaluate import predict_all
    from xsam_edge.metrics.tasks import evaluate
    from xsam_edge.runtime.session import EdgeSession

    from .replay import REPLAY_RUNNER, WeightReplay, replayable

    here = runnable_backends()  # EdgeSession runs them on this OS (Core ML: macOS only)
    runtime, runner = None, ""
    if backend not in here:
        if replay_model is None or not replayable(backend):
            raise RuntimeError(
                f"{backend!r} bundles cannot be evaluated on this machine (runtimes here: {', '.join(here)})"
            )
        runtime, runner = WeightReplay(replay_model, backend), REPLAY_RUNNER
    if not examples:
        raise ValueError("no examples to evaluate: the dataset is empty")
    session = EdgeSession(bundle, backend, runtime=runtime)
    start = time.perf_counter()
    results = predict_all(session, list(examples), progress)
    seconds = time.perf_counter() - start
    metrics = evaluate(list(zip(examples, results, strict=True)))
    return BundleScore(metrics, seconds / len(examples), len(examples), runner, results)


def task_drops(reference: BundleScore, candidate: BundleScore) -> dict[str, float]:
    """Reference − candidate per task's primary metric, in points (positive = the candidate lost)."""
    ref, got = reference.primary, candidate.primary
    return {task: round(ref[task] - got.get(task, float("nan")), 2) for task in ref}


def _worst(drops: dict[str, float]) -> float:
    values = [v for v in drops.values() if v == v]  # NaN (a metric with no sample) is not a drop
    return max(values, default=0.0)


def _float_scheme(recipe: Recipe) -> Scheme:
    """The float scheme a graph falls back to: the recipe's default when it is float, else fp32."""
    if recipe.default.name == "fp16" and "fp16" in supported_schemes(recipe.backend):
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

    def layers(self, recipe: Recipe, graph: str) -> list[LayerScore]:
        """``graph``'s quantized modules of ``recipe``, most sensitive first (same work folder)."""
        _, scores = layer_sensitivity(
            self.model,
            self.tokenizer,
            recipe,
            graph,
            self.work,
            self.slots,
            self.progress,
            self.fingerprint,
        )
        return scores

    def score(self, recipe: Recipe, folder: Path) -> tuple[QuantizeResult, BundleScore]:
        """Quantize into ``folder`` (intermediates shared in ``work``) and evaluate the bundle.

        A backend that cannot run here (Core ML off macOS) is scored by replaying its files' weights in
        this model's eager graphs (``replay.WeightReplay``); the score's ``runner`` says so.
        """
        result = self.bundle(recipe, folder)
        score = evaluate_bundle(result.bundle, recipe.backend, self.examples, self.progress, self.model)
        return result, score


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
    """The bundle that meets the budget (or the float one), how it got there, and its scores.

    ``layers`` holds, per graph the per-layer pass looked into, its modules ranked by sensitivity
    (``LayerScore`` as dicts), most sensitive first.
    """

    result: QuantizeResult
    recipe: Recipe
    reference: BundleScore
    score: BundleScore
    drops: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    sensitivity: dict[str, Any] = field(default_factory=dict)
    layers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    folder: Path | None = None  # the search's work folder; ``fit.json`` there records every step
    requests_per_task: dict[str, int] = field(default_factory=dict)

    @property
    def coarsest_step(self) -> float:
        """Points one request can move the task with the fewest requests: about 100 / them (0: unknown)."""
        fewest = min(self.requests_per_task.values(), default=0)
        return 100.0 / fewest if fewest else 0.0

    def summary(self, max_drop: float) -> dict[str, Any]:
        """The search as plain data (``fit.json`` in the work folder): every step, both passes, the result."""
        return {
            "budget": max_drop,
            "bundle": str(self.result.bundle),
            "recipe": self.recipe.to_dict(),
            "reference": self.reference.primary,
            "final": self.score.primary,
            "scored_by": self.score.runner or "the backend's own runtime",
            "requests_per_task": self.requests_per_task,
            "coarsest_step": self.coarsest_step,
            "drops": self.drops,
            "worst": _worst(self.drops),
            "steps": self.history,
            "graph_sensitivity": self.sensitivity,
            "layer_sensitivity": self.layers,
        }


def _step_suffix(kept: Sequence[str], float_layers: dict[str, Sequence[str]]) -> str:
    """What a search step changed, appended to the recipe's name (``+float-segment+1-float-layers-llm``)."""
    parts = [f"+float-{'-'.join(kept)}"] if kept else []
    parts += [f"+{len(v)}-float-layers-{g}" for g, v in float_layers.items()]
    return "".join(parts)


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
    max_layers: int = 2,
    min_gain_db: float = 1.0,
) -> FitResult:
    """Quantize by ``recipe``, then give precision back, most sensitive first, until the budget holds.

    The graphs are visited in order of their drop alone (the graph-level sensitivity pass). Where the
    backend's runtime runs here (ExecuTorch, ONNX, OpenVINO; ``layer_sensitivity``), a graph first gets its
    most sensitive layers back in float, one more per step (at most ``max_layers``, each recovering at
    least ``min_gain_db`` of the graph's output PSNR); only when that does not meet the budget does the
    whole graph go float.

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
        max_layers (int): layers per graph the per-layer steps may keep float (0: whole graphs only).
        min_gain_db (float): a layer is tried only when keeping it float recovers this much PSNR.

    Returns:
        FitResult: the final bundle and recipe, scores, per-task drops and every step taken.

    Raises:
        ValueError: a negative budget or ``max_layers``.
        RuntimeError: the recipe's backend cannot run here and cannot be replayed. Core ML off macOS is
            replayed: its packages' decompressed weights in the model's eager graphs, fp32 arithmetic (the
            scores' ``runner`` says so; fp16 numerics need a Mac).
    """
    if max_drop < 0:
        raise ValueError(f"--max-drop is a budget in metric points and must be ≥ 0, got {max_drop}")
    if max_layers < 0:
        raise ValueError(f"--max-layers is a count of layers per graph and must be ≥ 0, got {max_layers}")
    from .replay import replayable

    if recipe.backend not in runnable_backends() and not replayable(recipe.backend):
        raise RuntimeError(
            f"an accuracy budget needs the {recipe.backend!r} runtime, which cannot run here and cannot be "
            f"replayed; runtimes here: {', '.join(runnable_backends())}"
        )
    target = Path(out)
    out = Path(work_dir) if work_dir else target.parent / f".{target.name}.fit"
    scorer = _Scorer(model, tokenizer, examples, out / "work", slots, progress)
    layered = max_layers > 0 and recipe.backend in runnable_backends()  # layers ranked in its runtime
    fit = _search(scorer, recipe, max_drop, out, target, max_layers if layered else 0, min_gain_db)
    fit.requests_per_task = dict(Counter(e.task.value for e in examples))
    if fit.coarsest_step > max_drop:
        log.warning(
            "one request moves a task's metric by up to about %.1f points (%d requests for the task with "
            "fewest), more than the %.2f-point budget: the search follows single requests; evaluate on "
            "more (--eval-data shapes:test, or your own validation set)",
            fit.coarsest_step,
            min(fit.requests_per_task.values()),
            max_drop,
        )
    atomic_write_text(out / "fit.json", json.dumps(fit.summary(max_drop), indent=1, default=str))
    return fit


def _search(
    scorer: Any, recipe: Recipe, max_drop: float, out: Path, target: Path, max_layers: int, min_gain_db: float
) -> FitResult:
    """``fit_max_drop``'s search over any scorer (``score``, ``layers``, ``bundle`` as ``_Scorer``'s)."""
    _, reference = scorer.score(_only(recipe, []), out / "float")
    history: list[dict[str, Any]] = []
    kept: list[str] = []

    def attempt(candidate: Recipe) -> tuple[BundleScore, dict[str, float]]:
        _, score = scorer.score(candidate, out / f"step-{len(history)}")
        drops = task_drops(reference, score)
        float_layers = {g: list(v) for g, v in candidate.float_layers.items()}
        history.append(
            {
                "recipe": candidate.name,
                "kept_float": list(kept),
                "float_layers": float_layers,
                "drops": drops,
                "worst": _worst(drops),
            }
        )
        log.info("kept %s float, layers %s: worst drop %.2f", kept, float_layers, _worst(drops))
        return score, drops

    current = recipe
    score, drops = attempt(current)
    report: dict[str, Any] = {}
    layer_report: dict[str, list[dict[str, Any]]] = {}
    if _worst(drops) > max_drop:
        report = _sensitivity(scorer, recipe, out / "sensitivity", reference)
        fallback = _float_scheme(recipe)
        for graph in report["graphs"]:
            base = recipe.with_schemes({g: fallback for g in kept})
            if max_layers:
                scores = scorer.layers(base, graph)
                layer_report[graph] = [dataclasses.asdict(s) for s in scores]
                picks = [s.module for s in scores if s.gain_db >= min_gain_db][:max_layers]
                for count in range(1, len(picks) + 1):
                    layers = picks[:count]
                    trial = base.with_float_layers(graph, layers, _step_suffix(kept, {graph: layers}))
                    trial_score, trial_drops = attempt(trial)
                    if _worst(trial_drops) <= max_drop:
                        current, score, drops = trial, trial_score, trial_drops
                        break
                if _worst(drops) <= max_drop:
                    break  # a few layers in float met the budget
            kept.append(graph)
            current = recipe.with_schemes({g: fallback for g in kept}, _step_suffix(kept, {}))
            score, drops = attempt(current)
            if _worst(drops) <= max_drop:
                break
    # the chosen step's bundle, re-assembled at ``target`` from the cached graph parts
    result = scorer.bundle(current, target)
    return FitResult(result, current, reference, score, drops, history, report, layer_report, out)
