"""Per-task evaluation of (Example, SegmentationResult) pairs, and trivial baselines to compare against.

The metric primitives live in ``metrics_masks`` (IoU, cIoU / gIoU, semantic mIoU, model agreement),
``metrics_panoptic`` (PQ) and ``metrics_instance`` (COCO AP) and are re-exported here. Data and metrics know
no model: nothing here imports torch.

``evaluate`` reports, per task (values ×100, rounded to 2 decimals; ``n`` is the number of examples):

* referring, reasoning: ``ciou``, ``giou``; ``result.masks[0]`` (none: an empty mask) vs the union of the
  target masks (empty for a no-target expression).
* interactive: ``miou`` (gIoU over prompts) and ``ciou``, and per ``meta["prompt_kind"]`` (when set)
  ``miou_<kind>``, ``ciou_<kind>``. Prompt k: the first result mask with label_id k vs the union of the
  target masks with label_id k.
* panoptic, open_vocabulary: ``pq sq rq pq_th pq_st`` (``PanopticStat``, categories keyed by name).
* instance, visual_grounded: ``ap``, ``ap50`` (``instance_ap``; instance categories keyed by name, each
  visual-grounded prompt of each example its own category).
* semantic: ``miou`` (``SemanticStat`` on class maps painted from the masks, later masks win).
* gcg: ``miou``, per ground-truth span k the first result mask with label_id k vs the target masks of span
  k, averaged over spans; ``caption_match``, the share of ``<p>…</p>`` phrases of ``target.answer`` found
  (as whole words, normalised) in the generated text (left out when no target has phrases).
* chat: ``exact_match``, normalised ``result.text`` == normalised ``target.answer`` (``normalize_text``);
  examples without an answer are skipped.

``Scorer`` scores any rows of one list of pairs (a bootstrap draw, repeats allowed) as ``evaluate`` would
score those pairs, with COCO AP's per-image matching done once for all draws.

Void pixels (panoptic, open-vocabulary, semantic): none by default, so predictions on pixels no target mask
covers are false positives. ``example.meta["void"]`` may be an (H, W) bool mask, or ``"unlabeled"`` to make
every pixel no target mask covers void (COCO / ADE panoptic PNG semantics, what panopticapi and upstream's
evaluators do). Panoptic thing / stuff flags come from ``target.is_thing`` and, for categories that only
appear in predictions, from an optional ``example.meta["category_is_thing"]`` (one bool per request category).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable, Sequence

import numpy as np

from xsam_edge.data.sample import Example
from xsam_edge.metrics.instance import InstanceMatches, instance_ap
from xsam_edge.metrics.masks import (
    NO_LABEL,
    IouStat,
    SemanticStat,
    intersection_union,
    iou,
    label_map,
    mask_agreement,
)
from xsam_edge.metrics.panoptic import PanopticStat
from xsam_edge.spec.config import TokenConfig
from xsam_edge.spec.types import CATEGORY_TASKS, PROMPT_TASKS, SegmentationResult, Task

__all__ = [
    "BASELINE_KINDS",
    "NO_LABEL",
    "PRIMARY_METRIC",
    "IouStat",
    "InstanceMatches",
    "PanopticStat",
    "Scorer",
    "SemanticStat",
    "baseline_mask",
    "baseline_results",
    "evaluate",
    "primary_metrics",
    "evaluate_baselines",
    "instance_ap",
    "intersection_union",
    "iou",
    "label_map",
    "mask_agreement",
    "normalize_text",
]

Pair = tuple[Example, SegmentationResult]

BASELINE_KINDS = ("whole_image", "centre_box")

_TOKENS = TokenConfig()
_SPECIAL = re.compile(
    "|".join(
        [re.escape(t) for t in (_TOKENS.seg, _TOKENS.phrase_start, _TOKENS.phrase_end, _TOKENS.image)]
        + [re.escape(_TOKENS.region), r"<\|[^<>|]*\|>", r"</?s>"]
    )
)
_PHRASE = re.compile(re.escape(_TOKENS.phrase_start) + r"(.*?)" + re.escape(_TOKENS.phrase_end), re.S)


def normalize_text(text: str | None) -> str:
    """Text for comparison: no special tokens, lower case, punctuation as spaces, whitespace collapsed.

    The special tokens removed are ``<SEG>``, ``<p>``, ``</p>``, ``<image>``, ``<region>``, ``<|…|>`` and
    ``<s>`` / ``</s>``. ``None`` becomes the empty string.
    """
    text = _SPECIAL.sub(" ", text or "").lower()
    return " ".join(re.sub(r"[^\w\s]|_", " ", text).split())


# -- matching results to targets --------------------------------------------------------------------


def _where(example: Example) -> str:
    return f"{example.source} image {example.image_id!r} ({example.task.value})"


def _check_pair(example: Example, result: SegmentationResult) -> None:
    hw = example.request.image_size
    if example.target.masks.shape[1:] != hw:
        raise ValueError(f"{_where(example)}: target masks are {example.target.masks.shape[1:]}, image {hw}")
    if len(result.masks) and result.masks.shape[1:] != hw:
        raise ValueError(f"{_where(example)}: result masks are {result.masks.shape[1:]}, image {hw}")
    if len(result.label_ids) != len(result.masks):
        raise ValueError(
            f"{_where(example)}: {len(result.masks)} masks but {len(result.label_ids)} label_ids"
        )


def _result_masks(result: SegmentationResult, hw: tuple[int, int]) -> np.ndarray:
    """(N, H, W) bool; an empty result may come with any trailing shape, so it is rebuilt at ``hw``."""
    return np.asarray(result.masks, bool) if len(result.masks) else np.zeros((0, *hw), bool)


def _first_with(masks: np.ndarray, ids: np.ndarray, label: int, hw: tuple[int, int]) -> np.ndarray:
    """The first mask whose id is ``label``, or an empty mask."""
    hits = np.flatnonzero(np.asarray(ids).reshape(-1) == label)
    return masks[hits[0]] if len(hits) else np.zeros(hw, bool)


def _union_with(masks: np.ndarray, ids: np.ndarray, label: int, hw: tuple[int, int]) -> np.ndarray:
    """The union of the masks whose id is ``label`` (empty if none)."""
    sel = masks[np.asarray(ids).reshape(-1) == label]
    return sel.any(0) if len(sel) else np.zeros(hw, bool)


def _names(example: Example, ids: np.ndarray, what: str) -> list[str]:
    cats = [c.strip() for c in example.request.categories]
    ids = np.asarray(ids, np.int64).reshape(-1)
    bad = ids[(ids < 0) | (ids >= len(cats))]
    if len(bad):
        raise ValueError(
            f"{_where(example)}: {what} label_ids {bad.tolist()} outside the {len(cats)} categories"
        )
    return [cats[i] for i in ids]


def _void(example: Example) -> np.ndarray | None:
    void = example.meta.get("void")
    if void is None:
        return None
    if isinstance(void, str):
        if void != "unlabeled":
            raise ValueError(f"{_where(example)}: meta['void'] must be a mask or 'unlabeled', got {void!r}")
        return ~example.target.masks.any(0)
    return np.asarray(void, bool)


# -- per-task metrics (fractions, or ×100 where the primitive returns ×100) -------------------------


def _referring(pairs: list[Pair]) -> dict[str, float]:
    stat = IouStat()
    for ex, res in pairs:
        hw = ex.request.image_size
        masks = _result_masks(res, hw)
        pred = masks[0] if len(masks) else np.zeros(hw, bool)
        gt = ex.target.masks.any(0) if len(ex.target.masks) else np.zeros(hw, bool)
        stat.add(pred, gt)
    return {"ciou": stat.ciou, "giou": stat.giou}


def _interactive(pairs: list[Pair]) -> dict[str, float]:
    overall: IouStat = IouStat()
    by_kind: dict[str, IouStat] = {}
    for ex, res in pairs:
        hw = ex.request.image_size
        masks = _result_masks(res, hw)
        kind = ex.meta.get("prompt_kind")
        for k in range(len(ex.request.prompts)):
            pred = _first_with(masks, res.label_ids, k, hw)
            gt = _union_with(ex.target.masks, ex.target.label_ids, k, hw)
            overall.add(pred, gt)
            if kind:
                by_kind.setdefault(str(kind), IouStat()).add(pred, gt)
    out = {"miou": overall.giou, "ciou": overall.ciou}
    for kind, stat in by_kind.items():
        out[f"miou_{kind}"] = stat.giou
        out[f"ciou_{kind}"] = stat.ciou
    return out


def _panoptic(pairs: list[Pair]) -> dict[str, float]:
    stat = PanopticStat()
    for ex, res in pairs:
        flags = ex.meta.get("category_is_thing")
        if flags is not None:
            for name, flag in zip(_names(ex, np.arange(len(flags)), "meta"), flags, strict=True):
                stat.set_is_thing(name, bool(flag))
        hw = ex.request.image_size
        stat.add(
            ex.target.masks,
            _names(ex, ex.target.label_ids, "target"),
            _result_masks(res, hw),
            _names(ex, res.label_ids, "result"),
            gt_is_thing=ex.target.is_thing,
            void=_void(ex),
        )
    summary = stat.summary()
    return {key: summary[key] for key in ("pq", "sq", "rq", "pq_th", "pq_st")}


def _semantic(pairs: list[Pair]) -> dict[str, float]:
    index: dict[str, int] = {}
    for ex, _ in pairs:
        for name in ex.request.categories:
            index.setdefault(name.strip(), len(index))
    stat = SemanticStat(max(1, len(index)))
    for ex, res in pairs:
        hw = ex.request.image_size
        gt_ids = [index[n] for n in _names(ex, ex.target.label_ids, "target")]
        pred_ids = [index[n] for n in _names(ex, res.label_ids, "result")]
        stat.add(
            label_map(ex.target.masks, gt_ids, hw), label_map(_result_masks(res, hw), pred_ids, hw), _void(ex)
        )
    return {"miou": stat.miou}


def _instance_matches(pairs: list[Pair]) -> InstanceMatches:
    gts, preds = [], []
    for ex, res in pairs:
        hw = ex.request.image_size
        if ex.task is Task.VISUAL_GROUNDED:
            gt_labels: list[Hashable] = [int(i) for i in ex.target.label_ids]
            dt_labels: list[Hashable] = [int(i) for i in res.label_ids]
        else:
            gt_labels = list(_names(ex, ex.target.label_ids, "target"))
            dt_labels = list(_names(ex, res.label_ids, "result"))
        gts.append((ex.target.masks, gt_labels))
        preds.append((_result_masks(res, hw), dt_labels, np.asarray(res.scores).reshape(-1)))
    # prompt k of one image and prompt k of another are unrelated: each visual-grounded prompt is its own
    # category
    return InstanceMatches(gts, preds, image_local=pairs[0][0].task is Task.VISUAL_GROUNDED)


def _gcg(pairs: list[Pair]) -> dict[str, float]:
    stat = IouStat()
    found, total = 0, 0
    for ex, res in pairs:
        hw = ex.request.image_size
        masks = _result_masks(res, hw)
        for k in np.unique(ex.target.label_ids):
            stat.add(
                _first_with(masks, res.label_ids, int(k), hw),
                _union_with(ex.target.masks, ex.target.label_ids, int(k), hw),
            )
        text = f" {normalize_text(res.text)} "
        for phrase in _PHRASE.findall(ex.target.answer or ""):
            total += 1
            found += f" {normalize_text(phrase)} " in text
    out = {"miou": stat.giou}
    if total:
        out["caption_match"] = found / total
    return out


def _chat(pairs: list[Pair]) -> dict[str, float]:
    hits = [
        normalize_text(res.text) == normalize_text(ex.target.answer)
        for ex, res in pairs
        if ex.target.answer is not None
    ]
    return {"exact_match": float(np.mean(hits)) if hits else float("nan")}


# instance AP's per-image matching is done once per evaluation (``Scorer``), whatever the rows scored
_MATCHED_TASKS = (Task.INSTANCE, Task.VISUAL_GROUNDED)
_TASK_METRICS: dict[Task, Callable[[list[Pair]], dict[str, float]]] = {
    Task.REFERRING: _referring,
    Task.REASONING: _referring,
    Task.INTERACTIVE: _interactive,
    Task.PANOPTIC: _panoptic,
    Task.OPEN_VOCABULARY: _panoptic,
    Task.SEMANTIC: _semantic,
    Task.GCG: _gcg,
    Task.CHAT: _chat,
}


# the one number per task that tables and accuracy budgets compare (X-SAM's paper reports these)
PRIMARY_METRIC: dict[str, str] = {
    Task.REFERRING.value: "giou",
    Task.REASONING.value: "giou",
    Task.INTERACTIVE.value: "miou",
    Task.PANOPTIC.value: "pq",
    Task.OPEN_VOCABULARY.value: "pq",
    Task.INSTANCE.value: "ap",
    Task.VISUAL_GROUNDED.value: "ap",
    Task.SEMANTIC.value: "miou",
    Task.GCG.value: "miou",
    Task.CHAT.value: "exact_match",
}


def primary_metrics(tasks: dict[str, dict[str, float]]) -> dict[str, float]:
    """Task → its primary metric, from ``evaluate``'s output."""
    return {task: metrics[PRIMARY_METRIC[task]] for task, metrics in tasks.items() if task in PRIMARY_METRIC}


