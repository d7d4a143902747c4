"""RefCOCO / RefCOCO+ / RefCOCOg loader (the ``refer`` layout) and the COCO-json helpers the loaders share.

On disk (``refer`` API layout, e.g. ``refcoco/refs(unc).p`` + ``refcoco/instances.json``):

* ``refs(unc).p`` / ``refs(umd).p`` / ``refs(google).p``: a pickle of a list of dicts with keys ``ref_id``,
  ``ann_id``, ``image_id``, ``split`` (``train``, ``val``, ``testA``, ``testB``, ``test``), ``sentences``
  (a list of ``{"sent": str, "raw": str, "sent_id": int, "tokens": [...]}``), ``category_id`` and
  ``file_name``. A JSON export of the same list (``refs.json``) is read as JSON.
* ``instances.json``: COCO instances (``images`` with ``id``, ``file_name``, ``height``, ``width``;
  ``annotations`` with ``id``, ``image_id``, ``segmentation`` as polygons or RLE; ``categories``).

The pickle is read by :class:`RestrictedUnpickler`, which refuses every class or function lookup, so a
malicious file cannot run code: the real refs pickles hold only dicts, lists, strings and numbers, which the
pickle protocol builds without looking anything up.

One ``referring`` :class:`~xsam_edge.data.sample.Example` per (ref, distinct sentence) of the requested split,
as X-SAM's eval builds them (identical sentences of one ref are counted once); the target is the referred
annotation's mask.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from xsam_edge.data.sample import Example, Target
from xsam_edge.spec.image_io import load_image
from xsam_edge.spec.prompts import answer_for
from xsam_edge.spec.types import SegmentationRequest, Task

logger = logging.getLogger(__name__)

__all__ = [
    "RestrictedUnpickler",
    "decode_segmentation",
    "iter_refcoco",
    "load_image_for",
    "load_refcoco",
    "load_refs",
    "read_json",
]


def read_json(path: str | os.PathLike[str], what: str = "annotation file") -> Any:
    """Parse a JSON file, naming the file in every error.

    Args:
        path (str | os.PathLike[str]): the file.
        what (str): what the file is, for messages (``"panoptic json"``).

    Returns:
        Any: the parsed value.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is a directory or not valid UTF-8 JSON.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if path.is_dir():
        raise ValueError(f"{what} {path} is a directory, expected a .json file")
    try:
        with path.open("rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} {path} is not UTF-8 text ({err})") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} {path} is malformed JSON: {err.msg} at line {err.lineno}") from err


def load_image_for(path: Path, height: int | None, width: int | None, where: str) -> np.ndarray:
    """Load an image the annotations refer to and check its size against them.

    Args:
        path (Path): the image file.
        height (int | None): the height the annotations give (``None``: not checked).
        width (int | None): the width the annotations give (``None``: not checked).
        where (str): the annotation that names the image, for messages.

    Returns:
        np.ndarray: (H, W, 3) uint8 RGB.

    Raises:
        FileNotFoundError: the image file is missing.
        ValueError: unreadable image, or its size differs from the annotations'.
    """
    if not path.exists():
        raise FileNotFoundError(f"{where}: image file {path} does not exist")
    image = load_image(path)
    h, w = image.shape[:2]
    if (height is not None and int(height) != h) or (width is not None and int(width) != w):
        raise ValueError(
            f"{where}: image {path} is {w}x{h} but the annotations say {width}x{height} "
            "(a wrong image folder, or an EXIF rotation the annotations do not follow)"
        )
    return image


def _rle_for(segm: dict, height: int, width: int, where: str) -> dict:
    """A compressed RLE dict for pycocotools from a compressed or uncompressed RLE (checked size)."""
    size = segm.get("size")
    if not isinstance(size, list | tuple) or len(size) != 2 or [int(s) for s in size] != [height, width]:
        raise ValueError(f"{where}: RLE size {size!r} does not match the image size [{height}, {width}]")
    counts = segm.get("counts")
    if isinstance(counts, list):
        if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != height * width:
            raise ValueError(
                f"{where}: uncompressed RLE counts must be non-negative ints summing to {height * width}"
            )
        return mask_utils.frPyObjects(segm, height, width)
    if isinstance(counts, str):
        return {"size": [height, width], "counts": counts.encode("ascii")}
    if isinstance(counts, bytes):
        return {"size": [height, width], "counts": counts}
    raise ValueError(f"{where}: RLE counts must be a string or a list of ints, got {type(counts).__name__}")


