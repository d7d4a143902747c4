"""The three MLP projectors (``DynamicProjectorModel`` upstream): SigLIP→LLM, SAM→LLM, LLM→decoder."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from xsam_edge.model.common import pixel_shuffle
from xsam_edge.spec.config import ProjectorConfig


class Projector(nn.Module):
    """Optional token pooling and pixel-unshuffle, then Linear → GELU → Linear (``model.0``, ``model.2``)."""

    def __init__(self, config: ProjectorConfig) -> None:
        super().__init__()
        self.config = config
        in_features = config.unshuffled_features
        self.model = nn.Sequential(
            nn.Linear(in_features, config.out_features),
            nn.GELU(),
            nn.Linear(config.out_features, config.out_features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project features to the next space.

        Args:
            x (torch.Tensor): (B, H, W, C) channels-last grid, or (B, N, C) tokens of a square grid.

        Returns:
            torch.Tensor: (B, N', out_features) with N' = (H·r/pool)·(W·r/pool) for a grid input.
        """
        needs_grid = self.config.pool > 1 or self.config.downsample_ratio != 1
        if x.ndim == 3 and needs_grid:
            # encoders hand tokens as (B, N, C): pooling and unshuffling act on the square grid they came from
            side = math.isqrt(x.shape[1])
            if side * side != x.shape[1]:
                raise ValueError(f"{x.shape[1]} tokens do not form a square grid to pool or unshuffle")
            x = x.reshape(x.shape[0], side, side, x.shape[-1])
        if x.ndim == 4:
            if self.config.pool > 1:
                # average-pool the token grid (student lever: fewer image tokens for the LLM)
                x = F.avg_pool2d(x.permute(0, 3, 1, 2), self.config.pool).permute(0, 2, 3, 1)
            if self.config.downsample_ratio != 1:
                x = pixel_shuffle(x, self.config.downsample_ratio)  # (B, H·r, W·r, C/r²)
            x = x.reshape(x.shape[0], -1, x.shape[-1])  # (B, N', C')
        return self.model(x)
