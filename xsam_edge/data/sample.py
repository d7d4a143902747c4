"""The value every dataset yields: a request, and the ground truth that answers it. No torch, no model."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xsam_edge.spec.types import SegmentationRequest, Task


@dataclass(eq=False)
class Target:
    """Ground truth for one request.

    Args:
        masks (np.ndarray): (N, H, W) bool ground-truth masks at the image size.
        label_ids (np.ndarray): (N,) int64 index of each mask's label in the request: its category
            (generic tasks), its phrase (referring, reasoning: 0; GCG: the span index) or its prompt
            (interactive, visual-grounded).
        is_thing (np.ndarray | None): (N,) bool, panoptic only: countable "thing" or amorphous "stuff".
        answer (str | None): the answer the LLM is trained to give in tensor or predict mode, special
            tokens included (``Sure, it is <SEG>.``, a GCG caption with ``<p>…</p>`` spans, a chat reply).
    """

    masks: np.ndarray
    label_ids: np.ndarray
    is_thing: np.ndarray | None = None
    answer: str | None = None

    def __post_init__(self) -> None:
        if self.masks.ndim != 3 or self.masks.dtype != bool:
            raise ValueError(
                f"target masks must be (N, H, W) bool, got {self.masks.shape} {self.masks.dtype}"
            )
        if self.label_ids.shape != (self.masks.shape[0],):
            raise ValueError(f"{self.masks.shape[0]} masks but label_ids {self.label_ids.shape}")


@dataclass(eq=False)
class Example:
    """One question about one image with its answer.

    Args:
        request (SegmentationRequest): what a user would send.
        target (Target): what the right answer is.
        image_id (str): stable id of the image within its dataset (examples of one image share it).
        source (str): dataset name (``shapes:val``, ``refcoco:val`` …), for per-dataset reports.
        meta (dict): anything else a loader knows (e.g. the open-vocabulary split of a category).
    """

    request: SegmentationRequest
    target: Target
    image_id: str
    source: str
    meta: dict = field(default_factory=dict)

    @property
    def task(self) -> Task:
        return self.request.task
