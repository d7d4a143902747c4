"""Scenes of the procedural "shapes" world: a textured background of 1–2 stuff regions and 2–6 shapes.

Everything is numpy + PIL, seeded by a ``numpy.random.Generator`` and deterministic. Each shape is rendered
to its own mask and the image is painted from those masks in order (later shapes cover earlier ones), so
the panoptic ground truth is exact: every pixel belongs to exactly one segment (a shape or a stuff region).
No torch here; :mod:`xsam_edge.data.shapes` is the public entry point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from xsam_edge.spec.types import Task

THING_CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "hexagon",
    "diamond",
    "cross",
    "ring",
)
STUFF_CLASSES: tuple[str, ...] = ("sky", "grass", "sand", "water", "wall")
CATEGORIES: tuple[str, ...] = THING_CLASSES + STUFF_CLASSES
"""Every class name, things then stuff."""

OPEN_VOCAB_HELD_OUT: tuple[str, ...] = ("hexagon", "ring")
"""Shapes that never occur in train scenes; val and test scenes contain them (open-vocabulary eval)."""

SEEN_THING_CLASSES: tuple[str, ...] = tuple(c for c in THING_CLASSES if c not in OPEN_VOCAB_HELD_OUT)

PLURALS: dict[str, str] = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "star": "stars",
    "hexagon": "hexagons",
    "diamond": "diamonds",
    "cross": "crosses",
    "ring": "rings",
}

CORNERS: dict[str, int] = {
    "circle": 0,
    "ring": 0,
    "triangle": 3,
    "square": 4,
    "diamond": 4,
    "hexagon": 6,
    "star": 10,
    "cross": 12,
}
"""Corner (vertex) count of each shape, used by the reasoning questions."""

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (30, 185, 60),
    "blue": (35, 75, 225),
    "yellow": (240, 220, 30),
    "orange": (250, 135, 20),
    "purple": (140, 50, 185),
    "white": (248, 248, 248),
    "black": (18, 18, 18),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)

SIZES: tuple[str, ...] = ("small", "medium", "large")
# Target area of a shape as a fraction of min(H, W)**2, per size class; the gaps keep classes apart.
SIZE_AREA: dict[str, tuple[float, float]] = {
    "small": (0.012, 0.02),
    "medium": (0.03, 0.042),
    "large": (0.06, 0.085),
}

STUFF_BASE: dict[str, tuple[int, int, int]] = {
    "sky": (135, 190, 235),
    "grass": (75, 120, 45),
    "sand": (212, 188, 138),
    "water": (40, 100, 150),
    "wall": (150, 143, 137),
}

MIN_VISIBLE_FRACTION = 0.4  # an object occluded below this fraction of its area is re-placed
MIN_SIDE = 24  # smallest image side the scene layout supports
ALL_TASKS: tuple[Task, ...] = tuple(Task)


@dataclass(frozen=True)
class SuiteConfig:
    """How scenes and examples are made.

    Args:
        image_hw (tuple[int, int]): (H, W) of every image; any size with both sides >= 24.
        min_objects (int): fewest shapes per scene (at least 1).
        max_objects (int): most shapes per scene (at most 8).
        tasks (tuple[Task, ...]): tasks to make one example each for, in this order.
    """

    image_hw: tuple[int, int] = (128, 128)
    min_objects: int = 2
    max_objects: int = 6
    tasks: tuple[Task, ...] = ALL_TASKS

    def __post_init__(self) -> None:
        h, w = (int(v) for v in self.image_hw)
        if min(h, w) < MIN_SIDE:
            raise ValueError(f"image_hw {self.image_hw}: both sides must be at least {MIN_SIDE} pixels")
        if not 1 <= self.min_objects <= self.max_objects <= 8:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects <= 8, got {self.min_objects}, {self.max_objects}"
            )
        tasks = tuple(Task(t) for t in self.tasks)
        if not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks must be a non-empty tuple without repeats, got {self.tasks}")
        object.__setattr__(self, "image_hw", (h, w))
        object.__setattr__(self, "tasks", tasks)


@dataclass(eq=False)
class ShapeObject:
    """One painted shape ("thing").

    Args:
        shape (str): class name from :data:`THING_CLASSES`.
        colour (str): colour name from :data:`COLOURS`.
        size (str): ``"small"``, ``"medium"`` or ``"large"`` (by its nominal area).
        center (tuple[float, float]): (x, y) of the shape's centre in pixels.
        radius (float): radius of the shape's circumscribed circle in pixels.
        full_area (int): pixels the shape covers before occlusion.
        mask (np.ndarray): (H, W) bool visible pixels, after later shapes are painted over it.
    """

    shape: str
    colour: str
    size: str
    center: tuple[float, float]
    radius: float
    full_area: int
    mask: np.ndarray
    area: int = field(init=False)
    centroid: tuple[float, float] = field(init=False)
    bbox: tuple[int, int, int, int] = field(init=False)

    def __post_init__(self) -> None:
        self.update_geometry()

    def update_geometry(self) -> None:
        """Recompute area, centroid (x, y) and bbox (x0, y0, x1, y1; x1/y1 exclusive) from ``mask``."""
        rows = np.flatnonzero(self.mask.any(axis=1))
        cols = np.flatnonzero(self.mask.any(axis=0))
        if rows.size == 0:
            self.area, self.centroid, self.bbox = 0, self.center, (0, 0, 0, 0)
            return
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        crop = self.mask[y0:y1, x0:x1]
        self.area = int(np.count_nonzero(crop))
        cy = float(crop.sum(axis=1) @ np.arange(y0, y1)) / self.area
        cx = float(crop.sum(axis=0) @ np.arange(x0, x1)) / self.area
        self.centroid = (cx, cy)
        self.bbox = (x0, y0, x1, y1)

    @property
    def corners(self) -> int:
        return CORNERS[self.shape]


@dataclass(eq=False)
class StuffRegion:
    """One background region ("stuff"): ``mask`` holds the pixels no shape covers."""

    name: str
    mask: np.ndarray

    @property
    def area(self) -> int:
        return int(self.mask.sum())


@dataclass(eq=False)
class Scene:
    """An image and its exact panoptic ground truth.

    Args:
        image (np.ndarray): (H, W, 3) uint8 RGB.
        objects (list[ShapeObject]): the shapes in paint order (later ones are on top).
        stuff (list[StuffRegion]): background regions with at least one visible pixel.
        allow_held_out (bool): whether the held-out open-vocabulary shapes may occur (val/test scenes).
    """

    image: np.ndarray
    objects: list[ShapeObject]
    stuff: list[StuffRegion]
    allow_held_out: bool

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])

    def panoptic(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Every segment: things in paint order, then stuff.

        Returns:
            tuple[np.ndarray, np.ndarray, list[str]]: (N, H, W) bool masks that partition the image,
            (N,) bool ``is_thing``, and the N class names.
        """
        masks = [o.mask for o in self.objects] + [s.mask for s in self.stuff]
        names = [o.shape for o in self.objects] + [s.name for s in self.stuff]
        is_thing = np.array([True] * len(self.objects) + [False] * len(self.stuff), dtype=bool)
        return np.stack(masks).astype(bool, copy=False), is_thing, names

    def segment_map(self) -> np.ndarray:
        """(H, W) int32 index of each pixel's segment in :meth:`panoptic` order."""
        masks, _, _ = self.panoptic()
        return np.argmax(masks, axis=0).astype(np.int32)


