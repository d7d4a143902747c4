"""Evaluate a model on a dataset: every task's metric, next to trivial baselines that never see the answer."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from tqdm import tqdm

from xsam_edge.data.sample import Example
from xsam_edge.metrics.tasks import evaluate, evaluate_baselines
from xsam_edge.spec.plan import Predictor
from xsam_edge.spec.types import SegmentationResult

log = logging.getLogger(__name__)


StepCallback = Callable[[int, int], None]
"""``(done, total)`` after each example."""


def predict_all(
    predictor: Predictor,
    examples: Sequence[Example],
    progress: bool = True,
    on_step: StepCallback | None = None,
) -> list[SegmentationResult]:
    """Run every example's request; examples of one image run back to back, so the image is encoded once.

    Args:
        predictor (Predictor): the PyTorch predictor or a bundle's ``EdgeSession``.
        examples (Sequence[Example]): the requests.
        progress (bool): a progress bar.
        on_step (StepCallback | None): called with ``(done, total)`` after each example.
    """
    order = sorted(range(len(examples)), key=lambda i: examples[i].image_id)
    results: list[SegmentationResult | None] = [None] * len(examples)
    for done, i in enumerate(tqdm(order, desc="evaluate", disable=not progress, leave=False), 1):
        results[i] = predictor.segment(examples[i].request)
        if on_step is not None:
            on_step(done, len(order))
    return results  # type: ignore[return-value]


def evaluate_model(
    predictor: Predictor,
    examples: Sequence[Example],
    progress: bool = True,
    on_step: StepCallback | None = None,
) -> dict:
    """Metrics per task for the model and for the baselines.

    Returns:
        dict: ``{"tasks": {task: {metric: value}}, "baselines": {kind: {task: {metric: value}}},
        "num_examples": int}``; values are percentages.
    """
    if not examples:
        raise ValueError("no examples to evaluate: the dataset is empty")
    results = predict_all(predictor, examples, progress, on_step)
    return {
        "tasks": evaluate(list(zip(examples, results, strict=True))),
        "baselines": evaluate_baselines(list(examples)),
        "num_examples": len(examples),
    }


def eval_table(report: dict) -> str:
    """One row per task and metric: the model, then each baseline."""
    kinds = list(report["baselines"])
    header = f"{'task':<18}{'n':>5}  {'metric':<14}{'model':>9}" + "".join(f"{k:>14}" for k in kinds)
    rows = [header]
    for task, metrics in report["tasks"].items():
        count = int(metrics.get("n", 0))
        for metric, value in metrics.items():
            if metric == "n":
                continue
            base = [report["baselines"][k].get(task, {}).get(metric) for k in kinds]
            cells = "".join(f"{b:>14.2f}" if b is not None else f"{'-':>14}" for b in base)
            rows.append(f"{task:<18}{count:>5}  {metric:<14}{value:>9.2f}{cells}")
    return "\n".join(rows)
