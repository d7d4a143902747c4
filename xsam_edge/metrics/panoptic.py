"""Panoptic quality (PQ, SQ, RQ) with ``panopticapi.evaluation.pq_compute`` semantics, on bool masks.

Kirillov et al., "Panoptic Segmentation": per category,
``PQ = Σ_TP IoU / (TP + FP/2 + FN/2)``, ``SQ = Σ_TP IoU / TP``, ``RQ = TP / (TP + FP/2 + FN/2)``.
The per-image matching is panopticapi's (tests check agreement with it to 1e-6):

* masks are painted into segment maps, later masks win, so segments never overlap (as in a panoptic PNG);
  segments left with no pixel are dropped (panopticapi rejects them);
* a ground-truth and a predicted segment of the same category match when
  ``IoU = |P ∩ G| / (|P| + |G| − |P ∩ G| − |P ∩ VOID|) > 0.5``; with non-overlapping segments the match
  is unique;
* unmatched ground-truth segments are false negatives; an unmatched prediction is a false positive unless
  more than half of its area lies on VOID, in which case it is ignored.

VOID is only what the caller marks as void (panopticapi's id 0). Pixels no ground-truth mask covers are
*not* void unless passed in ``void``: predictions there count in unions and as false positives. A
panoptic PNG's unlabeled pixels are void, so to reproduce a panopticapi run on such data pass
``void = ~gt_masks.any(0)``. Crowd regions are not supported.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from xsam_edge.metrics.masks import NO_LABEL, label_map

_VOID = -2  # ground-truth segment-map value of a void pixel


@dataclass
class _CategoryCounts:
    iou: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0


class PanopticStat:
    """Accumulates panoptic TP / FP / FN and matched IoU per category over images.

    Categories are any hashable keys (class ids, or names when requests carry different category lists).
    Each category's thing / stuff flag comes from the constructor or from ``add(..., gt_is_thing=...)``;
    a category whose flag stays unknown counts in the overall numbers but in neither the thing nor the
    stuff average.

    Args:
        categories (Sequence[Hashable]): categories known up front (more may appear in ``add``).
        is_thing (Sequence[bool] | Mapping[Hashable, bool] | None): thing flag per category, aligned with
            ``categories`` or as a mapping; ``None``: learnt from ``add``.

    Raises:
        ValueError: ``is_thing`` does not align with ``categories``.
    """

    def __init__(
        self,
        categories: Sequence[Hashable] = (),
        is_thing: Sequence[bool] | Mapping[Hashable, bool] | None = None,
    ) -> None:
        self.counts: dict[Hashable, _CategoryCounts] = {c: _CategoryCounts() for c in categories}
        self.is_thing: dict[Hashable, bool] = {}
        if isinstance(is_thing, Mapping):
            self.is_thing = {c: bool(t) for c, t in is_thing.items()}
        elif is_thing is not None:
            if len(is_thing) != len(categories):
                raise ValueError(f"{len(categories)} categories but {len(is_thing)} is_thing flags")
            self.is_thing = {c: bool(t) for c, t in zip(categories, is_thing, strict=True)}

    def set_is_thing(self, category: Hashable, flag: bool) -> None:
        """Record a category's thing (True) / stuff (False) flag.

        Raises:
            ValueError: the category already has the other flag.
        """
        known = self.is_thing.setdefault(category, bool(flag))
        if known != bool(flag):
            raise ValueError(f"category {category!r} is marked both thing and stuff")

    def add(
        self,
        gt_masks: np.ndarray,
        gt_labels: Sequence[Hashable],
        pred_masks: np.ndarray,
        pred_labels: Sequence[Hashable],
        *,
        gt_is_thing: Sequence[bool] | np.ndarray | None = None,
        void: np.ndarray | None = None,
    ) -> None:
        """Match one image's segments and add the counts.

        Args:
            gt_masks (np.ndarray): (N, H, W) bool ground-truth segments.
            gt_labels (Sequence[Hashable]): N categories.
            pred_masks (np.ndarray): (M, H, W) bool predicted segments.
            pred_labels (Sequence[Hashable]): M categories.
            gt_is_thing (Sequence[bool] | np.ndarray | None): N thing flags, recorded for the categories.
            void (np.ndarray | None): (H, W) bool VOID pixels (they override ground-truth segments);
                ``None``: no void.

        Raises:
            ValueError: shapes or counts disagree, or a category is marked both thing and stuff.
        """
        gt_masks, pred_masks = np.asarray(gt_masks, bool), np.asarray(pred_masks, bool)
        if gt_masks.ndim != 3 or pred_masks.ndim != 3 or gt_masks.shape[1:] != pred_masks.shape[1:]:
            raise ValueError(
                f"masks must be (N, H, W) of one size, got {gt_masks.shape} and {pred_masks.shape}"
            )
        n, m, hw = len(gt_masks), len(pred_masks), gt_masks.shape[1:]
        if len(gt_labels) != n or len(pred_labels) != m:
            raise ValueError(
                f"{n} gt masks with {len(gt_labels)} labels, {m} predictions with {len(pred_labels)}"
            )
        if gt_is_thing is not None:
            if len(gt_is_thing) != n:
                raise ValueError(f"{n} gt masks but {len(gt_is_thing)} is_thing flags")
            for label, flag in zip(gt_labels, gt_is_thing, strict=True):
                self.set_is_thing(label, bool(flag))
        for label in (*gt_labels, *pred_labels):
            self.counts.setdefault(label, _CategoryCounts())

        gt_map = label_map(gt_masks, np.arange(n), hw)  # segment index, NO_LABEL where uncovered
        if void is not None:
            if np.shape(void) != hw:
                raise ValueError(f"void mask is {np.shape(void)}, the masks are {hw}")
            gt_map[np.asarray(void, bool)] = _VOID
        pred_map = label_map(pred_masks, np.arange(m), hw)

        # joint histogram: row = gt segment (0..n-1), n = uncovered, n+1 = void; column = pred (m = none)
        g = np.where(gt_map == NO_LABEL, n, np.where(gt_map == _VOID, n + 1, gt_map))
        p = np.where(pred_map == NO_LABEL, m, pred_map)
        joint = np.bincount((g * (m + 1) + p).ravel(), minlength=(n + 2) * (m + 1)).reshape(n + 2, m + 1)
        gt_area = joint[:n].sum(1)  # void pixels are not part of any gt segment
        pred_area = joint[:, :m].sum(0)
        pred_void = joint[n + 1, :m]

        gt_matched, pred_matched = np.zeros(n, bool), np.zeros(m, bool)
        for i, j in zip(*np.nonzero(joint[:n, :m]), strict=True):
            if gt_labels[i] != pred_labels[j]:
                continue
            inter = joint[i, j]
            score = inter / (pred_area[j] + gt_area[i] - inter - pred_void[j])
            if score > 0.5:
                stat = self.counts[gt_labels[i]]
                stat.tp += 1
                stat.iou += float(score)
                gt_matched[i] = pred_matched[j] = True
        for i in range(n):
            if gt_area[i] > 0 and not gt_matched[i]:
                self.counts[gt_labels[i]].fn += 1
        for j in range(m):
            if pred_area[j] > 0 and not pred_matched[j] and not pred_void[j] / pred_area[j] > 0.5:
                self.counts[pred_labels[j]].fp += 1

    def per_category(self) -> dict[Hashable, dict[str, float]]:
        """PQ, SQ, RQ (fractions) and tp / fp / fn of every category that has at least one of them."""
        out = {}
        for label, s in self.counts.items():
            if s.tp + s.fp + s.fn == 0:
                continue
            denom = s.tp + 0.5 * s.fp + 0.5 * s.fn
            out[label] = {
                "pq": s.iou / denom,
                "sq": s.iou / s.tp if s.tp else 0.0,
                "rq": s.tp / denom,
                "tp": s.tp,
                "fp": s.fp,
                "fn": s.fn,
            }
        return out

    def summary(self) -> dict[str, float]:
        """PQ, SQ, RQ averaged over categories, overall and for things / stuff (fractions in [0, 1]).

        Categories with TP + FP + FN = 0 (in neither ground truth nor counted predictions) are left out, as
        panopticapi's ``pq_average`` does. Where no category is left (panopticapi would divide by zero, e.g.
        the stuff average of a things-only set) the values are NaN and the count ``n`` is 0.

        Returns:
            dict[str, float]: ``pq sq rq n`` overall, ``pq_th sq_th rq_th n_th`` for things,
            ``pq_st sq_st rq_st n_st`` for stuff.
        """
        per_cat = self.per_category()
        out: dict[str, float] = {}
        for suffix, keep in (("", None), ("_th", True), ("_st", False)):
            rows = [v for c, v in per_cat.items() if keep is None or self.is_thing.get(c) is keep]
            for key in ("pq", "sq", "rq"):
                out[key + suffix] = float(np.mean([r[key] for r in rows])) if rows else float("nan")
            out["n" + suffix] = len(rows)
        return out
