"""Mask2Former masked-attention transformer decoder and X-SAM's open-vocabulary cosine class head.

Parameter names and shapes equal transformers' ``Mask2FormerTransformerModule``, so X-SAM's
``segmentor.decoder.*`` keys load by identity. The forward is rewritten for export: batch-first tensors,
fully masked attention rows released arithmetically (no ``nonzero`` / index assignment), masks enter the
attention as an additive float bias, and no constant beyond the FP16 range.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xsam_edge.model.pixel_decoder import sine_position_embedding
from xsam_edge.spec.config import DecoderConfig

# Math adapted from https://github.com/huggingface/transformers/blob/main/src/transformers/models/mask2former/modeling_mask2former.py

MASKED_LOGIT = -1e4  # finite and FP16-safe; stands in for upstream's -1e9 on padded class slots
NORM_EPS = 1e-4  # inside rsqrt; F.normalize's 1e-12 is below FP16's range


@dataclass
class DecoderOutput:
    """What the transformer decoder returns.

    Attributes:
        queries (Tensor): (B, Q, D) final query states after the shared layernorm.
        mask_logits (Tensor): (B, Q, H, W) final mask logits at ``mask_features`` resolution.
        aux_queries (list[Tensor]): every prediction level incl. the final one (num_masked_layers + 1 entries,
            each (B, Q, D)) when ``all_layers``, else empty.
        aux_mask_logits (list[Tensor]): the matching (B, Q, H, W) mask logits, or empty.
    """

    queries: Tensor
    mask_logits: Tensor
    aux_queries: list[Tensor] = field(default_factory=list)
    aux_mask_logits: list[Tensor] = field(default_factory=list)


# lets torch.export flatten and rebuild the output like a tuple
torch.export.register_dataclass(
    DecoderOutput, serialized_type_name="xsam_edge.model.mask_decoder.DecoderOutput"
)


def attention_bias(mask_logits: Tensor) -> Tensor:
    """Additive attention bias from resized mask logits: 0 = attend, ``MASKED_LOGIT`` = blocked.

    Upstream blocks a pixel where ``sigmoid(logit) < 0.5`` (the same as ``logit < 0``) and then unblocks
    rows that are blocked everywhere with ``torch.where`` + index assignment. Here the release is arithmetic,
    so the graph has no data-dependent shapes and no bool ``&``/``|``, and the bias is a float that is added
    to the scores (XNNPACK delegates an add, not a bool mask's ``where``). -1e4 instead of -inf keeps FP16
    finite; a blocked pixel's weight is exp(-1e4) = 0 unless its score beats an open one's by 1e4.

    Args:
        mask_logits (Tensor): (B, Q, HW) mask logits at the memory level's resolution.

    Returns:
        Tensor: (B, Q, HW) in the logits' dtype, 0 where the query may attend, ``MASKED_LOGIT`` elsewhere.
    """
    # 1 where logit < 0, else 0, in float ops (exact for every finite logit): a comparison and its bool to
    # float cast ran as portable ExecuTorch kernels over every (query, pixel); float scalars, as an int one is
    # an int64 constant ExecuTorch casts with a portable copy
    blocked = torch.ceil((-mask_logits).clamp(0.0, 1.0))
    full = blocked.amin(-1, keepdim=True)  # 1 where the whole row is blocked
    return blocked * (1.0 - full) * MASKED_LOGIT


def attend(q_h: Tensor, k_h: Tensor, v_h: Tensor, bias: Tensor | None = None) -> Tensor:
    """``softmax(q·kᵀ/√d + bias)·v`` over (B, h, ·, hd) heads, written out with 3-D ``bmm``.

    ``scaled_dot_product_attention`` decomposes for export into a "safe softmax" (``eq(-inf)``, ``any``,
    ``where`` over every score) and broadcast copies that ExecuTorch runs as portable kernels: 135 ms of a
    full-size student's 557 ms mask graph. No row here is ever fully blocked, so the plain softmax is exact.

    Args:
        q_h (Tensor): (B, h, Q, hd) queries.
        k_h (Tensor): (B, h, S, hd) keys.
        v_h (Tensor): (B, h, S, hd) values.
        bias (Tensor | None): (B, Q, S) additive bias shared by the heads.

    Returns:
        Tensor: (B, h, Q, hd).
    """
    b, h, q, hd = q_h.shape
    s = k_h.shape[2]
    scores = torch.bmm(q_h.reshape(b * h, q, hd) * hd**-0.5, k_h.reshape(b * h, s, hd).transpose(1, 2))
    scores = scores.view(b, h, q, s)
    if bias is not None:
        scores = scores + bias[:, None]
    weights = scores.softmax(-1).view(b * h, q, s)
    return torch.bmm(weights, v_h.reshape(b * h, s, hd)).view(b, h, q, hd)


class PackedCrossAttention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameter layout (packed q/k/v ``in_proj``).

    Args:
        embed_dim (int): model width D.
        num_heads (int): attention heads h.
    """

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, bias: Tensor) -> Tensor:
        """Masked attention from queries to memory tokens.

        Args:
            query (Tensor): (B, Q, D) queries (position embedding added).
            key (Tensor): (B, S, D) keys (position embedding added).
            value (Tensor): (B, S, D) values.
            bias (Tensor): (B, Q, S) additive bias from ``attention_bias``; no row may be blocked everywhere.

        Returns:
            Tensor: (B, Q, D) attended features after ``out_proj``.
        """
        b, q, d = query.shape
        s = key.shape[1]
        h = self.num_heads
        w_q, w_k, w_v, b_q, b_k, b_v = self.projections()
        q_h = F.linear(query, w_q, b_q).view(b, q, h, d // h).transpose(1, 2)  # (B, h, Q, hd)
        k_h = F.linear(key, w_k, b_k).view(b, s, h, d // h).transpose(1, 2)  # (B, h, S, hd)
        v_h = F.linear(value, w_v, b_v).view(b, s, h, d // h).transpose(1, 2)  # (B, h, S, hd)
        out = attend(q_h, k_h, v_h, bias)  # (B, h, Q, hd)
        return self.out_proj(out.transpose(1, 2).reshape(b, q, d))  # (B, Q, D)

    def projections(self) -> tuple[Tensor, ...]:
        """(w_q, w_k, w_v, b_q, b_k, b_v): packed parameters' slices, or ``separate_projections``' own."""
        separate = getattr(self, "separate", None)
        if separate is not None:
            return tuple(separate)
        return (*self.in_proj_weight.chunk(3), *self.in_proj_bias.chunk(3))


@contextmanager
def separate_projections(module: nn.Module) -> Iterator[None]:
    """Every packed cross-attention under ``module`` projects with its own q/k/v tensors inside the block.

    A slice of a packed parameter is computed in a traced graph, and XNNPACK delegates a linear only when its
    weight is a constant: ExecuTorch ran the three projections as portable ``addmm``, 600 of one real-width
    layer's 623 ms at 64×64 memory tokens. The copies are dropped afterwards; the packed parameters, which the
    checkpoint keys name, stay the only ones outside the block.
    """
    layers = [m for m in module.modules() if isinstance(m, PackedCrossAttention)]
    try:
        for m in layers:
            parts = (*m.in_proj_weight.detach().chunk(3), *m.in_proj_bias.detach().chunk(3))
            m.separate = nn.ParameterList(nn.Parameter(p.clone(), requires_grad=False) for p in parts)
        yield
    finally:
        for m in layers:
            if "separate" in m._modules:
                del m.separate


class SelfAttention(nn.Module):
    """DETR-style self-attention: position embedding on queries and keys, not on values.

    Args:
        embed_dim (int): model width D.
        num_heads (int): attention heads h.
    """

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, hidden: Tensor, pos: Tensor) -> Tensor:
        """Unmasked self-attention among the queries.

        Args:
            hidden (Tensor): (B, Q, D) query states.
            pos (Tensor): (B, Q, D) query position embeddings.

        Returns:
            Tensor: (B, Q, D) attended features after ``out_proj``.
        """
        b, q, d = hidden.shape
        h = self.num_heads
        with_pos = hidden + pos
        q_h = self.q_proj(with_pos).view(b, q, h, d // h).transpose(1, 2)  # (B, h, Q, hd)
        k_h = self.k_proj(with_pos).view(b, q, h, d // h).transpose(1, 2)  # (B, h, Q, hd)
        v_h = self.v_proj(hidden).view(b, q, h, d // h).transpose(1, 2)  # (B, h, Q, hd)
        out = attend(q_h, k_h, v_h)  # (B, h, Q, hd)
        return self.out_proj(out.transpose(1, 2).reshape(b, q, d))  # (B, Q, D)


class MaskedAttentionDecoderLayer(nn.Module):
    """Post-norm layer: masked cross-attention → self-attention → ReLU FFN."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        d = config.hidden_dim
        self.self_attn = SelfAttention(d, config.num_heads)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.cross_attn = PackedCrossAttention(d, config.num_heads)
        self.cross_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, config.decoder_ffn_dim)
        self.fc2 = nn.Linear(config.decoder_ffn_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)

    def forward(
        self, hidden: Tensor, query_pos: Tensor, memory: Tensor, memory_pos: Tensor, bias: Tensor
    ) -> Tensor:
        """Update the query states against one memory level.

        Args:
            hidden (Tensor): (B, Q, D) query states.
            query_pos (Tensor): (B, Q, D) query position embeddings.
            memory (Tensor): (B, S, D) memory tokens of this level (level embedding added).
            memory_pos (Tensor): (S, D) sine position embedding of this level.
            bias (Tensor): (B, Q, S) additive attention bias from ``attention_bias``.

        Returns:
            Tensor: (B, Q, D) updated query states.
        """
        attended = self.cross_attn(hidden + query_pos, memory + memory_pos, memory, bias)
        hidden = self.cross_attn_layer_norm(hidden + attended)
        hidden = self.self_attn_layer_norm(hidden + self.self_attn(hidden, query_pos))
        ffn = self.fc2(F.relu(self.fc1(hidden)))
        return self.final_layer_norm(hidden + ffn)


class MaskPredictor(nn.Module):
    """3-layer MLP mask embedder (keys ``mask_embedder.{i}.0.*``) dotted with the pixel embeddings."""

    def __init__(self, hidden_dim: int, mask_feature_size: int) -> None:
        super().__init__()
        self.mask_embedder = nn.Sequential(
            nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU()),
            nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU()),
            nn.Sequential(nn.Linear(hidden_dim, mask_feature_size)),
        )

    def forward(self, queries: Tensor, mask_features: Tensor) -> Tensor:
        """Mask logits of every query.

        Args:
            queries (Tensor): (B, Q, D) normalised query states.
            mask_features (Tensor): (B, C, H, W) per-pixel embeddings.

        Returns:
            Tensor: (B, Q, H, W) mask logits.
        """
        b, c, height, width = mask_features.shape
        embeds = self.mask_embedder(queries)  # (B, Q, C)
        logits = torch.bmm(embeds, mask_features.reshape(b, c, height * width))  # (B, Q, H*W)
        return logits.view(b, -1, height, width)  # (B, Q, H, W)


class MaskedAttentionDecoder(nn.Module):
    """The layers, the shared ``layernorm`` and ``mask_predictor`` (keys ``decoder.*``)."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [MaskedAttentionDecoderLayer(config) for _ in range(config.num_masked_layers)]
        )
        self.layernorm = nn.LayerNorm(config.hidden_dim)
        self.mask_predictor = MaskPredictor(config.hidden_dim, config.mask_feature_size)


class MaskDecoder(nn.Module):
    """Mask2Former masked-attention transformer decoder (parameter names of ``Mask2FormerTransformerModule``).

    Upstream's optional per-level input projections are identities here: the memory width equals
    ``hidden_dim`` (upstream keeps them in a plain list, so they never reach a checkpoint).

    Args:
        config (DecoderConfig): decoder sizes.
    """

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        d = config.hidden_dim
        self.hidden_dim = d
        self.num_feature_levels = config.num_feature_levels
        self.queries_embedder = nn.Embedding(config.num_queries, d)
        self.queries_features = nn.Embedding(config.num_queries, d)
        self.decoder = MaskedAttentionDecoder(config)
        self.level_embed = nn.Embedding(self.num_feature_levels, d)

    def forward(
        self,
        memory: list[Tensor],
        mask_features: Tensor,
        seg_embeds: Tensor | None = None,
        all_layers: bool = False,
    ) -> DecoderOutput:
        """Predict query states and masks.

        Args:
            memory (list[Tensor]): the pixel decoder's multi-scale memory, coarsest first, each
                (B, D, H_l, W_l).
            mask_features (Tensor): (B, mask_feature_size, H, W) per-pixel embeddings.
            seg_embeds (Tensor | None): (B, D) X-SAM ``<SEG>`` embedding, added to every learned query feature
                (the query position embeddings are unchanged). ``None`` runs plain Mask2Former.
            all_layers (bool): also return every prediction level (for auxiliary losses / inspection).

        Returns:
            DecoderOutput: ``queries`` (B, Q, D), ``mask_logits`` (B, Q, H, W), and when ``all_layers`` the
            ``aux_queries`` / ``aux_mask_logits`` of all num_masked_layers + 1 prediction levels.
        """
        if len(memory) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} memory levels, got {len(memory)}")
        b = mask_features.shape[0]
        sizes = [(int(m.shape[2]), int(m.shape[3])) for m in memory]
        # (B, D, H, W) -> (B, H*W, D), plus the level embedding; position embeddings (H*W, D) per level
        tokens = [m.flatten(2).transpose(1, 2) + self.level_embed.weight[i] for i, m in enumerate(memory)]
        pos = [
            sine_position_embedding(h, w, self.hidden_dim // 2, m.device, m.dtype)
            for (h, w), m in zip(sizes, memory, strict=True)
        ]

        query_pos = self.queries_embedder.weight[None].expand(b, -1, -1)  # (B, Q, D)
        hidden = self.queries_features.weight[None].expand(b, -1, -1)  # (B, Q, D)
        if seg_embeds is not None:
            hidden = hidden + seg_embeds[:, None, :]
        return self.predict(hidden, query_pos, tokens, pos, sizes, mask_features, all_layers)

    def predict(
        self,
        hidden: Tensor,
        query_pos: Tensor,
        tokens: list[Tensor],
        pos: list[Tensor],
        sizes: list[tuple[int, int]],
        mask_features: Tensor,
        all_layers: bool,
    ) -> DecoderOutput:
        """Run the prediction head before the first layer and after each layer.

        Args:
            hidden (Tensor): (B, Q, D) initial query features.
            query_pos (Tensor): (B, Q, D) query position embeddings.
            tokens (list[Tensor]): per level (B, H_l*W_l, D) memory tokens, coarsest first.
            pos (list[Tensor]): per level (H_l*W_l, D) sine position embeddings.
            sizes (list[tuple[int, int]]): per level (H_l, W_l).
            mask_features (Tensor): (B, C, H, W) per-pixel embeddings.
            all_layers (bool): keep every prediction level.

        Returns:
            DecoderOutput: see ``forward``.
        """
        dec = self.decoder
        levels = self.num_feature_levels
        queries = dec.layernorm(hidden)
        mask_logits = dec.mask_predictor(queries, mask_features)
        aux_queries, aux_masks = ([queries], [mask_logits]) if all_layers else ([], [])
        for idx, layer in enumerate(dec.layers):
            level = idx % levels
            height, width = sizes[level]
            resized = mask_logits
            if tuple(mask_logits.shape[-2:]) != (height, width):
                resized = F.interpolate(
                    mask_logits, size=(height, width), mode="bilinear", align_corners=False
                )
            bias = attention_bias(resized.flatten(2))  # (B, Q, H_l*W_l)
            hidden = layer(hidden, query_pos, tokens[level], pos[level], bias)
            queries = dec.layernorm(hidden)
            mask_logits = dec.mask_predictor(queries, mask_features)
            if all_layers:
                aux_queries.append(queries)
                aux_masks.append(mask_logits)
        return DecoderOutput(queries, mask_logits, aux_queries, aux_masks)


def cosine_class_logits(
    queries: Tensor, cond: Tensor, cond_valid: Tensor, bg: Tensor, logit_scale: Tensor, clamp: float = 500.0
) -> Tensor:
    """X-SAM's open-vocabulary class head: scaled cosine similarity to the conditions plus background.

    Normalisation is ``x * rsqrt(sum(x²) + 1e-4)`` so zero-vector padded slots stay finite in FP16, and padded
    slots get the finite logit -1e4 instead of upstream's -1e9.

    Args:
        queries (Tensor): (B, Q, D) final query states.
        cond (Tensor): (B, C, D) condition (class / phrase / region) embeddings, padded to a fixed C.
        cond_valid (Tensor): (B, C) bool, True for real slots.
        bg (Tensor): (D,) learned background / no-object embedding.
        logit_scale (Tensor): scalar, log of the cosine scale.
        clamp (float): logits are clamped to ±clamp.

    Returns:
        Tensor: (B, Q, C + 1) class logits; the last column is background.
    """
    b, _, d = cond.shape
    weights = torch.cat((cond, bg.to(cond.dtype).expand(b, 1, d)), dim=1)  # (B, C+1, D)
    valid = torch.cat((cond_valid, torch.ones_like(cond_valid[:, :1])), dim=1)  # (B, C+1)
    q_n = queries * torch.rsqrt(queries.pow(2).sum(-1, keepdim=True) + NORM_EPS)
    w_n = weights * torch.rsqrt(weights.pow(2).sum(-1, keepdim=True) + NORM_EPS)
    logits = torch.bmm(q_n, w_n.transpose(1, 2)) * logit_scale.exp().to(queries.dtype)  # (B, Q, C+1)
    logits = logits.clamp(-clamp, clamp)
    return torch.where(valid[:, None, :], logits, MASKED_LOGIT)
