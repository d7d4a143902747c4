"""SAM ViT image encoder: the fine-grained branch whose taps feed the seg_projector and the connector."""

from __future__ import annotations

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
        cfg = self.xsam_config
        wanted = {cfg.projector_layer, *cfg.connector_layers}
        hidden = self.patch_embed(pixels)  # (B, G, G, C)
        if self.pos_embed is not None:
            hidden = hidden + self.pos_embed
        taps: dict[int, torch.Tensor] = {}
        for index, layer in enumerate(self.layers[: cfg.layers_run], start=1):
            hidden = layer(hidden)
            if isinstance(hidden, tuple):
                hidden = hidden[0]
            if index in wanted:
                taps[index] = hidden
        return taps
