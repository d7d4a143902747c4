"""Host-side preprocessing for X-SAM: letterbox, SigLIP pixels and visual-prompt rasters (XSAM.md §1.6, §3).

One implementation, in numpy + PIL, with no torch import: the PyTorch model, the edge runtime, golden vectors
and the demo apps all call these functions, and ``PreprocessSpec`` describes them in a bundle manifest.

Conventions:
* Images are (H, W, 3) uint8 RGB; coordinates are pixels of the original image, x right, y down.
* SAM branch (``letterbox``): resize the longest side to ``seg_size`` with PIL bilinear (sizes rounded as
  HF ``SamImageProcessor`` rounds them), ×1/255, ImageNet mean/std, then zero-pad bottom/right *after*
  normalisation (XSAM.md §9 item 14).
* SigLIP branch (``global_pixels``): optional expand-to-square filled with (127, 127, 127), PIL bilinear
  resize to ``global_size``², ×1/255, (x − 0.5) / 0.5.
* Arithmetic follows HF image processors: rescale in float64 then cast to float32, normalise in float32.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from xsam_edge.spec.types import Box, MaskPrompt, Point, Prompt, Scribble

if TYPE_CHECKING:
    from xsam_edge.spec.config import XSamConfig

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
SIGLIP_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
SIGLIP_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)
PAD_FILL: tuple[int, int, int] = (127, 127, 127)  # int(0.5 * 255): xtuner's expand2square fill
REFERENCE_SIDE = 640  # ≈ COCO image side, where upstream's 10 / 5 px prompt radii were tuned


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", type(image).__name__)
        dtype = getattr(image, "dtype", "")
        raise ValueError(
            f"image must be an (H, W, 3) uint8 RGB array, got {shape} {dtype}; "
            "load files with xsam_edge.spec.image_io.load_image"
        )


def _normalize(pixels: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(h, w, 3) uint8 → (3, h, w) float32, as HF's ``rescale`` + ``normalize`` compute it."""
    x = (pixels.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))  # (h, w, 3) → (3, h, w)


def scaled_size(image_hw: tuple[int, int], size: int) -> tuple[int, int]:
    """The un-padded letterbox size: longest side → ``size``, rounded as HF ``SamImageProcessor`` does.

    Args:
        image_hw (tuple[int, int]): (H, W) of the original image.
        size (int): the square input side (1024 for SAM-L).

    Returns:
        tuple[int, int]: (h', w') with max(h', w') == size.
    """
    h, w = int(image_hw[0]), int(image_hw[1])
    if h < 1 or w < 1:
        raise ValueError(f"image size must be positive, got {(h, w)}")
    scale = size * 1.0 / max(h, w)
    # at least one pixel: a 993x2 image still letterboxes (to a one-pixel sliver) instead of failing
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