# -- geometry --------------------------------------------------------------------------------------


def _regular(n: int, start_deg: float) -> np.ndarray:
    a = np.deg2rad(start_deg) + np.arange(n) * 2 * math.pi / n
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    a = -math.pi / 2 + np.arange(2 * points) * math.pi / points
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


def _cross(half_width: float = 0.32) -> np.ndarray:
    w = half_width
    quarter = [(-w, -1), (w, -1), (w, -w)]  # the top arm and the corner to the right arm
    points: list[tuple[float, float]] = []
    for _ in range(4):  # rotate by 90 degrees (y down: (x, y) -> (-y, x))
        points += quarter
        quarter = [(-y, x) for x, y in quarter]
    return np.array(points, dtype=float)


# Unit polygons (circumradius <= 1, y down); circle and ring are drawn as ellipses.
_UNIT_POLYGONS: dict[str, np.ndarray] = {
    "square": _regular(4, 45.0),
    "triangle": _regular(3, -90.0),
    "hexagon": _regular(6, 0.0),
    "diamond": np.array([(0, -1), (0.62, 0), (0, 1), (-0.62, 0)], dtype=float),
    "star": _star(),
    "cross": _cross() / math.sqrt(1 + 0.32**2),
}
RING_INNER = 0.5  # inner radius of a ring as a fraction of its outer radius
# Max rotation in degrees; 180 means any. Squares and crosses stay near upright so they do not read as
# diamonds or an "x".
_MAX_ROTATION: dict[str, float] = {
    "square": 20.0,
    "diamond": 12.0,
    "cross": 20.0,
    "triangle": 180.0,
    "hexagon": 180.0,
    "star": 180.0,
}


