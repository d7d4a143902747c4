"""COCO-Interactive loader (PSALM's ``coco_interactive_{train,val}_psalm.json``) for interactive segmentation.

Two layouts of the json are read:

* PSALM's: a list of ``{"image": <file name>, "image_info": {"id", "file_name", "height", "width"},
  "anns": [annotation, ...]}`` (``new_img_id`` and other keys are ignored).
* COCO's: ``{"images": [...], "annotations": [... with "image_id"], "categories": [...]}``.

Each annotation needs ``segmentation`` (the target: polygons, compressed or uncompressed RLE) and carries its
visual prompts in either of two forms:

* PSALM's mask fields, each an RLE (as PSALM writes them) or polygons: ``point_visual_prompt_mask`` (one pixel
  per object part), ``scribble_visual_prompt_mask`` (a one-pixel-wide stroke), ``box_visual_prompt_mask``
  (filled rectangles), ``mask_visual_prompt_mask`` (a blurred-and-thresholded copy of the object). An empty
  field is skipped for that annotation, as upstream's eval does.
* A plain form, ``"prompt": {...}`` or ``"prompts": [{...}, ...]`` (one per kind), with ``type`` and:
  ``{"type": "point", "point": [x, y]}``, ``{"type": "box", "box": [x, y, w, h]}`` (COCO xywh),
  ``{"type": "scribble", "points": [[x, y], ...]}``, ``{"type": "mask", "mask": <RLE or polygons>}``.

How PSALM's masks become :mod:`xsam_edge.spec.types` prompts (pixel (row i, column j) is the point (j, i)):

* point: one pixel → ``Point``; several (one per part of an occluded object) → a ``MaskPrompt`` holding the
  union of the disks ``rasterize_prompt`` would draw for each, so nothing is dropped.
* scribble: a ``MaskPrompt`` of the stroke grown by the scribble radius (X-SAM's ``enhance_with_circles``);
  the pixels have no order, so they cannot be replayed as a ``Scribble`` polyline.
* box: a mask that is exactly one filled rectangle → ``Box`` (x1, y1 exclusive); several → ``MaskPrompt``.
* mask: ``MaskPrompt`` as is.

Radii are those of `spec.preprocess.scaled_radius` with ``point_radius`` / ``scribble_radius``.
Crowd annotations (``iscrowd`` 1) are skipped, as PSALM's mapper does.

By default one ``interactive`` example per image per prompt kind (kinds in the order point, scribble, box,
mask): the prompts of every annotation that has that kind, in annotation order, with the annotations' masks
as targets in the same order (``label_ids`` = prompt index). ``per_annotation=True`` gives one example per
(annotation, kind) instead, as X-SAM's eval samples them. ``meta``: ``prompt_kind``, ``ann_ids``,
``category_ids``, ``file_name`` and ``skipped_empty`` (ids of annotations whose prompt of this kind is empty).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from xsam_edge.data.refcoco import decode_segmentation, load_image_for, read_json
from xsam_edge.data.sample import Example, Target
from xsam_edge.spec.preprocess import scaled_radius
from xsam_edge.spec.prompts import answer_for
from xsam_edge.spec.types import Box, MaskPrompt, Point, Prompt, Scribble, SegmentationRequest, Task

__all__ = ["PROMPT_KINDS", "PSALM_FIELDS", "iter_coco_interactive", "load_coco_interactive"]

PROMPT_KINDS: tuple[str, ...] = ("point", "scribble", "box", "mask")
PSALM_FIELDS: dict[str, str] = {kind: f"{kind}_visual_prompt_mask" for kind in PROMPT_KINDS}


def _grow(mask: np.ndarray, radius: int) -> np.ndarray:
    """Every pixel whose centre lies within ``radius`` of a set pixel's centre (a disk stamped per pixel)."""
    h, w = mask.shape
    offsets = np.arange(-radius, radius + 1)
    disk = offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius * radius  # (2r+1, 2r+1)
    padded = np.zeros((h + 2 * radius, w + 2 * radius), bool)
    size = 2 * radius + 1
    for i, j in np.argwhere(mask):
        padded[i : i + size, j : j + size] |= disk
    return padded[radius : radius + h, radius : radius + w]


def _mask_to_prompt(kind: str, mask: np.ndarray, point_radius: int, scribble_radius: int) -> Prompt | None:
    """The prompt for one of PSALM's prompt masks (None when the mask is empty)."""
    pixels = np.argwhere(mask)
    if len(pixels) == 0:
        return None
    if kind == "point":
        if len(pixels) == 1:
            return Point(x=float(pixels[0][1]), y=float(pixels[0][0]))
        return MaskPrompt(mask=_grow(mask, scaled_radius(point_radius, mask.shape)))
    if kind == "scribble":
        return MaskPrompt(mask=_grow(mask, scaled_radius(scribble_radius, mask.shape)))
    if kind == "box":
        (y0, x0), (y1, x1) = pixels.min(0), pixels.max(0) + 1
        if len(pixels) == (y1 - y0) * (x1 - x0):  # exactly one filled rectangle
            return Box(x0=float(x0), y0=float(y0), x1=float(x1), y1=float(y1))
    return MaskPrompt(mask=mask)