def decode_segmentation(segm: Any, height: int, width: int, where: str) -> np.ndarray:
    """Decode a COCO ``segmentation`` field to a binary mask.

    Accepted forms: a list of polygons (``[[x0, y0, x1, y1, ...], ...]``, rasterised by pycocotools
    ``frPyObjects`` → ``merge`` → ``decode``; polygons with fewer than 3 points are dropped, as detectron2
    does), a compressed RLE (``{"size": [H, W], "counts": str}``), an uncompressed RLE (``counts`` a list of
    ints), or a list of RLE dicts (their union).

    Args:
        segm (Any): the field's value.
        height (int): image height.
        width (int): image width.
        where (str): the annotation, for messages.

    Returns:
        np.ndarray: (H, W) bool.

    Raises:
        ValueError: a malformed polygon or RLE, or an RLE of another size.
    """
    try:
        if isinstance(segm, dict):
            return mask_utils.decode(_rle_for(segm, height, width, where)).astype(bool)
        if isinstance(segm, list) and segm and all(isinstance(s, dict) for s in segm):
            out = np.zeros((height, width), bool)
            for s in segm:
                out |= mask_utils.decode(_rle_for(s, height, width, where)).astype(bool)
            return out
        if isinstance(segm, list) and all(isinstance(p, list) for p in segm):
            polygons = []
            for p in segm:
                if len(p) % 2 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in p):
                    raise ValueError(
                        f"{where}: a polygon must be a flat list of x, y numbers, got {p[:6]!r}…"
                    )
                if len(p) >= 6:  # fewer than 3 points has no area (and 4 numbers would read as a box)
                    polygons.append([float(v) for v in p])
            if not polygons:
                return np.zeros((height, width), bool)
            rles = mask_utils.frPyObjects(polygons, height, width)
            return mask_utils.decode(mask_utils.merge(rles)).astype(bool)
    except ValueError:
        raise
    except (TypeError, KeyError, OverflowError) as err:  # pycocotools' own complaints about bad input
        raise ValueError(f"{where}: cannot decode segmentation ({err})") from err
    raise ValueError(
        f"{where}: segmentation must be polygons (a list of coordinate lists) or an RLE dict "
        f"with 'size' and 'counts', got {type(segm).__name__}"
    )


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only the pickle protocol's own types and refuses any class or function.

    Dicts, lists, tuples, strings, bytes, ints, floats, bools and None need no lookup. Anything else (a
    class instance, or a callable such as ``os.system`` smuggled in through ``__reduce__``) would have to go
    through :meth:`find_class`, which raises, so nothing is imported or called. Python 2 ``str`` objects
    are decoded as UTF-8 (invalid bytes replaced).
    """

    def __init__(self, file: io.BufferedIOBase) -> None:
        super().__init__(file, encoding="utf-8", errors="replace")

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(
            f"asks for {module}.{name}; refs pickles hold only lists, dicts, strings and numbers, so it was "
            "refused without running anything"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("uses persistent ids, which refs pickles never contain; refused")


def load_refs(path: str | os.PathLike[str]) -> list[dict]:
    """Read a refs file: a pickle (``refs(unc).p``), safely, or a JSON export of the same list (``*.json``).

    Args:
        path (str | os.PathLike[str]): the refs file.

    Returns:
        list[dict]: the refs.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the pickle asks for a class or function (refused, never run), is corrupt, or the
            content is not a list of dicts.
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        refs = read_json(path, "refs json")
    else:
        if not path.exists():
            raise FileNotFoundError(f"refs file not found: {path}")
        if path.is_dir():
            raise ValueError(f"refs file {path} is a directory, expected refs(unc).p or refs.json")
        try:
            with path.open("rb") as f:
                refs = RestrictedUnpickler(f).load()
        except pickle.UnpicklingError as err:
            raise ValueError(f"refs pickle {path}: {err}") from err
        except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as err:
            raise ValueError(f"refs pickle {path} is corrupt ({type(err).__name__}: {err})") from err
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        raise ValueError(f"{path}: expected a list of ref dicts, got {type(refs).__name__}")
    return refs


def _ref_sentences(ref: dict, where: str) -> list[str]:
    """The distinct, non-empty sentences of one ref, in file order (``sent``, else ``raw``)."""
    sentences = ref.get("sentences")
    if not isinstance(sentences, list) or not sentences:
        raise ValueError(f"{where}: 'sentences' must be a non-empty list")
    out: list[str] = []
    for s in sentences:
        text = s.get("sent", s.get("raw")) if isinstance(s, dict) else None
        if not isinstance(text, str):
            raise ValueError(f"{where}: every sentence needs a 'sent' string, got {s!r}")
        text = text.strip()
        if not text:
            raise ValueError(f"{where}: has an empty sentence")
        if text not in out:
            out.append(text)
    return out


def _default_source(refs_path: Path, split: str) -> str:
    name = refs_path.parent.name.lower()
    return f"{name if name.startswith('ref') else 'refcoco'}:{split}"


