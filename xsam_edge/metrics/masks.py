"""Mask metrics on numpy bool masks: IoU, cIoU / gIoU, confusion-matrix mIoU, and model-vs-model agreement.

No torch and no model: every function takes plain arrays. Conventions shared by the metric modules:

* An IoU whose union is empty (both masks empty) is 1.0: predicting nothing where there is nothing is right.
  This is LISA's / X-SAM's ``IouStat`` convention for "no-target" samples.
* Fractions are returned in [0, 1] unless a docstring says ×100.
* Overlapping masks become a label map with "later masks win" (``label_map``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xsam_edge.spec.types import SegmentationResult

NO_LABEL = -1  # label-map value of a pixel no mask covers


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: prediction {pred.shape}, ground truth {gt.shape}")
    return pred, gt


def intersection_union(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """Pixel counts ``|P ∩ G|`` and ``|P ∪ G|`` of two same-shaped masks.

    Raises:
        ValueError: the shapes differ.
    """
    pred, gt = _check_pair(pred, gt)
    return int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred | gt))


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union ``|P ∩ G| / |P ∪ G|`` of two bool masks of the same shape.

    Args:
        pred (np.ndarray): predicted mask, any shape, cast to bool.
        gt (np.ndarray): ground-truth mask, same shape.

    Returns:
        float: IoU in [0, 1]; 1.0 when both masks are empty (nothing to find, nothing found).

    Raises:
        ValueError: the shapes differ.
    """
    inter, union = intersection_union(pred, gt)
    return 1.0 if union == 0 else inter / union


class IouStat:
    """Accumulates IoU over samples (referring, reasoning, interactive prompts, GCG spans).

    * ``ciou`` (cumulative IoU) = ``Σ_i |P_i ∩ G_i| / Σ_i |P_i ∪ G_i|``: large objects weigh more.
    * ``giou`` (generalised / mean IoU) = ``(1/n) Σ_i IoU(P_i, G_i)``: every sample weighs the same; the
      interactive "mIoU" is this value.

    With no samples both are NaN; with samples whose unions are all empty, ``ciou`` is 1.0 (the ``iou``
    convention).
    """

    def __init__(self) -> None:
        self.intersection = 0
        self.union = 0
        self.iou_sum = 0.0
        self.count = 0

    def add(self, pred: np.ndarray, gt: np.ndarray) -> float:
        """Add one sample and return its IoU.

        Raises:
            ValueError: the shapes differ.
        """
        inter, union = intersection_union(pred, gt)
        sample = 1.0 if union == 0 else inter / union
        self.intersection += inter
        self.union += union
        self.iou_sum += sample
        self.count += 1
        return sample

    @property
    def ciou(self) -> float:
        if self.count == 0:
            return float("nan")
        return 1.0 if self.union == 0 else self.intersection / self.union

    @property
    def giou(self) -> float:
        return self.iou_sum / self.count if self.count else float("nan")


