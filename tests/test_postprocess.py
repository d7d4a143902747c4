import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xsam_edge.spec.postprocess import (
    Geometry,
    box_iou,
    masks_to_image,
    postprocess,
    postprocess_gcg,
    postprocess_instance,
    postprocess_interactive,
    postprocess_panoptic,
    postprocess_referring,
    postprocess_semantic,
    postprocess_visual_grounded,
    resize_bilinear,
)
from xsam_edge.spec.types import Task

BIG = 10.0  # a confident logit
# 20×20 low-res masks, 40×40 input, 40×40 image: the chain is a plain ×2 upsample
GEO = Geometry((40, 40), (40, 40), 40)


def _torch_resize(x: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(x)[None]
    return F.interpolate(t, size=hw, mode="bilinear", align_corners=False, antialias=False)[0].numpy()


def _torch_chain(x: np.ndarray, geo: Geometry) -> np.ndarray:
    s, (sh, sw) = geo.input_size, geo.scaled_hw
    up = _torch_resize(x, (s, s))[:, :sh, :sw]
    return _torch_resize(np.ascontiguousarray(up), geo.image_hw)


def _cls(rows: list[list[float]]) -> np.ndarray:
    return np.array(rows, np.float32)


def _masks(*regions: tuple[slice, slice] | None, size: int = 20) -> np.ndarray:
    """One low-res mask per region: +BIG inside, -BIG outside (None: all -BIG)."""
    out = np.full((len(regions), size, size), -BIG, np.float32)
    for q, region in enumerate(regions):
        if region is not None:
            out[q][region] = BIG
    return out


@pytest.mark.parametrize(
    ("in_hw", "out_hw"),
    [((5, 7), (13, 17)), ((17, 13), (5, 4)), ((6, 9), (11, 4)), ((8, 8), (8, 8)), ((1, 3), (4, 1))],
)
def test_resize_bilinear_matches_torch(in_hw, out_hw):
    x = np.random.default_rng(0).standard_normal((3, *in_hw)).astype(np.float32) * 5
    np.testing.assert_allclose(resize_bilinear(x, out_hw), _torch_resize(x, out_hw), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("image_hw", "input_size"), [((50, 80), 64), ((97, 31), 48), ((30, 30), 64)])
def test_masks_to_image_matches_torch_chain(image_hw, input_size):
    geo = Geometry.for_image(image_hw, input_size)
    x = np.random.default_rng(1).standard_normal((4, 16, 16)).astype(np.float32) * 5
    out = masks_to_image(x, geo.scaled_hw, geo.image_hw, geo.input_size)
    assert out.shape == (4, *image_hw) and out.dtype == np.float32
    np.testing.assert_allclose(out, _torch_chain(x, geo), atol=1e-5, rtol=0)
    assert masks_to_image(x[:0], geo.scaled_hw, geo.image_hw, geo.input_size).shape == (0, *image_hw)


def test_referring_picks_the_most_probable_query():
    cls = _cls([[2.0, 1.0], [5.0, 0.0], [-3.0, 3.0]])
    masks = _masks((slice(0, 10), slice(0, 20)), (slice(10, 20), slice(0, 10)), None)
    res = postprocess_referring(cls, masks, GEO, ["the dog"])
    assert res.masks.shape == (1, 40, 40) and res.labels == ["the dog"]
    assert res.label_ids.tolist() == [0]
    np.testing.assert_allclose(res.scores, [1 / (1 + np.exp(-5.0))], rtol=1e-6)
    expected = np.zeros((40, 40), bool)
    expected[20:, :20] = True
    assert (res.masks[0] ^ expected).sum() <= 2 * 40  # only the bilinear border row / column may differ
    assert res.masks[0][25:, :15].all() and not res.masks[0][:15].any()


def test_gcg_gives_each_phrase_its_best_query():
    cls = _cls([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    masks = _masks((slice(0, 10), slice(None)), (slice(10, 20), slice(None)), None)
    res = postprocess_gcg(cls, masks, GEO, ["a man", "a horse"], text="<p>a man</p> on <p>a horse</p>")
    assert res.labels == ["a man", "a horse"] and res.label_ids.tolist() == [0, 1]
    assert res.masks[0][:15].all() and res.masks[1][25:].all() and not res.masks[1][:15].any()
    assert res.text.startswith("<p>a man")


def test_panoptic_two_clean_segments_and_background_query():
    cls = _cls([[BIG, 0, 0], [0, BIG, 0], [0, 0, BIG]])
    masks = _masks((slice(None), slice(0, 10)), (slice(None), slice(10, 20)), (slice(None), slice(None)))
    res = postprocess_panoptic(cls, masks, GEO, ["cat", "grass"])
    assert res.labels == ["cat", "grass"] and res.label_ids.tolist() == [0, 1]
    assert res.masks[0][:, :19].all() and res.masks[1][:, 21:].all()
    assert not (res.masks[0] & res.masks[1]).any()
    assert (res.scores > 0.99).all()


def test_panoptic_overlap_threshold_drops_an_occluded_segment():
    cls = _cls([[0, BIG, 0], [BIG, 0, 0], [BIG, 0, 0]])
    masks = _masks(
        (slice(None), slice(12, 20)),  # q0 "wall": right 40 %
        (slice(None), slice(0, 12)),  # q1 "person": left 60 % ...
        (slice(None), slice(0, 10)),  # q2 "person": ... mostly covered by this more confident one
    )
    masks[1][masks[1] > 0] = 8.0
    res = postprocess_panoptic(cls, masks, GEO, ["person", "wall"])
    assert sorted(res.labels) == ["person", "wall"] and len(res.labels) == 2
    person = res.masks[res.labels.index("person")]
    assert person[:, :19].all() and not person[:, 21:].any()  # q2's left half, not q1's 60 %
    relaxed = postprocess_panoptic(cls, masks, GEO, ["person", "wall"], overlap_threshold=0.1)
    assert len(relaxed.labels) == 3  # q1 keeps its visible strip (≈ 1/6 of its area) when allowed


def test_panoptic_object_threshold_and_stuff_merge():
    cls = _cls([[BIG, 0, 0], [BIG, 0, 0], [0.0, 0.0, -1.0]])  # q2: argmax class 0 but prob ≈ 0.58
    masks = _masks((slice(0, 10), slice(None)), (slice(10, 20), slice(None)), (slice(None), slice(None)))
    separate = postprocess_panoptic(cls, masks, GEO, ["sky", "tree"])
    assert separate.labels == ["sky", "sky"]
    merged = postprocess_panoptic(cls, masks, GEO, ["sky", "tree"], stuff={"sky"})
    assert merged.labels == ["sky"] and merged.masks[0].all()
    lenient = postprocess_panoptic(cls, masks, GEO, ["sky", "tree"], object_mask_threshold=0.5)
    assert len(lenient.labels) == 2  # q2 is kept but loses every pixel to the confident queries


def test_semantic_argmax_and_torch_reference():
    cls = _cls([[BIG, 0, 0], [0, BIG, 0], [0, 0, BIG]])
    masks = _masks((slice(None), slice(0, 10)), (slice(None), slice(10, 20)), None)
    res = postprocess_semantic(cls, masks, GEO, ["road", "car"])
    assert res.labels == ["road", "car"] and res.label_ids.tolist() == [0, 1]
    assert res.masks[0][:, :19].all() and res.masks[1][:, 21:].all()
    assert (res.masks.sum(axis=0) == 1).all()
    assert (res.scores > 0.9).all() and (res.scores <= 1).all()

    rng = np.random.default_rng(2)
    cls, masks = rng.standard_normal((6, 4)).astype(np.float32), rng.standard_normal((6, 16, 16)) * 4
    masks = masks.astype(np.float32)
    geo = Geometry.for_image((37, 53), 64)
    res = postprocess_semantic(cls, masks, geo, ["a", "b", "c"])
    probs = torch.from_numpy(cls).softmax(-1)[:, :-1]
    seg = torch.einsum("qc,qhw->chw", probs, torch.from_numpy(masks).sigmoid()).numpy()
    ref = _torch_chain(seg, geo).argmax(axis=0)
    ours = res.label_ids[res.masks.argmax(axis=0)]
    assert (ours == ref).mean() > 0.999


def test_instance_scores_and_order():
    cls = _cls([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, BIG]])
    masks = _masks((slice(0, 10), slice(0, 10)), (slice(10, 20), slice(10, 20)), None)
    res = postprocess_instance(cls, masks, GEO, ["cup", "plate"])
    # q2's mask is empty; q0 and q1 appear under both classes (k = Q = 3 pairs: the 3 best)
    probs = torch.from_numpy(cls).softmax(-1)[:, :-1].numpy()
    full = masks_to_image(masks, GEO.scaled_hw, GEO.image_hw, GEO.input_size)
    mscore = [(1 / (1 + np.exp(-f[f > 0]))).sum() / ((f > 0).sum() + 1e-6) for f in full]
    pairs = sorted(((probs[q, c], q, c) for q in range(3) for c in range(2)), reverse=True)[:3]
    expected = sorted(((p * mscore[q], q, c) for p, q, c in pairs if mscore[q] > 0), reverse=True)
    np.testing.assert_allclose(res.scores, [e[0] for e in expected], rtol=1e-5)
    assert res.labels == [["cup", "plate"][e[2]] for e in expected]
    for mask, (_, q, _) in zip(res.masks, expected, strict=True):
        np.testing.assert_array_equal(mask, full[q] > 0)
    high = postprocess_instance(cls, masks, GEO, ["cup", "plate"], threshold=0.85)  # plate: 0.79 × ≈1
    assert high.labels == ["cup"] and len(high.scores) == 1


def test_visual_grounded_labels_prompts():
    cls = _cls([[BIG, 0, 0], [0, BIG, 0], [0, 0, BIG]])
    masks = _masks((slice(0, 5), slice(0, 5)), (slice(10, 15), slice(10, 15)), None)
    res = postprocess_visual_grounded(cls, masks, GEO, threshold=0.5)
    assert sorted(res.labels) == ["prompt 0", "prompt 1"]
    assert sorted(res.label_ids.tolist()) == [0, 1]


def test_interactive_prefers_box_match_over_score():
    cls = _cls([[3.0, 0.0], [1.5, 0.0], [-2.0, 0.0]])  # probs 0.95, 0.82, 0.12
    masks = _masks((slice(0, 6), slice(0, 6)), (slice(12, 20), slice(12, 20)), (slice(12, 20), slice(12, 20)))
    box = (24.0, 24.0, 40.0, 40.0)  # the bottom-right block, where q1 (lower score) sits
    res = postprocess_interactive(cls, masks, GEO, [box])
    assert res.labels == ["prompt 0"] and res.label_ids.tolist() == [0]
    assert res.masks[0][30, 30] and not res.masks[0][5, 5]
    assert 0.7 < res.scores[0] < 0.82
    # with nothing above the threshold, the top scorer is the only candidate, whatever the box
    low = postprocess_interactive(_cls([[-0.2, 0.0], [-0.4, 0.0], [-2.0, 0.0]]), masks, GEO, [box])
    assert low.masks[0][5, 5] and not low.masks[0][30, 30]


def test_interactive_two_prompts_and_box_iou():
    np.testing.assert_allclose(
        box_iou((0, 0, 2, 2), np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 5, 5]])), [1 / 7, 1.0, 0.0]
    )
    cls = _cls([[BIG, 0, 0], [0, BIG, 0]])
    masks = _masks((slice(0, 10), slice(None)), (slice(10, 20), slice(None)))
    res = postprocess_interactive(cls, masks, GEO, [(0, 0, 40, 20), (0, 20, 40, 40)])
    assert res.labels == ["prompt 0", "prompt 1"]
    assert res.masks[0][:15].all() and res.masks[1][25:].all()