def iter_refcoco(
    refs_path: str | os.PathLike[str],
    instances_path: str | os.PathLike[str],
    image_dir: str | os.PathLike[str],
    split: str,
    limit: int | None = None,
    source: str | None = None,
) -> Iterator[Example]:
    """Yield the referring examples of one split, image by image (see the module docstring for the format).

    Args:
        refs_path (str | os.PathLike[str]): ``refs(unc).p`` / ``refs(umd).p`` or a ``refs.json`` export.
        instances_path (str | os.PathLike[str]): the ``instances.json`` next to it.
        image_dir (str | os.PathLike[str]): the COCO images (``train2014``).
        split (str): ``val``, ``testA``, ``testB``, ``test`` or ``train`` (as written in the refs).
        limit (int | None): at most this many images (all examples of an image are kept together).
        source (str | None): the ``Example.source``; default ``<folder of the refs file>:<split>``.

    Yields:
        Example: one ``referring`` example per (ref, distinct sentence), in refs order grouped by image.

    Raises:
        FileNotFoundError: a file or an image is missing.
        ValueError: malformed refs or instances, a split with no refs, a ref whose annotation or image is
            not in ``instances.json``.
    """
    refs_path, instances_path, image_dir = Path(refs_path), Path(instances_path), Path(image_dir)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder not found: {image_dir}")
    refs = load_refs(refs_path)
    instances = read_json(instances_path, "instances json")
    if not isinstance(instances, dict) or "images" not in instances or "annotations" not in instances:
        raise ValueError(f"{instances_path}: expected a COCO instances dict with 'images' and 'annotations'")
    try:
        images = {int(img["id"]): img for img in instances["images"]}
        anns = {int(a["id"]): a for a in instances["annotations"]}
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"{instances_path}: every image and annotation needs an integer 'id' ({err})"
        ) from err
    cats = {int(c["id"]): c.get("name", "") for c in instances.get("categories", []) if "id" in c}

    split_refs = [r for r in refs if r.get("split") == split]
    if not split_refs:
        known = sorted({str(r.get("split")) for r in refs})
        raise ValueError(f"{refs_path}: no refs in split {split!r}; the file has splits {known}")
    by_image: dict[int, list[dict]] = {}
    for ref in split_refs:
        try:
            by_image.setdefault(int(ref["image_id"]), []).append(ref)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{refs_path}: ref {ref.get('ref_id')!r} has no integer 'image_id'") from err
    source = source or _default_source(refs_path, split)
    answer = answer_for(Task.REFERRING)

    for n, (image_id, image_refs) in enumerate(by_image.items()):
        if limit is not None and n >= limit:
            return
        where = f"{refs_path}: image {image_id}"
        info = images.get(image_id)
        if info is None or "file_name" not in info:
            raise ValueError(f"{where} has no entry with a 'file_name' in {instances_path}'s images")
        image = load_image_for(image_dir / info["file_name"], info.get("height"), info.get("width"), where)
        h, w = image.shape[:2]
        for ref in image_refs:
            ref_where = f"{refs_path}: ref {ref.get('ref_id')!r}"
            ann_id = ref.get("ann_id")
            ann = anns.get(ann_id) if isinstance(ann_id, int) else None
            if ann is None:
                raise ValueError(f"{ref_where}: annotation {ref.get('ann_id')!r} is not in {instances_path}")
            if int(ann.get("image_id", image_id)) != image_id:
                raise ValueError(f"{ref_where}: annotation {ann['id']} belongs to image {ann['image_id']}")
            mask = decode_segmentation(
                ann.get("segmentation"), h, w, f"{instances_path}: annotation {ann['id']}"
            )
            masks = mask[None]  # (1, H, W), shared by the ref's sentences
            category_id = int(ref.get("category_id", ann.get("category_id", -1)))
            for sentence in _ref_sentences(ref, ref_where):
                yield Example(
                    request=SegmentationRequest(image=image, task=Task.REFERRING, text=sentence),
                    target=Target(masks=masks, label_ids=np.zeros(1, np.int64), answer=answer),
                    image_id=str(image_id),
                    source=source,
                    meta={
                        "ref_id": ref.get("ref_id"),
                        "ann_id": int(ann["id"]),
                        "category_id": category_id,
                        "category": cats.get(category_id, ""),
                        "file_name": info["file_name"],
                    },
                )


def load_refcoco(
    refs_path: str | os.PathLike[str],
    instances_path: str | os.PathLike[str],
    image_dir: str | os.PathLike[str],
    split: str,
    limit: int | None = None,
    source: str | None = None,
) -> list[Example]:
    """All examples of :func:`iter_refcoco` as a list (same arguments, same errors)."""
    return list(iter_refcoco(refs_path, instances_path, image_dir, split, limit=limit, source=source))
