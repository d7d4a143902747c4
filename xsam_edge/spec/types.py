"""The unified request and result: the same values go in and out of the PyTorch model and every bundle.

Coordinates are pixels of the original image, x to the right, y down. No torch here.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

# Caps on what one request may hold (a request is bounded work whatever the input). Above them the request is
# refused with a RequestError; the bundle's own slots (condition and region slots, context length) bound it
# further at run time.
MAX_TEXT_CHARS = 4000
MAX_CATEGORIES = 256
MAX_CATEGORY_CHARS = 128
MAX_PROMPTS = 64
MAX_SCRIBBLE_POINTS = 256
MAX_IMAGE_PIXELS = 40_000_000
MIN_IMAGE_SIDE = 2


class RequestError(ValueError):
    """A request that cannot be answered as given: the message names the field and the fix."""


class Task(StrEnum):
    """What the user asks for. The value is the name used on the CLI and in files."""

    REFERRING = "referring"
    REASONING = "reasoning"
    PANOPTIC = "panoptic"
    INSTANCE = "instance"
    SEMANTIC = "semantic"
    OPEN_VOCABULARY = "open_vocabulary"
    INTERACTIVE = "interactive"
    VISUAL_GROUNDED = "visual_grounded"
    GCG = "gcg"
    CHAT = "chat"


TEXT_TASKS = (Task.REFERRING, Task.REASONING, Task.CHAT)
CATEGORY_TASKS = (Task.PANOPTIC, Task.INSTANCE, Task.SEMANTIC, Task.OPEN_VOCABULARY)
PROMPT_TASKS = (Task.INTERACTIVE, Task.VISUAL_GROUNDED)
GENERATE_TASKS = (Task.GCG, Task.CHAT)


@dataclass(frozen=True)
class Point:
    x: float
    y: float


@dataclass(frozen=True)
class Scribble:
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float


@dataclass(frozen=True, eq=False)
class MaskPrompt:
    """A binary mask at the original image size (H, W)."""

    mask: np.ndarray


Prompt = Point | Scribble | Box | MaskPrompt


@dataclass(eq=False)
class SegmentationRequest:
    """One question about one image.

    Args:
        image (np.ndarray): (H, W, 3) uint8 RGB. ``xsam_edge.spec.image_io.load_image`` makes one from a file.
        task (Task): what to do; decides which of the fields below must be set.
        text (str | None): the expression or question (referring, reasoning, chat; optional for GCG).
        categories (list[str]): class names for panoptic / instance / semantic / open-vocabulary.
        prompts (list[Prompt]): visual prompts for interactive and visual-grounded tasks.
    """

    image: np.ndarray
    task: Task
    text: str | None = None
    categories: list[str] = field(default_factory=list)
    prompts: list[Prompt] = field(default_factory=list)

    def __post_init__(self) -> None:
        try:
            self.task = Task(self.task)
        except ValueError:
            raise RequestError(
                f"unknown task {self.task!r:.60}; tasks: {', '.join(t.value for t in Task)}"
            ) from None
        validate_request(self)

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the original image."""
        return int(self.image.shape[0]), int(self.image.shape[1])


@dataclass(eq=False)
class SegmentationResult:
    """What came back.

    Args:
        masks (np.ndarray): (N, H, W) bool at the original image size.
        labels (list[str]): N labels: the category, the expression, or ``"prompt {i}"`` for visual prompts.
        scores (np.ndarray): (N,) float32 confidences in [0, 1].
        label_ids (np.ndarray): (N,) int64 index of each mask's label in the request's category, phrase
            or prompt list (-1 when not applicable).
        text (str | None): generated text (GCG, chat).
    """

    masks: np.ndarray
    labels: list[str]
    scores: np.ndarray
    label_ids: np.ndarray
    text: str | None = None

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.masks.ndim != 3 or self.masks.shape[0] != n or self.scores.shape != (n,):
            raise ValueError(
                f"result shapes disagree: masks {self.masks.shape}, {n} labels, scores {self.scores.shape}"
            )

    def to_json(self) -> dict:
        """A JSON-ready summary (masks as areas and boxes; the full masks stay in the array)."""
        items = []
        for i in range(len(self.labels)):
            ys, xs = np.nonzero(self.masks[i])
            box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if len(xs) else None
            items.append(
                {
                    "label": self.labels[i],
                    "label_id": int(self.label_ids[i]),
                    "score": round(float(self.scores[i]), 6),
                    "area": int(len(xs)),
                    "box_xyxy": box,
                }
            )
        return {"text": self.text, "masks": items}


