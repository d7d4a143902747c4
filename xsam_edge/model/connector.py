"""Segmentation connector: a ViTDet-style simple feature pyramid from three SAM taps."""

from __future__ import annotations

import torch
from torch import nn

from xsam_edge.model.common import LayerNorm2d, pixel_shuffle
from xsam_edge.spec.config import ConnectorConfig


class ConnectorBranch(nn.Module):
    """Conv1×1 → LN2d → Conv3×3 → LN2d → Conv1×1 → LN2d, then pixel-shuffle by ``scale_factor``."""

    def __init__(self, in_channels: int, hidden: int, scale_factor: float, bias: bool) -> None:
        super().__init__()
        self.scale_factor = scale_factor
        out = int(in_channels * scale_factor)
        self.model = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=1, bias=bias),
            LayerNorm2d(hidden),
            nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, bias=bias),
            LayerNorm2d(hidden),
            nn.Conv2d(hidden, out, kernel_size=1, bias=bias),
            LayerNorm2d(out),
        )

    def forward(self, tap: torch.Tensor) -> torch.Tensor:
        """Map a SAM tap (B, G, G, C) channels-last to (B, C/s, G·s, G·s)."""
        x = self.model(tap.permute(0, 3, 1, 2))  # (B, C·s, G, G)
        return pixel_shuffle(x, self.scale_factor, channels_first=True)  # (B, C/s, G·s, G·s)


class Connector(nn.Module):
    """One branch per tap; keys ``model.{i}.model.*`` as upstream ``ConnectorModel``."""

    def __init__(self, config: ConnectorConfig) -> None:
        super().__init__()
        self.model = nn.ModuleList(
            ConnectorBranch(config.in_channels, config.hidden_size, s, config.bias)
            for s in config.scale_factors
        )

    def forward(self, taps: list[torch.Tensor]) -> list[torch.Tensor]:
        """Build the pyramid.

        Args:
            taps (list[torch.Tensor]): SAM hidden states, each (B, G, G, C), in ``connector_layers`` order.

        Returns:
            list[torch.Tensor]: finest first, (B, C/s_i, G·s_i, G·s_i):
            [512×128², 1024×64², 2048×32²] for SAM-L.
        """
        return [branch(tap) for branch, tap in zip(self.model, taps, strict=True)]
