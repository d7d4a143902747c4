"""Visual-prompt sampler: one LLM-space token per prompt mask, pooled from the seg_projector grid.

Two variants:
- ``random`` (upstream ``NaiveSamplerModel``, archive default): take up to ``num_points`` pixels of the mask
  (all of them when the mask is smaller, else a random draw without replacement), bilinearly sample the token
  grid there (pixel x maps to grid x·(G-1)/S: align_corners=True), max-pool. Non-deterministic and
  data-dependent (``nonzero``), so it cannot be exported.
- ``grid`` (ours, deterministic, exportable): max-pool the token grid over every cell the mask touches.
  The two agree closely for prompts covering a token cell or more (cosine ≈ 0.98 on random weights,
  ``tests/test_model.py``) and differ for prompts smaller than a cell, where the random variant's bilinear
  reads lean up-left; the task-metric difference on the trained teacher is in the README.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# finite "minus infinity" that survives fp16 (65504 max)
_NEG = -1.0e4


def sample_regions_random(
    grid: torch.Tensor, masks: torch.Tensor, num_points: int = 256, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Upstream sampler: max over ``num_points`` random points inside each mask.

    Args:
        grid (torch.Tensor): (C, G, G) seg_projector tokens laid out as a grid.
        masks (torch.Tensor): (K, S, S) letterboxed prompt masks in {0, 1}.
        num_points (int): points per mask (256 upstream).
        generator (torch.Generator | None): randomness source; ``None`` uses the global one.

    Returns:
        torch.Tensor: (K, C) one token per mask.

    Raises:
        ValueError: a mask is empty.
    """
    _, size, _ = masks.shape
    tokens = []
    for k in range(masks.shape[0]):
        ys, xs = torch.nonzero(masks[k] > 0.5, as_tuple=True)
        if len(xs) == 0:
            raise ValueError(f"prompt mask {k} is empty after letterboxing; draw a larger prompt")
        if len(xs) <= num_points:  # max-pooling makes repeats pointless: keep every pixel
            pick = torch.arange(len(xs), device=xs.device)
        else:
            # drawn where the generator lives (CPU): the same picks on any device for the same seed
            pick = torch.randperm(len(xs), generator=generator)[:num_points].to(xs.device)
        points = torch.stack([xs[pick], ys[pick]], dim=-1).to(grid.dtype)  # (P, 2) as (x, y), P ≤ num_points
        points = points / size * 2 - 1  # normalise to [-1, 1]
        sampled = F.grid_sample(
            grid[None], points[None, None], mode="bilinear", align_corners=True
        )  # (1, C, 1, P)
        tokens.append(sampled[0, :, 0].amax(dim=-1))
    return torch.stack(tokens)


def sample_regions_grid(grid: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Deterministic sampler: max over the grid cells each mask touches (fixed shapes, exportable).

    Args:
        grid (torch.Tensor): (B, C, G, G) token grid.
        masks (torch.Tensor): (B, K, S, S) letterboxed prompt masks in {0, 1}; an all-zero slot gives zeros.

    Returns:
        torch.Tensor: (B, K, C) one token per slot.
    """
    b, c, g, _ = grid.shape
    touched = F.adaptive_max_pool2d(masks, g)  # (B, K, G, G): 1 where the mask covers any pixel of a cell
    touched = touched.flatten(2).unsqueeze(-1)  # (B, K, G·G, 1)
    feats = grid.flatten(2).transpose(1, 2).unsqueeze(1)  # (B, 1, G·G, C)
    # where() instead of indexing keeps shapes static; empty slots pool to _NEG and are zeroed below
    pooled = torch.where(touched > 0.5, feats, torch.full_like(feats, _NEG)).amax(dim=2)  # (B, K, C)
    present = touched.amax(dim=2)  # (B, K, 1)
    return pooled * present