def test_empty_results_have_image_shaped_masks():
    cls, masks = np.zeros((0, 3), np.float32), np.zeros((0, 20, 20), np.float32)
    for res in (
        postprocess_panoptic(cls, masks, GEO, ["a", "b"]),
        postprocess_instance(cls, masks, GEO, ["a", "b"]),
        postprocess_semantic(cls, masks, GEO, ["a", "b"]),
        postprocess_referring(cls, masks, GEO, ["a", "b"]),
        postprocess_visual_grounded(cls, masks, GEO),
        postprocess_interactive(cls, masks, GEO, [(0, 0, 1, 1), (0, 0, 1, 1)]),
        postprocess(Task.CHAT, None, None, GEO, labels=[], text="hello"),
    ):
        assert res.masks.shape == (0, 40, 40) and res.masks.dtype == bool
        assert res.scores.shape == (0,) and res.scores.dtype == np.float32
        assert res.label_ids.dtype == np.int64 and res.labels == []
    all_bg = postprocess_panoptic(_cls([[0, 0, BIG]]), _masks(None), GEO, ["a", "b"])
    assert all_bg.masks.shape == (0, 40, 40)


def test_dispatch_and_errors():
    cls = _cls([[BIG, 0, 0], [0, BIG, 0], [0, 0, BIG]])
    masks = _masks((slice(None), slice(0, 10)), (slice(None), slice(10, 20)), None)
    ov = postprocess("open_vocabulary", cls, masks, GEO, labels=["a", "b"])
    pan = postprocess_panoptic(cls, masks, GEO, ["a", "b"])
    assert ov.labels == pan.labels and np.array_equal(ov.masks, pan.masks)
    assert postprocess(Task.SEMANTIC, cls, masks, GEO, labels=["a", "b"]).labels == ["a", "b"]
    assert postprocess(Task.REASONING, cls[:, 1:], masks, GEO, labels=["why"]).labels == ["why"]
    assert len(postprocess(Task.GCG, cls, masks, GEO, labels=["x", "y"]).labels) == 2
    batched = postprocess(Task.VISUAL_GROUNDED, cls[None], masks[None], GEO, labels=[])  # batch of 1 is fine
    assert batched.masks.shape[1:] == (40, 40)
    with pytest.raises(ValueError, match="prompt_boxes"):
        postprocess(Task.INTERACTIVE, cls, masks, GEO, labels=[])
    with pytest.raises(ValueError, match="categories"):
        postprocess(Task.PANOPTIC, cls, masks, GEO, labels=["only one"])
    with pytest.raises(ValueError, match="mask_logits"):
        postprocess_semantic(cls, masks[:2], GEO, ["a", "b"])
    with pytest.raises(ValueError, match="scaled_hw"):
        Geometry((10, 10), (50, 10), 40)


