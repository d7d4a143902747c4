"""Instance-segmentation AP with pycocotools' ``COCOeval`` (iouType ``segm``), built in memory from masks.

This is how X-SAM's genseg / ovseg / VGD evaluators score masks (XSAM.md §7): COCO's 101-point interpolated
precision, averaged over IoU thresholds 0.50:0.05:0.95 (AP) or at 0.50 (AP50), over categories, with at most
100 detections per image and category and the "all" area range. Values are ×100, as in upstream tables.

COCOeval works in two steps, and only the second depends on which images are scored together:
``evaluate`` matches each image's detections to its ground truth per category (RLE encoding, mask IoUs,
greedy matching: most of the time), ``accumulate`` pools the matches of each category and reads the
precision / recall curve. ``InstanceMatches`` keeps the first step's per-image matches, so AP over any
multiset of the images (a bootstrap draw) costs one ``accumulate``.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Hashable, Sequence

import numpy as np


def _encode(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    return mask_utils.encode(np.asfortranarray(np.asarray(mask, np.uint8)))


_ALL_AREAS = [[0.0, 1e10]]
_MAX_DETS = 100


def _cocoeval():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as err:
        raise ImportError("instance AP needs pycocotools: pip install pycocotools") from err
    return COCO, COCOeval


def _only_all_areas(params) -> None:
    # only the "all" area range at 100 detections is reported: evaluating the small / medium / large ranges
    # too would take 4x as long
    params.areaRng, params.areaRngLbl, params.maxDets = copy.deepcopy(_ALL_AREAS), ["all"], [_MAX_DETS]


class InstanceMatches:
    """Every image's detections matched to its ground truth once; COCO AP over any multiset of the images.

    Image k's ground truth is ``gts[k] = (masks (N, H, W) bool, N labels)`` and its prediction
    ``preds[k] = (masks (M, H, W) bool, M labels, (M,) scores)``. Labels are any hashable keys; each distinct
    label becomes one COCO category. As in COCO, a category with no ground-truth instance among the scored
    images is left out of the average (its detections cost nothing), and empty ground-truth masks are
    dropped (they can never be found).

    Edge cases, which COCOeval itself does not handle: with no ground-truth instance at all, or no
    prediction at all, AP and AP50 are 0.0 (COCOeval would report -1 or fail in ``loadRes``).

    Args:
        gts (Sequence[tuple[np.ndarray, Sequence[Hashable]]]): per image, ground-truth masks and labels.
        preds (Sequence[tuple[np.ndarray, Sequence[Hashable], np.ndarray]]): per image, predicted masks,
            labels and confidence scores.
        image_local (bool): each image's labels are categories of that image alone (visual-grounded
            prompts: prompt 0 of one image and prompt 0 of another are unrelated). An image scored twice
            then brings its categories twice, as two different images would.

    Raises:
        ValueError: the lists differ in length, or an image's masks, labels and scores disagree.
        ImportError: pycocotools is not installed.
    """

    def __init__(
        self,
        gts: Sequence[tuple[np.ndarray, Sequence[Hashable]]],
        preds: Sequence[tuple[np.ndarray, Sequence[Hashable], np.ndarray]],
        image_local: bool = False,
    ) -> None:
        coco_cls, cocoeval_cls = _cocoeval()
        if len(gts) != len(preds):
            raise ValueError(f"got ground truth for {len(gts)} images but predictions for {len(preds)}")
        self.image_local = image_local
        self.num_images = len(gts)
        self._num_gt = [0] * len(gts)  # per image: non-empty ground-truth instances, detections
        self._num_dt = [0] * len(gts)
        # per image: (category key, COCOeval's evaluateImg entry) for each category it has a box or mask of
        self._matches: list[list[tuple[Hashable, dict]]] = [[] for _ in gts]

        category_ids: dict[Hashable, int] = {}  # category key -> COCO category id (1-based)
        images, gt_anns, dt_anns = [], [], []
        for k, ((gt_masks, gt_labels), (dt_masks, dt_labels, dt_scores)) in enumerate(
            zip(gts, preds, strict=True)
        ):
            gt_masks, dt_masks = np.asarray(gt_masks, bool), np.asarray(dt_masks, bool)
            dt_scores = np.asarray(dt_scores, np.float64).reshape(-1)
            if gt_masks.ndim != 3 or len(gt_labels) != len(gt_masks):
                raise ValueError(
                    f"image {k}: ground-truth masks {gt_masks.shape} with {len(gt_labels)} labels"
                )
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

            def category(label: Hashable, k: int = k) -> int:
                key = (k, label) if image_local else label
                return category_ids.setdefault(key, len(category_ids) + 1)

            for mask, label in zip(gt_masks, gt_labels, strict=True):
                area = int(mask.sum())
                if area == 0:
                    continue
                # COCOeval needs annotation ids > 0: 0 reads as "unmatched" in its match arrays
                gt_anns.append(
                    {
                        "id": len(gt_anns) + 1,
                        "image_id": k + 1,
                        "category_id": category(label),
                        "segmentation": _encode(mask),
                        "area": area,
                        "iscrowd": 0,
                    }
                )
                self._num_gt[k] += 1
            for mask, label, score in zip(dt_masks, dt_labels, dt_scores, strict=True):
                dt_anns.append(
                    {
                        "image_id": k + 1,
                        "category_id": category(label),
                        "segmentation": _encode(mask),
                        "score": float(score),
                    }
                )
                self._num_dt[k] += 1
        if not gt_anns or not dt_anns:
            return

        # COCO, loadRes and COCOeval print progress; keep library output off stdout
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = coco_cls()
            coco_gt.dataset = {
                "images": images,
                "annotations": gt_anns,
                "categories": [{"id": i, "name": str(key)} for key, i in category_ids.items()],
            }
            coco_gt.createIndex()
            evaluator = cocoeval_cls(coco_gt, coco_gt.loadRes(dt_anns), iouType="segm")
            _only_all_areas(evaluator.params)
            evaluator.evaluate()
        # evalImgs is laid out [category][area range][image] over the sorted ids, one area range here
        keys = {i: key for key, i in category_ids.items()}
        cat_ids, img_ids = evaluator.params.catIds, evaluator.params.imgIds
        for c, cat_id in enumerate(cat_ids):
            for i, img_id in enumerate(img_ids):
                entry = evaluator.evalImgs[c * len(img_ids) + i]
                if entry is not None:
                    self._matches[img_id - 1].append((keys[cat_id], entry))

    def ap(self, images: Sequence[int] | None = None) -> dict[str, float]:
        """AP and AP50 (×100) over ``images``: indices into the images given, in any order, repeats allowed.

        Scoring image k twice is scoring two copies of it (a bootstrap draw): the same numbers
        ``instance_ap`` gives on lists holding it twice. ``None`` scores every image once.
        """
        images = range(self.num_images) if images is None else images
        pooled: dict[Hashable, list[dict]] = {}  # category -> its matches, in the order the images come
        num_gt = num_dt = 0
        for position, k in enumerate(images):
            num_gt += self._num_gt[k]
            num_dt += self._num_dt[k]
            for key, entry in self._matches[k]:
                pooled.setdefault((position, key) if self.image_local else key, []).append(entry)
        if not num_gt or not num_dt:
            return {"ap": 0.0, "ap50": 0.0}

        _, cocoeval_cls = _cocoeval()
        evaluator = cocoeval_cls(iouType="segm")
        params = evaluator.params
        _only_all_areas(params)
        # accumulate reads evalImgs as [category][area range][image]; it only pools each category's
        # entries, so an image axis as long as the longest category's list (None-padded) is enough
        slots = max(len(entries) for entries in pooled.values())
        params.catIds, params.imgIds = list(range(len(pooled))), list(range(slots))
        evaluator._paramsEval = copy.deepcopy(params)
        evaluator.evalImgs = [
            entries[s] if s < len(entries) else None for entries in pooled.values() for s in range(slots)
        ]
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator.accumulate()
        # what COCOeval.summarize reads for stats[0] and stats[1]: precision is [IoU, recall, category, area,
        # maxDets], -1 where a category has no ground truth; IoU index 0 is 0.50
        precision = evaluator.eval["precision"][..., 0, 0]
        ap, ap50 = (float(s[s > -1].mean()) if (s > -1).any() else 0.0 for s in (precision, precision[0]))
        return {"ap": max(ap, 0.0) * 100.0, "ap50": max(ap50, 0.0) * 100.0}


def instance_ap(
    gts: Sequence[tuple[np.ndarray, Sequence[Hashable]]],
    preds: Sequence[tuple[np.ndarray, Sequence[Hashable], np.ndarray]],
    image_local: bool = False,
) -> dict[str, float]:
    """COCO mask AP and AP50 (×100) over a set of images: ``InstanceMatches(...).ap()``, see there."""
    return InstanceMatches(gts, preds, image_local).ap()
