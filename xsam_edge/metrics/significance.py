"""Paired bootstrap over test images: is model B really ahead of model A on a task, or within the noise?

Why: students, quantized bundles and ablation rows differ from each other by a point or two on 256 test
images, and instance AP on a weak teacher is near 6. A one-point gap read off a table can be luck of the
split. Resampling images (every task's example of a drawn image comes with it, for both models at once)
and rescoring gives the spread of B − A that the test set alone explains (Efron & Tibshirani's paired
bootstrap, as used for MT and detection ablations).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from xsam_edge.data.sample import Example
from xsam_edge.metrics.tasks import Scorer, primary_metrics
from xsam_edge.spec.types import SegmentationResult


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


@dataclasses.dataclass(frozen=True)
class Bootstrap:
    """Each model's primary metric per task on the full set (``full``) and on every draw (``draws``).

    All models are scored on the same draws of images, so any two of them can be compared pairwise.
    """

    full: dict[str, dict[str, float]]
    draws: dict[str, list[dict[str, float]]]


def bootstrap(
    examples: Sequence[Example],
    results: Mapping[str, Sequence[SegmentationResult]],
    resamples: int = 200,
    seed: int = 0,
) -> Bootstrap:
    """Score every model on ``resamples`` draws of whole images with replacement, the same draws for all.

    Args:
        examples: the evaluated examples.
        results: model name -> its answer to each example, in order.
        resamples: bootstrap draws.
        seed: the draws' seed, so a table can be reproduced.

    Raises:
        ValueError: a model's answers do not match the examples in number, there are no examples or no
            models, or ``resamples`` < 1.
    """
    if not examples:
        raise ValueError("no examples to compare: the dataset is empty")
    if not results:
        raise ValueError("no models to compare")
    for name, answers in results.items():
        if len(answers) != len(examples):
            raise ValueError(
                f"{len(examples)} examples but {len(answers)} results for {name}: "
                "score every model on the same examples"
            )
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    by_image: dict[object, list[int]] = {}
    for i, example in enumerate(examples):
        by_image.setdefault(example.image_id, []).append(i)
    images = list(by_image.values())

    scorers = {name: Scorer(zip(examples, answers, strict=True)) for name, answers in results.items()}

    def score(rows: list[int]) -> dict[str, dict[str, float]]:
        return {name: primary_metrics(scorer.evaluate(rows)) for name, scorer in scorers.items()}

    full = score([i for rows in images for i in rows])
    rng = np.random.default_rng(seed)
    draws: dict[str, list[dict[str, float]]] = {name: [] for name in results}
    for _ in range(resamples):
        drawn = rng.integers(0, len(images), len(images))
        for name, metrics in score([i for k in drawn for i in images[k]]).items():
            draws[name].append(metrics)
    return Bootstrap(full, draws)


def average(boot: Bootstrap, groups: Mapping[str, Sequence[str]]) -> Bootstrap:
    """Each group's metric as the mean of its models' (e.g. one recipe trained at several seeds), per draw.

    Why: two recipes trained once each differ by their seeds as well as by the recipe. Averaging each
    recipe's seeds before comparing shrinks the seed-to-seed part of the gap; the interval then covers the
    test split's noise of that mean (three seeds cannot measure seed noise itself, so show them one by one
    too). A task is kept only where every model of the group has it; a draw where any model lacks a
    metric gives the group none.

    Raises:
        ValueError: an empty group, or a model not in the bootstrap.
    """
    out_full: dict[str, dict[str, float]] = {}
    out_draws: dict[str, list[dict[str, float]]] = {}
    for group, members in groups.items():
        if not members:
            raise ValueError(f"group {group!r} has no models")
        for name in members:
            if name not in boot.full:
                raise ValueError(f"model {name!r} of group {group!r} is not in the bootstrap")
        tasks = [t for t in boot.full[members[0]] if all(t in boot.full[m] for m in members)]

        def mean(metrics: Sequence[Mapping[str, float]], tasks: list[str] = tasks) -> dict[str, float]:
            return {t: float(np.mean([m[t] for m in metrics])) for t in tasks}

        out_full[group] = mean([boot.full[m] for m in members])
        out_draws[group] = [
            mean(per_draw) for per_draw in zip(*(boot.draws[m] for m in members), strict=True)
        ]
    return Bootstrap(out_full, out_draws)


def compare(boot: Bootstrap, a: str, b: str, level: float = 0.95) -> dict[str, Difference]:
    """B − A per task from a bootstrap of both (tasks either model lacks are left out).

    Raises:
        ValueError: ``a`` or ``b`` is not in the bootstrap, or ``level`` is not in (0, 1).
    """
    for name in (a, b):
        if name not in boot.full:
            raise ValueError(f"model {name!r} is not in the bootstrap; it has {', '.join(boot.full)}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    tail = 100 * (1 - level) / 2
    out = {}
    for task in boot.full[a]:
        if task not in boot.full[b]:
            continue
        pairs = np.asarray(
            [(da[task], db[task]) for da, db in zip(boot.draws[a], boot.draws[b], strict=True)], np.float64
        )
        pairs = pairs[np.isfinite(pairs).all(1)]  # a draw without a sample of the task has no metric
        if not len(pairs):
            pairs = np.full((1, 2), np.nan)
        spread = pairs[:, 1] - pairs[:, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            share = 100 * pairs[:, 1] / pairs[:, 0]
        share = share[np.isfinite(share)]  # a draw where A scored 0 has no share
        share_low, share_high = np.percentile(share, [tail, 100 - tail]) if len(share) else (np.nan, np.nan)
        full_a, full_b = boot.full[a][task], boot.full[b][task]
        out[task] = Difference(
            a=full_a,
            b=full_b,
            delta=round(full_b - full_a, 2),
            low=round(float(np.percentile(spread, tail)), 2),
            high=round(float(np.percentile(spread, 100 - tail)), 2),
            b_ahead=round(float(np.mean(spread > 0)), 3),
            share_low=round(float(share_low), 1),
            share_high=round(float(share_high), 1),
        )
    return out


def paired_bootstrap(
    examples: Sequence[Example],
    results_a: Sequence[SegmentationResult],
    results_b: Sequence[SegmentationResult],
    resamples: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Difference]:
    """B − A per task's primary metric: ``bootstrap`` of the two models, then ``compare``.

    Raises:
        ValueError: as ``bootstrap`` and ``compare``.
    """
    if not 0 < level < 1:  # checked before the draws, which take minutes on a full test set
        raise ValueError(f"level must be in (0, 1), got {level}")
    boot = bootstrap(examples, {"A": results_a, "B": results_b}, resamples, seed)
    return compare(boot, "A", "B", level)


def comparison_table(diffs: Mapping[str, Difference], a: str, b: str, level: float = 0.95) -> str:
    """Markdown: per task A, B, B − A with its interval, draws with B ahead, B as a share of A, verdict."""
    pct = f"{100 * level:.0f} %"
    rows = [
        f"| task | {a} | {b} | {b} − {a} ({pct} interval) | draws with {b} ahead "
        f"| {b} as % of {a} ({pct} interval) | beyond noise |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, d in diffs.items():
        share = 100 * d.b / d.a if d.a else float("nan")
        verdict = {"A": f"{a} ahead", "B": f"{b} ahead"}.get(d.verdict, "tie")
        rows.append(
            f"| {task} | {d.a:.2f} | {d.b:.2f} | {d.delta:+.2f} ({d.low:+.2f} … {d.high:+.2f}) "
            f"| {100 * d.b_ahead:.0f} % | {share:.0f} % ({d.share_low:.0f} … {d.share_high:.0f}) "
            f"| {verdict} |"
        )
    return "\n".join(rows)
