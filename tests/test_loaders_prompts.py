"""Round trips for the visual-prompt and reasoning loaders: COCO-Interactive (PSALM, plain), ReasonSeg."""

from __future__ import annotations

import numpy as np
import pytest
from loader_fixtures import (
    INNER,
    INT_H,
    INT_W,
    OUTER,
    RS_H,
    RS_W,
    SECOND,
    _inside,
    _iou,
    _masks_interactive,
    _rle,
    _write_plain,
    _write_psalm,
    _write_reasonseg,
)

from xsam_edge.data.coco_interactive import load_coco_interactive
from xsam_edge.data.reasonseg import load_reasonseg
from xsam_edge.spec.preprocess import rasterize_prompt
from xsam_edge.spec.types import Box, MaskPrompt, Point, Scribble, Task


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
