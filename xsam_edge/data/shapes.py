"""The embedded "shapes" task suite: a procedural multi-task world to train and evaluate a small X-SAM.

Each image is a textured background of 1–2 stuff regions (:data:`STUFF_CLASSES`) with 2–6 coloured shapes
(:data:`THING_CLASSES`), and yields one :class:`~xsam_edge.data.sample.Example` per task: referring,
reasoning, panoptic, instance, semantic, open-vocabulary, interactive, visual-grounded, GCG and chat.
Everything is numpy + PIL, deterministic, and fast (hundreds of images a second at 128×128 on one core).

Image ``i`` of a split is drawn from ``np.random.default_rng([seed, split_index, i])``, so it is the same
however the split is read (eagerly with :func:`load_shapes`, lazily with :func:`iter_shapes`, from any
``start``), and splits never share images. Train scenes never contain the held-out shapes of
:data:`OPEN_VOCAB_HELD_OUT`; val and test scenes do, and only they have open-vocabulary examples.

Usage::

    from xsam_edge.data.shapes import load_shapes, iter_shapes
    val = load_shapes("val")                      # 64 images × 10 tasks
    for example in iter_shapes("train", start=1000):
        ...
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from xsam_edge.data.sample import Example
from xsam_edge.data.shapes_expressions import RELATIONS, make_reasoning, make_referring, relation_offset
from xsam_edge.data.shapes_prompts import PROMPT_KINDS, gaussian_blur, make_prompt
from xsam_edge.data.shapes_scene import (
    CATEGORIES,
    COLOUR_NAMES,
    COLOURS,
    CORNERS,
    OPEN_VOCAB_HELD_OUT,
    SEEN_THING_CLASSES,
    SIZES,
    STUFF_CLASSES,
    THING_CLASSES,
    Scene,
    ShapeObject,
    StuffRegion,
    SuiteConfig,
    make_scene,
)
from xsam_edge.data.shapes_tasks import scene_examples, suite_vocabulary

__all__ = [
    "CATEGORIES",
    "COLOURS",
    "COLOUR_NAMES",
    "CORNERS",
    "DEFAULT_CONFIG",
    "OPEN_VOCAB_HELD_OUT",
    "PROMPT_KINDS",
    "RELATIONS",
    "SEEN_THING_CLASSES",
    "SIZES",
    "SPLITS",
    "STUFF_CLASSES",
    "THING_CLASSES",
    "Scene",
    "ShapeObject",
    "StuffRegion",
    "SuiteConfig",
    "gaussian_blur",
    "image_examples",
    "iter_shapes",
    "load_shapes",
    "make_prompt",
    "make_reasoning",
    "make_referring",
    "make_scene",
    "relation_offset",
    "scene_examples",
    "suite_vocabulary",
]

SPLITS: dict[str, int] = {"train": 50_000, "val": 64, "val-fast": 16, "test": 256}
"""Images per split; train is generated lazily by :func:`iter_shapes`."""

DEFAULT_CONFIG = SuiteConfig()
"""128×128 images, 2–6 shapes, every task."""

_SPLIT_INDEX = {name: i for i, name in enumerate(SPLITS)}  # part of every image's seed: never reorder


def _check_split(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown shapes split {split!r}; known splits: {', '.join(SPLITS)}")
    return _SPLIT_INDEX[split]


def image_examples(
    split: str, index: int, config: SuiteConfig = DEFAULT_CONFIG, seed: int = 0
) -> list[Example]:
    """All examples of image ``index`` of ``split`` (one per task in ``config.tasks`` that is possible).

    Args:
        split (str): a key of :data:`SPLITS`.
        index (int): the image's index in the split (0-based; may exceed the split size).
        config (SuiteConfig): image size, object counts and tasks.
        seed (int): the suite seed; the image is drawn from ``default_rng([seed, split_index, index])``.

    Returns:
        list[Example]: the examples, with ``image_id`` ``"{split}/{index:06d}"`` and source
        ``"shapes:{split}"``.

    Raises:
        ValueError: unknown split, or a negative index or seed.
    """
    split_index = _check_split(split)
    if index < 0 or seed < 0:
        raise ValueError(f"index and seed must be >= 0, got index={index}, seed={seed}")
    rng = np.random.default_rng([seed, split_index, index])
    scene = make_scene(rng, config, allow_held_out=split != "train")
    return scene_examples(scene, rng, f"{split}/{index:06d}", f"shapes:{split}", config, index=index)


def iter_shapes(
    split: str, config: SuiteConfig = DEFAULT_CONFIG, seed: int = 0, start: int = 0
) -> Iterator[Example]:
    """Lazily yield the examples of images ``start`` … ``SPLITS[split] - 1`` of ``split``, image by image.

    Args:
        split (str): a key of :data:`SPLITS`.
        config (SuiteConfig): image size, object counts and tasks.
        seed (int): the suite seed.
        start (int): the first image index (to resume).

    Yields:
        Example: the examples of each image in ``config.tasks`` order.

    Raises:
        ValueError: unknown split or a negative ``start``.
    """
    _check_split(split)
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    for index in range(start, SPLITS[split]):
        yield from image_examples(split, index, config, seed)


def load_shapes(
    split: str, num_images: int | None = None, config: SuiteConfig = DEFAULT_CONFIG, seed: int = 0
) -> list[Example]:
    """The examples of the first ``num_images`` images of ``split``.

    Args:
        split (str): ``"train"``, ``"val"``, ``"val-fast"`` or ``"test"``.
        num_images (int | None): how many images; ``None`` means the whole split (for train that is
            :data:`SPLITS` ``["train"]`` images: prefer :func:`iter_shapes`).
        config (SuiteConfig): image size, object counts and tasks.
        seed (int): the suite seed.

    Returns:
        list[Example]: the examples, image by image, tasks in ``config.tasks`` order.

    Raises:
        ValueError: unknown split, or ``num_images`` outside 0 … the split size.
    """
    _check_split(split)
    size = SPLITS[split]
    n = size if num_images is None else int(num_images)
    if not 0 <= n <= size:
        raise ValueError(f"num_images must be in 0..{size} for split {split!r}, got {num_images}")
    return [example for index in range(n) for example in image_examples(split, index, config, seed)]
