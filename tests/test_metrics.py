import json
import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from xsam_edge.data.sample import Example, Target
from xsam_edge.metrics.tasks import (
    BASELINE_KINDS,
    IouStat,
    PanopticStat,
    SemanticStat,
    baseline_mask,
    baseline_results,
    evaluate,
    evaluate_baselines,
    instance_ap,
    iou,
    label_map,
    mask_agreement,
    normalize_text,
)
from xsam_edge.spec.types import Box, Point, SegmentationRequest, SegmentationResult, Task


def box(hw, y0, y1, x0, x1):
    m = np.zeros(hw, bool)
    m[y0:y1, x0:x1] = True
    return m


def result(masks, label_ids, scores=None, text=None, hw=(8, 8)):
    masks = np.asarray(masks, bool).reshape(-1, *hw)
    n = len(masks)
    return SegmentationResult(
        masks=masks,
        labels=[f"m{i}" for i in range(n)],
        scores=np.ones(n, np.float32) if scores is None else np.asarray(scores, np.float32),
        label_ids=np.asarray(label_ids, np.int64).reshape(-1),
        text=text,
    )


def example(task, masks, label_ids, hw=(8, 8), is_thing=None, answer=None, meta=None, **request_kw):
    image = np.zeros((*hw, 3), np.uint8)
    target = Target(
        masks=np.asarray(masks, bool).reshape(-1, *hw),
        label_ids=np.asarray(label_ids, np.int64).reshape(-1),
        is_thing=None if is_thing is None else np.asarray(is_thing, bool),
        answer=answer,
    )
    return Example(SegmentationRequest(image, task, **request_kw), target, "img", "test", meta or {})


# -- primitives ---------------------------------------------------------------------------------------