class Scorer:
    """``evaluate`` over any rows of one fixed list of pairs, repeats allowed, with AP's matching done once.

    Why: a paired bootstrap rescores hundreds of draws of the same test images, and most of an evaluation
    is COCO AP's per-image matching of masks, which no draw changes (``InstanceMatches``).

    Raises:
        ValueError: as ``evaluate``, when built.
    """

    def __init__(self, pairs: Iterable[Pair]) -> None:
        self.pairs = list(pairs)
        rows_of: dict[Task, list[int]] = {}
        self._index_in_task: list[int] = []  # row -> its position among its task's rows
        for row, (example, result) in enumerate(self.pairs):
            _check_pair(example, result)
            self._index_in_task.append(len(rows_of.setdefault(example.task, [])))
            rows_of[example.task].append(row)
        self._matches = {
            task: _instance_matches([self.pairs[i] for i in rows])
            for task, rows in rows_of.items()
            if task in _MATCHED_TASKS
        }

    def evaluate(self, rows: Iterable[int] | None = None) -> dict[str, dict[str, float]]:
        """``evaluate([pairs[i] for i in rows])``; ``None`` scores every pair once."""
        groups: dict[Task, list[int]] = {}
        for row in range(len(self.pairs)) if rows is None else rows:
            groups.setdefault(self.pairs[row][0].task, []).append(row)
        out: dict[str, dict[str, float]] = {}
        for task, group in groups.items():
            if task in self._matches:
                ap = self._matches[task].ap([self._index_in_task[i] for i in group])
                values = {key: value / 100.0 for key, value in ap.items()}
            else:
                values = _TASK_METRICS[task]([self.pairs[i] for i in group])
            out[task.value] = {key: round(100.0 * value, 2) for key, value in values.items()} | {
                "n": len(group)
            }
        return out


