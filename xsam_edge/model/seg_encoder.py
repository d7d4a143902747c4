"""SAM ViT image encoder: the fine-grained branch whose taps feed the seg_projector and the connector."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import SamVisionConfig
from transformers.models.sam.modeling_sam import SamVisionEncoder

from xsam_edge.spec.config import SegEncoderConfig


def sam_vision_config(config: SegEncoderConfig) -> SamVisionConfig:
    """The transformers config for our SAM ViT sizes (eager-free: SDPA attention)."""
    return SamVisionConfig(
        hidden_size=config.hidden_size,
        output_channels=config.output_channels,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        image_size=config.image_size,
        patch_size=config.patch_size,
        mlp_dim=config.intermediate_size,
        window_size=config.window_size,
        global_attn_indexes=list(config.global_attn_indexes),
        layer_norm_eps=config.layer_norm_eps,
        use_abs_pos=True,
        use_rel_pos=True,
    )


class SegEncoder(SamVisionEncoder):
    """transformers' ``SamVisionEncoder`` (same keys: ``patch_embed``, ``pos_embed``, ``layers``, ``neck``).

    ``forward_taps`` runs only the blocks X-SAM reads and skips the neck, which the checkpoint carries but
    X-SAM never uses.
    """

    def __init__(self, config: SegEncoderConfig) -> None:
        super().__init__(sam_vision_config(config))
        self.xsam_config = config

    def forward_taps(self, pixels: torch.Tensor) -> dict[int, torch.Tensor]:
        """Run the blocks up to the last tap.

        Args:
            pixels (torch.Tensor): (B, 3, S, S) letterboxed, normalised image.

        Returns:
            dict[int, torch.Tensor]: ``hidden_states`` index → (B, G, G, C) channels-last, for the projector
            and connector taps only.
        """
        hidden = self.patch_embed(pixels)  # (B, G, G, C)
        if self.pos_embed is not None:
            hidden = hidden + self.pos_embed
        return run_to_taps(hidden, self.layers, self.xsam_config)


def run_to_taps(
    hidden: torch.Tensor,
    layers: Sequence[Callable[[torch.Tensor], Any]],
    config: SegEncoderConfig,
    channels_last: Callable[[torch.Tensor], torch.Tensor] = lambda h: h,
) -> dict[int, torch.Tensor]:
    """Run ``layers`` up to the last tap the config names; each tapped output as (B, G, G, C).

    ``channels_last`` turns a block's output into the tap's layout (the conv encoder's blocks are NCHW).
    """
    wanted = {config.projector_layer, *config.connector_layers}
    taps: dict[int, torch.Tensor] = {}
    for index, layer in enumerate(layers[: config.layers_run], start=1):
        hidden = layer(hidden)
        if isinstance(hidden, tuple):  # transformers' SAM layers return (hidden,)
            hidden = hidden[0]
        if index in wanted:
            taps[index] = channels_last(hidden)
    return taps
