"""Read images into the (H, W, 3) uint8 RGB arrays every task takes, and write mask overlays. No torch.

Conversions done by ``load_image``:
* EXIF orientation is applied first (``ImageOps.exif_transpose``), so arrays match what viewers show.
* Grayscale ``L`` / ``1`` is replicated to three channels. 16-bit grayscale (``I;16*``, and ``I``, which is
  how PIL may hold 16-bit data) is scaled by its full range, 65535 → 255 (value / 257, rounded), never
  clipped at 255. Float ``F`` images are taken as [0, 1] when their maximum is ≤ 1, else as [0, 255]; NaN
  becomes 0.
* Transparency (``RGBA``, ``LA``, ``PA``, ``P`` with a transparent colour) is composited on **black**:
  rgb × alpha / 255. Black is what a premultiplied image already holds and adds no colour of its own.
* ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` are converted by PIL.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from xsam_edge.files import atomic_write_with
from xsam_edge.spec.types import SegmentationResult

MIN_SIDE = 2
MAX_PIXELS = 40_000_000


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Any PIL mode → (H, W, 3) uint8 RGB following the rules in the module docstring."""
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img)
    if mode in ("L", "1"):
        gray = np.asarray(img.convert("L"))
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode.startswith("I"):  # I;16, I;16B, I;16L, I;16N, I (32-bit int holding 16-bit data)
        values = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        gray = ((values * 255 + 32767) // 65535).astype(np.uint8)  # round(v / 257)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        values = np.nan_to_num(np.asarray(img, np.float64), nan=0.0)
        if values.size and values.max() <= 1.0:
            values = values * 255.0
        gray = np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
        if mode == "RGB":
            return np.asarray(img)
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = np.asarray(img.convert("RGBA"), np.uint16)
        alpha = rgba[:, :, 3:4]
        return ((rgba[:, :, :3] * alpha + 127) // 255).astype(np.uint8)  # composite on black, rounded
    try:
        return np.asarray(img.convert("RGB"))
    except (ValueError, OSError) as err:
        raise ValueError(f"cannot convert a PIL {mode!r} image to RGB: {err}") from err


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as an RGB array.

    Args:
        path (str | os.PathLike[str]): the image file.

    Returns:
        np.ndarray: (H, W, 3) uint8 RGB, EXIF orientation applied.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: not a readable image, smaller than 2 px on a side, or larger than 40 megapixels.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not an image file")
    try:
        with Image.open(path) as img:
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ValueError(
                    f"{path} is {w}x{h} = {w * h / 1e6:.1f} megapixels; at most {MAX_PIXELS / 1e6:.0f} are "
                    "accepted, downscale it first"
                )
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = _to_rgb(img)
    except Image.DecompressionBombError as err:
        raise ValueError(f"{path} is too large to decode safely ({err}); downscale it first") from err
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{path} is not an image PIL can read ({err})") from err
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"{path} is {w}x{h} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed")
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def palette(n: int) -> np.ndarray:
    """``n`` distinct, deterministic RGB colours (golden-ratio hue steps, full saturation).

    Args:
        n (int): number of colours.

    Returns:
        np.ndarray: (n, 3) uint8.
    """
    hue = (np.arange(n) * 0.618033988749895) % 1.0
    value = np.where(np.arange(n) % 2 == 0, 1.0, 0.75)
    # HSV → RGB with saturation 1: channel = value × (1 − clip(min(k, 4 − k), 0, 1)), k = (hue·6 + n) mod 6
    offsets = np.array([5.0, 3.0, 1.0])
    k = (hue[:, None] * 6 + offsets) % 6
    rgb = value[:, None] * (1 - np.clip(np.minimum(k, 4 - k), 0, 1))
    return np.round(rgb * 255).astype(np.uint8)


def overlay(image: np.ndarray, result: SegmentationResult, alpha: float = 0.5) -> np.ndarray:
    """Blend each mask's palette colour over the image, in result order (later masks on top).

    Args:
        image (np.ndarray): (H, W, 3) uint8 RGB.
        result (SegmentationResult): masks (N, H, W) at the image size.
        alpha (float): colour weight inside a mask.

    Returns:
        np.ndarray: (H, W, 3) uint8.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if result.masks.shape[1:] != image.shape[:2]:
        raise ValueError(f"masks are {result.masks.shape[1:]}, the image is {image.shape[:2]}")
    out = image.astype(np.float32)
    for mask, color in zip(result.masks, palette(len(result.masks)).astype(np.float32), strict=True):
        out[mask] = (1 - alpha) * out[mask] + alpha * color
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def _outline(mask: np.ndarray, width: int) -> np.ndarray:
    """The pixels of ``mask`` within ``width`` pixels of its edge (the mask minus its erosion)."""
    inner = mask.copy()
    for _ in range(width):
        shrunk = inner.copy()
        shrunk[1:] &= inner[:-1]
        shrunk[:-1] &= inner[1:]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        inner = shrunk
    return mask & ~inner


def annotate(pixels: np.ndarray, result: SegmentationResult) -> np.ndarray:
    """Draw each mask's outline in its palette colour and its label and score at the mask's top-left corner.

    Args:
        pixels (np.ndarray): (H, W, 3) uint8, usually ``overlay(image, result)``.
        result (SegmentationResult): masks at the image size, labels and scores.

    Returns:
        np.ndarray: (H, W, 3) uint8 with outlines and labels.
    """
    from PIL import ImageDraw, ImageFont

    out = np.array(pixels, copy=True)
    h, w = out.shape[:2]
    width = max(1, round(min(h, w) / 200))
    colors = palette(len(result.masks))
    for mask, color in zip(result.masks, colors, strict=True):
        out[_outline(mask, width)] = color
    canvas = Image.fromarray(out)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(10, round(min(h, w) / 28)))
    for mask, color, label, score in zip(result.masks, colors, result.labels, result.scores, strict=True):
        ys, xs = np.nonzero(mask)
        if not len(xs):
            continue
        text = f"{label} · {float(score):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left + 4, bottom - top + 4
        x = int(min(max(xs.min(), 0), max(w - tw, 0)))
        y = int(min(max(ys.min() - th, 0), max(h - th, 0)))  # above the mask when there is room
        draw.rectangle((x, y, x + tw, y + th), fill=tuple(int(c) for c in color))
        ink = (0, 0, 0) if 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2] > 140 else (255, 255, 255)
        draw.text((x + 2 - left, y + 2 - top), text, fill=ink, font=font)
    return np.asarray(canvas, dtype=np.uint8)


def save_overlay(
    path: str | os.PathLike[str],
    image: np.ndarray,
    result: SegmentationResult,
    alpha: float = 0.5,
    labelled: bool = True,
) -> None:
    """Write ``overlay(image, result)`` as a PNG, atomically (temp file in the same folder, then rename).

    Args:
        path (str | os.PathLike[str]): output file; its folder must exist.
        image (np.ndarray): (H, W, 3) uint8 RGB.
        result (SegmentationResult): masks at the image size.
        alpha (float): colour weight inside a mask.
        labelled (bool): also draw each mask's outline, label and score (``annotate``), so a reader sees
            what each mask is.

    Raises:
        FileNotFoundError: the output folder does not exist.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    pixels = overlay(image, result, alpha)
    if labelled:
        pixels = annotate(pixels, result)
    atomic_write_with(path, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))
