"""Paired bootstrap over test images: is model B really ahead of model A on a task, or within the noise?

Why: students, quantized bundles and ablation rows differ from each other by a point or two on 256 test
images, and instance AP on a weak teacher is near 6. A one-point gap read off a table can be luck of the
split. Resampling images (every task's example of a drawn image comes with it, for both models at once)
and rescoring gives the spread of B − A that the test set alone explains (Efron & Tibshirani's paired
bootstrap, as used for MT and detection ablations).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from xsam_edge.data.sample import Example
from xsam_edge.metrics import evaluate, primary_metrics
from xsam_edge.types import SegmentationResult


@dataclasses.dataclass(frozen=True)
class Difference:
    """One task's primary metric for A and B on the full set, and the bootstrap of B − A.

    ``low`` and ``high`` bound the central ``level`` interval of B − A over resamples; ``b_ahead`` is the
    share of resamples in which B scored above A (near 1: B ahead beyond the split's noise; near 0.5: a tie).
    ``share_low`` and ``share_high`` bound B as a percentage of A the same way: with A a teacher, whether a
    student keeps 95 % of it is a claim about ``share_low``, not the point estimate.
    """

    a: float
    b: float
    delta: float
    low: float
    high: float
    b_ahead: float
    share_low: float
    share_high: float

    @property
    def verdict(self) -> str:
        """``B`` or ``A`` when the interval excludes 0, ``tie`` otherwise."""
        if self.low > 0:
            return "B"
        if self.high < 0:
            return "A"
        return "tie"


def paired_bootstrap(
    examples: Sequence[Example],
    results_a: Sequence[SegmentationResult],
    results_b: Sequence[SegmentationResult],
    resamples: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Difference]:
    """Bootstrap B − A per task's primary metric, resampling whole images with replacement.

    Args:
        examples: the evaluated examples.
        results_a: model A's answer to each example, in order.
        results_b: model B's answer to each example, in order.
        resamples: bootstrap draws; 200 gives the 95 % interval's ends to about ±0.1 of a point here.
        level: the central interval's coverage, in (0, 1).
        seed: the draws' seed, so a table can be reproduced.

    Raises:
        ValueError: the lists differ in length, are empty, or ``resamples`` / ``level`` are out of range.
    """
    if not len(examples) == len(results_a) == len(results_b):
        raise ValueError(
            f"{len(examples)} examples but {len(results_a)} results for A and {len(results_b)} for B: "
            "score both models on the same examples"
        )
    if not examples:
        raise ValueError("no examples to compare: the dataset is empty")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"resamples must be >= 1 and level in (0, 1), got {resamples} and {level}")
    by_image: dict[object, list[int]] = {}
    for i, example in enumerate(examples):
        by_image.setdefault(example.image_id, []).append(i)
    images = list(by_image.values())

    def score(rows: list[int]) -> tuple[dict[str, float], dict[str, float]]:
        a = primary_metrics(evaluate([(examples[i], results_a[i]) for i in rows]))
        b = primary_metrics(evaluate([(examples[i], results_b[i]) for i in rows]))
        return a, b

    full_a, full_b = score([i for rows in images for i in rows])
    rng = np.random.default_rng(seed)
    drawn_scores: dict[str, list[tuple[float, float]]] = {task: [] for task in full_a}
    for _ in range(resamples):
        drawn = rng.integers(0, len(images), len(images))
        a, b = score([i for k in drawn for i in images[k]])
        for task, values in drawn_scores.items():
            if task in a and task in b and np.isfinite(a[task]) and np.isfinite(b[task]):
                values.append((a[task], b[task]))
    tail = 100 * (1 - level) / 2
    out = {}
    for task, values in drawn_scores.items():
        pairs = np.asarray(values) if values else np.full((1, 2), np.nan)
        spread = pairs[:, 1] - pairs[:, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            share = 100 * pairs[:, 1] / pairs[:, 0]
        share = share[np.isfinite(share)]  # a draw where A scored 0 has no share
        share_low, share_high = np.percentile(share, [tail, 100 - tail]) if len(share) else (np.nan, np.nan)
        out[task] = Difference(
            a=full_a[task],
            b=full_b[task],
            delta=round(full_b[task] - full_a[task], 2),
            low=round(float(np.percentile(spread, tail)), 2),
            high=round(float(np.percentile(spread, 100 - tail)), 2),
            b_ahead=round(float(np.mean(spread > 0)), 3),
            share_low=round(float(share_low), 1),
            share_high=round(float(share_high), 1),
        )
    return out