def validate_request(request: SegmentationRequest) -> None:
    """Check a request before any compute; every message names the field and the fix.

    Types, finite numbers, sizes and the caps above (``MAX_*``). The prompt builder then refuses text that
    holds the template's own markers, before any image is encoded (``spec.plan``).

    Raises:
        RequestError: a missing or malformed field for the task.
    """
    image = request.image
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise RequestError(
            f"image must be an (H, W, 3) RGB array, got {shape}; load files with "
            "xsam_edge.spec.image_io.load_image, which converts grayscale, RGBA and 16-bit images"
        )
    if image.dtype != np.uint8:
        raise RequestError(f"image must be uint8, got {image.dtype}")
    h, w = image.shape[:2]
    if min(h, w) < MIN_IMAGE_SIDE:
        raise RequestError(f"image is {w}x{h} pixels; at least 2x2 is needed to segment anything")
    if h * w > MAX_IMAGE_PIXELS:
        raise RequestError(f"image is {w}x{h} pixels, more than {MAX_IMAGE_PIXELS}; downscale it first")
    task = request.task
    _check_text(request.text, task)
    _check_categories(request.categories, task)
    prompts = request.prompts
    if not isinstance(prompts, list | tuple):
        raise RequestError(
            f"prompts must be a list of Point, Scribble, Box or MaskPrompt, got {_kind(prompts)}"
        )
    if len(prompts) > MAX_PROMPTS:
        raise RequestError(f"{len(prompts)} visual prompts; at most {MAX_PROMPTS} per request")
    if task in PROMPT_TASKS and not prompts:
        raise RequestError(
            f"task {task.value!r} needs at least one visual prompt (point, scribble, box or mask)"
        )
    for i, prompt in enumerate(prompts):
        _validate_prompt(prompt, i, h, w)


def _kind(value: object) -> str:
    return f"{type(value).__name__} {value!r:.60}"


def _check_string(value: object, what: str, limit: int) -> None:
    """A str of valid Unicode, no NUL, at most ``limit`` characters."""
    if not isinstance(value, str):
        raise RequestError(f"{what} must be a str, got {_kind(value)} (decode bytes first)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(f"{what} holds characters that are not valid Unicode (lone surrogates)") from None
    if len(value) > limit:
        raise RequestError(f"{what} is {len(value)} characters; at most {limit}")
    if "\x00" in value:
        raise RequestError(f"{what} holds a NUL character")


def _check_text(text: object, task: Task) -> None:
    if text is not None:
        _check_string(text, "text", MAX_TEXT_CHARS)
    if task in (Task.REFERRING, Task.REASONING, Task.CHAT) and (text is None or not text.strip()):
        raise RequestError(f"task {task.value!r} needs a non-empty text")


def _check_categories(categories: object, task: Task) -> None:
    if isinstance(categories, str) or not isinstance(categories, list | tuple):
        raise RequestError(
            f"categories must be a list of names, got {_kind(categories)}; e.g. categories=['dog', 'cat']"
        )
    if len(categories) > MAX_CATEGORIES:
        raise RequestError(f"{len(categories)} categories; at most {MAX_CATEGORIES} per request")
    for name in categories:
        _check_string(name, "a category name", MAX_CATEGORY_CHARS)
    if task in CATEGORY_TASKS:
        names = [c.strip() for c in categories]
        if not names or any(not c for c in names):
            raise RequestError(f"task {task.value!r} needs a list of non-empty category names")
        if len(set(names)) != len(names):
            raise RequestError(f"category names must be unique, got {list(categories)}")


def _coordinate(value: object, what: str) -> float:
    """A finite real number (not a bool, not a string)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise RequestError(f"{what} must be a finite number, got {_kind(value)}")
    return float(value)


def _validate_prompt(prompt: Prompt, index: int, h: int, w: int) -> None:
    def inside(x: float, y: float) -> bool:
        return 0 <= x < w and 0 <= y < h

    where = f"prompt {index}"
    if isinstance(prompt, Point):
        x, y = _coordinate(prompt.x, f"{where}: x"), _coordinate(prompt.y, f"{where}: y")
        if not inside(x, y):
            raise RequestError(f"{where}: point ({x}, {y}) is outside the {w}x{h} image")
    elif isinstance(prompt, Scribble):
        points = prompt.points
        if not isinstance(points, list | tuple) or not points:
            raise RequestError(f"{where}: a scribble needs a list of (x, y) points, got {_kind(points)}")
        if len(points) > MAX_SCRIBBLE_POINTS:
            raise RequestError(f"{where}: {len(points)} scribble points; at most {MAX_SCRIBBLE_POINTS}")
        for j, point in enumerate(points):
            if not isinstance(point, list | tuple) or len(point) != 2:
                raise RequestError(f"{where}: scribble point {j} must be an (x, y) pair, got {_kind(point)}")
            x, y = (_coordinate(v, f"{where}: scribble point {j}") for v in point)
            if not inside(x, y):
                raise RequestError(f"{where}: scribble point ({x}, {y}) is outside the {w}x{h} image")
    elif isinstance(prompt, Box):
        x0, y0, x1, y1 = (
            _coordinate(v, f"{where}: box") for v in (prompt.x0, prompt.y0, prompt.x1, prompt.y1)
        )
        if not (x0 < x1 and y0 < y1):
            raise RequestError(f"{where}: box needs x0 < x1 and y0 < y1, got {prompt}")
        if not (inside(x0, y0) and 0 < x1 <= w and 0 < y1 <= h):
            raise RequestError(f"{where}: box {prompt} is outside the {w}x{h} image")
    elif isinstance(prompt, MaskPrompt):
        mask = prompt.mask
        if not isinstance(mask, np.ndarray) or mask.dtype.kind not in "biuf":
            raise RequestError(f"{where}: a mask prompt needs a numpy array, got {_kind(mask)}")
        if mask.shape != (h, w):
            raise RequestError(f"{where}: mask is {mask.shape}, the image is {(h, w)}")
        if not mask.any():
            raise RequestError(f"{where}: mask prompt is empty")
    else:
        raise RequestError(
            f"{where}: expected Point, Scribble, Box or MaskPrompt, got {type(prompt).__name__}"
        )
