"""Host-side post-processing for X-SAM: decoder logits → masks at the original image size (XSAM.md §2, §9.8).

One implementation, in numpy, with no torch import. Every function takes one image's decoder output:

* ``class_logits`` (Q, C+1): the last column is the background ("no object") class.
* ``mask_logits`` (Q, m, m): low-resolution mask logits (m = 128 for the released model).
* ``Geometry``: original size, un-padded letterbox size and the square input side.

Queries are selected on the low-resolution logits first; only the chosen masks are brought to full size, in
chunks, so 200 queries never become a (200, H, W) float array. The upsampling is upstream's chain (bilinear
to input_size², crop to the letterboxed (h', w'), bilinear to (H, W); ``sem_seg_postprocess``), applied as one
precomputed (H, m) and (W, m) weight matrix per axis: the two resizes are linear, so composing their weights
is exact up to float rounding (< 1e-5 against the torch chain) and skips the input_size² intermediate.

The task rules follow upstream's ``*_process_fn.py`` files (HF Mask2Former conventions); the docstrings say
where a choice was made.

``Geometry``, ``resize_bilinear`` and ``masks_to_image`` live in ``spec.geometry`` (re-exported here).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xsam_edge.spec.geometry import CHUNK_BYTES, Geometry, Upsampler, masks_to_image, resize_bilinear
from xsam_edge.spec.masks import (
    best_queries,
    binary_masks,
    check_inputs,
    check_labels,
    empty_result,
    make_result,
    sigmoid,
    softmax,
)
from xsam_edge.spec.preprocess import mask_box
from xsam_edge.spec.types import SegmentationResult, Task

# -- tasks ---------------------------------------------------------------------------------------------------


def postprocess_referring(
    class_logits: np.ndarray,
    mask_logits: np.ndarray,
    geometry: Geometry,
    phrases: list[str],
    phrase_index: int = 0,
) -> SegmentationResult:
    """Referring / reasoning: the one query that best matches a phrase (upstream ``refseg_process_fn``).

    Softmax over the C+1 classes, drop the background, take the query with the highest probability in the
    phrase's column; its mask is ``logits > 0`` (sigmoid > 0.5), its score that probability.

    Args:
        class_logits (np.ndarray): (Q, N+1) class logits, one column per phrase, background last.
        mask_logits (np.ndarray): (Q, m, m) mask logits.
        geometry (Geometry): image geometry.
        phrases (list[str]): the N phrases (expressions or questions).
        phrase_index (int): which phrase to answer.

    Returns:
        SegmentationResult: one mask (1, H, W), labelled with the phrase; label_ids = [phrase_index].
    """
    cls, masks = check_inputs(class_logits, mask_logits)
    check_labels(phrases, cls.shape[1] - 1, "phrases")
    if not 0 <= phrase_index < len(phrases):
        raise ValueError(f"phrase_index {phrase_index} outside the {len(phrases)} phrases")
    if cls.shape[0] == 0:
        return empty_result(geometry)
    out, scores = best_queries(cls, masks, geometry, [phrase_index])
    return make_result(geometry, out, [phrases[phrase_index]], scores, [phrase_index])


def postprocess_gcg(
    class_logits: np.ndarray,
    mask_logits: np.ndarray,
    geometry: Geometry,
    phrases: list[str],
    text: str | None = None,
) -> SegmentationResult:
    """Grounded caption: each phrase k gets its best query, as in referring (upstream ``gcgseg_process_fn``).

    Args:
        class_logits (np.ndarray): (Q, K+1) class logits, one column per generated phrase.
        mask_logits (np.ndarray): (Q, m, m) mask logits.
        geometry (Geometry): image geometry.
        phrases (list[str]): the K phrases found in the generated text.
        text (str | None): the generated caption, passed through to the result.

    Returns:
        SegmentationResult: K masks (K, H, W), one per phrase, label_ids = 0..K-1.
    """
    cls, masks = check_inputs(class_logits, mask_logits)
    check_labels(phrases, cls.shape[1] - 1, "phrases")
    if cls.shape[0] == 0 or not phrases:
        return empty_result(geometry, text)
    columns = list(range(len(phrases)))
    out, scores = best_queries(cls, masks, geometry, columns)
    return make_result(geometry, out, phrases, scores, columns, text)


def postprocess_panoptic(
    class_logits: np.ndarray,
    mask_logits: np.ndarray,
    geometry: Geometry,
    categories: list[str],
    *,
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
    mask_threshold: float = 0.5,
    stuff: set[str] | None = None,
) -> SegmentationResult:
    """Panoptic merge, as HF Mask2Former's ``compute_segments`` (which upstream's genseg post-process copies).

    1. Keep queries whose argmax over all C+1 classes is not the background and whose class probability
       exceeds ``object_mask_threshold``.
    2. prob-mask = class probability × sigmoid(mask logits) at full size; every pixel goes to the kept query
       with the highest prob-mask (ties: the lower query index).
    3. A query's segment is kept when its final area / original area > ``overlap_threshold``, where the
       original area counts pixels with prob-mask ≥ ``mask_threshold``; occluded leftovers are dropped.
    4. Segments of the same class are merged only for classes in ``stuff`` (score: the highest).

    Args:
        class_logits (np.ndarray): (Q, C+1) class logits, background last.
        mask_logits (np.ndarray): (Q, m, m) mask logits.
        geometry (Geometry): image geometry.
        categories (list[str]): the C category names.
        object_mask_threshold (float): minimum class probability of a kept query.
        overlap_threshold (float): minimum final / original area ratio of a kept segment.
        mask_threshold (float): prob-mask threshold of the original area.
        stuff (set[str] | None): category names whose segments are merged; ``None``: no merging.

    Returns:
        SegmentationResult: non-overlapping masks in query order, label_ids index ``categories``.
    """
    cls, masks = check_inputs(class_logits, mask_logits)
    num_classes = cls.shape[1] - 1
    check_labels(categories, num_classes, "categories")
    if cls.shape[0] == 0:
        return empty_result(geometry)
    probs = softmax(cls)  # (Q, C+1)
    labels = probs.argmax(axis=1)
    scores = probs[np.arange(len(labels)), labels]
    kept = np.flatnonzero((labels != num_classes) & (scores > object_mask_threshold))
    if len(kept) == 0:
        return empty_result(geometry)

    # running per-pixel argmax over the kept queries' prob-masks, one chunk of full-size maps at a time
    up = Upsampler(masks.shape[1:], geometry)
    h, w = geometry.image_hw
    best_val = np.full((h, w), -np.inf, np.float32)
    best_idx = np.zeros((h, w), np.int64)
    original_area = np.zeros(len(kept), np.int64)
    step = up.chunk(2)
    for start in range(0, len(kept), step):
        idx = kept[start : start + step]
        prob_masks = sigmoid(up(masks[idx])) * scores[idx, None, None]  # (n_chunk, H, W)
        original_area[start : start + len(idx)] = (prob_masks >= mask_threshold).sum(axis=(1, 2))
        chunk_idx = prob_masks.argmax(axis=0)
        chunk_val = np.take_along_axis(prob_masks, chunk_idx[None], axis=0)[0]
        better = chunk_val > best_val  # strict: earlier queries win ties, as torch's argmax does
        best_val[better] = chunk_val[better]
        best_idx[better] = chunk_idx[better] + start
    final_area = np.bincount(best_idx.ravel(), minlength=len(kept))

    stuff = set() if stuff is None else set(stuff)
    segments: list[tuple[np.ndarray, int, float]] = []
    merged: dict[int, int] = {}  # stuff class → its segment's position in ``segments``
    for k, q in enumerate(kept):
        if final_area[k] == 0 or original_area[k] == 0:
            continue
        if not final_area[k] / original_area[k] > overlap_threshold:
            continue
        label, mask = int(labels[q]), best_idx == k
        if label in merged:
            prev_mask, _, prev_score = segments[merged[label]]
            segments[merged[label]] = (prev_mask | mask, label, max(prev_score, float(scores[q])))
            continue
        if categories[label] in stuff:
            merged[label] = len(segments)
        segments.append((mask, label, float(scores[q])))
    return make_result(
        geometry,
        [s[0] for s in segments],
        [categories[s[1]] for s in segments],
        [s[2] for s in segments],
        [s[1] for s in segments],
    )


def _instance_core(
    cls: np.ndarray,
    masks: np.ndarray,
    geometry: Geometry,
    labels: list[str],
    threshold: float,
    top_k: int | None,
) -> SegmentationResult:
    """Top-k (query, class) pairs, mask = logits > 0, score = class prob × mean sigmoid inside the mask."""
    num_q, num_classes = cls.shape[0], cls.shape[1] - 1
    if num_q == 0 or num_classes == 0:
        return empty_result(geometry)
    probs = softmax(cls)[:, :-1].ravel()  # (Q·C,), index = q·C + c
    k = num_q if top_k is None else min(int(top_k), probs.size)
    top = np.argsort(-probs, kind="stable")[:k]
    # final score ≤ class probability, so pairs at or below the threshold can never pass: skip their masks
    top = top[probs[top] > threshold]
    queries, classes = top // num_classes, top % num_classes
    unique_q, inverse = np.unique(queries, return_inverse=True)
    up = Upsampler(masks.shape[1:], geometry)
    bin_masks, mask_scores = binary_masks(up, masks[unique_q])
    final = probs[top] * mask_scores[inverse]
    # empty masks (score 0) are dropped even for a negative threshold: they carry no pixels to evaluate
    keep = np.flatnonzero((final > threshold) & (mask_scores[inverse] > 0))
    keep = keep[np.argsort(-final[keep], kind="stable")]
    return make_result(
        geometry,
        bin_masks[inverse[keep]],
        [labels[c] for c in classes[keep]],
        final[keep],
        classes[keep],
    )


def postprocess_instance(
    class_logits: np.ndarray,
    mask_logits: np.ndarray,
    geometry: Geometry,
    categories: list[str],
    *,
    threshold: float = 0.0,
    top_k: int | None = None,
) -> SegmentationResult:
    """Instance segmentation, as upstream's genseg ``_instance_genseg_postprocess``.

    Top-k (k = Q by default) over the Q × C class probabilities (background dropped), mask = logits > 0,
    final score = class probability × mean sigmoid inside the mask; keep score > ``threshold`` (0 keeps every
    non-empty mask, so AP can be computed). Masks may overlap; one query may appear under several classes.

    Args:
        class_logits (np.ndarray): (Q, C+1) class logits, background last.
        mask_logits (np.ndarray): (Q, m, m) mask logits.
        geometry (Geometry): image geometry.
        categories (list[str]): the C category names.
        threshold (float): minimum final score.
        top_k (int | None): number of (query, class) pairs considered; ``None``: Q.

    Returns:
        SegmentationResult: masks sorted by descending score, label_ids index ``categories``.
    """
    cls, masks = check_inputs(class_logits, mask_logits)
    check_labels(categories, cls.shape[1] - 1, "categories")
    return _instance_core(cls, masks, geometry, list(categories), threshold, top_k)


def postprocess_visual_grounded(
    class_logits: np.ndarray,
    mask_logits: np.ndarray,
    geometry: Geometry,
    *,
    threshold: float = 0.0,
    top_k: int | None = None,
) -> SegmentationResult:
    """Visual grounded segmentation: every instance of each prompted region's "class" (upstream ``vgdseg``).

    Instance-style over the K prompt columns; labels are ``"prompt {k}"``.

    Args:
        class_logits (np.ndarray): (Q, K+1) class logits, one column per visual prompt, background last.
        mask_logits (np.ndarray): (Q, m, m) mask logits.
        geometry (Geometry): image geometry.
        threshold (float): minimum final score.
        top_k (int | None): number of (query, prompt) pairs considered; ``None``: Q.

    Returns:
        SegmentationResult: masks sorted by descending score, label_ids = prompt index.
    """
    cls, masks = check_inputs(class_logits, mask_logits)
    labels = [f"prompt {k}" for k in range(cls.shape[1] - 1)]
    return _instance_core(cls, masks, geometry, labels, threshold, top_k)


def box_iou(a: tuple[float, float, float, float], b: np.ndarray) -> np.ndarray:
    """IoU of box ``a`` with each row of ``b`` (x0, y0, x1, y1); 0 where the union is empty.

    Args:
        a (tuple[float, float, float, float]): one box.
        b (np.ndarray): (n, 4) boxes.

    Returns:
        np.ndarray: (n,) float64.
    """
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ax0, ay0, ax1, ay1 = (float(v) for v in a)
    iw = np.clip(np.minimum(ax1, b[:, 2]) - np.maximum(ax0, b[:, 0]), 0, None)
    ih = np.clip(np.minimum(ay1, b[:, 3]) - np.maximum(ay0, b[:, 1]), 0, None)
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def postprocess_interactive(
    class_logits: np.ndarray,
    mask_logits: np.ndarray,
    geometry: Geometry,
    prompt_boxes: list[tuple[float, float, float, float]],
    *,
    threshold: float = 0.5,
) -> SegmentationResult:
    """Interactive segmentation: one mask per prompt, picked by box IoU (upstream ``intseg_process_fn``).

    For prompt k (class column k) each query scores class probability × mean sigmoid inside its mask, as
    upstream does. Candidates are the queries scoring ≥ ``threshold``, plus the top scorer (so there is
    always one). Among them the mask whose bounding box has the highest IoU with the prompt's box wins; ties
    go to the higher score. Queries are scored in descending class probability and scoring stops once no
    remaining query can reach the threshold or the best score (score ≤ class probability), so only a few
    masks are upsampled.

    Args:
        class_logits (np.ndarray): (Q, K+1) class logits, one column per prompt, background last.
        mask_logits (np.ndarray): (Q, m, m) mask logits.
        geometry (Geometry): image geometry.
        prompt_boxes (list[tuple[float, float, float, float]]): K boxes (x0, y0, x1, y1), x1/y1 exclusive, in
            original pixels (``preprocess.prompt_box``).
        threshold (float): candidate score threshold.

    Returns:
        SegmentationResult: K masks (K, H, W), labels ``"prompt {k}"``, label_ids = k.
    """
    cls, masks = check_inputs(class_logits, mask_logits)
    num_prompts = cls.shape[1] - 1
    if len(prompt_boxes) != num_prompts:
        raise ValueError(
            f"got {len(prompt_boxes)} prompt boxes but class_logits have {num_prompts} prompt columns"
        )
    if cls.shape[0] == 0 or num_prompts == 0:
        return empty_result(geometry)
    probs = softmax(cls)[:, :-1]  # (Q, K)
    up = Upsampler(masks.shape[1:], geometry)
    cache: dict[int, tuple[np.ndarray, float, tuple[float, float, float, float]]] = {}
    step = min(8, up.chunk(2))

    out_masks, out_scores = [], []
    for k in range(num_prompts):
        p = probs[:, k]
        order = np.argsort(-p, kind="stable")
        scored: list[tuple[int, float]] = []  # (query, combined score)
        best = -np.inf
        for start in range(0, len(order), step):
            if p[order[start]] < threshold and p[order[start]] < best:
                break
            chunk = [int(q) for q in order[start : start + step] if int(q) not in cache]
            if chunk:
                bin_masks, mask_scores = binary_masks(up, masks[chunk])
                for q, m, s in zip(chunk, bin_masks, mask_scores, strict=True):
                    cache[q] = (m, float(s), mask_box(m))
            for q in order[start : start + step]:
                score = float(p[q]) * cache[int(q)][1]
                scored.append((int(q), score))
                best = max(best, score)
        candidates = [(q, s) for q, s in scored if s >= threshold or s == best]
        candidates.sort(key=lambda qs: -qs[1])
        ious = box_iou(prompt_boxes[k], np.array([cache[q][2] for q, _ in candidates]))
        q, s = candidates[int(np.argmax(ious))]
        out_masks.append(cache[q][0])
        out_scores.append(s)
    labels = [f"prompt {k}" for k in range(num_prompts)]
    return make_result(geometry, out_masks, labels, out_scores, list(range(num_prompts)))


def postprocess_semantic(
    class_logits: np.ndarray,
    mask_logits: np.ndarray,
    geometry: Geometry,
    categories: list[str],
) -> SegmentationResult:
    """Semantic segmentation (upstream genseg ``_semantic_genseg_postprocess``).

    Per-class maps ``einsum("qc,qhw->chw", softmax(cls)[:, :-1], sigmoid(mask))`` at low resolution (the
    resize is linear, so this equals upstream's resize-then-argmax), brought to full size one band of rows at
    a time, then a per-pixel argmax. One mask per class present; its score is the mean class map inside it,
    clipped to 1 (the map is a sum over queries and can exceed 1).

    Args:
        class_logits (np.ndarray): (Q, C+1) class logits, background last.
        mask_logits (np.ndarray): (Q, m, m) mask logits.
        geometry (Geometry): image geometry.
        categories (list[str]): the C category names.

    Returns:
        SegmentationResult: disjoint masks covering the image, ordered by class id; label_ids index
        ``categories``.
    """
    cls, masks = check_inputs(class_logits, mask_logits)
    num_classes = cls.shape[1] - 1
    check_labels(categories, num_classes, "categories")
    if cls.shape[0] == 0 or num_classes == 0:
        return empty_result(geometry)
    num_q, mh, mw = masks.shape
    probs = softmax(cls)[:, :-1]  # (Q, C)
    seg = (probs.T @ sigmoid(masks).reshape(num_q, mh * mw)).reshape(num_classes, mh, mw)  # (C, mh, mw)

    up = Upsampler((mh, mw), geometry)
    h, w = geometry.image_hw
    label_map = np.zeros((h, w), np.int64)
    sums = np.zeros(num_classes, np.float64)
    band = max(1, CHUNK_BYTES // (4 * num_classes * w))
    for r0 in range(0, h, band):
        rows = slice(r0, min(h, r0 + band))
        maps = up(seg, rows)  # (C, band, W)
        lab = maps.argmax(axis=0)
        top = np.take_along_axis(maps, lab[None], axis=0)[0]
        label_map[rows] = lab
        sums += np.bincount(lab.ravel(), weights=top.ravel(), minlength=num_classes)
    counts = np.bincount(label_map.ravel(), minlength=num_classes)
    present = np.flatnonzero(counts)
    return make_result(
        geometry,
        label_map[None] == present[:, None, None],
        [categories[c] for c in present],
        np.minimum(sums[present] / counts[present], 1.0),
        present,
    )


def postprocess(
    task: Task | str,
    class_logits: np.ndarray | None,
    mask_logits: np.ndarray | None,
    geometry: Geometry,
    *,
    labels: list[str],
    prompt_boxes: list[tuple[float, float, float, float]] | None = None,
    **kw: Any,
) -> SegmentationResult:
    """Dispatch on the task; keyword arguments go to the task function.

    Args:
        task (Task | str): the request's task.
        class_logits (np.ndarray | None): (Q, C+1) class logits (may be ``None`` for chat).
        mask_logits (np.ndarray | None): (Q, m, m) mask logits (may be ``None`` for chat).
        geometry (Geometry): image geometry.
        labels (list[str]): phrases (referring, reasoning, GCG) or categories (panoptic, instance, semantic,
            open-vocabulary); ignored for visual-prompt tasks, whose labels are ``"prompt {k}"``.
        prompt_boxes (list[tuple[float, float, float, float]] | None): prompt boxes, required for interactive.
        **kw: task options (thresholds, ``stuff``, ``phrase_index``, ``text`` for GCG / chat).

    Returns:
        SegmentationResult: the task's result; chat returns no masks.
    """
    task = Task(task)
    if task == Task.CHAT:
        return empty_result(geometry, kw.get("text"))
    if class_logits is None or mask_logits is None:
        raise ValueError(f"task {task.value!r} needs class_logits and mask_logits")
    if task in (Task.REFERRING, Task.REASONING):
        return postprocess_referring(class_logits, mask_logits, geometry, labels, **kw)
    if task in (Task.PANOPTIC, Task.OPEN_VOCABULARY):
        return postprocess_panoptic(class_logits, mask_logits, geometry, labels, **kw)
    if task == Task.INSTANCE:
        return postprocess_instance(class_logits, mask_logits, geometry, labels, **kw)
    if task == Task.SEMANTIC:
        return postprocess_semantic(class_logits, mask_logits, geometry, labels, **kw)
    if task == Task.INTERACTIVE:
        if prompt_boxes is None:
            raise ValueError("task 'interactive' needs prompt_boxes (preprocess.prompt_box of each prompt)")
        return postprocess_interactive(class_logits, mask_logits, geometry, prompt_boxes, **kw)
    if task == Task.VISUAL_GROUNDED:
        return postprocess_visual_grounded(class_logits, mask_logits, geometry, **kw)
    if task == Task.GCG:
        return postprocess_gcg(class_logits, mask_logits, geometry, labels, **kw)
    raise ValueError(f"no post-processing for task {task.value!r}")  # pragma: no cover


def finish(
    task: Task | str,
    class_logits: np.ndarray | None,
    mask_logits: np.ndarray | None,
    geometry: Geometry,
    labels: list[str],
    prompt_boxes: list[tuple[float, float, float, float]] | None,
    text: str | None,
) -> SegmentationResult:
    """The result of one request from its decoder outputs (shared by the PyTorch predictor and the runtime).

    No logits (chat, or a GCG answer that named no phrase) gives a text-only result.
    """
    if class_logits is None or mask_logits is None:
        return empty_result(geometry, text)
    task = Task(task)
    return postprocess(
        task,
        class_logits,
        mask_logits,
        geometry,
        labels=labels,
        prompt_boxes=prompt_boxes,
        **({"text": text} if task is Task.GCG else {}),
    )


__all__ = [
    "Geometry",
    "box_iou",
    "empty_result",
    "finish",
    "masks_to_image",
    "postprocess",
    "postprocess_gcg",
    "postprocess_instance",
    "postprocess_interactive",
    "postprocess_panoptic",
    "postprocess_referring",
    "postprocess_semantic",
    "postprocess_visual_grounded",
    "resize_bilinear",
]