def _xy(value: Any, where: str) -> tuple[float, float]:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError(f"{where}: expected an [x, y] pair of numbers, got {value!r}")
    return float(value[0]), float(value[1])


def _plain_prompt(spec: Any, h: int, w: int, where: str) -> tuple[str, Prompt]:
    """Parse one ``{"type": ..., ...}`` prompt into (kind, prompt)."""
    if not isinstance(spec, dict) or spec.get("type") not in PROMPT_KINDS:
        got = spec.get("type") if isinstance(spec, dict) else spec
        raise ValueError(f"{where}: a prompt needs 'type' in {list(PROMPT_KINDS)}, got {got!r}")
    kind = spec["type"]
    field = {"point": "point", "box": "box", "scribble": "points", "mask": "mask"}[kind]
    if field not in spec:
        raise ValueError(f"{where}: a {kind} prompt needs the field {field!r}")
    value = spec[field]
    if kind == "point":
        x, y = _xy(value, f"{where}: point")
        return kind, Point(x=x, y=y)
    if kind == "box":
        if not isinstance(value, list | tuple) or len(value) != 4:
            raise ValueError(f"{where}: box must be COCO [x, y, w, h], got {value!r}")
        x, y = _xy(value[:2], f"{where}: box")
        bw, bh = _xy(value[2:], f"{where}: box")
        # COCO boxes may overhang the image by rounding; clip, then let the request check what is left
        return kind, Box(x0=max(x, 0.0), y0=max(y, 0.0), x1=min(x + bw, float(w)), y1=min(y + bh, float(h)))
    if kind == "scribble":
        if not isinstance(value, list) or not value:
            raise ValueError(f"{where}: scribble 'points' must be a non-empty list of [x, y]")
        return kind, Scribble(points=tuple(_xy(p, f"{where}: scribble") for p in value))
    mask = decode_segmentation(value, h, w, f"{where}: mask prompt")
    if not mask.any():
        raise ValueError(f"{where}: mask prompt is empty")
    return kind, MaskPrompt(mask=mask)


def _ann_prompts(
    ann: dict, h: int, w: int, where: str, point_radius: int, scribble_radius: int
) -> tuple[dict[str, Prompt], list[str]]:
    """The prompts of one annotation by kind, and the kinds whose PSALM mask is present but empty."""
    prompts: dict[str, Prompt] = {}
    empty: list[str] = []
    for kind, field in PSALM_FIELDS.items():
        if ann.get(field) is None:
            continue
        mask = decode_segmentation(ann[field], h, w, f"{where}: {field}")
        prompt = _mask_to_prompt(kind, mask, point_radius, scribble_radius)
        if prompt is None:
            empty.append(kind)
        else:
            prompts[kind] = prompt
    plain = ann.get("prompts", ann.get("prompt"))
    if plain is not None:
        for spec in plain if isinstance(plain, list) else [plain]:
            kind, prompt = _plain_prompt(spec, h, w, where)
            if kind in prompts:
                raise ValueError(f"{where}: two {kind} prompts (a {PSALM_FIELDS[kind]} and a plain one)")
            prompts[kind] = prompt
    return prompts, empty


def _records(data: Any, json_path: Path) -> Iterator[tuple[dict, list[dict]]]:
    """(image info with id/file_name/height/width, annotations) per image, for either layout."""
    if isinstance(data, list):
        for n, item in enumerate(data):
            if not isinstance(item, dict) or not isinstance(item.get("anns"), list):
                raise ValueError(f"{json_path}: item {n} needs an 'anns' list (PSALM layout)")
            info = dict(item.get("image_info") or {})
            info.setdefault("file_name", item.get("image"))
            info.setdefault("id", item.get("new_img_id", n))
            if not info["file_name"]:
                raise ValueError(f"{json_path}: item {n} has no 'image' file name")
            yield info, item["anns"]
    elif isinstance(data, dict) and isinstance(data.get("images"), list):
        by_image: dict[Any, list[dict]] = {}
        for ann in data.get("annotations", []):
            if not isinstance(ann, dict) or "image_id" not in ann:
                raise ValueError(f"{json_path}: every annotation needs an 'image_id'")
            by_image.setdefault(ann["image_id"], []).append(ann)
        for info in data["images"]:
            if not isinstance(info, dict) or "id" not in info or "file_name" not in info:
                raise ValueError(f"{json_path}: every image needs 'id' and 'file_name'")
            if info["id"] in by_image:
                yield info, by_image[info["id"]]
    else:
        raise ValueError(
            f"{json_path}: expected PSALM's list of {{'image', 'image_info', 'anns'}} items or a COCO dict "
            "with 'images' and 'annotations'"
        )