def label_map(masks: np.ndarray, labels: Sequence[int] | np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Paint masks into an int map, later masks win; uncovered pixels are ``NO_LABEL`` (-1).

    Args:
        masks (np.ndarray): (N, H, W) bool.
        labels (Sequence[int] | np.ndarray): N non-negative ints written where each mask is set.
        hw (tuple[int, int]): (H, W), used when N = 0.

    Returns:
        np.ndarray: (H, W) int64 map.

    Raises:
        ValueError: the masks are not (N, H, W) with H, W = ``hw`` or the label count differs.
    """
    masks = np.asarray(masks, bool)
    labels = np.asarray(labels, np.int64).reshape(-1)
    if masks.ndim != 3 or masks.shape[1:] != tuple(hw) or masks.shape[0] != labels.shape[0]:
        raise ValueError(f"expected ({labels.shape[0]}, {hw[0]}, {hw[1]}) masks, got {masks.shape}")
    out = np.full(tuple(hw), NO_LABEL, np.int64)
    for mask, label in zip(masks, labels, strict=True):
        out[mask] = label
    return out


class SemanticStat:
    """Confusion-matrix mIoU over pixels, as mmseg / detectron2 ``SemSegEvaluator`` compute it.

    The matrix has one extra row and column, index ``num_classes``, for "no class" (``NO_LABEL`` pixels):
    a pixel whose ground truth is no class but that is predicted as class c is a false positive of c, a
    class-c pixel predicted as nothing is a false negative of c. "No class" itself is not averaged.
    Pixels under the ``ignore`` mask are left out entirely (detectron2's ignore label).

    ``IoU_c = TP_c / (TP_c + FP_c + FN_c)``; ``miou`` is the mean over classes whose union is non-empty
    over all images, i.e. classes absent from both the ground truth and the prediction are excluded
    (detectron2's ``iou_valid``, mmseg's ``nanmean``). NaN when no class is valid.

    Args:
        num_classes (int): C; maps hold 0..C-1 or ``NO_LABEL``.
    """

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.confusion = np.zeros((num_classes + 1, num_classes + 1), np.int64)  # rows gt, columns pred

    def add(self, gt: np.ndarray, pred: np.ndarray, ignore: np.ndarray | None = None) -> None:
        """Add one image's ground-truth and predicted class maps.

        Args:
            gt (np.ndarray): (H, W) int class map, values in 0..C-1 or ``NO_LABEL``.
            pred (np.ndarray): (H, W) int class map, same value range.
            ignore (np.ndarray | None): (H, W) bool, pixels to leave out; ``None``: none.

        Raises:
            ValueError: shapes differ or a value is out of range.
        """
        gt, pred = np.asarray(gt, np.int64), np.asarray(pred, np.int64)
        if gt.shape != pred.shape or (ignore is not None and np.shape(ignore) != gt.shape):
            raise ValueError(
                f"map shapes differ: gt {gt.shape}, pred {pred.shape}, ignore {np.shape(ignore)}"
            )
        c = self.num_classes
        for name, m in (("gt", gt), ("pred", pred)):
            if m.size and (m.min() < NO_LABEL or m.max() >= c):
                raise ValueError(f"{name} map values must be in [-1, {c - 1}], got [{m.min()}, {m.max()}]")
        keep = np.ones(gt.shape, bool) if ignore is None else ~np.asarray(ignore, bool)
        g = np.where(gt[keep] == NO_LABEL, c, gt[keep])
        p = np.where(pred[keep] == NO_LABEL, c, pred[keep])
        self.confusion += np.bincount(g * (c + 1) + p, minlength=(c + 1) ** 2).reshape(c + 1, c + 1)

    @property
    def iou_per_class(self) -> np.ndarray:
        """(C,) float64 IoU per class, NaN where the class is in neither ground truth nor prediction."""
        c = self.num_classes
        tp = np.diag(self.confusion)[:c].astype(np.float64)
        union = self.confusion[:c, :].sum(1) + self.confusion[:, :c].sum(0) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    @property
    def miou(self) -> float:
        per_class = self.iou_per_class
        valid = ~np.isnan(per_class)
        return float(per_class[valid].mean()) if valid.any() else float("nan")


def _greedy_match(ious: np.ndarray) -> list[tuple[int, int]]:
    """Pairs (i, j) taken in descending IoU, each row and column at most once, IoU > 0 only."""
    pairs = []
    if ious.size == 0:
        return pairs
    order = np.argsort(-ious, axis=None, kind="stable")
    used_a, used_b = set(), set()
    for flat in order:
        i, j = divmod(int(flat), ious.shape[1])
        if ious[i, j] <= 0:
            break
        if i not in used_a and j not in used_b:
            pairs.append((i, j))
            used_a.add(i)
            used_b.add(j)
    return pairs


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(Na, Nb) IoU matrix of two mask stacks (empty-vs-empty = 1.0)."""
    pixels = int(np.prod(a.shape[1:]))  # not -1: a stack may hold no mask
    fa = a.reshape(a.shape[0], pixels).astype(np.float64)
    fb = b.reshape(b.shape[0], pixels).astype(np.float64)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def mask_agreement(
    results_a: Sequence[SegmentationResult], results_b: Sequence[SegmentationResult]
) -> dict[str, float]:
    """How closely two models' outputs agree on the same requests (e.g. a quantized bundle vs the reference).

    * ``union_miou``: mean over requests of ``IoU(∪ masks_a, ∪ masks_b)`` (1 when both are empty).
    * ``matched_miou``: within each request, masks with the same ``label_id`` are paired greedily by
      descending IoU (pairs with IoU 0 are not made); every pair contributes its IoU, every mask left
      unpaired on either side contributes 0; the mean is over all pairs and unpaired masks of all
      requests (100 when neither side has any mask). Greedy rather than Hungarian: for near-identical
      outputs the two agree, and greedy needs no scipy.
    * ``text_match``: fraction of requests whose ``text`` is identical (``None`` equals ``None``).
    * ``count_match``: fraction of requests with the same number of masks.

    Args:
        results_a (Sequence[SegmentationResult]): outputs of model A, one per request.
        results_b (Sequence[SegmentationResult]): outputs of model B for the same requests, same order.

    Returns:
        dict[str, float]: the four values ×100, plus ``n`` (number of requests); NaN values when there are
        no requests.

    Raises:
        ValueError: the lists differ in length or a pair's masks differ in image size.
    """
    if len(results_a) != len(results_b):
        raise ValueError(f"got {len(results_a)} results for model A but {len(results_b)} for model B")
    union_ious, matched, texts, counts = [], [], [], []
    for k, (a, b) in enumerate(zip(results_a, results_b, strict=True)):
        ma, mb = np.asarray(a.masks, bool), np.asarray(b.masks, bool)
        if ma.shape[1:] != mb.shape[1:]:
            raise ValueError(f"request {k}: model A masks are {ma.shape[1:]}, model B masks {mb.shape[1:]}")
        union_ious.append(iou(ma.any(0), mb.any(0)))
        ids_a, ids_b = np.asarray(a.label_ids).reshape(-1), np.asarray(b.label_ids).reshape(-1)
        for label in np.union1d(ids_a, ids_b):
            sel_a, sel_b = ma[ids_a == label], mb[ids_b == label]
            ious = pairwise_iou(sel_a, sel_b)
            pairs = _greedy_match(ious)
            matched.extend(float(ious[i, j]) for i, j in pairs)
            matched.extend([0.0] * (len(sel_a) + len(sel_b) - 2 * len(pairs)))
        texts.append(a.text == b.text)
        counts.append(len(ma) == len(mb))
    n = len(union_ious)

    def pct(values: list) -> float:
        return 100.0 * float(np.mean(values)) if values else float("nan")

    return {
        "union_miou": pct(union_ious),
        "matched_miou": pct(matched) if matched or n == 0 else 100.0,
        "text_match": pct(texts),
        "count_match": pct(counts),
        "n": n,
    }
