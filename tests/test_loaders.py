"""Round trips for the real-format loaders: write small fixtures in each on-disk format, load them back.

RLE and PNG masks must come back exactly; polygons are rasterised by another rule than the test's
(pycocotools, PIL), so those masks are compared by IoU ≥ 0.97.

COCO panoptic, RefCOCO and the dataset registry here; COCO-Interactive and ReasonSeg in
test_loaders_prompts.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from loader_fixtures import (
    NAMES_BY_ID,
    REF_H,
    REF_W,
    TRIANGLE,
    _inside,
    _iou,
    _panoptic_args,
    _write_panoptic,
    _write_psalm,
    _write_reasonseg,
    _write_refcoco,
)

from xsam_edge.data.coco_panoptic import load_coco_panoptic
from xsam_edge.data.reasonseg import load_reasonseg
from xsam_edge.data.refcoco import decode_segmentation, load_refcoco, load_refs
from xsam_edge.data.registry import iter_dataset, load_dataset
from xsam_edge.spec.types import Task


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
