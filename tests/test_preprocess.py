import json

import numpy as np
import pytest

from xsam_edge.model.presets import TINY, X_SAM_PHI3
from xsam_edge.spec.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PreprocessSpec,
    expand_to_square,
    global_pixels,
    letterbox,
    letterbox_mask,
    prompt_box,
    rasterize_prompt,
    scaled_radius,
    scaled_size,
)
from xsam_edge.spec.types import Box, MaskPrompt, Point, Scribble

ROW = np.array([0, 100, 200, 252], np.uint8)
# PIL bilinear ×2 along a row (align-corners-false taps, edges clamped): hand-computed, all exact integers
ROW_X2 = np.array([0, 25, 75, 125, 175, 213, 239, 252], np.uint8)


def _two_by_four() -> np.ndarray:
    img = np.zeros((2, 4, 3), np.uint8)
    img[:, :, 0] = ROW
    img[:, :, 1] = 255 - ROW
    img[:, :, 2] = 128
    return img


def _normalized(u8: np.ndarray, mean: float, std: float) -> np.ndarray:
    return (np.float32(u8 / 255) - np.float32(mean)) / np.float32(std)


def test_letterbox_2x4_to_8_exact_numbers():
    out, hw = letterbox(_two_by_four(), 8)
    assert hw == (4, 8)
    assert out.shape == (3, 8, 8) and out.dtype == np.float32
    expected_u8 = [ROW_X2, 255 - ROW_X2, np.full(8, 128, np.uint8)]
    for c in range(3):
        expected = _normalized(expected_u8[c], IMAGENET_MEAN[c], IMAGENET_STD[c])
        np.testing.assert_allclose(out[c, :4], np.broadcast_to(expected, (4, 8)), atol=1e-6)
    # the pad is 0 after normalisation, not (0 - mean) / std
    assert np.all(out[:, 4:, :] == 0.0)


def test_letterbox_tall_image_pads_right():
    img = np.full((8, 2, 3), 200, np.uint8)
    out, hw = letterbox(img, 16)
    assert hw == (16, 4)
    assert np.all(out[:, :, 4:] == 0.0)
    np.testing.assert_allclose(out[0, :, :4], _normalized(np.uint8(200), IMAGENET_MEAN[0], IMAGENET_STD[0]))


@pytest.mark.parametrize(
    ("hw", "size", "expected"),
    [((480, 640), 1024, (768, 1024)), ((333, 1000), 1024, (341, 1024)), ((3, 1000), 1024, (3, 1024))],
)
def test_scaled_size_rounds_like_hf(hw, size, expected):
    assert scaled_size(hw, size) == expected


def test_letterbox_rejects_bad_images():
    with pytest.raises(ValueError, match="uint8"):
        letterbox(np.zeros((4, 4, 3), np.float32), 8)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        letterbox(np.zeros((4, 4), np.uint8), 8)


def test_global_pixels_pads_to_square_with_grey():
    img = _two_by_four()
    sq = expand_to_square(img)
    assert sq.shape == (4, 4, 3)
    assert np.all(sq[0] == 127) and np.all(sq[3] == 127)
    np.testing.assert_array_equal(sq[1:3], img)
    out = global_pixels(img, 4)  # 4 → 4: the resize is the identity
    assert out.shape == (3, 4, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], (np.float32(127 / 255) - 0.5) / 0.5, atol=1e-7)
    np.testing.assert_allclose(out[0, 1], (ROW / 255 - 0.5) / 0.5, atol=1e-6)


def test_global_pixels_without_padding_stretches():
    out = global_pixels(_two_by_four(), 8, pad_to_square=False)
    assert out.shape == (3, 8, 8)
    np.testing.assert_allclose(out[0, 0], (ROW_X2 / 255 - 0.5) / 0.5, atol=1e-6)  # rows are all alike


def test_letterbox_mask_nearest_and_zero_pad():
    mask = np.array([[1, 0, 0, 1], [0, 1, 1, 0]], bool)
    out = letterbox_mask(mask, 8)
    assert out.shape == (8, 8) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:4], np.kron(mask, np.ones((2, 2))).astype(np.float32))
    assert np.all(out[4:] == 0)
    assert set(np.unique(out)) <= {0.0, 1.0}