def _polygon_area(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


_UNIT_AREA: dict[str, float] = {name: _polygon_area(p) for name, p in _UNIT_POLYGONS.items()}
_UNIT_AREA["circle"] = math.pi
_UNIT_AREA["ring"] = math.pi * (1 - RING_INNER**2)


def _render_shape(
    shape: str, cx: float, cy: float, r: float, angle_deg: float, hw: tuple[int, int]
) -> np.ndarray:
    """(H, W) bool mask of one shape, drawn with PIL in a crop around it for speed."""
    h, w = hw
    x0, y0 = max(int(math.floor(cx - r)) - 1, 0), max(int(math.floor(cy - r)) - 1, 0)
    x1, y1 = min(int(math.ceil(cx + r)) + 2, w), min(int(math.ceil(cy + r)) + 2, h)
    canvas = Image.new("1", (x1 - x0, y1 - y0), 0)
    draw = ImageDraw.Draw(canvas)
    lx, ly = cx - x0, cy - y0
    if shape in ("circle", "ring"):
        draw.ellipse((lx - r, ly - r, lx + r, ly + r), fill=1)
        if shape == "ring":
            q = r * RING_INNER
            draw.ellipse((lx - q, ly - q, lx + q, ly + q), fill=0)
    else:
        a = math.radians(angle_deg)
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        pts = _UNIT_POLYGONS[shape] @ rot.T * r + (lx, ly)
        draw.polygon([tuple(p) for p in pts.tolist()], fill=1)
    mask = np.zeros(hw, dtype=bool)
    mask[y0:y1, x0:x1] = np.asarray(canvas, dtype=bool)
    return mask


# -- textures --------------------------------------------------------------------------------------


def _low_freq_noise(rng: np.random.Generator, hw: tuple[int, int], cells: int) -> np.ndarray:
    """Smooth noise in [-1, 1]: a coarse random grid upsampled bilinearly."""
    h, w = hw
    gh, gw = max(2, round(cells * h / max(h, w))), max(2, round(cells * w / max(h, w)))
    grid = Image.fromarray(rng.random((gh, gw), dtype=np.float32), mode="F")
    return np.asarray(grid.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32) * 2 - 1


def _stuff_texture(name: str, rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) float32 colour of a stuff class over the whole image, with its own texture."""
    h, w = hw
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    base = np.array(STUFF_BASE[name], dtype=np.float32) + rng.uniform(-10, 10, 3).astype(np.float32)
    if name == "sky":  # clouds: smooth noise towards white
        t = np.clip(_low_freq_noise(rng, hw, 6), 0, 1)[..., None]
        return base * (1 - 0.45 * t) + 250 * 0.45 * t
    if name == "grass":  # near-vertical blades
        period, tilt = rng.uniform(3, 5), rng.uniform(-0.3, 0.3)
        t = np.sin(2 * np.pi * (xx + tilt * yy) / period + rng.uniform(0, 6.3))
        return base + (18 * t + 10 * _low_freq_noise(rng, hw, 8))[..., None]
    if name == "sand":  # speckles on smooth noise
        dots = (rng.random(hw, dtype=np.float32) < 0.07).astype(np.float32)
        return base + (8 * _low_freq_noise(rng, hw, 5) - 40 * dots)[..., None]
    if name == "water":  # horizontal waves
        period, amp = rng.uniform(5, 8), rng.uniform(1, 3)
        t = np.sin(2 * np.pi * (yy + amp * np.sin(xx / rng.uniform(4, 8))) / period + rng.uniform(0, 6.3))
        return base + (22 * t)[..., None]
    if name == "wall":  # bricks: dark mortar lines
        bh = int(rng.integers(7, 10))
        bw = 2 * bh
        row = (yy // bh).astype(np.int32)
        mortar = ((yy % bh) < 1.5) | (((xx + (row % 2) * (bw // 2)) % bw) < 1.5)
        shade = 6 * _low_freq_noise(rng, hw, 10) - 45 * mortar.astype(np.float32)
        return base + shade[..., None]
    raise AssertionError(name)


def _stuff_layout(rng: np.random.Generator, hw: tuple[int, int]) -> list[tuple[str, np.ndarray]]:
    """1–2 stuff classes and their (H, W) region masks (a partition of the image)."""
    h, w = hw
    names = [str(n) for n in rng.choice(STUFF_CLASSES, size=int(rng.integers(1, 3)), replace=False)]
    if len(names) == 1:
        return [(names[0], np.ones(hw, dtype=bool))]
    horizontal = "sky" in names or rng.random() < 0.6
    if "sky" in names and names[0] != "sky":
        names.reverse()  # sky above
    length, across = (w, h) if horizontal else (h, w)
    t = np.arange(length, dtype=np.float32)
    boundary = across * rng.uniform(0.35, 0.65) + across * rng.uniform(0.02, 0.08) * np.sin(
        2 * np.pi * t / (length * rng.uniform(0.4, 1.2)) + rng.uniform(0, 6.3)
    )
    if horizontal:
        first = np.arange(h, dtype=np.float32)[:, None] < boundary[None, :]
    else:
        first = np.arange(w, dtype=np.float32)[None, :] < boundary[:, None]
    return [(names[0], first), (names[1], ~first)]


# -- scenes ----------------------------------------------------------------------------------------


def _paint_object(
    image: np.ndarray, mask: np.ndarray, colour: str, rng: np.random.Generator
) -> None:  # in place
    rgb = np.array(COLOURS[colour], dtype=np.int16) + rng.integers(-12, 13, 3)
    ys, xs = np.nonzero(mask)
    pixels = np.broadcast_to(rgb, (len(xs), 3)).astype(np.float32)
    if rng.random() < 0.3:  # mild texture: stripes or dots
        if rng.random() < 0.5:
            t = np.sin((xs * rng.uniform(-1, 1) + ys) * 2 * np.pi / rng.uniform(3, 6)) > 0.3
        else:
            t = rng.random(len(xs)) < 0.12
        shade = -28.0 if colour != "black" else 28.0
        pixels = pixels + shade * t[:, None]
    image[ys, xs] = np.clip(pixels, 0, 255).astype(np.uint8)


def make_scene(rng: np.random.Generator, config: SuiteConfig, allow_held_out: bool) -> Scene:
    """One random scene: textured stuff background and ``min_objects``–``max_objects`` shapes.

    Shapes repeat a class or colour already in the scene more often than chance (counting and "same
    colour" questions need that). Same-coloured shapes never touch, and a shape is re-placed when it would
    leave an earlier one with less than 40 % of its area visible.

    Args:
        rng (np.random.Generator): the only source of randomness.
        config (SuiteConfig): image size and object counts.
        allow_held_out (bool): allow the held-out shapes of :data:`OPEN_VOCAB_HELD_OUT` (val/test).

    Returns:
        Scene: the image with its panoptic ground truth.
    """
    hw = config.image_hw
    h, w = hw
    side = min(h, w)
    pool = THING_CLASSES if allow_held_out else SEEN_THING_CLASSES

    layout = _stuff_layout(rng, hw)
    image_f = _stuff_texture(layout[0][0], rng, hw)
    if len(layout) == 2:
        image_f = np.where(layout[0][1][..., None], image_f, _stuff_texture(layout[1][0], rng, hw))
    image = np.clip(image_f, 0, 255).astype(np.uint8)

    target = int(rng.integers(config.min_objects, config.max_objects + 1))
    objects: list[ShapeObject] = []
    for _ in range(target * 3):  # some objects may fail to fit; try a few more
        if len(objects) >= target:
            break
        placed = _place_object(rng, objects, pool, hw, side)
        if placed is not None:
            objects.append(placed)
            _paint_object(image, placed.mask, placed.colour, rng)
    for obj in objects:
        obj.update_geometry()
    covered = np.zeros(hw, dtype=bool)
    for obj in objects:
        covered |= obj.mask
    stuff = [StuffRegion(name, region & ~covered) for name, region in layout]
    return Scene(image, objects, [s for s in stuff if s.mask.any()], allow_held_out)


def _place_object(
    rng: np.random.Generator,
    objects: list[ShapeObject],
    pool: tuple[str, ...],
    hw: tuple[int, int],
    side: int,
) -> ShapeObject | None:
    """A new shape on top of ``objects`` (whose masks are updated), or ``None`` if none fits in 12 tries."""
    h, w = hw
    present = list(dict.fromkeys(o.shape for o in objects))
    if present and rng.random() < 0.35:
        shape = str(present[int(rng.integers(len(present)))])
    else:
        shape = str(pool[int(rng.integers(len(pool)))])
    colours = list(dict.fromkeys(o.colour for o in objects))
    if colours and rng.random() < 0.25:
        colour = str(colours[int(rng.integers(len(colours)))])
    else:
        colour = COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))]
    size = SIZES[int(rng.integers(3))]
    lo, hi = SIZE_AREA[size]
    r = math.sqrt(rng.uniform(lo, hi) * side * side / _UNIT_AREA[shape])
    r = min(r, 0.48 * side)
    angle = float(rng.uniform(-1, 1) * _MAX_ROTATION.get(shape, 0.0))
    for _ in range(12):
        cx, cy = float(rng.uniform(r, w - r)), float(rng.uniform(r, h - r))
        if any(
            o.colour == colour and math.hypot(cx - o.center[0], cy - o.center[1]) < r + o.radius + 2
            for o in objects
        ):
            continue
        full = _render_shape(shape, cx, cy, r, angle, hw)
        full_area = int(full.sum())
        if full_area < 6:
            continue
        remaining = [o.mask & ~full for o in objects]
        pairs = zip(remaining, objects, strict=True)
        if all(rem.sum() >= MIN_VISIBLE_FRACTION * o.full_area for rem, o in pairs):
            for o, rem in zip(objects, remaining, strict=True):
                o.mask = rem
            return ShapeObject(shape, colour, size, (cx, cy), r, full_area, full)
    return None
