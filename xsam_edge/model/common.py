"""Small layers and tensor reshuffles shared by several model parts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor (SAM's ``SamLayerNorm`` channels_first).

    Keeps the ``weight``/``bias`` names of the upstream checkpoint.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise (B, C, H, W) over C."""
        # permute to channels-last so the op is a plain layer_norm every backend knows
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        x = F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)  # (B, C, H, W)


def pixel_shuffle(x: torch.Tensor, scale_factor: float, channels_first: bool = False) -> torch.Tensor:
    """X-SAM's bidirectional pixel shuffle (InternVL ordering): space ↔ channels.

    ``scale_factor`` 0.5 halves H and W and multiplies C by 4 (unshuffle); 2 does the reverse. The channel
    ordering is the upstream one, which the released projector and connector weights depend on.

    Args:
        x (torch.Tensor): (B, H, W, C), or (B, C, H, W) when ``channels_first``.
        scale_factor (float): spatial scale.
        channels_first (bool): layout of ``x`` and of the result.

    Returns:
        torch.Tensor: (B, H·s, W·s, C/s²) in the input's layout.
    """
    if channels_first:
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
    b, h, w, c = x.shape
    s = scale_factor
    x = x.reshape(b, h, int(w * s), int(c / s))  # (B, H, W·s, C/s)
    x = x.permute(0, 2, 1, 3)  # (B, W·s, H, C/s)
    x = x.reshape(b, int(w * s), int(h * s), int(c / (s * s)))  # (B, W·s, H·s, C/s²)
    x = x.permute(0, 2, 1, 3)  # (B, H·s, W·s, C/s²)
    if channels_first:
        x = x.permute(0, 3, 1, 2)  # (B, C/s², H·s, W·s)
    return x.contiguous()
