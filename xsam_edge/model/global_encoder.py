"""SigLIP vision tower: the global-meaning branch of the dual encoder."""

from __future__ import annotations

import torch
from torch import nn
from transformers import SiglipVisionConfig
from transformers.models.siglip.modeling_siglip import SiglipVisionTransformer

from xsam_edge.spec.config import GlobalEncoderConfig


def siglip_vision_config(config: GlobalEncoderConfig) -> SiglipVisionConfig:
    """The transformers config for our SigLIP sizes."""
    return SiglipVisionConfig(
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        image_size=config.image_size,
        patch_size=config.patch_size,
        layer_norm_eps=config.layer_norm_eps,
        hidden_act="gelu_pytorch_tanh",
        vision_use_head=config.use_head,
    )


class GlobalEncoder(nn.Module):
    """Holds ``vision_model`` (keys as transformers ``SiglipVisionModel``).

    X-SAM reads ``hidden_states[-2]``: the last block, the post-LN and the MAP head are loaded but never run.
    """

    def __init__(self, config: GlobalEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.vision_model = SiglipVisionTransformer(siglip_vision_config(config))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Encode the square global view.

        Args:
            pixels (torch.Tensor): (B, 3, S, S) normalised to [-1, 1].

        Returns:
            torch.Tensor: (B, G·G, C) hidden states of block ``select_layer``.
        """
        hidden = self.vision_model.embeddings(pixels)  # (B, G·G, C)
        for layer in self.vision_model.encoder.layers[: self.config.layers_run]:
            hidden = layer(hidden, attention_mask=None)
            if isinstance(hidden, tuple):
                hidden = hidden[0]
        return hidden