def evaluate(pairs: Iterable[Pair]) -> dict[str, dict[str, float]]:
    """Score results against their targets, grouped by task (the table in the module docstring).

    Args:
        pairs (Iterable[tuple[Example, SegmentationResult]]): each example with the result for its request.

    Returns:
        dict[str, dict[str, float]]: task value -> metric -> value ×100 rounded to 2 decimals (NaN where a
        metric had no sample), plus ``n``, the number of examples of that task. Tasks appear in order of
        first occurrence.

    Raises:
        ValueError: a result or target does not match its image size, or a label_id indexes no category.
    """
    return Scorer(pairs).evaluate()


# -- baselines ---------------------------------------------------------------------------------------


def baseline_mask(hw: tuple[int, int], kind: str) -> np.ndarray:
    """The one mask a baseline predicts: the whole image, or a centred box covering about 25 % of it.

    The box is ``round(H/2) × round(W/2)`` (at least 1 × 1) centred in the image.

    Raises:
        ValueError: unknown kind.
    """
    h, w = hw
    if kind == "whole_image":
        return np.ones((h, w), bool)
    if kind == "centre_box":
        bh, bw = max(1, round(h / 2)), max(1, round(w / 2))
        y0, x0 = (h - bh) // 2, (w - bw) // 2
        mask = np.zeros((h, w), bool)
        mask[y0 : y0 + bh, x0 : x0 + bw] = True
        return mask
    raise ValueError(f"unknown baseline kind {kind!r}; known: {', '.join(BASELINE_KINDS)}")


