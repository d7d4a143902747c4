"""A cheap seg encoder for students: conv stem + depthwise-conv blocks, a few with global attention.

The SAM ViT is most of a student's image cost: at 1024² every block runs on 4,096 tokens, and its global
blocks attend over all of them. EdgeSAM (RepViT) and EfficientViT-SAM replace it with conv-heavy encoders
distilled from SAM's. This one keeps what X-SAM reads from the ViT, so the connector, projector and region
sampler are unchanged: taps ``hidden_states[i]`` of shape (B, G, G, C) at the same grid G = image/patch and
width C. A strided-conv stem reaches the grid (richer than the ViT's one patchify conv), then each block mixes
tokens with a depthwise 7×7 conv, or, at ``global_attn_indexes``, with global self-attention (the hybrid's
long-range context), and mixes channels with a 1×1-conv FFN. Every BatchNorm follows a conv, so exporters
fold it away.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xsam_edge.model.seg_encoder import run_to_taps
from xsam_edge.spec.config import SegEncoderConfig


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)
    )


class FeedForward(nn.Module):
    """1×1 conv → GELU → 1×1 conv + BN: the channel mixer of every block."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.fc2 = _conv_bn(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class ConvBlock(nn.Module):
    """Depthwise 7×7 conv + BN (local token mixer), then the FFN; both residual."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.mixer = _conv_bn(dim, dim, 7, groups=dim)
        self.ffn = FeedForward(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(x)
        return x + self.ffn(x)


class AttentionBlock(nn.Module):
    """Global self-attention over the grid (pre-LN, SDPA) after a depthwise 3×3 conv, then the FFN.

    The conv gives the attention its positions (conditional position encoding: no table tied to one size).
    """

    def __init__(self, dim: int, hidden: int, heads: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.position = _conv_bn(dim, dim, 3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ffn = FeedForward(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.position(x)
        b, c, h, w = x.shape
        tokens = self.norm(x.flatten(2).transpose(1, 2))  # (B, N, C)
        q, k, v = self.qkv(tokens).reshape(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        mixed = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, C/heads)
        mixed = self.proj(mixed.transpose(1, 2).reshape(b, h * w, c))  # (B, N, C)
        x = x + mixed.transpose(1, 2).reshape(b, c, h, w)
        return x + self.ffn(x)


def _stem(config: SegEncoderConfig) -> nn.Sequential:
    """log2(patch) stride-2 3×3 convs; the width doubles each step up to ``hidden_size`` at the grid."""
    steps = config.patch_size.bit_length() - 1
    layers: list[nn.Module] = []
    c_in = 3
    for i in range(steps):
        last = i == steps - 1
        c_out = (
            config.hidden_size
            if last
            else max(min(16, config.hidden_size), config.hidden_size >> (steps - 1 - i))
        )
        layers.append(_conv_bn(c_in, c_out, 3, stride=2))
        if not last:
            layers.append(nn.GELU())
        c_in = c_out
    return nn.Sequential(*layers)


class ConvSegEncoder(nn.Module):
    """The ``kind = "conv"`` seg encoder; same ``forward_taps`` contract as the SAM ViT's ``SegEncoder``."""

    def __init__(self, config: SegEncoderConfig) -> None:
        super().__init__()
        self.xsam_config = config
        self.stem = _stem(config)
        global_blocks = {i % config.num_layers for i in config.global_attn_indexes}
        dim, hidden = config.hidden_size, config.intermediate_size
        self.layers = nn.ModuleList(
            AttentionBlock(dim, hidden, config.num_heads, config.layer_norm_eps)
            if i in global_blocks
            else ConvBlock(dim, hidden)
            for i in range(config.num_layers)
        )

    def forward_taps(self, pixels: torch.Tensor) -> dict[int, torch.Tensor]:
        """``SegEncoder.forward_taps``' contract: (B, 3, S, S) in; tap index → (B, G, G, C) channels-last."""
        hidden = self.stem(pixels)  # (B, C, G, G)
        return run_to_taps(hidden, self.layers, self.xsam_config, lambda h: h.permute(0, 2, 3, 1))