def test_iou_hand_case_and_conventions():
    pred = box((4, 4), 0, 2, 0, 2)  # 4 px
    gt = box((4, 4), 0, 2, 1, 3)  # 4 px, 2 shared
    assert iou(pred, gt) == pytest.approx(1 / 3)
    assert iou(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0  # nothing to find, nothing found
    assert iou(pred, np.zeros((4, 4))) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        iou(pred, np.zeros((4, 5), bool))


def test_ciou_and_giou_differ_on_samples_of_different_size():
    stat = IouStat()
    # large sample: pred is half of a 100 px gt -> IoU 0.5, I=50, U=100
    assert stat.add(box((10, 10), 0, 5, 0, 10), np.ones((10, 10), bool)) == 0.5
    # small sample: two disjoint single pixels -> IoU 0, I=0, U=2
    assert stat.add(box((2, 2), 0, 1, 0, 1), box((2, 2), 1, 2, 1, 2)) == 0.0
    assert stat.giou == pytest.approx(0.25)
    assert stat.ciou == pytest.approx(50 / 102)
    assert math.isnan(IouStat().ciou) and math.isnan(IouStat().giou)


def test_semantic_miou_hand_case():
    gt = np.array([[0, 0, 1], [0, 1, 1], [0, 0, 1]])
    pred = np.array([[0, 1, 1], [0, 1, 1], [0, 0, 0]])
    stat = SemanticStat(3)  # class 2 is in neither map: excluded from the mean
    stat.add(gt, pred)
    # class 0: TP 4, FP 1, FN 1 -> 4/6; class 1: TP 3, FP 1, FN 1 -> 3/5
    np.testing.assert_allclose(stat.iou_per_class[:2], [4 / 6, 3 / 5])
    assert math.isnan(stat.iou_per_class[2])
    assert stat.miou == pytest.approx((4 / 6 + 3 / 5) / 2)


def test_semantic_no_label_is_false_positive_and_ignore_is_left_out():
    gt = np.array([[0, -1], [-1, -1]])
    pred = np.array([[0, 0], [0, -1]])
    stat = SemanticStat(1)
    stat.add(gt, pred)
    assert stat.miou == pytest.approx(1 / 3)  # two unlabelled pixels predicted as class 0
    stat = SemanticStat(1)
    stat.add(gt, pred, ignore=gt == -1)
    assert stat.miou == 1.0
    with pytest.raises(ValueError, match="values"):
        stat.add(np.array([[3]]), np.array([[0]]))


def test_label_map_later_masks_win():
    masks = np.stack([box((2, 3), 0, 2, 0, 2), box((2, 3), 0, 1, 1, 3)])
    np.testing.assert_array_equal(label_map(masks, [5, 7], (2, 3)), [[5, 7, 7], [5, 5, -1]])


def _pq_hand_case():
    hw = (10, 10)
    gt = [box(hw, 0, 4, 0, 4), box(hw, 6, 8, 6, 8)]  # 16 px, 4 px
    pred = [box(hw, 0, 4, 0, 5), box(hw, 6, 10, 0, 2)]  # 20 px (IoU 16/20 with gt 0), 8 px elsewhere
    return hw, gt, pred


def test_pq_one_tp_one_fp_one_fn_by_hand():
    hw, gt, pred = _pq_hand_case()
    stat = PanopticStat(["a"], [True])
    stat.add(np.stack(gt), ["a", "a"], np.stack(pred), ["a", "a"])
    # PQ = 0.8 / (1 + 0.5 + 0.5), SQ = 0.8, RQ = 1 / 2
    s = stat.summary()
    assert (s["pq"], s["sq"], s["rq"]) == pytest.approx((0.4, 0.8, 0.5))
    assert (s["pq_th"], s["n_th"], s["n_st"]) == (pytest.approx(0.4), 1, 0)
    assert math.isnan(s["pq_st"])  # no stuff category: panopticapi would divide by zero
    assert stat.per_category()["a"] == pytest.approx(
        {"pq": 0.4, "sq": 0.8, "rq": 0.5, "tp": 1, "fp": 1, "fn": 1}
    )


def test_pq_things_stuff_and_void():
    hw, gt, pred = _pq_hand_case()
    stuff = box(hw, 9, 10, 4, 10)
    stat = PanopticStat()
    stat.add(
        np.stack([*gt, stuff]),
        ["a", "a", "b"],
        np.stack([*pred, stuff]),
        ["a", "a", "b"],
        gt_is_thing=[1, 1, 0],
    )
    s = stat.summary()
    assert (s["pq"], s["pq_th"], s["pq_st"]) == pytest.approx((0.7, 0.4, 1.0))

    # the FP lies 6 of its 8 px on void -> ignored; the TP's union loses its void pixels
    void = box(hw, 6, 9, 0, 2) | box(hw, 0, 4, 4, 5)
    stat = PanopticStat(["a"], [True])
    stat.add(np.stack(gt), ["a", "a"], np.stack(pred), ["a", "a"], void=void)
    assert stat.per_category()["a"] == pytest.approx(
        {"pq": 1 / 1.5, "sq": 1.0, "rq": 1 / 1.5, "tp": 1, "fp": 0, "fn": 1}
    )
    with pytest.raises(ValueError, match="both thing and stuff"):
        stat.add(np.stack(gt), ["a", "a"], np.stack(pred), ["a", "a"], gt_is_thing=[0, 0])


# -- PQ agrees with panopticapi --------------------------------------------------------------------


CATEGORIES = [(1, True), (2, True), (3, True), (7, False), (8, False), (9, False)]


def _random_scene(rng, hw, n_segments, cover_background, max_side=None):
    """Segment map (0 = void / nothing) and segment id -> category, from random overlapping rectangles."""
    h, w = hw
    seg = np.zeros(hw, np.int64)
    cats = {}
    if cover_background:
        seg[:] = 1
        cats[1] = 7
    for _ in range(n_segments):
        y0, x0 = rng.integers(0, h - 2), rng.integers(0, w - 2)
        y1, x1 = rng.integers(y0 + 1, h + 1), rng.integers(x0 + 1, w + 1)
        if max_side:
            y1, x1 = min(y1, y0 + max_side), min(x1, x0 + max_side)
        sid = int(rng.integers(2, 2**24 - 1))  # exercises all three PNG channels
        seg[y0:y1, x0:x1] = sid
        cats[sid] = int(rng.choice([c for c, _ in CATEGORIES]))
    present = set(np.unique(seg).tolist()) - {0}
    return seg, {s: c for s, c in cats.items() if s in present}


def _perturb(rng, gt_seg, gt_cats, hw):
    """A prediction: gt segments shifted / relabelled / dropped, plus random extra segments."""
    pred = np.zeros(hw, np.int64)
    cats = {}
    for sid, cat in gt_cats.items():
        r = rng.random()
        if r < 0.15:
            continue
        mask = np.roll(gt_seg == sid, tuple(rng.integers(-1, 2, size=2)), axis=(0, 1))
        new = int(rng.integers(1, 2**24 - 1))
        pred[mask] = new
        cats[new] = int(rng.choice([c for c, _ in CATEGORIES])) if r > 0.85 else cat
    extra, extra_cats = _random_scene(rng, hw, 2, cover_background=False, max_side=6)
    pred[extra > 0] = extra[extra > 0]
    cats.update(extra_cats)
    present = set(np.unique(pred).tolist()) - {0}
    return pred, {s: c for s, c in cats.items() if s in present}


def _write_panoptic(folder, name, images):
    from panopticapi.utils import id2rgb

    (folder / name).mkdir()
    annotations = []
    for k, (seg, cats) in enumerate(images):
        file_name = f"{k}.png"
        Image.fromarray(id2rgb(seg.copy())).save(folder / name / file_name)
        segments = [
            {"id": s, "category_id": c, "area": int((seg == s).sum()), "iscrowd": 0, "bbox": [0, 0, 1, 1]}
            for s, c in cats.items()
        ]
        annotations.append({"image_id": k, "file_name": file_name, "segments_info": segments})
    data = {
        "images": [{"id": k, "file_name": f"{k}.jpg", "height": 0, "width": 0} for k in range(len(images))],
        "annotations": annotations,
        "categories": [{"id": c, "name": f"c{c}", "isthing": int(t)} for c, t in CATEGORIES],
    }
    (folder / f"{name}.json").write_text(json.dumps(data))
    return str(folder / f"{name}.json"), str(folder / name)


def _stack(seg, cats):
    ids = list(cats)
    masks = np.stack([seg == s for s in ids]) if ids else np.zeros((0, *seg.shape), bool)
    return masks, [cats[s] for s in ids]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_pq_matches_panopticapi(seed, tmp_path, monkeypatch):
    pytest.importorskip("panopticapi")
    from panopticapi import evaluation

    # panopticapi spreads images over a Pool of cpu_count() workers; run its per-image code in-process instead
    def single_core(matched, gt_folder, pred_folder, categories):
        return evaluation.pq_compute_single_core(0, matched, gt_folder, pred_folder, categories)

    monkeypatch.setattr(evaluation, "pq_compute_multi_core", single_core)

    rng = np.random.default_rng(seed)
    hw = (24, 32)
    gts, preds = [], []
    for k in range(4):
        gt = _random_scene(rng, hw, 6, cover_background=k % 2 == 0)  # odd images keep void pixels
        gts.append(gt)
        preds.append(_perturb(rng, *gt, hw))

    gt_json, gt_dir = _write_panoptic(tmp_path, "gt", gts)
    pred_json, pred_dir = _write_panoptic(tmp_path, "pred", preds)
    reference = evaluation.pq_compute(gt_json, pred_json, gt_dir, pred_dir)

    stat = PanopticStat([c for c, _ in CATEGORIES], [t for _, t in CATEGORIES])
    for (gt_seg, gt_cats), (pred_seg, pred_cats) in zip(gts, preds, strict=True):
        gt_masks, gt_labels = _stack(gt_seg, gt_cats)
        pred_masks, pred_labels = _stack(pred_seg, pred_cats)
        stat.add(gt_masks, gt_labels, pred_masks, pred_labels, void=gt_seg == 0)
    ours = stat.summary()
    for name, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        for key in ("pq", "sq", "rq"):
            assert ours[key + suffix] == pytest.approx(reference[name][key], abs=1e-6), (name, key)
        assert ours["n" + suffix] == reference[name]["n"]
    counts = stat.per_category().values()
    assert all(sum(c[key] for c in counts) > 0 for key in ("tp", "fp", "fn"))  # a non-trivial case
    for cat, values in stat.per_category().items():
        for key in ("pq", "sq", "rq"):
            assert values[key] == pytest.approx(reference["per_class"][cat][key], abs=1e-6)


# -- AP ------------------------------------------------------------------------------------------------


def test_instance_ap_perfect_shuffled_and_half_right():
    hw = (16, 16)
    a, b = box(hw, 0, 6, 0, 6), box(hw, 8, 16, 8, 16)
    gts = [(np.stack([a, b]), ["x", "y"])]
    perfect = instance_ap(gts, [(np.stack([a, b]), ["x", "y"], np.array([0.9, 0.8]))])
    assert perfect == pytest.approx({"ap": 100.0, "ap50": 100.0})
    shuffled = instance_ap(gts, [(np.stack([a, b]), ["y", "x"], np.array([0.9, 0.8]))])
    assert shuffled == {"ap": 0.0, "ap50": 0.0}

    # one class, two instances; detections: the first exactly right, the second on background.
    # precision is 1 up to recall 1/2, then 1/2 with no more recall: COCO's 101-point envelope gives
    # 1 at recall 0.00 .. 0.50 (51 points), 0 beyond -> AP = 51/101 at every IoU threshold
    gts = [(np.stack([a, b]), ["x", "x"])]
    miss = box(hw, 0, 4, 10, 14)
    half = instance_ap(gts, [(np.stack([a, miss]), ["x", "x"], np.array([0.9, 0.8]))])
    assert half == pytest.approx({"ap": 100 * 51 / 101, "ap50": 100 * 51 / 101})
    # the wrong detection ranked first: precision 1/2 at recall 1/2 -> AP = 0.5 * 51/101
    swapped = instance_ap(gts, [(np.stack([a, miss]), ["x", "x"], np.array([0.7, 0.8]))])
    assert swapped == pytest.approx({"ap": 50 * 51 / 101, "ap50": 50 * 51 / 101})


def test_instance_ap_degenerate_inputs():
    hw = (8, 8)
    m = box(hw, 0, 4, 0, 4)
    none = np.zeros((0, *hw), bool)
    assert instance_ap([], []) == {"ap": 0.0, "ap50": 0.0}
    assert instance_ap([(none, [])], [(m[None], ["x"], np.array([1.0]))]) == {"ap": 0.0, "ap50": 0.0}
    assert instance_ap([(m[None], ["x"])], [(none, [], np.zeros(0))]) == {"ap": 0.0, "ap50": 0.0}
    with pytest.raises(ValueError, match="images"):
        instance_ap([(m[None], ["x"])], [])


def _random_instances(seed: int, images: int = 6, hw=(16, 16)):
    """Images with 0-3 boxes of three labels, and detections that are jittered copies, misses and strays."""
    rng = np.random.default_rng(seed)

    def rand_box():
        y, x = rng.integers(0, hw[0] - 4, 2)
        h, w = rng.integers(3, 8, 2)
        return box(hw, y, y + h, x, x + w)

    gts, preds = [], []
    for _ in range(images):
        labels = [str(c) for c in rng.choice(list("abc"), rng.integers(0, 4))]
        masks = [rand_box() for _ in labels]
        dt_masks, dt_labels = [], []
        for mask, label in zip(masks, labels, strict=True):
            if rng.random() < 0.8:  # found, a pixel row shifted at most
                dt_masks.append(np.roll(mask, int(rng.integers(-1, 2)), axis=0))
                dt_labels.append(label if rng.random() < 0.85 else "c")
        for _ in range(rng.integers(0, 3)):  # strays
            dt_masks.append(rand_box())
            dt_labels.append(str(rng.choice(list("abc"))))
        gts.append((np.array(masks, bool).reshape(-1, *hw), labels))
        preds.append((np.array(dt_masks, bool).reshape(-1, *hw), dt_labels, rng.random(len(dt_labels))))
    return gts, preds


@pytest.mark.parametrize("image_local", [False, True])
def test_instance_matches_score_a_draw_as_its_images_listed_again(image_local):
    # a bootstrap draw scored from the cached matches must equal COCOeval run from scratch on the drawn
    # images, repeats and all; image-local labels make each repeat its own categories, as in that run
    from xsam_edge.metrics.tasks import InstanceMatches

    gts, preds = _random_instances(seed=4)
    matches = InstanceMatches(gts, preds, image_local=image_local)
    assert matches.ap() == pytest.approx(instance_ap(gts, preds, image_local))
    assert 5 < matches.ap()["ap"] < 95  # a case where pooling order and repeats could matter
    for draw in ([0, 0, 3, 5, 5, 5], [2, 1, 4, 4, 0, 3], [3], [1, 1]):
        scratch = instance_ap([gts[k] for k in draw], [preds[k] for k in draw], image_local)
        assert matches.ap(draw) == pytest.approx(scratch), draw


def test_scorer_scores_any_rows_as_evaluate_does_on_those_pairs():
    from xsam_edge.metrics.tasks import Scorer

    gts, preds = _random_instances(seed=7, images=5)
    pairs = []
    for k, ((gt_masks, gt_labels), (dt_masks, dt_labels, scores)) in enumerate(zip(gts, preds, strict=True)):
        cats = ["a", "b", "c"]
        ids = [cats.index(label) for label in gt_labels]
        inst = example(Task.INSTANCE, gt_masks, ids, hw=(16, 16), categories=cats)
        dt_ids = [cats.index(label) for label in dt_labels]
        pairs.append((inst, result(dt_masks, dt_ids, scores=scores, hw=(16, 16))))
        vgd = example(Task.VISUAL_GROUNDED, gt_masks, ids, hw=(16, 16), prompts=[Point(1, 1)] * 3)
        pairs.append((vgd, result(dt_masks, dt_ids, scores=scores, hw=(16, 16))))
        ref = example(Task.REFERRING, gt_masks[:1], [0] * min(1, len(gt_masks)), hw=(16, 16), text=f"x{k}")
        pairs.append((ref, result(dt_masks[:1], [0] * min(1, len(dt_masks)), hw=(16, 16))))
    scorer = Scorer(pairs)
    assert scorer.evaluate() == evaluate(pairs)
    for rows in ([0, 1, 2, 0, 1, 2, 9, 10], [14, 13, 12, 3, 3, 4], [5]):
        assert scorer.evaluate(rows) == evaluate([pairs[i] for i in rows]), rows


# -- agreement -----------------------------------------------------------------------------------------


def test_mask_agreement():
    hw = (8, 8)
    a = [result([box(hw, 0, 4, 0, 4), box(hw, 4, 8, 4, 8)], [0, 1], text="hi"), result([], [], text=None)]
    same = mask_agreement(a, a)
    assert same == {
        "union_miou": 100.0,
        "matched_miou": 100.0,
        "text_match": 100.0,
        "count_match": 100.0,
        "n": 2,
    }
    # B: the label-0 mask is one column wider (IoU 16/20), the label-1 mask missing
    b = [result([box(hw, 0, 4, 0, 5)], [0], text="hi"), result([], [], text="x")]
    out = mask_agreement(a, b)
    assert out["union_miou"] == pytest.approx(100 * (16 / 36 + 1.0) / 2)
    assert out["matched_miou"] == pytest.approx(100 * (0.8 + 0.0) / 2)
    assert out["text_match"] == 50.0 and out["count_match"] == 50.0
    with pytest.raises(ValueError, match="results"):
        mask_agreement(a, b[:1])


# -- evaluate ------------------------------------------------------------------------------------------


def test_normalize_text():
    assert normalize_text("Sure, it is <SEG>.<|end|>") == "sure it is"
    assert normalize_text("<p> A  Cat</p>!") == "a cat"
    assert normalize_text(None) == ""


def test_evaluate_referring_and_reasoning():
    hw = (8, 8)
    big, small = box(hw, 0, 4, 0, 4), box(hw, 6, 8, 6, 8)
    pairs = [
        # IoU 16/16, then a 1 px guess beside a 3 px target: I = 0, U = 4
        (example(Task.REFERRING, [big], [0], text="left"), result([big], [0])),
        (
            example(Task.REFERRING, [small & ~box(hw, 7, 8, 7, 8)], [0], text="right"),
            result([box(hw, 7, 8, 7, 8)], [0]),
        ),
        # no prediction for a target; nothing predicted for a no-target expression (IoU 1)
        (example(Task.REASONING, [big], [0], text="why"), result([], [])),
        (example(Task.REASONING, np.zeros((0, *hw)), [], text="none"), result([], [])),
    ]
    out = evaluate(pairs)
    assert out["referring"] == {"ciou": 80.0, "giou": 50.0, "n": 2}
    assert out["reasoning"] == {"ciou": 0.0, "giou": 50.0, "n": 2}


def test_evaluate_interactive_per_prompt_kind():
    hw = (8, 8)
    a, b = box(hw, 0, 4, 0, 4), box(hw, 4, 8, 4, 8)
    ex_point = example(
        Task.INTERACTIVE, [a, b], [0, 1], prompts=[Point(1, 1), Point(5, 5)], meta={"prompt_kind": "point"}
    )
    ex_box = example(Task.INTERACTIVE, [a], [0], prompts=[Box(0, 0, 4, 4)], meta={"prompt_kind": "box"})
    pairs = [
        (ex_point, result([b, box(hw, 4, 8, 4, 6)], [1, 0])),  # prompt 0: I 0, U 24; prompt 1: 16 / 16
        (ex_box, result([box(hw, 0, 4, 0, 2)], [0])),  # I 8, U 16
    ]
    out = evaluate(pairs)["interactive"]
    assert out == {
        "miou": 50.0,
        "ciou": round(100 * (0 + 16 + 8) / (24 + 16 + 16), 2),
        "miou_point": 50.0,
        "ciou_point": 40.0,
        "miou_box": 50.0,
        "ciou_box": 50.0,
        "n": 2,
    }


def test_evaluate_panoptic_and_open_vocabulary():
    hw, gt, pred = _pq_hand_case()
    stuff = box(hw, 9, 10, 4, 10)
    kw = {"categories": ["b", "a"], "is_thing": [True, True, False]}
    ex = example(Task.PANOPTIC, [*gt, stuff], [1, 1, 0], hw=hw, **kw)
    out = evaluate([(ex, result([*pred, stuff], [1, 1, 0], hw=hw))])["panoptic"]
    assert out == {"pq": 70.0, "sq": 90.0, "rq": 75.0, "pq_th": 40.0, "pq_st": 100.0, "n": 1}

    # open vocabulary with unlabelled pixels as void: the FP lies wholly on void and is ignored, and the
    # TP's extra column is void, so its IoU becomes 16/16: one TP (IoU 1), one FN
    meta = {"void": "unlabeled"}
    ex = example(Task.OPEN_VOCABULARY, gt, [0, 0], hw=hw, categories=["a"], is_thing=[1, 1], meta=meta)
    out = evaluate([(ex, result(pred, [0, 0], hw=hw))])["open_vocabulary"]
    assert math.isnan(out.pop("pq_st"))
    assert out == {"pq": 66.67, "sq": 100.0, "rq": 66.67, "pq_th": 66.67, "n": 1}


def test_evaluate_instance_visual_grounded_semantic():
    hw = (8, 8)
    a, b = box(hw, 0, 4, 0, 4), box(hw, 4, 8, 4, 8)
    inst = example(Task.INSTANCE, [a, b], [0, 1], categories=["cat", "dog"])
    vgd = example(Task.VISUAL_GROUNDED, [a, b], [0, 0], prompts=[Point(1, 1)])
    out = evaluate([(inst, result([a, b], [0, 1])), (vgd, result([b, a], [0, 0], scores=[0.9, 0.8]))])
    assert out["instance"] == {"ap": 100.0, "ap50": 100.0, "n": 1}
    assert out["visual_grounded"] == {"ap": 100.0, "ap50": 100.0, "n": 1}

    hw = (3, 3)
    gt = np.array([[0, 0, 1], [0, 1, 1], [0, 0, 1]])
    pred = np.array([[0, 1, 1], [0, 1, 1], [0, 0, 0]])
    sem = example(Task.SEMANTIC, [gt == 0, gt == 1], [0, 1], hw=hw, categories=["sky", "sea"])
    out = evaluate([(sem, result([pred == 0, pred == 1], [0, 1], hw=hw))])
    assert out["semantic"] == {"miou": round(100 * (4 / 6 + 3 / 5) / 2, 2), "n": 1}


def test_evaluate_gcg_and_chat():
    hw = (8, 8)
    a, b = box(hw, 0, 4, 0, 4), box(hw, 4, 8, 4, 8)
    answer = "<p>A cat</p> <SEG> sits on <p>the mat</p> <SEG>."
    gcg = example(Task.GCG, [a, b], [0, 1], answer=answer)
    out = evaluate([(gcg, result([a], [0], text="A cat sits on a rug."))])["gcg"]
    assert out == {"miou": 50.0, "caption_match": 50.0, "n": 1}

    chat = [
        (
            example(Task.CHAT, np.zeros((0, *hw)), [], answer="Yes, it is.<|end|>", text="q"),
            result([], [], text="yes it is"),
        ),
        (example(Task.CHAT, np.zeros((0, *hw)), [], answer="No.", text="q"), result([], [], text="Maybe")),
        (example(Task.CHAT, np.zeros((0, *hw)), [], text="q"), result([], [], text="unscored")),
    ]
    assert evaluate(chat)["chat"] == {"exact_match": 50.0, "n": 3}


def test_evaluate_rejects_mismatched_sizes():
    ex = example(Task.REFERRING, [box((8, 8), 0, 4, 0, 4)], [0], text="x")
    with pytest.raises(ValueError, match="result masks"):
        evaluate([(ex, result([box((4, 4), 0, 2, 0, 2)], [0], hw=(4, 4)))])
    ex = example(Task.INSTANCE, [box((8, 8), 0, 4, 0, 4)], [0], categories=["cat"])
    with pytest.raises(ValueError, match="outside the 1 categories"):
        evaluate([(ex, result([box((8, 8), 0, 4, 0, 4)], [3]))])


# -- baselines -----------------------------------------------------------------------------------------


class _Poison:
    def __getattr__(self, name):
        raise AssertionError(f"a baseline read target.{name}")


def test_baselines_never_read_the_target_and_cover_every_output():
    hw = (8, 12)
    assert baseline_mask(hw, "centre_box").sum() == 4 * 6
    assert baseline_mask(hw, "centre_box")[2:6, 3:9].all()
    with pytest.raises(ValueError, match="known: whole_image, centre_box"):
        baseline_mask(hw, "oracle")
    image = np.zeros((*hw, 3), np.uint8)
    requests = {
        Task.REFERRING: SegmentationRequest(image, Task.REFERRING, text="x"),
        Task.PANOPTIC: SegmentationRequest(image, Task.PANOPTIC, categories=["a", "b", "c"]),
        Task.INTERACTIVE: SegmentationRequest(image, Task.INTERACTIVE, prompts=[Point(1, 1), Point(2, 2)]),
        Task.GCG: SegmentationRequest(image, Task.GCG),
        Task.CHAT: SegmentationRequest(image, Task.CHAT, text="hi"),
    }
    counts = {Task.REFERRING: 1, Task.PANOPTIC: 3, Task.INTERACTIVE: 2, Task.GCG: 1, Task.CHAT: 0}
    for kind in BASELINE_KINDS:
        for task, request in requests.items():
            res = baseline_results(Example(request, _Poison(), "img", "test"), kind)
            assert len(res.masks) == counts[task]
            assert res.masks.shape[1:] == hw and (res.masks == baseline_mask(hw, kind)).all()
            np.testing.assert_array_equal(res.label_ids, np.arange(counts[task]))


def test_evaluate_baselines():
    hw = (8, 8)
    obj = box(hw, 0, 4, 0, 4)  # 16 px in the corner
    examples = [
        example(Task.REFERRING, [obj], [0], text="x"),
        example(Task.INSTANCE, [obj], [0], categories=["cat"]),
    ]
    out = evaluate_baselines(examples)
    assert set(out) == set(BASELINE_KINDS)
    assert out["whole_image"]["referring"] == {"ciou": 25.0, "giou": 25.0, "n": 1}
    # the centre box (rows 2..5, cols 2..5) shares 4 px with the object: IoU 4 / 28
    assert out["centre_box"]["referring"]["giou"] == round(100 * 4 / 28, 2)
    assert out["whole_image"]["instance"] == {"ap": 0.0, "ap50": 0.0, "n": 1}


def test_metrics_import_no_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import xsam_edge.metrics.tasks\n"
        "assert sys.modules['torch'] is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
