"""Where the letterboxed decoder input sits in the image, and the resizes that bring logits back to it.

numpy only (no torch). ``resize_bilinear`` matches torch's ``F.interpolate(bilinear, align_corners=False)``;
``masks_to_image`` is upstream's chain (upsample to input_size², crop to the letterboxed (h', w'), resize to
(H, W)) applied as one composed weight matrix per axis, exact up to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from xsam_edge.spec.preprocess import scaled_size

CHUNK_BYTES = 64 * 2**20  # float32 working set per full-size chunk


@dataclass(frozen=True)
class Geometry:
    """Where the decoder's square input sits in the original image.

    Args:
        image_hw (tuple[int, int]): (H, W) of the original image.
        scaled_hw (tuple[int, int]): (h', w') of the image inside the letterboxed input (the second return
            value of ``letterbox``).
        input_size (int): side of the square SAM input (1024 for the released model).
    """

    image_hw: tuple[int, int]
    scaled_hw: tuple[int, int]
    input_size: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_hw", (int(self.image_hw[0]), int(self.image_hw[1])))
        object.__setattr__(self, "scaled_hw", (int(self.scaled_hw[0]), int(self.scaled_hw[1])))
        object.__setattr__(self, "input_size", int(self.input_size))
        if min(self.image_hw) < 1:
            raise ValueError(f"image_hw must be positive, got {self.image_hw}")
        if not (0 < self.scaled_hw[0] <= self.input_size and 0 < self.scaled_hw[1] <= self.input_size):
            raise ValueError(f"scaled_hw {self.scaled_hw} must lie inside the {self.input_size}² input")

    @classmethod
    def for_image(cls, image_hw: tuple[int, int], input_size: int) -> Geometry:
        """The geometry ``letterbox`` produces for an image of size ``image_hw``."""
        return cls(tuple(image_hw), scaled_size(image_hw, input_size), input_size)


def _axis_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and float32 weights of torch's bilinear resize (align_corners=False) along one axis.

    Computed in float32 as torch's CPU kernel does (scale = in / out rounded to float32, then one fused
    multiply-add): float64 weights would differ from torch's by up to 1e-4 on large downscales.
    """
    scale = np.float32(in_size) / np.float32(out_size)
    centers = np.arange(out_size, dtype=np.float32) + np.float32(0.5)
    # float32 × float32 is exact in float64, so this rounds once, like an FMA
    src = (np.float64(scale) * centers.astype(np.float64) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(src.astype(np.int64), in_size - 1)  # src ≥ 0, so the cast floors
    i1 = np.minimum(i0 + 1, in_size - 1)
    l1 = np.clip(src - i0.astype(np.float32), np.float32(0.0), np.float32(1.0))
    return i0, i1, np.float32(1.0) - l1, l1


def interp_matrix(in_size: int, out_size: int) -> np.ndarray:
    """The (out_size, in_size) float64 matrix of a 1-D bilinear resize (torch, align_corners=False).

    Every row has non-negative weights summing to 1, so a resize never leaves the input's value range.
    """
    i0, i1, l0, l1 = _axis_taps(in_size, out_size)
    mat = np.zeros((out_size, in_size), np.float64)
    rows = np.arange(out_size)
    np.add.at(mat, (rows, i0), l0)
    np.add.at(mat, (rows, i1), l1)
    return mat


def resize_bilinear(x: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize matching ``F.interpolate(mode="bilinear", align_corners=False, antialias=False)``.

    Two separable gathers with precomputed taps (width first, then height, as torch's CPU kernel nests them).

    Args:
        x (np.ndarray): (N, h, w) array (cast to float32).
        out_hw (tuple[int, int]): (H, W).

    Returns:
        np.ndarray: (N, H, W) float32.
    """
    x = np.asarray(x, np.float32)
    if x.ndim != 3:
        raise ValueError(f"resize_bilinear expects (N, h, w), got {x.shape}")
    n, h, w = x.shape
    out_h, out_w = int(out_hw[0]), int(out_hw[1])
    if n == 0 or min(h, w) == 0:
        return np.zeros((n, out_h, out_w), np.float32)
    j0, j1, m0, m1 = _axis_taps(w, out_w)
    t = x[:, :, j0] * m0 + x[:, :, j1] * m1  # (N, h, W)
    i0, i1, l0, l1 = _axis_taps(h, out_h)
    return t[:, i0, :] * l0[:, None] + t[:, i1, :] * l1[:, None]  # (N, H, W)


@lru_cache(maxsize=16)
def _chain_matrix(m: int, scaled: int, out: int, input_size: int) -> np.ndarray:
    """(out, m) float32: upsample m → input_size, keep the first ``scaled`` samples, resize to ``out``."""
    up = interp_matrix(m, input_size)[:scaled]  # (scaled, m)
    i0, i1, l0, l1 = _axis_taps(scaled, out)
    l0, l1 = l0.astype(np.float64)[:, None], l1.astype(np.float64)[:, None]
    mat = (l0 * up[i0] + l1 * up[i1]).astype(np.float32)  # (out, m)
    mat.setflags(write=False)
    return mat


class Upsampler:
    """Low-res logits (n, mh, mw) → original-size logits (n, H, W) through upstream's chain, composed."""

    def __init__(self, mask_hw: tuple[int, int], geometry: Geometry) -> None:
        (h, w), (sh, sw), s = geometry.image_hw, geometry.scaled_hw, geometry.input_size
        self.ry = _chain_matrix(int(mask_hw[0]), sh, h, s)  # (H, mh)
        self.rx_t = np.ascontiguousarray(_chain_matrix(int(mask_hw[1]), sw, w, s).T)  # (mw, W)
        self.image_hw = (h, w)

    def __call__(self, x: np.ndarray, rows: slice = slice(None)) -> np.ndarray:
        ry = self.ry[rows]
        n, out_h, (mw, out_w) = x.shape[0], ry.shape[0], self.rx_t.shape
        t = ry @ x  # (n, H, mw): small batched products
        # the expensive step (H·W·mw per map) as one large GEMM, about 2× faster than a batched matmul
        return (t.reshape(n * out_h, mw) @ self.rx_t).reshape(n, out_h, out_w)

    def chunk(self, n_maps: int = 1) -> int:
        """How many full-size float32 maps of ``n_maps`` channels fit in the working-set budget."""
        return max(1, CHUNK_BYTES // (4 * n_maps * self.image_hw[0] * self.image_hw[1]))


def masks_to_image(
    mask_logits: np.ndarray, scaled_hw: tuple[int, int], image_hw: tuple[int, int], input_size: int
) -> np.ndarray:
    """Bring mask logits to the original image: upsample to input_size², crop to (h', w'), resize to (H, W).

    The three steps are upstream's (``XSegmentor.postprocess_masks_preds`` + ``sem_seg_postprocess``); they
    are applied as one composed linear map per axis, equal to the chain up to float rounding. This allocates
    the whole (N, H, W) output: the task functions below call it on selected queries only.

    Args:
        mask_logits (np.ndarray): (N, m, m) logits (any float dtype).
        scaled_hw (tuple[int, int]): (h', w') un-padded letterbox size.
        image_hw (tuple[int, int]): (H, W) original size.
        input_size (int): square input side.

    Returns:
        np.ndarray: (N, H, W) float32 logits.
    """
    x = np.asarray(mask_logits, np.float32)
    if x.ndim != 3:
        raise ValueError(f"mask_logits must be (N, m, m), got {x.shape}")
    up = Upsampler(x.shape[1:], Geometry(image_hw, scaled_hw, input_size))
    if x.shape[0] == 0:
        return np.zeros((0, *up.image_hw), np.float32)
    return up(x)
