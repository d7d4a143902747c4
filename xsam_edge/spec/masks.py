"""Mask helpers the post-processing rules share: probabilities, input checks, full-size masks, results.

No torch. ``spec.postprocess`` applies the per-task rules on top of these.
"""

from __future__ import annotations

import numpy as np

from xsam_edge.spec.geometry import Geometry, Upsampler
from xsam_edge.spec.types import SegmentationResult


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    # exp of −|x| never overflows; keeping the tiny tail values (not 0.5·(1 + tanh), which rounds them to 0)
    # matters: the panoptic argmax decides far-away pixels by them, as torch does
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0, e) / (1.0 + e)


def check_inputs(class_logits: np.ndarray, mask_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate shapes, drop a leading batch of 1, cast to float32: (Q, C+1), (Q, mh, mw)."""
    cls = np.asarray(class_logits, np.float32)
    masks = np.asarray(mask_logits, np.float32)
    if cls.ndim == 3 and cls.shape[0] == 1:
        cls = cls[0]
    if masks.ndim == 4 and masks.shape[0] == 1:
        masks = masks[0]
    if cls.ndim != 2 or cls.shape[1] < 1:
        raise ValueError(f"class_logits must be (Q, C+1) with the background last, got {cls.shape}")
    if masks.ndim != 3 or masks.shape[0] != cls.shape[0]:
        raise ValueError(f"mask_logits must be (Q, m, m) with Q = {cls.shape[0]}, got {masks.shape}")
    return cls, masks


def check_labels(labels: list[str], n: int, what: str) -> None:
    if len(labels) != n:
        raise ValueError(f"got {len(labels)} {what} but class_logits have {n} non-background columns")


def make_result(
    geometry: Geometry,
    masks: list[np.ndarray] | np.ndarray,
    labels: list[str],
    scores: list[float] | np.ndarray,
    label_ids: list[int] | np.ndarray,
    text: str | None = None,
) -> SegmentationResult:
    h, w = geometry.image_hw
    stacked = np.stack(masks).astype(bool, copy=False) if len(masks) else np.zeros((0, h, w), bool)
    return SegmentationResult(
        masks=stacked,
        labels=list(labels),
        scores=np.asarray(scores, np.float32).reshape(-1),
        label_ids=np.asarray(label_ids, np.int64).reshape(-1),
        text=text,
    )


def empty_result(geometry: Geometry, text: str | None = None) -> SegmentationResult:
    """A result with no masks: masks (0, H, W) bool."""
    return make_result(geometry, [], [], [], [], text)


def binary_masks(up: Upsampler, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Full-size ``logits > 0`` masks and their mask scores (mean sigmoid inside the mask, upstream's +1e-6).

    Args:
        up (Upsampler): the geometry's upsampler.
        logits (np.ndarray): (n, mh, mw) low-res logits of the selected queries.

    Returns:
        tuple[np.ndarray, np.ndarray]: (n, H, W) bool masks and (n,) float32 mask scores.
    """
    n = logits.shape[0]
    masks = np.zeros((n, *up.image_hw), bool)
    mask_scores = np.zeros(n, np.float32)
    # a bilinear resize is a convex combination, so a query with no positive low-res logit stays empty
    live = np.flatnonzero(logits.reshape(n, -1).max(axis=1, initial=-np.inf) > 0)
    step = up.chunk(2)
    for start in range(0, len(live), step):
        idx = live[start : start + step]
        full = up(logits[idx])  # (n_chunk, H, W)
        pos = full > 0
        masks[idx] = pos
        for i, q in enumerate(idx):
            inside = full[i][pos[i]]  # positive logits only: the sigmoid is cheap and cannot overflow
            mask_scores[q] = np.sum(1.0 / (1.0 + np.exp(-inside)), dtype=np.float64) / (inside.size + 1e-6)
    return masks, mask_scores


def best_queries(
    class_logits: np.ndarray, mask_logits: np.ndarray, geometry: Geometry, columns: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Per class column: the most probable query's mask (logits > 0) and its probability."""
    probs = softmax(class_logits)[:, :-1]  # (Q, C)
    queries = probs[:, columns].argmax(axis=0)  # (K,)
    up = Upsampler(mask_logits.shape[1:], geometry)
    masks = np.zeros((len(columns), *geometry.image_hw), bool)
    for start in range(0, len(columns), up.chunk()):
        sel = slice(start, start + up.chunk())
        masks[sel] = up(mask_logits[queries[sel]]) > 0
    return masks, probs[queries, columns]
