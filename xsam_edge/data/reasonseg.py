"""ReasonSeg loader (LISA's format): a folder of ``*.jpg`` images, each with a same-name labelme ``*.json``.

A json holds ``"text"`` (a list of questions about the image), ``"is_sentence"`` (long reasoning sentence or
short phrase) and ``"shapes"``: ``{"label": "target" | "ignore" | "flag" | ..., "points": [[x, y], ...],
"shape_type": "polygon"}``.

The mask is built as LISA's ``get_mask_from_json`` and X-SAM's ``ReasonSegDataset`` build it: shapes labelled
``flag`` are dropped; every other shape is a polygon over its points cast to int (truncated), filled with its
outline; shapes are painted largest first, so a smaller shape on top wins; a label containing ``ignore``
paints "ignore", any other label paints "target". PIL's ``ImageDraw.polygon`` (fill and outline) stands in
for OpenCV's ``fillPoly`` + ``polylines``. The target is the pixels left "target"; the "ignore" pixels go to
``meta["ignore_mask"]``. Images whose target is empty are skipped, as X-SAM's eval skips them.

One ``reasoning`` example per question; ``meta``: ``is_sentence``, ``question_index``, ``ignore_mask``,
``file_name``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from xsam_edge.data.refcoco import load_image_for, read_json
from xsam_edge.data.sample import Example, Target
from xsam_edge.spec.prompts import answer_for
from xsam_edge.spec.types import SegmentationRequest, Task

logger = logging.getLogger(__name__)

__all__ = ["IMAGE_SUFFIXES", "iter_reasonseg", "load_reasonseg", "reasonseg_masks"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_TARGET, _IGNORE = 1, 255


def _draw(
    points: list[tuple[int, int]], h: int, w: int, value: int, out: Image.Image | None = None
) -> Image.Image:
    """Paint one shape (filled polygon with its outline; a line or a dot below 3 points) into an L image."""
    img = out if out is not None else Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    if len(points) >= 3:
        draw.polygon(points, fill=value, outline=value)
    elif len(points) == 2:
        draw.line(points, fill=value, width=1)
    elif points:
        draw.point(points, fill=value)
    return img


def _shape_points(shape: Any, where: str) -> list[tuple[int, int]]:
    points = shape.get("points") if isinstance(shape, dict) else None
    if not isinstance(points, list):
        raise ValueError(f"{where}: every shape needs a 'points' list of [x, y]")
    out = []
    for p in points:
        if not isinstance(p, list | tuple) or len(p) != 2 or not all(isinstance(v, int | float) for v in p):
            raise ValueError(f"{where}: shape point {p!r} is not an [x, y] pair of numbers")
        out.append((int(p[0]), int(p[1])))  # int() truncates toward zero, as np.array(..., np.int32) does
    return out


def reasonseg_masks(shapes: Any, h: int, w: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The target and ignore masks of a LISA json's ``shapes`` (rules in the module docstring).

    Args:
        shapes (Any): the ``shapes`` list.
        h (int): image height.
        w (int): image width.
        where (str): the json, for messages.

    Returns:
        tuple[np.ndarray, np.ndarray]: target (H, W) bool and ignore (H, W) bool.

    Raises:
        ValueError: ``shapes`` is not a list of shapes with a string label and [x, y] points.
    """
    if not isinstance(shapes, list):
        raise ValueError(f"{where}: 'shapes' must be a list")
    painted = []
    for k, shape in enumerate(shapes):
        label = shape.get("label") if isinstance(shape, dict) else None
        if not isinstance(label, str):
            raise ValueError(f"{where}: shape {k} needs a string 'label'")
        if label.lower() == "flag":  # deprecated, meaningless annotations
            continue
        points = _shape_points(shape, f"{where}: shape {k}")
        area = int(np.count_nonzero(np.asarray(_draw(points, h, w, 1))))
        painted.append((area, _IGNORE if "ignore" in label.lower() else _TARGET, points))
    painted.sort(key=lambda s: s[0], reverse=True)  # stable: equal areas keep file order
    canvas = Image.new("L", (w, h), 0)
    for _, value, points in painted:
        _draw(points, h, w, value, canvas)
    labels = np.asarray(canvas)
    return labels == _TARGET, labels == _IGNORE


