"""The unified request and result: the same values go in and out of the PyTorch model and every bundle.

Coordinates are pixels of the original image, x to the right, y down. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np


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
        self.task = Task(self.task)
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

    Raises:
        ValueError: a missing or malformed field for the task.
    """
    image = request.image
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise ValueError(
            f"image must be an (H, W, 3) RGB array, got {shape}; load files with "
            "xsam_edge.spec.image_io.load_image, which converts grayscale, RGBA and 16-bit images"
        )
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    h, w = image.shape[:2]
    if min(h, w) < 2:
        raise ValueError(f"image is {w}x{h} pixels; at least 2x2 is needed to segment anything")
    task = request.task
    if task in (Task.REFERRING, Task.REASONING, Task.CHAT):
        if not request.text or not request.text.strip():
            raise ValueError(f"task {task.value!r} needs a non-empty text")
    if task in CATEGORY_TASKS:
        names = [c.strip() for c in request.categories]
        if not names or any(not c for c in names):
            raise ValueError(f"task {task.value!r} needs a list of non-empty category names")
        if len(set(names)) != len(names):
            raise ValueError(f"category names must be unique, got {request.categories}")
    if task in PROMPT_TASKS:
        if not request.prompts:
            raise ValueError(
                f"task {task.value!r} needs at least one visual prompt (point, scribble, box or mask)"
            )
        for i, prompt in enumerate(request.prompts):
            _validate_prompt(prompt, i, h, w)


def _validate_prompt(prompt: Prompt, index: int, h: int, w: int) -> None:
    def inside(x: float, y: float) -> bool:
        return 0 <= x < w and 0 <= y < h

    where = f"prompt {index}"
    if isinstance(prompt, Point):
        if not inside(prompt.x, prompt.y):
            raise ValueError(f"{where}: point ({prompt.x}, {prompt.y}) is outside the {w}x{h} image")
    elif isinstance(prompt, Scribble):
        if len(prompt.points) < 1:
            raise ValueError(f"{where}: a scribble needs at least one point")
        bad = [p for p in prompt.points if not inside(*p)]
        if bad:
            raise ValueError(f"{where}: scribble points {bad[:3]} are outside the {w}x{h} image")
    elif isinstance(prompt, Box):
        if not (prompt.x0 < prompt.x1 and prompt.y0 < prompt.y1):
            raise ValueError(f"{where}: box needs x0 < x1 and y0 < y1, got {prompt}")
        if not (inside(prompt.x0, prompt.y0) and 0 < prompt.x1 <= w and 0 < prompt.y1 <= h):
            raise ValueError(f"{where}: box {prompt} is outside the {w}x{h} image")
    elif isinstance(prompt, MaskPrompt):
        mask = np.asarray(prompt.mask)
        if mask.shape != (h, w):
            raise ValueError(f"{where}: mask is {mask.shape}, the image is {(h, w)}")
        if not mask.any():
            raise ValueError(f"{where}: mask prompt is empty")
    else:
        raise TypeError(f"{where}: expected Point, Scribble, Box or MaskPrompt, got {type(prompt).__name__}")