def test_point_disk_area_and_radius_scaling():
    assert scaled_radius(10, (480, 640)) == 10
    assert scaled_radius(10, (64, 64)) == 1
    assert scaled_radius(5, (1024, 2048)) == 16
    disk = rasterize_prompt(Point(50, 60), (480, 640))
    assert disk.dtype == bool and disk.shape == (480, 640)
    assert disk.sum() == 317  # lattice points with x² + y² ≤ 100
    assert disk[60, 40] and disk[60, 60] and not disk[60, 61] and not disk[49, 50]
    small = rasterize_prompt(Point(5, 5), (64, 64))
    assert small.sum() == 5  # radius 1: the centre and its 4 neighbours


def test_box_raster_is_half_open_and_rounded():
    box = rasterize_prompt(Box(2, 3, 7, 9), (20, 20))
    assert box.sum() == 5 * 6
    assert box[3, 2] and box[8, 6] and not box[9, 6] and not box[8, 7]
    rounded = rasterize_prompt(Box(2.4, 3.6, 6.6, 9.4), (20, 20))
    np.testing.assert_array_equal(rounded[4:9, 2:7], True)
    assert rounded.sum() == 5 * 5
    assert prompt_box(Box(2, 3, 7, 9), (20, 20)) == (2.0, 3.0, 7.0, 9.0)


def test_scribble_is_a_thick_polyline():
    line = rasterize_prompt(Scribble(((10, 20), (30, 20))), (640, 640))
    # 21×11 band plus two half-disks of radius 5 (81 lattice points, 11 on the diameter)
    assert line.sum() == 21 * 11 + 2 * (81 - 11) // 2
    assert line[25, 20] and not line[26, 20] and line[20, 5] and not line[20, 4]
    bent = rasterize_prompt(Scribble(((10, 10), (30, 10), (30, 40))), (640, 640))
    assert bent[10, 20] and bent[25, 30] and bent[40, 30] and not bent[30, 10]
    dot = rasterize_prompt(Scribble(((10, 10),)), (640, 640))
    assert dot.sum() == 81
    assert prompt_box(Point(50, 60), (480, 640)) == (40.0, 50.0, 61.0, 71.0)


def test_mask_prompt_passthrough():
    mask = np.zeros((5, 6), bool)
    mask[1:3, 2:5] = True
    out = rasterize_prompt(MaskPrompt(mask), (5, 6))
    np.testing.assert_array_equal(out, mask)
    assert out is not mask
    assert prompt_box(MaskPrompt(mask), (5, 6)) == (2.0, 1.0, 5.0, 3.0)
    with pytest.raises(ValueError, match="mask prompt"):
        rasterize_prompt(MaskPrompt(mask), (6, 6))


def test_spec_from_config_and_round_trip():
    spec = PreprocessSpec.from_config(X_SAM_PHI3)
    assert (spec.seg_size, spec.global_size, spec.pad_to_square) == (1024, 384, True)
    assert spec.pad_fill == (127, 127, 127)
    tiny = PreprocessSpec.from_config(TINY)
    assert (tiny.seg_size, tiny.global_size) == (128, 56)
    data = json.loads(json.dumps(tiny.to_dict()))
    assert PreprocessSpec.from_dict(data) == tiny
    with pytest.raises(ValueError, match="unknown PreprocessSpec fields"):
        PreprocessSpec.from_dict({**data, "bogus": 1})
    img = np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    pixels, hw = tiny.letterbox(img)
    ref, ref_hw = letterbox(img, 128)
    assert hw == ref_hw and np.array_equal(pixels, ref)
    assert tiny.global_pixels(img).shape == (3, 56, 56)
    assert tiny.rasterize(Point(3, 3), (30, 50)).sum() == 5
    with pytest.raises(RuntimeError, match="global"):
        PreprocessSpec(global_size=None).global_pixels(img)
