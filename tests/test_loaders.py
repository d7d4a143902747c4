"""Round trips for the real-format loaders: write small fixtures in each on-disk format, load them back.

RLE and PNG masks must come back exactly; polygons are rasterised by another rule than the test's
(pycocotools, PIL), so those masks are compared by IoU ≥ 0.97.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from xsam_edge.data.coco_interactive import load_coco_interactive
from xsam_edge.data.coco_panoptic import load_coco_panoptic
from xsam_edge.data.reasonseg import load_reasonseg
from xsam_edge.data.refcoco import decode_segmentation, load_refcoco, load_refs
from xsam_edge.data.registry import iter_dataset, load_dataset
from xsam_edge.spec.preprocess import rasterize_prompt
from xsam_edge.spec.types import Box, MaskPrompt, Point, Scribble, Task

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- fixture helpers


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


# ---------------------------------------------------------------- COCO panoptic


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


def test_coco_panoptic_round_trip(tmp_path):
    written = _write_panoptic(tmp_path)
    ids1 = written["ids1"]
    examples = load_coco_panoptic(*_panoptic_args(tmp_path))
    assert [e.task for e in examples] == [Task.PANOPTIC, Task.INSTANCE, Task.SEMANTIC] * 2
    pan, ins, sem = examples[:3]
    for e in examples:
        assert e.request.categories == NAMES_BY_ID  # every category, sorted by id
        assert e.target.answer == "Sure, <SEG>."
        assert e.source == "coco_panoptic:val2017"
    assert pan.image_id == "139" and pan.request.image.shape == (30, 40, 3)

    # panoptic: non-crowd segments in json order, exact masks from the PNG ids
    np.testing.assert_array_equal(pan.target.masks, np.stack([ids1 == s for s in (70000, 5, 300, 12)]))
    assert pan.target.label_ids.tolist() == [3, 0, 1, 2]
    assert pan.target.is_thing.tolist() == [False, True, True, False]
    assert pan.meta["segment_ids"] == [70000, 5, 300, 12]
    np.testing.assert_array_equal(pan.meta["void_mask"], ids1 == 0)
    np.testing.assert_array_equal(pan.meta["crowd_masks"], (ids1 == 9)[None])
    assert pan.meta["crowd_label_ids"].tolist() == [0]

    # instance: things only, no crowd
    np.testing.assert_array_equal(ins.target.masks, np.stack([ids1 == 5, ids1 == 300]))
    assert ins.target.label_ids.tolist() == [0, 1] and ins.target.is_thing is None

    # semantic: one mask per category present, crowd included, in category order
    assert sem.target.label_ids.tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(sem.target.masks[0], (ids1 == 5) | (ids1 == 9))
    np.testing.assert_array_equal(sem.target.masks[3], ids1 == 70000)

    # second image: stuff only, so the instance example has no masks
    pan2, ins2, sem2 = examples[3:]
    np.testing.assert_array_equal(pan2.target.masks, (written["ids2"] == 44)[None])
    assert ins2.target.masks.shape == (0, 30, 40) and ins2.target.label_ids.shape == (0,)
    assert sem2.target.label_ids.tolist() == [2]

    assert len(load_coco_panoptic(*_panoptic_args(tmp_path), limit=1)) == 3


def test_coco_panoptic_errors(tmp_path):
    written = _write_panoptic(tmp_path)
    json_path, png_dir, image_dir = _panoptic_args(tmp_path)
    data = written["data"]

    data["annotations"][0]["segments_info"][0]["category_id"] = 99
    json_path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="unknown category id 99"):
        load_coco_panoptic(json_path, png_dir, image_dir)
    data["annotations"][0]["segments_info"][0]["category_id"] = 10

    data["annotations"][0]["segments_info"].pop(1)  # id 5 is in the PNG, no longer in the json
    json_path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"segment ids \[5\] the json does not list"):
        load_coco_panoptic(json_path, png_dir, image_dir)

    json_path.write_text('{"images": [')
    with pytest.raises(ValueError, match=r"panoptic_val2017\.json is malformed JSON"):
        load_coco_panoptic(json_path, png_dir, image_dir)

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    _write_panoptic(fresh)
    (fresh / "pngs" / "000139.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"image 139: panoptic PNG .*000139\.png does not exist"):
        load_coco_panoptic(*_panoptic_args(fresh))
    (fresh / "images" / "000139.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"image 139: image file .*000139\.jpg does not exist"):
        load_coco_panoptic(*_panoptic_args(fresh))
    with pytest.raises(FileNotFoundError, match="panoptic json not found"):
        load_coco_panoptic(fresh / "nope.json", png_dir, image_dir)
    with pytest.raises(FileNotFoundError, match="panoptic PNG folder not found"):
        load_coco_panoptic(json_path, fresh / "nope", image_dir)


# ---------------------------------------------------------------- RefCOCO


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


def test_refcoco_round_trip(tmp_path):
    root = tmp_path / "refcoco"
    written = _write_refcoco(root)
    for refs_file in ("refs(unc).p", "refs.json"):
        examples = load_refcoco(root / refs_file, root / "instances.json", root / "images", "val")
        assert [e.request.text for e in examples] == ["man on the left", "left guy", "red car"]
        assert all(e.task == Task.REFERRING and e.source == "refcoco:val" for e in examples)
        assert all(
            e.target.answer == "Sure, it is <SEG>." and e.target.label_ids.tolist() == [0] for e in examples
        )
        assert [e.meta["ann_id"] for e in examples] == [100, 100, 101]
        assert examples[0].meta["category"] == "person" and examples[0].image_id == "1"
        truth = _inside(TRIANGLE, REF_H, REF_W, offset=0.5, edges=False)
        assert examples[0].target.masks.shape == (1, REF_H, REF_W)
        assert _iou(examples[0].target.masks[0], truth) >= 0.97
        np.testing.assert_array_equal(examples[2].target.masks[0], written["rle_mask"])  # RLE: exact

    test_a = load_refcoco(root / "refs(unc).p", root / "instances.json", root / "images", "testA")
    np.testing.assert_array_equal(test_a[0].target.masks[0], written["raw_mask"])  # uncompressed RLE
    assert (
        len(load_refcoco(root / "refs.json", root / "instances.json", root / "images", "val", limit=1)) == 3
    )


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_refs_pickle_protocols(tmp_path, protocol):
    refs = [
        {"ref_id": 1, "sentences": [{"sent": "a"}], "split": "val", "score": 0.5, "flag": True, "x": None}
    ]
    with (tmp_path / "refs.p").open("wb") as f:
        pickle.dump(refs, f, protocol=protocol)
    assert load_refs(tmp_path / "refs.p") == refs


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_refs_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "refs(unc).p"
    with path.open("wb") as f:
        pickle.dump([{"ref_id": 0, "sentences": [_Evil(marker)]}], f)
    with pytest.raises(
        ValueError, match=r"refs\(unc\)\.p: asks for (posix|nt|os)\.system; .* refused without running"
    ):
        load_refs(path)
    assert not marker.exists()

    from collections import OrderedDict

    with path.open("wb") as f:
        pickle.dump([OrderedDict(a=1)], f)  # any class at all is refused, harmless or not
    with pytest.raises(ValueError, match=r"asks for collections\.OrderedDict"):
        load_refs(path)


def test_refcoco_errors(tmp_path):
    root = tmp_path / "refcoco"
    _write_refcoco(root)
    args = (root / "refs.json", root / "instances.json", root / "images")
    with pytest.raises(ValueError, match=r"no refs in split 'test'; the file has splits \['testA', 'val'\]"):
        load_refcoco(*args, "test")
    (root / "images" / "COCO_train2014_000000000001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"COCO_train2014_000000000001\.jpg does not exist"):
        load_refcoco(*args, "val")
    with pytest.raises(FileNotFoundError, match="instances json not found"):
        load_refcoco(root / "refs.json", root / "missing.json", root / "images", "val")
    (root / "refs.p").write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(ValueError, match=r"refs pickle .*refs\.p"):
        load_refs(root / "refs.p")
    with pytest.raises(ValueError, match="RLE size"):
        decode_segmentation({"size": [3, 3], "counts": "abc"}, 4, 4, "ann 7")
    with pytest.raises(ValueError, match="ann 7: segmentation must be polygons"):
        decode_segmentation(42, 4, 4, "ann 7")


# ---------------------------------------------------------------- COCO-Interactive


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


def test_coco_interactive_psalm_round_trip(tmp_path):
    root = tmp_path / "coco"
    m = _write_psalm(root)
    examples = load_coco_interactive(root / "coco_interactive_val_psalm.json", root / "val2017")
    assert [e.meta["prompt_kind"] for e in examples] == ["point", "scribble", "box", "mask"]
    point, scribble, box, mask = examples
    for e in examples:
        assert e.task == Task.INTERACTIVE and e.target.answer == "Sure, <SEG>."
        assert e.target.label_ids.tolist() == list(range(len(e.request.prompts)))
        assert e.source == "coco_interactive:coco_interactive_val_psalm"

    hw = (INT_H, INT_W)
    # point: one pixel → Point (x = column, y = row); two pixels → the union of their disks
    assert point.meta["ann_ids"] == [11, 12] and point.meta["category_ids"] == [1, 3]
    assert point.request.prompts[0] == Point(x=40.0, y=50.0)
    assert isinstance(point.request.prompts[1], MaskPrompt)
    expected = rasterize_prompt(Point(100.0, 40.0), hw) | rasterize_prompt(Point(140.0, 90.0), hw)
    np.testing.assert_array_equal(point.request.prompts[1].mask, expected)
    assert _iou(point.target.masks[0], m["mask_a"]) >= 0.97  # polygon target
    np.testing.assert_array_equal(point.target.masks[1], m["b"])  # RLE target: exact

    # scribble: only annotation 11 has one; the stroke is grown like a scribble of radius 5
    assert scribble.meta["ann_ids"] == [11] and scribble.meta["skipped_empty"] == [12]
    grown = np.zeros(hw, bool)
    for i, j in np.argwhere(m["scribble_a"]):
        grown |= rasterize_prompt(Scribble(points=((float(j), float(i)),)), hw)
    np.testing.assert_array_equal(scribble.request.prompts[0].mask, grown)

    # box: one filled rectangle → Box (exclusive x1, y1); two rectangles → the mask itself
    assert box.request.prompts[0] == Box(x0=18.0, y0=18.0, x1=72.0, y1=82.0)
    np.testing.assert_array_equal(rasterize_prompt(box.request.prompts[0], hw), m["box_a"])
    np.testing.assert_array_equal(box.request.prompts[1].mask, m["box_b"])

    np.testing.assert_array_equal(mask.request.prompts[0].mask, m["mask_a"])
    np.testing.assert_array_equal(mask.request.prompts[1].mask, m["b"])

    per_ann = load_coco_interactive(
        root / "coco_interactive_val_psalm.json",
        root / "val2017",
        per_annotation=True,
        kinds=("box", "point"),
    )
    assert [(e.meta["prompt_kind"], e.meta["ann_ids"]) for e in per_ann] == [
        ("point", [11]),
        ("point", [12]),
        ("box", [11]),
        ("box", [12]),
    ]


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


def test_coco_interactive_plain_prompts(tmp_path):
    m = _masks_interactive()
    path = _write_plain(
        tmp_path,
        [
            {"prompt": {"type": "point", "point": [100, 40]}},
            {
                "prompts": [
                    {"type": "box", "box": [90, 30, 70, 70]},  # x + w = 160 = the image width
                    {"type": "scribble", "points": [[95, 35], [140, 90]]},
                    {"type": "mask", "mask": _rle(m["b"])},
                ]
            },
        ],
    )
    examples = load_coco_interactive(path, tmp_path / "img")
    assert [(e.meta["prompt_kind"], e.meta["ann_ids"]) for e in examples] == [
        ("point", [0]),
        ("scribble", [1]),
        ("box", [1]),
        ("mask", [1]),
    ]
    assert examples[0].request.prompts == [Point(100.0, 40.0)]
    assert examples[1].request.prompts == [Scribble(points=((95.0, 35.0), (140.0, 90.0)))]
    assert examples[2].request.prompts == [Box(90.0, 30.0, 160.0, 100.0)]
    np.testing.assert_array_equal(examples[3].request.prompts[0].mask, m["b"])
    np.testing.assert_array_equal(examples[0].target.masks[0], m["b"])
    assert examples[0].image_id == "7"


def test_coco_interactive_errors(tmp_path):
    path = _write_plain(tmp_path / "a", [{"prompt": {"type": "point", "point": [500, 40]}}])
    with pytest.raises(ValueError, match=r"image 7: point prompts of annotations \[0\]: .*outside"):
        load_coco_interactive(path, tmp_path / "a" / "img")
    path = _write_plain(tmp_path / "b", [{"prompt": {"type": "lasso", "points": []}}])
    with pytest.raises(ValueError, match=r"annotation 0: a prompt needs 'type' in \['point'"):
        load_coco_interactive(path, tmp_path / "b" / "img")
    path = _write_plain(tmp_path / "c", [{"prompt": {"type": "box", "box": [1, 2]}}])
    with pytest.raises(ValueError, match=r"box must be COCO \[x, y, w, h\]"):
        load_coco_interactive(path, tmp_path / "c" / "img")
    (tmp_path / "c" / "img" / "a.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"image 7: image file .*a\.png does not exist"):
        load_coco_interactive(path, tmp_path / "c" / "img")
    (tmp_path / "d.json").write_text('{"foo": 1}')
    with pytest.raises(ValueError, match="expected PSALM's list"):
        load_coco_interactive(tmp_path / "d.json", tmp_path / "a" / "img")
    with pytest.raises(ValueError, match="unknown prompt kinds"):
        load_coco_interactive(tmp_path / "d.json", tmp_path / "a" / "img", kinds=("lasso",))


# ---------------------------------------------------------------- ReasonSeg


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


def test_reasonseg_round_trip(tmp_path):
    folder = tmp_path / "ReasonSeg" / "val"
    _write_reasonseg(folder)
    examples = load_reasonseg(folder)  # c has no target pixels: skipped
    assert [(e.image_id, e.request.text) for e in examples] == [
        ("a", "What keeps the food cold?"),
        ("a", "Where would you put milk?"),
        ("b", "the triangle"),
    ]
    for e in examples:
        assert e.task == Task.REASONING and e.source == "reasonseg:val"
        assert e.target.answer == "Sure, it is <SEG>." and e.target.label_ids.tolist() == [0]
    assert [e.meta["is_sentence"] for e in examples] == [True, True, False]
    assert [e.meta["question_index"] for e in examples] == [0, 1, 0]

    # the smaller ignore polygon lies on the target: its pixels are ignored, not target; points truncate
    inner = _inside(INNER, RS_H, RS_W, 0.0, edges=True)
    outer = _inside(OUTER, RS_H, RS_W, 0.0, edges=True)
    assert _iou(examples[0].target.masks[0], outer & ~inner) >= 0.97
    assert _iou(examples[0].meta["ignore_mask"], inner) >= 0.97
    assert not (examples[0].target.masks[0] & examples[0].meta["ignore_mask"]).any()
    second = _inside(SECOND, RS_H, RS_W, 0.0, edges=True) | inner
    assert _iou(examples[2].target.masks[0], second) >= 0.97
    assert not examples[2].meta["ignore_mask"].any()
    assert len(load_reasonseg(folder, limit=1)) == 2


def test_reasonseg_errors(tmp_path):
    folder = tmp_path / "val"
    _write_reasonseg(folder)
    (folder / "b.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"image b\.jpg has no annotation b\.json"):
        load_reasonseg(folder)
    (folder / "b.json").write_text('{"text": ["x"], "shapes": [')
    with pytest.raises(ValueError, match=r"b\.json is malformed JSON"):
        load_reasonseg(folder)
    (folder / "b.json").write_text('{"text": [], "shapes": []}')
    with pytest.raises(ValueError, match=r"b\.json: 'text' must be a non-empty list"):
        load_reasonseg(folder)
    (folder / "b.json").write_text('{"text": ["q"], "shapes": [{"label": "target", "points": [[1, 2, 3]]}]}')
    with pytest.raises(ValueError, match=r"shape 0: shape point \[1, 2, 3\] is not an \[x, y\] pair"):
        load_reasonseg(folder)
    with pytest.raises(FileNotFoundError, match="ReasonSeg folder not found"):
        load_reasonseg(tmp_path / "nope")


# ---------------------------------------------------------------- registry


def test_registry_specs(tmp_path):
    folder = tmp_path / "val"
    _write_reasonseg(folder)
    direct = load_reasonseg(folder)
    via = load_dataset(f"reasonseg:{folder}")
    assert [e.request.text for e in via] == [e.request.text for e in direct]
    assert len(load_dataset(f"reasonseg:{folder}", limit=1)) == 2

    (tmp_path / "pan").mkdir()
    _write_panoptic(tmp_path / "pan")
    json_path, png_dir, image_dir = _panoptic_args(tmp_path / "pan")
    assert len(load_dataset(f"coco_panoptic:{json_path}:{png_dir}:{image_dir}", limit=1)) == 3

    root = tmp_path / "refcoco"
    _write_refcoco(root)
    spec = f"refcoco:{root / 'refs(unc).p'}:{root / 'instances.json'}:{root / 'images'}:val"
    assert len(load_dataset(spec)) == 3

    _write_psalm(tmp_path / "coco")
    coco = tmp_path / "coco"
    spec = f"coco_interactive:{coco / 'coco_interactive_val_psalm.json'}:{coco / 'val2017'}"
    assert len(list(iter_dataset(spec))) == 4


def test_registry_errors(tmp_path):
    with pytest.raises(
        ValueError, match=r"unknown dataset 'coco:x'; known: shapes:<split>; coco_panoptic:<panoptic"
    ):
        load_dataset("coco:x")
    with pytest.raises(ValueError, match=r"needs 4 field\(s\): refcoco:<refs"):
        load_dataset("refcoco:a:b")
    with pytest.raises(FileNotFoundError, match=r"folder .*missing does not exist"):
        load_dataset(f"reasonseg:{tmp_path / 'missing'}")
    with pytest.raises(FileNotFoundError, match=r"json .*nope\.json does not exist"):
        load_dataset(f"coco_interactive:{tmp_path / 'nope.json'}:{tmp_path}")
    with pytest.raises(ValueError, match="limit must be a positive"):
        load_dataset("shapes:val", limit=0)


@pytest.mark.skipif(
    importlib.util.find_spec("xsam_edge.data.shapes") is None,
    reason="xsam_edge.data.shapes (the procedural suite) is not in this checkout yet",
)
def test_registry_shapes():
    examples = load_dataset("shapes:val", limit=2)
    assert examples and all(e.source.startswith("shapes") for e in examples)
    assert len({e.image_id for e in examples}) <= 2