def _pairs(folder: Path) -> list[tuple[str, Path, Path]]:
    """(stem, image, json) for every stem in the folder; a stem missing either file is an error."""
    images = {p.stem: p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}
    jsons = {p.stem: p for p in folder.iterdir() if p.suffix.lower() == ".json" and p.is_file()}
    if not images and not jsons:
        raise ValueError(f"{folder} holds no *.jpg + *.json pairs (LISA ReasonSeg layout)")
    for stem in sorted(set(images) | set(jsons)):
        if stem not in jsons:
            raise FileNotFoundError(f"{folder}: image {images[stem].name} has no annotation {stem}.json")
        if stem not in images:
            raise FileNotFoundError(f"{folder}: annotation {jsons[stem].name} has no image {stem}.jpg")
    return [(stem, images[stem], jsons[stem]) for stem in sorted(images)]


def _questions(data: dict, where: str) -> list[str]:
    text = data.get("text")
    questions = [text] if isinstance(text, str) else text
    if not isinstance(questions, list) or not questions:
        raise ValueError(f"{where}: 'text' must be a non-empty list of questions")
    if not all(isinstance(q, str) and q.strip() for q in questions):
        raise ValueError(f"{where}: every question in 'text' must be a non-empty string")
    return [q.strip() for q in questions]


def iter_reasonseg(
    folder: str | os.PathLike[str], limit: int | None = None, source: str | None = None
) -> Iterator[Example]:
    """Yield reasoning examples, image by image in file-name order (format in the module docstring).

    Args:
        folder (str | os.PathLike[str]): a ReasonSeg split folder (``ReasonSeg/val``).
        limit (int | None): at most this many images (those with a non-empty target).
        source (str | None): the ``Example.source``; default ``reasonseg:<folder name>``.

    Yields:
        Example: one ``reasoning`` example per question.

    Raises:
        FileNotFoundError: the folder, or the json or image of a pair, is missing.
        ValueError: malformed json (no questions, bad shapes).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"ReasonSeg folder not found: {folder}")
    source = source or f"reasonseg:{folder.name}"
    answer = answer_for(Task.REASONING)
    count = 0
    for stem, image_path, json_path in _pairs(folder):
        if limit is not None and count >= limit:
            return
        data = read_json(json_path, "ReasonSeg json")
        if not isinstance(data, dict):
            raise ValueError(f"{json_path}: expected an object with 'text', 'is_sentence' and 'shapes'")
        questions = _questions(data, str(json_path))
        image = load_image_for(image_path, None, None, str(json_path))
        h, w = image.shape[:2]
        target, ignore = reasonseg_masks(data.get("shapes"), h, w, str(json_path))
        if not target.any():
            logger.warning("%s: no target pixels; skipped, as X-SAM's eval skips it", json_path)
            continue
        count += 1
        masks = target[None]  # (1, H, W), shared by the image's questions
        is_sentence = bool(data.get("is_sentence", False))
        for q, question in enumerate(questions):
            yield Example(
                request=SegmentationRequest(image=image, task=Task.REASONING, text=question),
                target=Target(masks=masks, label_ids=np.zeros(1, np.int64), answer=answer),
                image_id=stem,
                source=source,
                meta={
                    "is_sentence": is_sentence,
                    "question_index": q,
                    "ignore_mask": ignore,
                    "file_name": image_path.name,
                },
            )


def load_reasonseg(
    folder: str | os.PathLike[str], limit: int | None = None, source: str | None = None
) -> list[Example]:
    """All examples of :func:`iter_reasonseg` as a list (same arguments, same errors)."""
    return list(iter_reasonseg(folder, limit=limit, source=source))
