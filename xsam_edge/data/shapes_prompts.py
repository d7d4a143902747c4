"""Visual prompts made from a ground-truth mask the upstream way (XSAM.md §1.6), deterministic per generator.

point: a random interior pixel; scribble: a random stroke of interior points; box: the mask's bbox with ±10 %
jitter; mask: the mask Gaussian-blurred (σ = 2 px) and thresholded at its mean. No torch here.
"""

from __future__ import annotations

import math

import numpy as np

from xsam_edge.spec.types import Box, MaskPrompt, Point, Prompt, Scribble

PROMPT_KINDS: tuple[str, ...] = ("point", "scribble", "box", "mask")


def gaussian_blur(mask: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """Separable Gaussian blur (zero padding, radius 3 sigma) of a 2-D array, as float32."""
    radius = max(1, int(math.ceil(3 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-(x**2) / (2 * sigma * sigma))
    kernel /= kernel.sum()
    h, w = mask.shape
    padded = np.pad(mask.astype(np.float32), ((radius, radius), (0, 0)))
    rows = sum(kernel[i] * padded[i : i + h] for i in range(2 * radius + 1))
    padded = np.pad(rows, ((0, 0), (radius, radius)))
    return sum(kernel[i] * padded[:, i : i + w] for i in range(2 * radius + 1))


def _interior(mask: np.ndarray) -> np.ndarray:
    """``mask`` eroded by one pixel (4-neighbourhood), or ``mask`` itself if that leaves nothing."""
    eroded = mask.copy()
    eroded[1:] &= mask[:-1]
    eroded[:-1] &= mask[1:]
    eroded[:, 1:] &= mask[:, :-1]
    eroded[:, :-1] &= mask[:, 1:]
    eroded[0, :] = eroded[-1, :] = False
    eroded[:, 0] = eroded[:, -1] = False
    return eroded if eroded.any() else mask


def _segment_inside(mask: np.ndarray, p: tuple[int, int], q: tuple[int, int]) -> bool:
    steps = max(abs(q[0] - p[0]), abs(q[1] - p[1]), 1)
    t = np.linspace(0, 1, steps + 1)
    xs = np.rint(p[0] + t * (q[0] - p[0])).astype(int)
    ys = np.rint(p[1] + t * (q[1] - p[1])).astype(int)
    return bool(mask[ys, xs].all())


def make_prompt(kind: str, mask: np.ndarray, rng: np.random.Generator) -> Prompt:
    """A visual prompt of ``kind`` on the object ``mask`` (upstream generators, XSAM.md §1.6).

    * point: a random interior pixel (coordinates are pixel indices, so ``mask[int(y), int(x)]`` holds);
    * scribble: a stroke of 2–4 interior pixels whose straight segments stay inside the object;
    * box: the bbox (x1, y1 exclusive) with each side moved by up to 10 % of the box size, clipped;
    * mask: the mask blurred with sigma 2 px and thresholded at the blurred image's mean.

    Raises:
        ValueError: unknown ``kind`` or an empty ``mask``.
    """
    if not mask.any():
        raise ValueError("cannot make a prompt on an empty mask")
    h, w = mask.shape
    if kind in ("point", "scribble"):
        inner = _interior(mask)
        ys, xs = np.nonzero(inner)
        k = int(rng.integers(len(xs)))
        start = (int(xs[k]), int(ys[k]))
        if kind == "point":
            return Point(float(start[0]), float(start[1]))
        stroke = [start]
        for _ in range(int(rng.integers(1, 4))):
            for c in rng.integers(len(xs), size=8):
                q = (int(xs[c]), int(ys[c]))
                if q != stroke[-1] and _segment_inside(mask, stroke[-1], q):
                    stroke.append(q)
                    break
        if len(stroke) == 1:  # tiny or thin object: any second interior pixel
            c = (k + 1) % len(xs)
            stroke.append((int(xs[c]), int(ys[c])))
        return Scribble(tuple((float(x), float(y)) for x, y in stroke))
    if kind == "box":
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        bw, bh = x1 - x0, y1 - y0
        j = rng.uniform(-0.1, 0.1, 4)
        nx0 = float(np.clip(round(x0 + j[0] * bw, 2), 0, w - 1))
        ny0 = float(np.clip(round(y0 + j[1] * bh, 2), 0, h - 1))
        nx1 = float(np.clip(round(x1 + j[2] * bw, 2), nx0 + 1, w))
        ny1 = float(np.clip(round(y1 + j[3] * bh, 2), ny0 + 1, h))
        return Box(nx0, ny0, nx1, ny1)
    if kind == "mask":
        blurred = gaussian_blur(mask, 2.0)
        return MaskPrompt(blurred > blurred.mean())
    raise ValueError(f"unknown prompt kind {kind!r}; expected one of {PROMPT_KINDS}")