def baseline_results(example: Example, kind: str) -> SegmentationResult:
    """A trivial answer to ``example.request`` that never reads ``example.target``.

    Every expected output gets the same ``baseline_mask`` with score 1: one mask for referring, reasoning
    and GCG (label_id 0, empty caption), one per prompt (label_id k) for interactive and visual-grounded,
    one per category (label_id i) for panoptic, instance, semantic and open-vocabulary (as masks overlap
    completely and later masks win, the last category takes every pixel in panoptic and semantic
    scoring). Chat gets an empty text and no mask.

    Args:
        example (Example): the request (only ``example.request`` is read).
        kind (str): one of ``BASELINE_KINDS``.

    Returns:
        SegmentationResult: the baseline's result.

    Raises:
        ValueError: unknown kind.
    """
    request = example.request
    hw = request.image_size
    mask = baseline_mask(hw, kind)
    task = request.task
    text: str | None = None
    if task in (Task.REFERRING, Task.REASONING):
        labels = [request.text.strip()]
    elif task in PROMPT_TASKS:
        labels = [f"prompt {k}" for k in range(len(request.prompts))]
    elif task in CATEGORY_TASKS:
        labels = [c.strip() for c in request.categories]
    elif task is Task.GCG:
        labels, text = ["image"], ""
    else:
        labels, text = [], ""
    n = len(labels)
    return SegmentationResult(
        masks=np.broadcast_to(mask, (n, *hw)).copy(),
        labels=labels,
        scores=np.ones(n, np.float32),
        label_ids=np.arange(n, dtype=np.int64),
        text=text,
    )


def evaluate_baselines(
    examples: Sequence[Example], kinds: Sequence[str] = BASELINE_KINDS
) -> dict[str, dict[str, dict[str, float]]]:
    """``evaluate`` each baseline on the examples, so a report can say how far above chance a model is.

    Args:
        examples (Sequence[Example]): the evaluation set.
        kinds (Sequence[str]): baselines to run (default: all of ``BASELINE_KINDS``).

    Returns:
        dict[str, dict[str, dict[str, float]]]: baseline kind -> task -> metric -> value, as ``evaluate``.
    """
    return {kind: evaluate((ex, baseline_results(ex, kind)) for ex in examples) for kind in kinds}