def iter_coco_interactive(
    json_path: str | os.PathLike[str],
    image_dir: str | os.PathLike[str],
    limit: int | None = None,
    source: str | None = None,
    kinds: tuple[str, ...] = PROMPT_KINDS,
    per_annotation: bool = False,
    point_radius: int = 10,
    scribble_radius: int = 5,
) -> Iterator[Example]:
    """Yield interactive examples, image by image (format and conversions in the module docstring).

    Args:
        json_path (str | os.PathLike[str]): the COCO-Interactive json.
        image_dir (str | os.PathLike[str]): the images (``val2017/``).
        limit (int | None): at most this many images.
        source (str | None): the ``Example.source``; default ``coco_interactive:<json stem>``.
        kinds (tuple[str, ...]): prompt kinds to yield, a subset of ``PROMPT_KINDS``.
        per_annotation (bool): one example per (annotation, kind) instead of per (image, kind).
        point_radius (int): point radius at a 640 px side, for several-pixel point masks.
        scribble_radius (int): scribble half-width at a 640 px side, for scribble masks.

    Yields:
        Example: ``interactive`` examples with ``meta["prompt_kind"]``.

    Raises:
        FileNotFoundError: the json, the image folder or an image is missing.
        ValueError: malformed json, segmentation or prompt, or a prompt outside its image.
    """
    json_path, image_dir = Path(json_path), Path(image_dir)
    bad = [k for k in kinds if k not in PROMPT_KINDS]
    if bad or not kinds:
        raise ValueError(f"unknown prompt kinds {bad}; choose from {list(PROMPT_KINDS)}")
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder not found: {image_dir}")
    data = read_json(json_path, "COCO-Interactive json")
    source = source or f"coco_interactive:{json_path.stem}"
    answer = answer_for(Task.INTERACTIVE)

    for n, (info, anns) in enumerate(_records(data, json_path)):
        if limit is not None and n >= limit:
            return
        where = f"{json_path}: image {info['id']}"
        image = load_image_for(
            image_dir / str(info["file_name"]), info.get("height"), info.get("width"), where
        )
        h, w = image.shape[:2]
        # per annotation: (id, category, target mask, prompts by kind, kinds with an empty PSALM mask)
        parsed = []
        for k, ann in enumerate(anns):
            if not isinstance(ann, dict):
                raise ValueError(f"{where}: annotation {k} is not an object")
            if ann.get("iscrowd", 0):
                continue
            ann_id = ann.get("id", k)
            ann_where = f"{where}: annotation {ann_id}"
            if "segmentation" not in ann:
                raise ValueError(f"{ann_where} has no 'segmentation' (the target mask)")
            target = decode_segmentation(ann["segmentation"], h, w, ann_where)
            prompts, empty = _ann_prompts(ann, h, w, ann_where, point_radius, scribble_radius)
            parsed.append((ann_id, int(ann.get("category_id", -1)), target, prompts, empty))

        for kind in (k for k in PROMPT_KINDS if k in kinds):
            chosen = [p for p in parsed if kind in p[3]]
            skipped = [p[0] for p in parsed if kind in p[4]]
            groups = [[p] for p in chosen] if per_annotation else ([chosen] if chosen else [])
            for group in groups:
                try:
                    request = SegmentationRequest(
                        image=image, task=Task.INTERACTIVE, prompts=[p[3][kind] for p in group]
                    )
                except ValueError as err:
                    ids = [p[0] for p in group]
                    raise ValueError(f"{where}: {kind} prompts of annotations {ids}: {err}") from err
                yield Example(
                    request=request,
                    target=Target(
                        masks=np.stack([p[2] for p in group]),
                        label_ids=np.arange(len(group), dtype=np.int64),
                        answer=answer,
                    ),
                    image_id=str(info["id"]),
                    source=source,
                    meta={
                        "prompt_kind": kind,
                        "ann_ids": [p[0] for p in group],
                        "category_ids": [p[1] for p in group],
                        "file_name": str(info["file_name"]),
                        "skipped_empty": skipped,
                    },
                )


def load_coco_interactive(
    json_path: str | os.PathLike[str],
    image_dir: str | os.PathLike[str],
    limit: int | None = None,
    source: str | None = None,
    kinds: tuple[str, ...] = PROMPT_KINDS,
    per_annotation: bool = False,
    point_radius: int = 10,
    scribble_radius: int = 5,
) -> list[Example]:
    """All examples of :func:`iter_coco_interactive` as a list (same arguments, same errors)."""
    return list(
        iter_coco_interactive(
            json_path,
            image_dir,
            limit=limit,
            source=source,
            kinds=kinds,
            per_annotation=per_annotation,
            point_radius=point_radius,
            scribble_radius=scribble_radius,
        )
    )