def test_softmax_is_stable_for_huge_logits():
    cls = _cls([[1e4, 0, -1e4], [0, 1e4, 0]])
    masks = _masks((slice(None), slice(0, 10)), (slice(None), slice(10, 20)))
    res = postprocess_panoptic(cls, masks, GEO, ["a", "b"])
    assert np.isfinite(res.scores).all() and res.labels == ["a", "b"]


def test_host_modules_import_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import xsam_edge.spec.preprocess, xsam_edge.spec.postprocess, xsam_edge.spec.image_io\n"
        "assert sys.modules['torch'] is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _upstream_interactive(cls: np.ndarray, masks: np.ndarray, geo: Geometry, box) -> tuple[np.ndarray, float]:
    """Brute force, as upstream's intseg_process_fn: every query upsampled and scored."""
    full = torch.from_numpy(_torch_chain(masks, geo))
    probs = torch.from_numpy(cls).softmax(-1)[:, 0]
    pos = (full > 0).float()
    scores = probs * (full.sigmoid() * pos).sum((1, 2)) / (pos.sum((1, 2)) + 1e-6)
    keep = (scores >= 0.5) | (scores == scores.max())
    cand = torch.nonzero(keep).flatten()
    cand = cand[torch.argsort(-scores[cand], stable=True)]
    boxes = []
    for q in cand:
        ys, xs = torch.nonzero(pos[q], as_tuple=True)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if len(xs) else [0, 0, 0, 0])
    best = cand[int(np.argmax(box_iou(box, np.array(boxes, np.float64))))]
    return pos[best].bool().numpy(), float(scores[best])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_interactive_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:16, 0:16]
    centers = rng.uniform(0, 16, (12, 3))
    masks = np.stack([(2 + 4 * r / 16 - np.hypot(yy - cy, xx - cx)) for cy, cx, r in centers]).astype(
        np.float32
    )
    cls = np.stack([rng.normal(0, 2, 12), np.zeros(12)], axis=1).astype(np.float32)
    geo = Geometry.for_image((45, 60), 64)
    (x0, x1), (y0, y1) = np.sort(rng.uniform(0, 60, 2)), np.sort(rng.uniform(0, 45, 2))
    box = (float(x0), float(y0), float(x1), float(y1))
    ref_mask, ref_score = _upstream_interactive(cls, masks, geo, box)
    res = postprocess_interactive(cls, masks, geo, [box])
    np.testing.assert_array_equal(res.masks[0], ref_mask)
    np.testing.assert_allclose(res.scores[0], ref_score, rtol=1e-5)
