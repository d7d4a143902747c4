"""Mask2Former pixel decoder: multi-scale deformable-attention encoder plus one FPN step.

Parameter names and shapes equal transformers' ``Mask2FormerPixelDecoder`` (built with ``feature_channels``),
so X-SAM's ``segmentor.pixel_decoder.*`` keys load by identity. The forward is rewritten for export:
deformable attention is pure PyTorch ``grid_sample`` with every tensor of rank ≤ 5, spatial sizes are Python
ints read from tensor shapes, and there are no padding masks (X-SAM never pads the decoder's inputs).

The deformable sampling has two equal forms (``SAMPLERS``): ``grid_sample``, which eager PyTorch, OpenVINO
and ONNX Runtime run with fast kernels, and ``rows``, the same bilinear sampling as four row lookups
(``F.embedding``) per level into the value projection's own (B·S·h, head_dim) layout. ExecuTorch has no
delegate for ``grid_sampler_2d`` and its portable kernel took 61 % of a student's image graph; its exporter
switches to ``rows`` for the trace (``deformable_sampler``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xsam_edge.spec.config import DecoderConfig

# Math adapted from https://github.com/huggingface/transformers/blob/main/src/transformers/models/mask2former/modeling_mask2former.py

NUM_GROUPS = 32  # GroupNorm groups of every projection, as upstream

SAMPLERS = ("grid_sample", "rows")
"""The two forms of deformable sampling: the same bilinear values, different ops (module docstring)."""


def sine_position_embedding(
    height: int, width: int, num_pos_feats: int, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """Normalised 2-D sine position embedding of an unpadded ``height × width`` grid (Mask2Former/DETR style).

    Computed in float32 from static sizes (a constant under ``torch.export``), then cast to ``dtype``.

    Args:
        height (int): rows of the grid.
        width (int): columns of the grid.
        num_pos_feats (int): features per axis; the result has ``2 * num_pos_feats`` channels (y, then x).
        device (torch.device): where to build it.
        dtype (torch.dtype): dtype of the result.

    Returns:
        Tensor: (height * width, 2 * num_pos_feats), row-major over the grid.
    """
    scale, temperature, eps = 2 * math.pi, 10000.0, 1e-6  # float scalars: see sample_rows
    # cumsum of an all-valid mask is 1..n; normalise by the last entry exactly as upstream
    y_embed = torch.arange(1, height + 1, device=device, dtype=torch.float32)
    x_embed = torch.arange(1, width + 1, device=device, dtype=torch.float32)
    y_embed = y_embed / (y_embed[-1:] + eps) * scale
    x_embed = x_embed / (x_embed[-1:] + eps) * scale
    dim_t = torch.arange(num_pos_feats, device=device, dtype=torch.float32)
    dim_t = temperature ** (2.0 * torch.div(dim_t, 2.0, rounding_mode="floor") / float(num_pos_feats))
    pos_y = y_embed[:, None] / dim_t  # (H, F)
    pos_x = x_embed[:, None] / dim_t  # (W, F)
    # interleave sin of even features with cos of odd ones: (n, F/2, 2) -> (n, F)
    pos_y = torch.stack((pos_y[:, 0::2].sin(), pos_y[:, 1::2].cos()), dim=2).flatten(1)
    pos_x = torch.stack((pos_x[:, 0::2].sin(), pos_x[:, 1::2].cos()), dim=2).flatten(1)
    pos = torch.cat(
        (
            pos_y[:, None, :].expand(height, width, num_pos_feats),
            pos_x[None, :, :].expand(height, width, num_pos_feats),
        ),
        dim=2,
    )  # (H, W, 2F)
    return pos.reshape(height * width, 2 * num_pos_feats).to(dtype)  # (H*W, 2F)


def reference_points(
    spatial_shapes: list[tuple[int, int]], device: torch.device, dtype: torch.dtype
) -> Tensor:
    """Normalised (x, y) centre of every token of every level, levels concatenated in order.

    Args:
        spatial_shapes (list[tuple[int, int]]): (height, width) of each level.
        device (torch.device): where to build it.
        dtype (torch.dtype): dtype of the result.

    Returns:
        Tensor: (sum of height * width, 2), last axis (x, y) in [0, 1].
    """
    points = []
    for height, width in spatial_shapes:
        ref_y = (torch.arange(height, device=device, dtype=dtype) + 0.5) / float(height)
        ref_x = (torch.arange(width, device=device, dtype=dtype) + 0.5) / float(width)
        ref = torch.stack(
            (ref_x[None, :].expand(height, width), ref_y[:, None].expand(height, width)), dim=2
        )  # (H, W, 2)
        points.append(ref.reshape(height * width, 2))  # (H*W, 2)
    return torch.cat(points, dim=0)


class MultiScaleDeformableAttention(nn.Module):
    """Deformable DETR's multi-scale deformable attention, pure PyTorch, every tensor rank ≤ 5.

    Args:
        embed_dim (int): model width D.
        num_heads (int): attention heads h.
        num_levels (int): feature levels L.
        num_points (int): sampling points P per head and level.
    """

    def __init__(self, embed_dim: int, num_heads: int, num_levels: int, num_points: int) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} must divide by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.sampler = "grid_sample"  # or "rows": set for a trace by ``deformable_sampler``

    def forward(
        self, query: Tensor, value: Tensor, ref_points: Tensor, spatial_shapes: list[tuple[int, int]]
    ) -> Tensor:
        """Attend from every query to P learned offsets around its reference point on every level.

        Args:
            query (Tensor): (B, N, D) queries, position embedding already added.
            value (Tensor): (B, S, D) flattened levels, S = sum of H_l * W_l.
            ref_points (Tensor): (N, 2) normalised (x, y) reference point of each query.
            spatial_shapes (list[tuple[int, int]]): (H_l, W_l) of each level, in the order of ``value``.

        Returns:
            Tensor: (B, N, D) attended features after ``output_proj``.
        """
        b, n, d = query.shape
        h, lv, p = self.num_heads, self.num_levels, self.num_points
        hd = d // h
        value = self.value_proj(value)  # (B, S, D)
        offsets = self.sampling_offsets(query).view(b, n, h, lv, p * 2)  # (B, N, h, L, P*2)
        weights = self.attention_weights(query).view(b, n, h, lv * p)  # (B, N, h, L*P)
        weights = weights.softmax(-1)
        if self.sampler == "rows":
            out = sample_rows(value, offsets, weights, ref_points, spatial_shapes, h, p)
            return self.output_proj(out)
        weights = weights.permute(0, 2, 1, 3).reshape(b * h, 1, n, lv * p)  # (B*h, 1, N, L*P)

        out = None
        start = 0
        for level, (height, width) in enumerate(spatial_shapes):
            # (B, HW, D) -> (B, D, HW) -> (B*h, hd, H, W)
            value_l = value[:, start : start + height * width].transpose(1, 2)
            value_l = value_l.reshape(b * h, hd, height, width)
            start += height * width
            # offsets are in pixels of this level; the normaliser is (W, H) because the last axis is (x, y)
            normalizer = torch.tensor([width, height], dtype=query.dtype, device=query.device)
            offsets_l = offsets[:, :, :, level].reshape(b, n, h, p, 2)  # (B, N, h, P, 2)
            locations = ref_points[None, :, None, None, :] + offsets_l / normalizer  # (B, N, h, P, 2)
            grid = (2 * locations - 1).permute(0, 2, 1, 3, 4).reshape(b * h, n, p, 2)  # (B*h, N, P, 2)
            sampled = F.grid_sample(
                value_l, grid, mode="bilinear", padding_mode="zeros", align_corners=False
            )  # (B*h, hd, N, P)
            weighted = (sampled * weights[..., level * p : (level + 1) * p]).sum(-1)  # (B*h, hd, N)
            out = weighted if out is None else out + weighted
        assert out is not None and start == value.shape[1], "spatial_shapes must cover the value tokens"
        out = out.reshape(b, h * hd, n).transpose(1, 2)  # (B, N, D)
        return self.output_proj(out)


def sample_rows(
    value: Tensor,
    offsets: Tensor,
    weights: Tensor,
    ref_points: Tensor,
    spatial_shapes: list[tuple[int, int]],
    num_heads: int,
    num_points: int,
) -> Tensor:
    """Deformable sampling as row lookups: ``grid_sample(bilinear, zeros, align_corners=False)``'s values.

    The value projection's (B, S, D) output is already a table of (B·S·h) rows of head_dim, so each bilinear
    corner is one ``F.embedding`` of N·h·P rows, weighted by its bilinear weight (zero outside the level, as
    ``padding_mode="zeros"``) times the attention weight and summed over the points by a batched (1, P) @
    (P, head_dim) product, then over corners and levels.

    Args:
        value (Tensor): (B, S, D) projected values of every level.
        offsets (Tensor): (B, N, h, L, P*2) sampling offsets in pixels of each level, (x, y) pairs.
        weights (Tensor): (B, N, h, L*P) softmaxed attention weights.
        ref_points (Tensor): (N, 2) normalised (x, y) reference points.
        spatial_shapes (list[tuple[int, int]]): (H_l, W_l) per level, in the order of ``value``.
        num_heads (int): heads h.
        num_points (int): points P per head and level.

    Returns:
        Tensor: (B, N, D) attended features before ``output_proj``.
    """
    b, s, d = value.shape
    n, h, p = offsets.shape[1], num_heads, num_points
    if isinstance(b, int) and b * s * h > 2**24:
        raise ValueError(f"{b * s * h} value rows: row indices are float32, exact up to 2**24")
    table = value.reshape(b * s * h, d // h)  # row (b·S + s)·h + head
    # Index arithmetic stays in float32 (exact below 2**24 rows) so XNNPACK runs it; int64 ops would all be
    # portable kernels. Each lookup converts its indices once. Every scalar is a Python float: ExecuTorch
    # makes an int scalar an int64 constant cast to float32 by a portable copy at every call, one per use
    # (516 portable casts in the full-size conv student's ``encode_image``, 69 without them).
    rows_per_batch = float(s) if isinstance(s, int) else s  # a symbolic S stays symbolic
    batch = (torch.arange(b, device=value.device, dtype=value.dtype) * rows_per_batch).view(b, 1, 1, 1)
    head = torch.arange(h, device=value.device, dtype=value.dtype).view(1, 1, h, 1)
    acc = None
    start = 0
    for level, (height, width) in enumerate(spatial_shapes):
        offsets_l = offsets[:, :, :, level].reshape(b, n, h, p, 2)
        # pixel coordinates of the level (align_corners=False): x = loc · W − 0.5
        fw, fh = float(width), float(height)
        x = (ref_points[None, :, None, None, 0] + offsets_l[..., 0] / fw) * fw - 0.5  # (B, N, h, P)
        y = (ref_points[None, :, None, None, 1] + offsets_l[..., 1] / fh) * fh - 0.5
        x0, y0 = torch.floor(x), torch.floor(y)
        fx, fy = x - x0, y - y0
        attention = weights[..., level * p : (level + 1) * p]  # (B, N, h, P)
        for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
            xi, yi = (x0 + 1.0 if dx else x0), (y0 + 1.0 if dy else y0)
            # 1 inside the level, else 0 (xi, yi are whole): padding_mode="zeros" without comparisons
            inside = (
                (xi + 1.0).clamp(0.0, 1.0)
                * (fw - xi).clamp(0.0, 1.0)
                * (yi + 1.0).clamp(0.0, 1.0)
                * (fh - yi).clamp(0.0, 1.0)
            )
            corner = (fx if dx else 1.0 - fx) * (fy if dy else 1.0 - fy) * attention * inside
            cell = yi.clamp(0.0, fh - 1.0) * fw + xi.clamp(0.0, fw - 1.0)
            index = (batch + float(start) + cell) * float(h) + head  # (B, N, h, P)
            if acc is not None:  # a zero that depends on the last sum: the lookups run one after another
                index = index + _after(acc)
            # 2-D indices give the (B·N·h, P, head_dim) rows the product takes, and the product's output stays
            # 3-D until the end: in XNNPACK every reshape at a delegate's edge is a copy (88 MB a lookup)
            rows = F.embedding(index.reshape(b * n * h, p).long(), table)
            term = torch.bmm(corner.reshape(b * n * h, 1, p), rows)  # (B·N·h, 1, head_dim): sum over P
            acc = term if acc is None else acc + term
        start += height * width
    assert acc is not None and start == s, "spatial_shapes must cover the value tokens"
    return acc.reshape(b, n, d)  # (B·N·h, 1, hd) -> (B, N, D)


def _after(acc: Tensor) -> Tensor:
    """A float zero computed from ``acc`` (NaN-safe): makes the next lookup wait for ``acc``.

    Without it XNNPACK's partitioner merges every corner's weighting into one delegate, whose inputs (each
    lookup, N·h·P·head_dim floats: 88 MB for a full-size student's level) are then all alive at once: one
    full-size layer's planned arena was 1118 MB, against 210 MB with it and 551 MB with ``grid_sample``.
    """
    probe = acc[(slice(0, 1),) * acc.dim()]  # one element, sliced: a reshape first would copy all of ``acc``
    return (probe != probe).to(acc.dtype) * 0.0


@contextmanager
def deformable_sampler(module: nn.Module, sampler: str) -> Iterator[None]:
    """Every deformable attention under ``module`` samples with ``sampler`` inside the block, then as before.

    Raises:
        ValueError: ``sampler`` is not one of ``SAMPLERS``.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown deformable sampler {sampler!r}; one of {', '.join(SAMPLERS)}")
    layers = [m for m in module.modules() if isinstance(m, MultiScaleDeformableAttention)]
    before = [m.sampler for m in layers]
    try:
        for m in layers:
            m.sampler = sampler
        yield
    finally:
        for m, old in zip(layers, before, strict=True):
            m.sampler = old


class PixelDecoderEncoderLayer(nn.Module):
    """Post-norm encoder layer: deformable self-attention over all levels, then a ReLU FFN."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        d = config.hidden_dim
        self.self_attn = MultiScaleDeformableAttention(
            d, config.num_heads, config.num_feature_levels, config.num_points
        )
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, config.encoder_ffn_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)

    def forward(
        self, hidden: Tensor, pos: Tensor, ref_points: Tensor, spatial_shapes: list[tuple[int, int]]
    ) -> Tensor:
        """Update the flattened multi-scale tokens.

        Args:
            hidden (Tensor): (B, S, D) tokens of all levels.
            pos (Tensor): (S, D) position + level embedding.
            ref_points (Tensor): (S, 2) reference point of each token.
            spatial_shapes (list[tuple[int, int]]): (H_l, W_l) per level.

        Returns:
            Tensor: (B, S, D) updated tokens.
        """
        attended = self.self_attn(hidden + pos, hidden, ref_points, spatial_shapes)
        hidden = self.self_attn_layer_norm(hidden + attended)
        ffn = self.fc2(F.relu(self.fc1(hidden)))
        return self.final_layer_norm(hidden + ffn)


class PixelDecoderEncoder(nn.Module):
    """Stack of ``config.encoder_layers`` deformable encoder layers (keys ``encoder.layers.{i}.*``)."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList([PixelDecoderEncoderLayer(config) for _ in range(config.encoder_layers)])

    def forward(
        self, hidden: Tensor, pos: Tensor, ref_points: Tensor, spatial_shapes: list[tuple[int, int]]
    ) -> Tensor:
        """Run every layer.

        Args:
            hidden (Tensor): (B, S, D) tokens.
            pos (Tensor): (S, D) position + level embedding.
            ref_points (Tensor): (S, 2) reference points.
            spatial_shapes (list[tuple[int, int]]): (H_l, W_l) per level.

        Returns:
            Tensor: (B, S, D) encoded tokens.
        """
        for layer in self.layers:
            hidden = layer(hidden, pos, ref_points, spatial_shapes)
        return hidden


class PixelDecoder(nn.Module):
    """Mask2Former pixel decoder as X-SAM uses it: 3 deformable-attention levels plus one FPN level.

    Upstream's ``feature_strides=[4, 8, 16, 32]`` and ``common_stride=4`` give exactly one FPN level, fed by
    the finest input feature (``adapter_1`` / ``layer_1``); its output, at the finest level's resolution,
    becomes the mask features.

    Args:
        config (DecoderConfig): decoder sizes; ``hidden_dim`` is both the feature and the transformer width.
        feature_channels (tuple[int, ...]): channels of the input features, finest level first, e.g.
            ``(512, 1024, 2048)``. The last ``num_feature_levels`` go through the encoder.
    """

    def __init__(self, config: DecoderConfig, feature_channels: tuple[int, ...]) -> None:
        super().__init__()
        d = config.hidden_dim
        self.num_feature_levels = config.num_feature_levels
        if len(feature_channels) < self.num_feature_levels:
            raise ValueError(
                f"need at least {self.num_feature_levels} feature levels, "
                f"got feature_channels={feature_channels}"
            )
        if d % NUM_GROUPS:
            raise ValueError(f"hidden_dim {d} must divide by the {NUM_GROUPS} GroupNorm groups")
        self.hidden_dim = d
        self.feature_channels = tuple(feature_channels)
        self.level_embed = nn.Parameter(torch.zeros(self.num_feature_levels, d))
        # coarsest level first, as upstream
        self.input_projections = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(c, d, kernel_size=1), nn.GroupNorm(NUM_GROUPS, d))
                for c in self.feature_channels[-self.num_feature_levels :][::-1]
            ]
        )
        self.encoder = PixelDecoderEncoder(config)
        self.mask_projection = nn.Conv2d(d, config.mask_feature_size, kernel_size=1)
        self.adapter_1 = nn.Sequential(
            nn.Conv2d(self.feature_channels[0], d, kernel_size=1, bias=False), nn.GroupNorm(NUM_GROUPS, d)
        )
        self.layer_1 = nn.Sequential(
            nn.Conv2d(d, d, kernel_size=3, padding=1, bias=False), nn.GroupNorm(NUM_GROUPS, d), nn.ReLU()
        )

    def forward(self, features: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """Encode the feature pyramid.

        Args:
            features (list[Tensor]): finest level first, e.g.
                [(B,512,128,128), (B,1024,64,64), (B,2048,32,32)].

        Returns:
            tuple[Tensor, list[Tensor]]: ``mask_features`` (B, mask_feature_size, H0, W0) at the finest input
            resolution, and the multi-scale memory, coarsest first, each (B, D, H_l, W_l), e.g.
            [(B,D,32,32), (B,D,64,64), (B,D,128,128)] (upstream's ``multi_scale_features``).
        """
        if len(features) != len(self.feature_channels):
            raise ValueError(f"expected {len(self.feature_channels)} feature maps, got {len(features)}")
        levels = features[::-1][: self.num_feature_levels]  # coarsest first
        b = levels[0].shape[0]
        d = self.hidden_dim
        spatial_shapes = [(int(x.shape[2]), int(x.shape[3])) for x in levels]

        # input projection + position/level embedding, flattened: (B, D, H, W) -> (B, H*W, D)
        tokens, pos = [], []
        for level, x in enumerate(levels):
            height, width = spatial_shapes[level]
            tokens.append(self.input_projections[level](x).flatten(2).transpose(1, 2))
            sine = sine_position_embedding(height, width, d // 2, x.device, x.dtype)  # (H*W, D)
            pos.append(sine + self.level_embed[level])
        hidden = torch.cat(tokens, dim=1)  # (B, S, D)
        pos_flat = torch.cat(pos, dim=0)  # (S, D)
        ref = reference_points(spatial_shapes, hidden.device, hidden.dtype)  # (S, 2)
        hidden = self.encoder(hidden, pos_flat, ref, spatial_shapes)

        # back to maps, coarsest first: (B, H*W, D) -> (B, D, H, W)
        memory = []
        start = 0
        for height, width in spatial_shapes:
            chunk = hidden[:, start : start + height * width]
            memory.append(chunk.transpose(1, 2).reshape(b, d, height, width))
            start += height * width

        # one FPN step on the finest input feature
        lateral = self.adapter_1(features[0])
        top = memory[-1]
        if tuple(top.shape[-2:]) != tuple(lateral.shape[-2:]):
            top = F.interpolate(top, size=lateral.shape[-2:], mode="bilinear", align_corners=False)
        fpn = self.layer_1(lateral + top)
        return self.mask_projection(fpn), memory
