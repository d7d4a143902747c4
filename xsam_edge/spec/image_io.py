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
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

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


def save_overlay(
    path: str | os.PathLike[str], image: np.ndarray, result: SegmentationResult, alpha: float = 0.5
) -> None:
    """Write ``overlay(image, result)`` as a PNG, atomically (temp file in the same folder, then rename).

    Args:
        path (str | os.PathLike[str]): output file; its folder must exist.
        image (np.ndarray): (H, W, 3) uint8 RGB.
        result (SegmentationResult): masks at the image size.
        alpha (float): colour weight inside a mask.

    Raises:
        FileNotFoundError: the output folder does not exist.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    pixels = overlay(image, result, alpha)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(pixels).save(f, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
