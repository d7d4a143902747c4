"""One string names a dataset: ``--data shapes:val`` or a real dataset on disk, as every command takes it.

Specs (fields separated by ``:``):

* ``shapes:<split>``: the procedural suite (``xsam_edge.data.shapes``).
* ``coco_panoptic:<panoptic json>:<png dir>:<image dir>``
* ``refcoco:<refs(unc).p | refs(umd).p | refs.json>:<instances.json>:<image dir>:<split>``
* ``coco_interactive:<json>:<image dir>``
* ``reasonseg:<folder>``

``limit`` caps the number of images read (all examples of an image are kept together).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from xsam_edge.data.coco_interactive import iter_coco_interactive
from xsam_edge.data.coco_panoptic import iter_coco_panoptic
from xsam_edge.data.reasonseg import iter_reasonseg
from xsam_edge.data.refcoco import iter_refcoco
from xsam_edge.data.sample import Example

__all__ = ["SCHEMES", "iter_dataset", "load_dataset", "parse_spec"]


def _iter_shapes(split: str, limit: int | None) -> Iterator[Example]:
    # imported here: the procedural suite is a separate module that real-data users never need
    from xsam_edge.data.shapes import load_shapes

    yield from load_shapes(split, num_images=limit)


@dataclass(frozen=True)
class _Scheme:
    syntax: str
    fields: tuple[str, ...]  # field names; those ending in "_path"/"_dir" must exist
    make: Callable[..., Iterator[Example]]


SCHEMES: dict[str, _Scheme] = {
    "shapes": _Scheme("shapes:<split>", ("split",), lambda split, limit: _iter_shapes(split, limit)),
    "coco_panoptic": _Scheme(
        "coco_panoptic:<panoptic json>:<png dir>:<image dir>",
        ("json_path", "png_dir", "image_dir"),
        lambda json_path, png_dir, image_dir, limit: iter_coco_panoptic(json_path, png_dir, image_dir, limit),
    ),
    "refcoco": _Scheme(
        "refcoco:<refs(unc).p | refs(umd).p | refs.json>:<instances.json>:<image dir>:<split>",
        ("refs_path", "instances_path", "image_dir", "split"),
        lambda refs_path, instances_path, image_dir, split, limit: iter_refcoco(
            refs_path, instances_path, image_dir, split, limit
        ),
    ),
    "coco_interactive": _Scheme(
        "coco_interactive:<json>:<image dir>",
        ("json_path", "image_dir"),
        lambda json_path, image_dir, limit: iter_coco_interactive(json_path, image_dir, limit),
    ),
    "reasonseg": _Scheme(
        "reasonseg:<folder>", ("folder_dir",), lambda folder_dir, limit: iter_reasonseg(folder_dir, limit)
    ),
}


def _known() -> str:
    return "; ".join(s.syntax for s in SCHEMES.values())


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split a dataset spec into its scheme and named fields, checking that every path exists.

    Args:
        spec (str): e.g. ``"shapes:val"`` or ``"reasonseg:data/ReasonSeg/val"``.

    Returns:
        tuple[str, dict[str, str]]: the scheme and its fields by name.

    Raises:
        ValueError: unknown scheme or wrong number of fields (the message lists every known syntax).
        FileNotFoundError: a path field names nothing on disk.
    """
    scheme, _, rest = spec.partition(":")
    if scheme not in SCHEMES:
        raise ValueError(f"unknown dataset {spec!r}; known: {_known()}")
    entry = SCHEMES[scheme]
    parts = rest.split(":") if rest else []
    if len(parts) != len(entry.fields) or not all(p.strip() for p in parts):
        raise ValueError(f"dataset spec {spec!r} needs {len(entry.fields)} field(s): {entry.syntax}")
    fields = dict(zip(entry.fields, parts, strict=True))
    for name, value in fields.items():
        if name.endswith(("_path", "_dir")) and not Path(value).exists():
            raise FileNotFoundError(f"dataset spec {spec!r}: {name.rsplit('_', 1)[0]} {value} does not exist")
    return scheme, fields


def iter_dataset(spec: str, limit: int | None = None) -> Iterator[Example]:
    """The examples a spec names, as an iterator that reads one image at a time (syntax: module docstring).

    The spec and its paths are checked at once; the data's own errors come as the iterator reaches them.

    Args:
        spec (str): the dataset spec.
        limit (int | None): at most this many images.

    Returns:
        Iterator[Example]: the dataset's examples.

    Raises:
        ValueError: unknown scheme, wrong fields, or malformed data.
        FileNotFoundError: a path in the spec or a file the data refers to is missing.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of images or None, got {limit}")
    scheme, fields = parse_spec(spec)
    return SCHEMES[scheme].make(**fields, limit=limit)


def load_dataset(spec: str, limit: int | None = None) -> list[Example]:
    """All examples a spec names, as a list (same arguments and errors as :func:`iter_dataset`).

    Args:
        spec (str): ``shapes:<split>``, ``coco_panoptic:<json>:<png_dir>:<image_dir>``,
            ``refcoco:<refs>:<instances.json>:<image_dir>:<split>``, ``coco_interactive:<json>:<image_dir>``
            or ``reasonseg:<folder>``.
        limit (int | None): at most this many images.

    Returns:
        list[Example]: the examples.
    """
    return list(iter_dataset(spec, limit))
