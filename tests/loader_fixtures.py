"""Small fixtures in every real on-disk dataset format, shared by the loader tests."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

RNG = np.random.default_rng(0)


def _write_image(path: Path, h: int, w: int) -> np.ndarray:
    rgb = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return rgb


def _inside(points: list[tuple[float, float]], h: int, w: int, offset: float, edges: bool) -> np.ndarray:
    """Pixels whose centre (j + offset, i + offset) is in the polygon (even-odd; ``edges``: or on it)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64) + offset
    inside = np.zeros((h, w), bool)
    on_edge = np.zeros((h, w), bool)
    n = len(points)
    for k in range(n):
        (x0, y0), (x1, y1) = points[k], points[(k + 1) % n]
        crosses = (y0 > ys) != (y1 > ys)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x0 + (ys - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (xs < x_at)
        cross = (x1 - x0) * (ys - y0) - (y1 - y0) * (xs - x0)
        within = (np.minimum(x0, x1) <= xs) & (xs <= max(x0, x1)) & (min(y0, y1) <= ys) & (ys <= max(y0, y1))
        on_edge |= (np.abs(cross) < 1e-9) & within
    return inside | on_edge if edges else inside


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / float((a | b).sum())


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _flat(points: list[tuple[float, float]]) -> list[float]:
    return [float(v) for p in points for v in p]


def _ids_to_rgb(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


PANOPTIC_CATEGORIES = [  # deliberately not sorted by id
    {"id": 10, "name": "sky", "isthing": 0},
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 7, "name": "grass", "isthing": 0},
    {"id": 3, "name": "car", "isthing": 1},
]


NAMES_BY_ID = ["person", "car", "grass", "sky"]  # ids 1, 3, 7, 10


def _write_panoptic(root: Path) -> dict:
    (root / "images").mkdir()
    (root / "pngs").mkdir()
    h, w = 30, 40
    ids1 = np.zeros((h, w), np.int64)  # the left 2 columns stay void (0)
    ids1[:10, 2:] = 70000  # sky (needs the blue channel)
    ids1[10:, 2:20] = 5  # person
    ids1[10:20, 20:] = 300  # car (green channel)
    ids1[20:, 20:30] = 9  # crowd person
    ids1[20:, 30:] = 12  # grass
    ids2 = np.full((h, w), 44, np.int64)  # all grass
    segs1 = [
        {"id": 70000, "category_id": 10, "iscrowd": 0},
        {"id": 5, "category_id": 1, "iscrowd": 0},
        {"id": 300, "category_id": 3, "iscrowd": 0},
        {"id": 9, "category_id": 1, "iscrowd": 1},
        {"id": 12, "category_id": 7, "iscrowd": 0},
    ]
    data = {
        "images": [
            {"id": 139, "file_name": "000139.jpg", "height": h, "width": w},
            {"id": 285, "file_name": "000285.jpg", "height": h, "width": w},
        ],
        "annotations": [
            {"image_id": 139, "file_name": "000139.png", "segments_info": segs1},
            {"image_id": 285, "file_name": "000285.png", "segments_info": [{"id": 44, "category_id": 7}]},
        ],
        "categories": PANOPTIC_CATEGORIES,
    }
    for name, ids in (("000139", ids1), ("000285", ids2)):
        _write_image(root / "images" / f"{name}.jpg", h, w)
        Image.fromarray(_ids_to_rgb(ids)).save(root / "pngs" / f"{name}.png")
    (root / "panoptic_val2017.json").write_text(json.dumps(data))
    return {"ids1": ids1, "ids2": ids2, "data": data}


def _panoptic_args(root: Path) -> tuple[Path, Path, Path]:
    return root / "panoptic_val2017.json", root / "pngs", root / "images"


REF_H, REF_W = 80, 96


TRIANGLE = [(10.0, 8.0), (70.0, 14.0), (30.0, 60.0)]


def _write_refcoco(root: Path) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir()
    rle_mask = np.zeros((REF_H, REF_W), bool)
    rle_mask[40:70, 50:90] = True
    rle_mask[45:50, 60:65] = False
    raw_mask = np.zeros((REF_H, REF_W), bool)
    raw_mask[5:15, 5:80] = True
    # uncompressed RLE: column-major run lengths starting with zeros
    flat = raw_mask.flatten(order="F").astype(np.int64)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    instances = {
        "images": [
            {"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "height": REF_H, "width": REF_W},
            {"id": 2, "file_name": "COCO_train2014_000000000002.jpg", "height": REF_H, "width": REF_W},
        ],
        "annotations": [
            {"id": 100, "image_id": 1, "category_id": 1, "segmentation": [_flat(TRIANGLE)], "iscrowd": 0},
            {"id": 101, "image_id": 1, "category_id": 3, "segmentation": _rle(rle_mask), "iscrowd": 0},
            {
                "id": 200,
                "image_id": 2,
                "category_id": 1,
                "segmentation": {"size": [REF_H, REF_W], "counts": counts},
            },
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
    }
    for img in instances["images"]:
        _write_image(root / "images" / img["file_name"], REF_H, REF_W)
    refs = [
        {
            "ref_id": 0,
            "ann_id": 100,
            "image_id": 1,
            "split": "val",
            "category_id": 1,
            "file_name": "COCO_train2014_000000000001_100.jpg",
            "sentences": [
                {"sent": "man on the left", "raw": "Man on the left", "sent_id": 0},
                {"sent": "left guy"},
            ],
        },
        {
            "ref_id": 1,
            "ann_id": 101,
            "image_id": 1,
            "split": "val",
            "category_id": 3,
            "file_name": "COCO_train2014_000000000001_101.jpg",
            "sentences": [{"sent": "red car"}, {"sent": "red car"}],  # duplicate: counted once
        },
        {
            "ref_id": 2,
            "ann_id": 200,
            "image_id": 2,
            "split": "testA",
            "category_id": 1,
            "file_name": "COCO_train2014_000000000002_200.jpg",
            "sentences": [{"sent": "woman"}],
        },
    ]
    (root / "instances.json").write_text(json.dumps(instances))
    with (root / "refs(unc).p").open("wb") as f:
        pickle.dump(refs, f, protocol=2)
    (root / "refs.json").write_text(json.dumps(refs))
    return {"refs": refs, "rle_mask": rle_mask, "raw_mask": raw_mask}


INT_H, INT_W = 120, 160


POLY_A = [(20.0, 20.0), (70.0, 24.0), (60.0, 80.0), (25.0, 70.0)]


def _masks_interactive() -> dict:
    b = np.zeros((INT_H, INT_W), bool)
    b[30:100, 90:150] = True
    b[60:70, 100:110] = False
    point_a = np.zeros_like(b)
    point_a[50, 40] = True
    box_a = np.zeros_like(b)
    box_a[18:82, 18:72] = True
    scribble_a = np.zeros_like(b)
    scribble_a[50, 30:60] = True
    mask_a = _inside(POLY_A, INT_H, INT_W, 0.5, False)
    point_b = np.zeros_like(b)
    point_b[40, 100] = point_b[90, 140] = True
    box_b = np.zeros_like(b)
    box_b[30:60, 90:150] = True
    box_b[70:100, 95:140] = True
    return {
        "b": b,
        "point_a": point_a,
        "box_a": box_a,
        "scribble_a": scribble_a,
        "mask_a": mask_a,
        "point_b": point_b,
        "box_b": box_b,
    }


def _write_psalm(root: Path) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    (root / "val2017").mkdir()
    m = _masks_interactive()
    _write_image(root / "val2017" / "000001.jpg", INT_H, INT_W)
    anns = [
        {
            "id": 11,
            "category_id": 1,
            "iscrowd": 0,
            "segmentation": [_flat(POLY_A)],
            "point_visual_prompt_mask": _rle(m["point_a"]),
            "scribble_visual_prompt_mask": _rle(m["scribble_a"]),
            "box_visual_prompt_mask": _rle(m["box_a"]),
            "mask_visual_prompt_mask": _rle(m["mask_a"]),
        },
        {
            "id": 12,
            "category_id": 3,
            "iscrowd": 0,
            "segmentation": _rle(m["b"]),
            "point_visual_prompt_mask": _rle(m["point_b"]),
            "scribble_visual_prompt_mask": _rle(np.zeros_like(m["b"])),  # empty: skipped
            "box_visual_prompt_mask": _rle(m["box_b"]),
            "mask_visual_prompt_mask": _rle(m["b"]),
        },
        {"id": 13, "category_id": 1, "iscrowd": 1, "segmentation": _rle(m["b"])},  # crowd: skipped
    ]
    info = {"id": 1, "file_name": "000001.jpg", "height": INT_H, "width": INT_W}
    data = [{"image": "000001.jpg", "image_info": info, "new_img_id": 0, "anns": anns}]
    (root / "coco_interactive_val_psalm.json").write_text(json.dumps(data))
    return m


def _write_plain(root: Path, prompts: list) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "img").mkdir(exist_ok=True)
    m = _masks_interactive()
    _write_image(root / "img" / "a.png", INT_H, INT_W)
    data = {
        "images": [{"id": 7, "file_name": "a.png", "height": INT_H, "width": INT_W}],
        "annotations": [
            {"id": k, "image_id": 7, "segmentation": _rle(m["b"]), **p} for k, p in enumerate(prompts)
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    path = root / "plain.json"
    path.write_text(json.dumps(data))
    return path


RS_H, RS_W = 90, 120


OUTER = [(10, 10), (100, 15), (90, 80), (15, 70)]


INNER = [(40, 30), (60, 30), (60, 50), (40, 50)]


SECOND = [(5, 5), (30, 5), (30, 25)]


def _write_reasonseg(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shapes_a = [
        {"label": "ignore", "points": [list(p) for p in INNER], "shape_type": "polygon"},
        {"label": "target", "points": [[x + 0.7, y + 0.2] for x, y in OUTER], "shape_type": "polygon"},
        {"label": "flag", "points": [[0, 0], [119, 0], [119, 89]], "shape_type": "polygon"},
    ]
    shapes_b = [
        {"label": "target", "points": [list(p) for p in SECOND], "shape_type": "polygon"},
        {"label": "target", "points": [list(p) for p in INNER], "shape_type": "polygon"},
    ]
    shapes_c = [{"label": "ignore", "points": [list(p) for p in INNER], "shape_type": "polygon"}]
    files = {
        "a": {
            "text": ["What keeps the food cold?", "Where would you put milk?"],
            "is_sentence": True,
            "shapes": shapes_a,
        },
        "b": {"text": ["the triangle"], "is_sentence": False, "shapes": shapes_b},
        "c": {"text": ["nothing here"], "is_sentence": False, "shapes": shapes_c},
    }
    for stem, data in files.items():
        _write_image(folder / f"{stem}.jpg", RS_H, RS_W)
        (folder / f"{stem}.json").write_text(json.dumps(data))
