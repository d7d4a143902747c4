"""Instance-segmentation AP with pycocotools' ``COCOeval`` (iouType ``segm``), built in memory from masks.

This is how X-SAM's genseg / ovseg / VGD evaluators score masks (XSAM.md §7): COCO's 101-point interpolated
precision, averaged over IoU thresholds 0.50:0.05:0.95 (AP) or at 0.50 (AP50), over categories, with at most
100 detections per image and category and the "all" area range. Values are ×100, as in upstream tables.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Hashable, Sequence

import numpy as np


def _encode(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    return mask_utils.encode(np.asfortranarray(np.asarray(mask, np.uint8)))


def instance_ap(
    gts: Sequence[tuple[np.ndarray, Sequence[Hashable]]],
    preds: Sequence[tuple[np.ndarray, Sequence[Hashable], np.ndarray]],
) -> dict[str, float]:
    """COCO mask AP and AP50 over a set of images.

    Image k's ground truth is ``gts[k] = (masks (N, H, W) bool, N labels)`` and its prediction
    ``preds[k] = (masks (M, H, W) bool, M labels, (M,) scores)``. Labels are any hashable keys; each distinct
    label becomes one COCO category. As in COCO, a category with no ground-truth instance in any image is
    left out of the average (its detections cost nothing), and empty ground-truth masks are dropped (they
    can never be found).

    Edge cases, which COCOeval itself does not handle: with no ground-truth instance at all, or no
    prediction at all, AP and AP50 are 0.0 (COCOeval would report -1 or fail in ``loadRes``).

    Args:
        gts (Sequence[tuple[np.ndarray, Sequence[Hashable]]]): per image, ground-truth masks and labels.
        preds (Sequence[tuple[np.ndarray, Sequence[Hashable], np.ndarray]]): per image, predicted masks,
            labels and confidence scores.

    Returns:
        dict[str, float]: ``ap`` (IoU 0.50:0.95) and ``ap50``, ×100.

    Raises:
        ValueError: the lists differ in length, or an image's masks, labels and scores disagree.
        ImportError: pycocotools is not installed.
    """
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as err:
        raise ImportError("instance AP needs pycocotools: pip install pycocotools") from err
    if len(gts) != len(preds):
        raise ValueError(f"got ground truth for {len(gts)} images but predictions for {len(preds)}")

    category_ids: dict[Hashable, int] = {}  # label -> COCO category id (1-based)
    images, gt_anns, dt_anns = [], [], []
    for k, ((gt_masks, gt_labels), (dt_masks, dt_labels, dt_scores)) in enumerate(
        zip(gts, preds, strict=True)
    ):
        gt_masks, dt_masks = np.asarray(gt_masks, bool), np.asarray(dt_masks, bool)
        dt_scores = np.asarray(dt_scores, np.float64).reshape(-1)
        if gt_masks.ndim != 3 or len(gt_labels) != len(gt_masks):
            raise ValueError(f"image {k}: ground-truth masks {gt_masks.shape} with {len(gt_labels)} labels")
        if dt_masks.ndim != 3 or not len(dt_labels) == len(dt_scores) == len(dt_masks):
            raise ValueError(
                f"image {k}: predicted masks {dt_masks.shape}, {len(dt_labels)} labels, "
                f"{len(dt_scores)} scores"
            )
        if len(gt_masks) and len(dt_masks) and gt_masks.shape[1:] != dt_masks.shape[1:]:
            raise ValueError(
                f"image {k}: ground truth is {gt_masks.shape[1:]}, prediction {dt_masks.shape[1:]}"
            )
        h, w = gt_masks.shape[1:] if len(gt_masks) else dt_masks.shape[1:]
        images.append({"id": k + 1, "height": int(h), "width": int(w)})
        for mask, label in zip(gt_masks, gt_labels, strict=True):
            area = int(mask.sum())
            if area == 0:
                continue
            cat = category_ids.setdefault(label, len(category_ids) + 1)
            # COCOeval needs annotation ids > 0: 0 reads as "unmatched" in its match arrays
            gt_anns.append(
                {
                    "id": len(gt_anns) + 1,
                    "image_id": k + 1,
                    "category_id": cat,
                    "segmentation": _encode(mask),
                    "area": area,
                    "iscrowd": 0,
                }
            )
        for mask, label, score in zip(dt_masks, dt_labels, dt_scores, strict=True):
            cat = category_ids.setdefault(label, len(category_ids) + 1)
            dt_anns.append(
                {"image_id": k + 1, "category_id": cat, "segmentation": _encode(mask), "score": float(score)}
            )
    if not gt_anns or not dt_anns:
        return {"ap": 0.0, "ap50": 0.0}

    # COCO, loadRes and COCOeval print progress; keep library output off stdout
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {
            "images": images,
            "annotations": gt_anns,
            "categories": [{"id": i, "name": str(label)} for label, i in category_ids.items()],
        }
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dt_anns)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="segm")
        # only the "all" area range at 100 detections is reported: evaluating the small / medium / large
        # ranges too would take 4x as long (it dominates a bootstrap, which rescores hundreds of times)
        evaluator.params.areaRng, evaluator.params.areaRngLbl = [[0.0, 1e10]], ["all"]
        evaluator.params.maxDets = [100]
        evaluator.evaluate()
        evaluator.accumulate()
    # what COCOeval.summarize reads for stats[0] and stats[1]: precision is [IoU, recall, category, area,
    # maxDets], -1 where a category has no ground truth; IoU index 0 is 0.50
    precision = evaluator.eval["precision"][..., 0, 0]
    ap, ap50 = (float(s[s > -1].mean()) if (s > -1).any() else 0.0 for s in (precision, precision[0]))
    return {"ap": max(ap, 0.0) * 100.0, "ap50": max(ap50, 0.0) * 100.0}
