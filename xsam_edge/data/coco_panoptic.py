"""COCO panoptic loader: ``panoptic_val2017.json`` + its folder of segment-id PNGs + the images.

On disk (the COCO 2017 panoptic release):

* json: ``images`` (``id``, ``file_name``, ``height``, ``width``), ``annotations`` (one per image:
  ``image_id``, ``file_name`` of the PNG, ``segments_info`` with ``id``, ``category_id``, ``iscrowd``),
  ``categories`` (``id``, ``name``, ``isthing``).
* PNGs: RGB, segment id = R + 256·G + 256²·B; 0 is void (unlabelled).
* images: ``<image_dir>/<file_name>``.

Per image, three examples share the image and the category list (every category of the json, sorted by id,
as the genseg prompt lists all 133 COCO classes; ``label_ids`` index it):

* ``panoptic``: one mask per non-crowd segment, ``is_thing`` from the category's ``isthing``.
* ``instance``: the non-crowd segments of thing categories.
* ``semantic``: one mask per category present (crowd segments included, as detectron2's panoptic → semantic
  conversion does), in category order.

``meta`` of all three: ``void_mask`` (H, W) bool (PNG id 0: ignored by PQ and mIoU), ``crowd_masks``
(K, H, W) bool and ``crowd_label_ids`` (K,) of the crowd segments (ignored by PQ and COCO AP), the json
``segment_ids`` of the target masks (panoptic, instance) and the image ``file_name``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from xsam_edge.data.refcoco import load_image_for, read_json
from xsam_edge.data.sample import Example, Target
from xsam_edge.spec.prompts import answer_for
from xsam_edge.spec.types import SegmentationRequest, Task

__all__ = ["iter_coco_panoptic", "load_coco_panoptic", "read_panoptic_png"]


def read_panoptic_png(path: Path, where: str) -> np.ndarray:
    """Read a panoptic PNG as segment ids.

    Args:
        path (Path): the PNG.
        where (str): the annotation that names it, for messages.

    Returns:
        np.ndarray: (H, W) int64, id = R + 256·G + 256²·B.

    Raises:
        FileNotFoundError: the PNG is missing.
        ValueError: not a readable image.
    """
    if not path.exists():
        raise FileNotFoundError(f"{where}: panoptic PNG {path} does not exist")
    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"), dtype=np.int64)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{where}: panoptic PNG {path} is not a readable image ({err})") from err
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def _categories(data: dict, json_path: Path) -> tuple[list[str], dict[int, int], np.ndarray]:
    """Names sorted by category id, a map id → index, and the per-index ``isthing`` flags."""
    cats = data.get("categories")
    if not isinstance(cats, list) or not cats:
        raise ValueError(f"{json_path}: 'categories' must be a non-empty list")
    try:
        cats = sorted(cats, key=lambda c: int(c["id"]))
        names = [str(c["name"]).strip() for c in cats]
        is_thing = np.array([bool(c["isthing"]) for c in cats], bool)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{json_path}: every category needs 'id', 'name' and 'isthing' ({err!r})") from err
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes or not all(names):
        raise ValueError(f"{json_path}: category names must be unique and non-empty; repeated: {dupes}")
    return names, {int(c["id"]): i for i, c in enumerate(cats)}, is_thing


def _example(
    task: Task, target: Target, meta: dict, *, image: np.ndarray, names: list[str], image_id: str, source: str
) -> Example:
    """One example of an image with the full category list."""
    return Example(
        request=SegmentationRequest(image=image, task=task, categories=list(names)),
        target=target,
        image_id=image_id,
        source=source,
        meta=meta,
    )


def iter_coco_panoptic(
    json_path: str | os.PathLike[str],
    png_dir: str | os.PathLike[str],
    image_dir: str | os.PathLike[str],
    limit: int | None = None,
    source: str | None = None,
) -> Iterator[Example]:
    """Yield panoptic, instance and semantic examples, image by image (format in the module docstring).

    Args:
        json_path (str | os.PathLike[str]): ``panoptic_val2017.json``.
        png_dir (str | os.PathLike[str]): the folder of segment-id PNGs (``panoptic_val2017/``).
        image_dir (str | os.PathLike[str]): the images (``val2017/``).
        limit (int | None): at most this many images (three examples each).
        source (str | None): the ``Example.source``; default ``coco_panoptic:<json stem minus "panoptic_">``.

    Yields:
        Example: for each image in json order, a ``panoptic``, an ``instance`` and a ``semantic`` example.

    Raises:
        FileNotFoundError: the json, a folder, a PNG or an image is missing.
        ValueError: malformed json, an unknown category id, segment ids that disagree between the json
            and the PNG, or a PNG or image of the wrong size.
    """
    json_path, png_dir, image_dir = Path(json_path), Path(png_dir), Path(image_dir)
    for folder, what in ((png_dir, "panoptic PNG folder"), (image_dir, "image folder")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} not found: {folder}")
    data = read_json(json_path, "panoptic json")
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise ValueError(
            f"{json_path}: expected a COCO panoptic dict with 'annotations', 'images', 'categories'"
        )
    names, index_of, is_thing = _categories(data, json_path)
    try:
        images = {int(img["id"]): img for img in data.get("images", [])}
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{json_path}: every image needs an integer 'id' ({err!r})") from err
    source = source or f"coco_panoptic:{json_path.stem.removeprefix('panoptic_')}"
    answer = answer_for(Task.PANOPTIC)

    for n, ann in enumerate(data["annotations"]):
        if limit is not None and n >= limit:
            return
        try:
            image_id, png_name, segments = int(ann["image_id"]), ann["file_name"], ann["segments_info"]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"{json_path}: annotation {n} needs 'image_id', 'file_name' and 'segments_info' ({err!r})"
            ) from err
        where = f"{json_path}: image {image_id}"
        info = images.get(image_id)
        if info is None or "file_name" not in info:
            raise ValueError(f"{where} has no entry with a 'file_name' in 'images'")
        image = load_image_for(image_dir / info["file_name"], info.get("height"), info.get("width"), where)
        h, w = image.shape[:2]
        ids = read_panoptic_png(png_dir / png_name, where)
        if ids.shape != (h, w):
            raise ValueError(f"{where}: PNG {png_dir / png_name} is {ids.shape[::-1]}, the image is {(w, h)}")

        masks, labels, seg_ids, crowd, crowd_labels = [], [], [], [], []
        listed = set()
        for seg in segments:
            try:
                seg_id, cat_id = int(seg["id"]), int(seg["category_id"])
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{where}: every segment needs 'id' and 'category_id' ({err!r})") from err
            if cat_id not in index_of:
                raise ValueError(f"{where}: segment {seg_id} has unknown category id {cat_id}")
            mask = ids == seg_id
            if not mask.any():
                raise ValueError(f"{where}: segment {seg_id} is in the json but not in {png_dir / png_name}")
            listed.add(seg_id)
            if seg.get("iscrowd", 0):
                crowd.append(mask)
                crowd_labels.append(index_of[cat_id])
            else:
                masks.append(mask)
                labels.append(index_of[cat_id])
                seg_ids.append(seg_id)
        stray = sorted(set(np.unique(ids).tolist()) - listed - {0})
        if stray:
            raise ValueError(
                f"{where}: {png_dir / png_name} has segment ids {stray[:5]} the json does not list"
            )

        void = ids == 0
        empty = np.zeros((0, h, w), bool)
        stack = np.stack(masks) if masks else empty
        label_ids = np.array(labels, np.int64)
        meta = {
            "file_name": info["file_name"],
            "void_mask": void,
            "crowd_masks": np.stack(crowd) if crowd else empty,
            "crowd_label_ids": np.array(crowd_labels, np.int64),
        }
        things = is_thing[label_ids] if len(label_ids) else np.zeros(0, bool)

        common = {"image": image, "names": names, "image_id": str(image_id), "source": source}
        yield _example(
            Task.PANOPTIC,
            Target(masks=stack, label_ids=label_ids, is_thing=things.copy(), answer=answer),
            {**meta, "segment_ids": list(seg_ids)},
            **common,
        )
        yield _example(
            Task.INSTANCE,
            Target(masks=stack[things], label_ids=label_ids[things], answer=answer),
            {**meta, "segment_ids": [s for s, t in zip(seg_ids, things, strict=True) if t]},
            **common,
        )
        semantic_ids = sorted(set(labels) | set(crowd_labels))
        all_masks, all_labels = masks + crowd, labels + crowd_labels
        semantic = [
            np.logical_or.reduce([m for m, lab in zip(all_masks, all_labels, strict=True) if lab == c])
            for c in semantic_ids
        ]
        yield _example(
            Task.SEMANTIC,
            Target(
                masks=np.stack(semantic) if semantic else empty,
                label_ids=np.array(semantic_ids, np.int64),
                answer=answer,
            ),
            dict(meta),
            **common,
        )


def load_coco_panoptic(
    json_path: str | os.PathLike[str],
    png_dir: str | os.PathLike[str],
    image_dir: str | os.PathLike[str],
    limit: int | None = None,
    source: str | None = None,
) -> list[Example]:
    """All examples of :func:`iter_coco_panoptic` as a list (same arguments, same errors)."""
    return list(iter_coco_panoptic(json_path, png_dir, image_dir, limit=limit, source=source))