def letterbox(
    image: np.ndarray,
    size: int,
    *,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> tuple[np.ndarray, tuple[int, int]]:
    """SAM-branch input: aspect-kept resize, normalise, zero-pad bottom/right.

    Args:
        image (np.ndarray): (H, W, 3) uint8 RGB.
        size (int): square side of the SAM input (``PreprocessSpec.seg_size``).
        mean (tuple[float, float, float]): per-channel mean on the [0, 1] scale.
        std (tuple[float, float, float]): per-channel std on the [0, 1] scale.

    Returns:
        tuple[np.ndarray, tuple[int, int]]: (3, size, size) float32 pixels, zero (after normalisation) outside
        the top-left (h', w') block, and scaled_hw = (h', w').
    """
    _check_image(image)
    h2, w2 = scaled_size(image.shape[:2], size)
    resized = np.asarray(Image.fromarray(image).resize((w2, h2), Image.Resampling.BILINEAR))
    out = np.zeros((3, size, size), np.float32)
    out[:, :h2, :w2] = _normalize(resized, mean, std)
    return out, (h2, w2)


def expand_to_square(image: np.ndarray, fill: tuple[int, int, int] = PAD_FILL) -> np.ndarray:
    """Centre the image on a square canvas of its longest side (xtuner ``expand2square``).

    Args:
        image (np.ndarray): (H, W, 3) uint8 RGB.
        fill (tuple[int, int, int]): RGB of the added border.

    Returns:
        np.ndarray: (S, S, 3) uint8 with S = max(H, W); the image sits at offset ((S − H) // 2, (S − W) // 2).
    """
    _check_image(image)
    h, w = image.shape[:2]
    if h == w:
        return image
    side = max(h, w)
    out = np.empty((side, side, 3), np.uint8)
    out[...] = np.asarray(fill, np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = image
    return out


def global_pixels(
    image: np.ndarray,
    size: int,
    pad_to_square: bool = True,
    *,
    fill: tuple[int, int, int] = PAD_FILL,
    mean: tuple[float, float, float] = SIGLIP_MEAN,
    std: tuple[float, float, float] = SIGLIP_STD,
) -> np.ndarray:
    """SigLIP-branch input: optional expand-to-square, then a square resize (aspect not kept).

    Args:
        image (np.ndarray): (H, W, 3) uint8 RGB.
        size (int): output side (``PreprocessSpec.global_size``, 384 for SigLIP2-so400m).
        pad_to_square (bool): pad to a square with ``fill`` first (the eval and demo convention).
        fill (tuple[int, int, int]): RGB of the square padding.
        mean (tuple[float, float, float]): per-channel mean on the [0, 1] scale.
        std (tuple[float, float, float]): per-channel std on the [0, 1] scale.

    Returns:
        np.ndarray: (3, size, size) float32.
    """
    _check_image(image)
    if pad_to_square:
        image = expand_to_square(image, fill)
    resized = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
    return _normalize(resized, mean, std)


def scaled_radius(radius: int, image_hw: tuple[int, int]) -> int:
    """A prompt radius scaled to the image: ``max(1, round(radius * max(H, W) / 640))``.

    Upstream draws points with radius 10 px and scribbles with radius 5 px on COCO images (≈640 px sides).
    Scaling by the longest side keeps the prompt the same fraction of the image, so a 64 px image is not
    flooded by a 10 px disk and a 4k image still gets a visible one.

    Args:
        radius (int): the radius at a 640 px longest side.
        image_hw (tuple[int, int]): (H, W) of the image.

    Returns:
        int: the radius in pixels, at least 1.
    """
    return max(1, round(radius * max(image_hw) / REFERENCE_SIDE))


def _round(v: float) -> int:
    return int(np.floor(v + 0.5))


def _segment_distance_sq(
    ys: np.ndarray, xs: np.ndarray, p: tuple[float, float], q: tuple[float, float]
) -> np.ndarray:
    """Squared distance from pixel centres (xs, ys) to the segment p → q (points as (x, y))."""
    px, py = p
    dx, dy = q[0] - px, q[1] - py
    length_sq = dx * dx + dy * dy
    if length_sq == 0:
        t = np.zeros(np.broadcast_shapes(ys.shape, xs.shape))
    else:
        t = np.clip(((xs - px) * dx + (ys - py) * dy) / length_sq, 0.0, 1.0)
    return (xs - (px + t * dx)) ** 2 + (ys - (py + t * dy)) ** 2


def _draw_stroke(out: np.ndarray, points: list[tuple[float, float]], radius: int) -> None:
    """Set every pixel within ``radius`` of the polyline through ``points`` (in place)."""
    h, w = out.shape
    segments = list(zip(points[:-1], points[1:], strict=True)) or [(points[0], points[0])]
    for p, q in segments:
        # only the segment's bounding box grown by the radius can be touched
        y0 = max(0, int(np.floor(min(p[1], q[1]) - radius)))
        y1 = min(h, int(np.ceil(max(p[1], q[1]) + radius)) + 1)
        x0 = max(0, int(np.floor(min(p[0], q[0]) - radius)))
        x1 = min(w, int(np.ceil(max(p[0], q[0]) + radius)) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        ys = np.arange(y0, y1, dtype=np.float64)[:, None]
        xs = np.arange(x0, x1, dtype=np.float64)[None, :]
        out[y0:y1, x0:x1] |= _segment_distance_sq(ys, xs, p, q) <= radius * radius


def rasterize_prompt(
    prompt: Prompt, image_hw: tuple[int, int], point_radius: int = 10, scribble_radius: int = 5
) -> np.ndarray:
    """Turn a visual prompt into the binary mask the region sampler reads (XSAM.md §1.6).

    Pixel (row i, column j) has centre (x, y) = (j, i).

    * Point: the disk of radius ``scaled_radius(point_radius, image_hw)`` around it.
    * Scribble: every pixel within ``scaled_radius(scribble_radius, image_hw)`` of the polyline through its
      points (one point gives a disk).
    * Box: the filled rectangle columns [round(x0), round(x1)) × rows [round(y0), round(y1)), at least one
      pixel.
    * MaskPrompt: the mask itself.

    Args:
        prompt (Prompt): a Point, Scribble, Box or MaskPrompt in original-image pixels.
        image_hw (tuple[int, int]): (H, W) of the original image.
        point_radius (int): point radius at a 640 px longest side (upstream: 10).
        scribble_radius (int): scribble half-width at a 640 px longest side (upstream: 5).

    Returns:
        np.ndarray: (H, W) bool.
    """
    h, w = int(image_hw[0]), int(image_hw[1])
    out = np.zeros((h, w), bool)
    if isinstance(prompt, Point):
        _draw_stroke(out, [(prompt.x, prompt.y)], scaled_radius(point_radius, (h, w)))
    elif isinstance(prompt, Scribble):
        if not prompt.points:
            raise ValueError("a scribble needs at least one point")
        points = [(float(x), float(y)) for x, y in prompt.points]
        _draw_stroke(out, points, scaled_radius(scribble_radius, (h, w)))
    elif isinstance(prompt, Box):
        x0, x1 = min(max(_round(prompt.x0), 0), w - 1), min(max(_round(prompt.x1), 0), w)
        y0, y1 = min(max(_round(prompt.y0), 0), h - 1), min(max(_round(prompt.y1), 0), h)
        out[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)] = True
    elif isinstance(prompt, MaskPrompt):
        mask = np.asarray(prompt.mask)
        if mask.shape != (h, w):
            raise ValueError(f"mask prompt is {mask.shape}, the image is {(h, w)}")
        out = mask.astype(bool, copy=True)
    else:
        raise TypeError(f"expected Point, Scribble, Box or MaskPrompt, got {type(prompt).__name__}")
    return out


def letterbox_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a prompt mask like the image (nearest neighbour) and zero-pad it to size × size.

    Args:
        mask (np.ndarray): (H, W) bool (or 0/1) at the original image size.
        size (int): the SAM input side.

    Returns:
        np.ndarray: (size, size) float32 in {0, 1}; the mask occupies the top-left (h', w') block.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got {mask.shape}")
    h2, w2 = scaled_size(mask.shape, size)
    img = Image.fromarray((mask != 0).astype(np.uint8) * 255)
    resized = np.asarray(img.resize((w2, h2), Image.Resampling.NEAREST))
    out = np.zeros((size, size), np.float32)
    out[:h2, :w2] = resized > 127
    return out


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Bounding box of a binary mask as (x0, y0, x1, y1), x1/y1 exclusive; all zeros for an empty mask.

    The convention of detectron2's ``BitMasks.get_bounding_boxes``, which upstream's interactive
    post-process uses for both the prompt and the predicted masks.
    """
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if len(xs) == 0:
        return (0.0, 0.0, 0.0, 0.0)
    return (float(xs[0]), float(ys[0]), float(xs[-1] + 1), float(ys[-1] + 1))


def prompt_box(
    prompt: Prompt, image_hw: tuple[int, int], point_radius: int = 10, scribble_radius: int = 5
) -> tuple[float, float, float, float]:
    """The prompt's bounding box in original pixels, taken from its raster (for the interactive post-process).

    Args:
        prompt (Prompt): a Point, Scribble, Box or MaskPrompt.
        image_hw (tuple[int, int]): (H, W) of the original image.
        point_radius (int): as in ``rasterize_prompt``.
        scribble_radius (int): as in ``rasterize_prompt``.

    Returns:
        tuple[float, float, float, float]: (x0, y0, x1, y1) with x1, y1 exclusive.
    """
    return mask_box(rasterize_prompt(prompt, image_hw, point_radius, scribble_radius))


@dataclass(frozen=True)
class PreprocessSpec:
    """Every constant of the host-side preprocessing; stored in a bundle manifest.

    Args:
        seg_size (int): SAM input side (letterbox target).
        global_size (int | None): SigLIP input side; ``None`` when the model has no global encoder.
        pad_to_square (bool): expand the image to a square before the SigLIP resize (eval convention).
        pixel_mean (tuple[float, float, float]): SAM-branch mean on the [0, 1] scale.
        pixel_std (tuple[float, float, float]): SAM-branch std on the [0, 1] scale.
        global_mean (tuple[float, float, float]): SigLIP-branch mean.
        global_std (tuple[float, float, float]): SigLIP-branch std.
        pad_fill (tuple[int, int, int]): RGB fill of the square padding.
        point_radius (int): point-prompt radius at a 640 px longest side.
        scribble_radius (int): scribble half-width at a 640 px longest side.
    """

    seg_size: int = 1024
    global_size: int | None = 384
    pad_to_square: bool = True
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD
    global_mean: tuple[float, float, float] = SIGLIP_MEAN
    global_std: tuple[float, float, float] = SIGLIP_STD
    pad_fill: tuple[int, int, int] = PAD_FILL
    point_radius: int = 10
    scribble_radius: int = 5

    def __post_init__(self) -> None:
        if self.seg_size < 1 or (self.global_size is not None and self.global_size < 1):
            raise ValueError(f"sizes must be positive, got seg {self.seg_size}, global {self.global_size}")
        for name in ("pixel_mean", "pixel_std", "global_mean", "global_std", "pad_fill"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"{name} needs 3 values (R, G, B), got {getattr(self, name)}")
        if min(self.pixel_std) <= 0 or min(self.global_std) <= 0:
            raise ValueError("std values must be positive")

    @classmethod
    def from_config(cls, config: XSamConfig) -> PreprocessSpec:
        """The spec an ``XSamConfig`` implies (sizes from its encoders, the eval conventions otherwise).

        Args:
            config (XSamConfig): the model config.

        Returns:
            PreprocessSpec: the spec.
        """
        glob = config.global_encoder
        return cls(
            seg_size=config.seg_encoder.image_size,
            global_size=None if glob is None else glob.image_size,
            pad_to_square=True if glob is None else glob.pad_to_square,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        """Inverse of ``to_dict``.

        Raises:
            ValueError: unknown keys (the message lists the known ones).
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown PreprocessSpec fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def letterbox(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """``letterbox`` with this spec's size and statistics: (3, seg_size, seg_size) float32, (h', w')."""
        return letterbox(image, self.seg_size, mean=self.pixel_mean, std=self.pixel_std)

    def global_pixels(self, image: np.ndarray) -> np.ndarray:
        """``global_pixels`` with this spec's constants: (3, global_size, global_size) float32."""
        if self.global_size is None:
            raise RuntimeError("this spec has no global (SigLIP) branch: global_size is None")
        return global_pixels(
            image,
            self.global_size,
            self.pad_to_square,
            fill=self.pad_fill,
            mean=self.global_mean,
            std=self.global_std,
        )

    def rasterize(self, prompt: Prompt, image_hw: tuple[int, int]) -> np.ndarray:
        """``rasterize_prompt`` with this spec's radii: (H, W) bool."""
        return rasterize_prompt(prompt, image_hw, self.point_radius, self.scribble_radius)

    def prompt_box(self, prompt: Prompt, image_hw: tuple[int, int]) -> tuple[float, float, float, float]:
        """``prompt_box`` with this spec's radii: (x0, y0, x1, y1), x1/y1 exclusive."""
        return prompt_box(prompt, image_hw, self.point_radius, self.scribble_radius)

    def prompt_masks(self, prompts: Sequence[Prompt], image_hw: tuple[int, int]) -> np.ndarray:
        """Every visual prompt rasterised and letterboxed like the image: (K, seg_size, seg_size) float32."""
        return np.stack([self.letterbox_mask(self.rasterize(p, image_hw)) for p in prompts])

    def letterbox_mask(self, mask: np.ndarray) -> np.ndarray:
        """``letterbox_mask`` to seg_size: (seg_size, seg_size) float32."""
        return letterbox_mask(mask, self.seg_size)

    def scaled_size(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """(h', w') of the letterboxed image."""
        return scaled_size(image_hw, self.seg_size)
