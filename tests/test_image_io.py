import os

import numpy as np
import pytest
from PIL import Image

from xsam_edge.spec import image_io
from xsam_edge.spec.image_io import load_image, overlay, palette, save_overlay
from xsam_edge.spec.types import SegmentationResult


def _result(masks: np.ndarray) -> SegmentationResult:
    n = len(masks)
    return SegmentationResult(
        masks=masks,
        labels=[f"m{i}" for i in range(n)],
        scores=np.ones(n, np.float32),
        label_ids=np.arange(n, dtype=np.int64),
    )


def test_rgb_round_trip(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, rgb)


def test_grayscale_becomes_three_channels(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    out = load_image(str(tmp_path / "g.png"))
    assert out.shape == (3, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_16bit_png_scales_by_full_range(tmp_path):
    values = np.array([[0, 257, 32896, 65535], [1000, 20000, 40000, 60000]], np.uint16)
    img = Image.fromarray(values)
    assert img.mode.startswith("I;16")
    img.save(tmp_path / "d.png")
    out = load_image(tmp_path / "d.png")
    np.testing.assert_array_equal(out[:, :, 0], np.round(values / 257).astype(np.uint8))
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]  # scaled, not clipped at 255


def test_float_image(tmp_path):
    values = np.array([[0.0, 0.5], [1.0, 0.25]], np.float32)
    Image.fromarray(values, mode="F").save(tmp_path / "f.tiff")
    out = load_image(tmp_path / "f.tiff")
    assert out[:, :, 1].tolist() == [[0, 128], [255, 64]]


def test_rgba_is_composited_on_black(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = [[255, 0], [128, 64]]
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "t.png")
    out = load_image(tmp_path / "t.png")
    assert out[:, :, 0].tolist() == [[200, 0], [100, 50]]


def test_la_and_palette_with_transparency(tmp_path):
    la = np.zeros((2, 3, 2), np.uint8)
    la[..., 0], la[..., 1] = 100, [[255, 0, 255], [255, 255, 0]]
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    assert load_image(tmp_path / "la.png")[:, :, 2].tolist() == [[100, 0, 100], [100, 100, 0]]
    pal = Image.new("P", (3, 2), 0)
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.putpixel((1, 0), 1)
    pal.save(tmp_path / "p.png", transparency=0)
    out = load_image(tmp_path / "p.png")
    assert out[0, 1].tolist() == [0, 255, 0] and out[0, 0].tolist() == [0, 0, 0]


def test_cmyk_converts(tmp_path):
    Image.new("CMYK", (4, 3), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    out = load_image(tmp_path / "c.jpg")
    assert out.shape == (3, 4, 3)
    assert out[..., 0].min() > 200 and out[..., 1].max() < 60  # red


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (6, 4), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    img.save(tmp_path / "e.jpg", exif=exif)
    assert load_image(tmp_path / "e.jpg").shape == (6, 4, 3)


def test_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "notes.png").write_text("this is text, not pixels")
    with pytest.raises(ValueError, match="is not an image PIL can read"):
        load_image(tmp_path / "notes.png")
    Image.new("RGB", (1, 1)).save(tmp_path / "one.png")
    with pytest.raises(ValueError, match="at least 2x2"):
        load_image(tmp_path / "one.png")
    Image.new("RGB", (5, 1)).save(tmp_path / "thin.png")
    with pytest.raises(ValueError, match="at least 2x2"):
        load_image(tmp_path / "thin.png")
    with pytest.raises(ValueError, match="directory"):
        load_image(tmp_path)
    monkeypatch.setattr(image_io, "MAX_PIXELS", 100)
    Image.new("RGB", (20, 20)).save(tmp_path / "big.png")
    with pytest.raises(ValueError, match="megapixels"):
        load_image(tmp_path / "big.png")


def test_palette_is_deterministic_and_distinct():
    colors = palette(12)
    assert colors.shape == (12, 3) and colors.dtype == np.uint8
    assert len({tuple(c) for c in colors}) == 12
    np.testing.assert_array_equal(colors, palette(12))


def test_save_overlay_blends_and_writes_atomically(tmp_path):
    image = np.full((4, 5, 3), 100, np.uint8)
    masks = np.zeros((2, 4, 5), bool)
    masks[0, :2] = True
    masks[1, :, :2] = True
    result = _result(masks)
    blended = overlay(image, result)
    c0, c1 = palette(2).astype(float)
    np.testing.assert_array_equal(blended[3, 4], [100, 100, 100])
    np.testing.assert_array_equal(blended[0, 4], np.floor(50 + c0 / 2 + 0.5))
    np.testing.assert_array_equal(blended[3, 0], np.floor(50 + c1 / 2 + 0.5))
    path = tmp_path / "out.png"
    save_overlay(path, image, result, labelled=False)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), blended)
    assert os.listdir(tmp_path) == ["out.png"]  # no temp file left behind
    save_overlay(path, image, _result(np.zeros((0, 4, 5), bool)), labelled=False)  # overwrite; empty result
    np.testing.assert_array_equal(np.asarray(Image.open(path)), image)
    with pytest.raises(ValueError, match="masks are"):
        save_overlay(tmp_path / "bad.png", np.zeros((3, 3, 3), np.uint8), result)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        save_overlay(tmp_path / "nope" / "x.png", image, result)
    assert sorted(os.listdir(tmp_path)) == ["out.png"]


def test_a_labelled_overlay_outlines_each_mask_and_names_it(tmp_path):
    image = np.full((120, 200, 3), 100, np.uint8)
    masks = np.zeros((2, 120, 200), bool)
    masks[0, 40:100, 20:80] = True
    masks[1, 50:110, 120:190] = True
    result = _result(masks)
    path = tmp_path / "labelled.png"
    save_overlay(path, image, result)
    got = np.asarray(Image.open(path))
    blended = overlay(image, result)
    c0, c1 = palette(2)
    # the outline is the full colour on the mask's edge; the inside stays blended
    np.testing.assert_array_equal(got[70, 20], c0)
    np.testing.assert_array_equal(got[80, 189], c1)
    np.testing.assert_array_equal(got[70, 50], blended[70, 50])
    # a label box in the mask's colour above each mask, with text in it (not one flat colour)
    box = got[max(40 - 12, 0) : 40, 20:60]
    assert (box == c0).all(axis=-1).mean() > 0.3 and len(np.unique(box.reshape(-1, 3), axis=0)) > 2
    assert os.listdir(tmp_path) == ["labelled.png"]
