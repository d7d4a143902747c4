"""The X-SAM composite: dual encoders → projectors → LLM → 256-d conditions → Mask2Former-style decoder.

Module names follow the released checkpoint (``llm``, ``visual_encoder``, ``visual_projector``,
``seg_projector``, ``llm_projector``, ``seg_connector``, ``segmentor.{encoder,pixel_decoder,decoder,
logit_scale}``, ``bg_embeds``), so the archive state dict maps by identity. Every core method takes and
returns tensors only; the request-level logic lives in ``xsam_edge.model.predictor``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from xsam_edge.model.common import pixel_shuffle
from xsam_edge.model.connector import Connector
from xsam_edge.model.conv_seg_encoder import ConvSegEncoder
from xsam_edge.model.global_encoder import GlobalEncoder
from xsam_edge.model.mask_decoder import DecoderOutput, MaskDecoder, cosine_class_logits
from xsam_edge.model.pixel_decoder import PixelDecoder
from xsam_edge.model.projector import Projector
from xsam_edge.model.region_sampler import sample_regions_grid, sample_regions_random
from xsam_edge.model.seg_encoder import SegEncoder
from xsam_edge.spec.config import XSamConfig
from xsam_edge.spec.tokenizer import IMAGE_TOKEN_ID, REGION_TOKEN_ID


@dataclass
class ImageFeatures:
    """Everything the per-question graphs need from one image.

    Attributes:
        image_tokens (torch.Tensor): (B, N_img, H_llm) global then seg tokens, in LLM space.
        region_grid (torch.Tensor): (B, H_llm, G, G) seg tokens as a grid, before pooling (sampler input).
        pyramid (list[torch.Tensor]): connector outputs, finest first.
    """

    image_tokens: torch.Tensor
    region_grid: torch.Tensor
    pyramid: list[torch.Tensor]


@dataclass
class DecoderInputs:
    """The decoder's image side, computed once per image: mask features and multi-scale memory."""

    mask_features: torch.Tensor
    memory: list[torch.Tensor]


class Segmentor(nn.Module):
    """SAM encoder + pixel decoder + transformer decoder + class-head temperature (``segmentor.*`` keys)."""

    def __init__(
        self,
        encoder: SegEncoder | ConvSegEncoder,
        pixel_decoder: PixelDecoder,
        decoder: MaskDecoder,
        logit_scale_init: float,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.pixel_decoder = pixel_decoder
        self.decoder = decoder
        self.logit_scale = nn.Parameter(torch.tensor(logit_scale_init))


class XSam(nn.Module):
    """The whole model; parts are built by ``xsam_edge.model.build.build_model`` and injected."""

    def __init__(
        self,
        config: XSamConfig,
        *,
        llm: PreTrainedModel,
        visual_encoder: GlobalEncoder | None,
        visual_projector: Projector | None,
        seg_projector: Projector,
        llm_projector: Projector,
        seg_connector: Connector,
        segmentor: Segmentor,
    ) -> None:
        super().__init__()
        self.config = config
        self.llm = llm
        self.visual_encoder = visual_encoder
        self.visual_projector = visual_projector
        self.seg_projector = seg_projector
        self.llm_projector = llm_projector
        self.seg_connector = seg_connector
        self.segmentor = segmentor
        self.bg_embeds = nn.Embedding(1, config.decoder.hidden_dim)

    # -- image side ----------------------------------------------------------------------------
    def encode_image(self, seg_pixels: torch.Tensor, global_pixels: torch.Tensor | None) -> ImageFeatures:
        """Run both encoders, the projectors and the connector once per image.

        Args:
            seg_pixels (torch.Tensor): (B, 3, S, S) SAM-letterboxed pixels.
            global_pixels (torch.Tensor | None): (B, 3, s, s) SigLIP pixels; ``None`` when the model has no
                global encoder.

        Returns:
            ImageFeatures: image tokens (B, N_img, H_llm), region grid (B, H_llm, G, G), pyramid.
        """
        cfg = self.config
        taps = self.segmentor.encoder.forward_taps(seg_pixels)
        seg_tokens = self.seg_projector(taps[cfg.seg_encoder.projector_layer])  # (B, N_seg, H_llm)
        b = seg_pixels.shape[0]
        if self.config.seg_pool == 1:
            g = cfg.seg_token_grid
            region_grid = seg_tokens.transpose(1, 2).reshape(b, -1, g, g)  # (B, H_llm, G, G)
        else:
            # token-pooled students still sample regions from the full-resolution grid
            region_grid = self._unpooled_seg_grid(taps[cfg.seg_encoder.projector_layer])
        parts = [seg_tokens]
        if self.visual_encoder is not None:
            if global_pixels is None:
                raise ValueError("this model has a global (SigLIP) encoder: pass global_pixels")
            global_tokens = self.visual_projector(self.visual_encoder(global_pixels))  # (B, N_glob, H_llm)
            parts.insert(0, global_tokens)
        pyramid = self.seg_connector([taps[i] for i in cfg.seg_encoder.connector_layers])
        return ImageFeatures(torch.cat(parts, dim=1), region_grid, pyramid)

    def _unpooled_seg_grid(self, tap: torch.Tensor) -> torch.Tensor:
        """Seg tokens at full grid resolution for the region sampler of a token-pooled model."""
        cfg = self.config
        proj = self.seg_projector
        x = tap
        if proj.config.downsample_ratio != 1:
            x = pixel_shuffle(x, proj.config.downsample_ratio)
        b, g, _, _ = x.shape
        tokens = proj.model(x.reshape(b, g * g, -1))  # (B, G·G, H_llm)
        return tokens.transpose(1, 2).reshape(b, -1, cfg.seg_token_grid, cfg.seg_token_grid)

    def decoder_inputs(self, pyramid: list[torch.Tensor]) -> DecoderInputs:
        """Pixel decoder over the connector pyramid (once per image)."""
        mask_features, memory = self.segmentor.pixel_decoder(pyramid)
        return DecoderInputs(mask_features, memory)

    def region_tokens(
        self,
        region_grid: torch.Tensor,
        masks: torch.Tensor,
        sampler: str | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One LLM-space token per prompt mask.

        Args:
            region_grid (torch.Tensor): (1, H_llm, G, G).
            masks (torch.Tensor): (K, S, S) letterboxed prompt masks.
            sampler (str | None): ``random`` (upstream) or ``grid`` (deterministic); default from config.
            generator (torch.Generator | None): seeds the random sampler.

        Returns:
            torch.Tensor: (K, H_llm).
        """
        sampler = sampler or self.config.region_sampler
        if sampler == "random":
            return sample_regions_random(region_grid[0], masks, self.config.region_points, generator)
        return sample_regions_grid(region_grid, masks[None])[0]

    # -- language side -------------------------------------------------------------------------
    def embed_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings for (B, T) ids; placeholders (negative ids) embed as id 0, replaced later."""
        return self.llm.get_input_embeddings()(input_ids.clamp(min=0))

    def splice(
        self, input_ids: torch.Tensor, image_tokens: torch.Tensor, region_tokens: torch.Tensor | None
    ) -> torch.Tensor:
        """Input embeddings with image and region tokens put in place of their placeholders.

        Args:
            input_ids (torch.Tensor): (T,) ids where the image span is N_img consecutive ``IMAGE_TOKEN_ID``
                and each region is one ``REGION_TOKEN_ID`` (see ``expand_image_placeholder``).
            image_tokens (torch.Tensor): (N_img, H_llm).
            region_tokens (torch.Tensor | None): (K, H_llm) in order of appearance.

        Returns:
            torch.Tensor: (T, H_llm).
        """
        embeds = self.embed_ids(input_ids)
        image_slots = input_ids == IMAGE_TOKEN_ID
        region_slots = input_ids == REGION_TOKEN_ID
        n_image = int(image_slots.sum())
        if n_image not in (0, image_tokens.shape[0]):
            raise ValueError(f"{n_image} image slots for {image_tokens.shape[0]} image tokens")
        embeds = embeds.clone()
        if n_image:  # a request's own tokens, after the cached image prefix, hold no image span
            embeds[image_slots] = image_tokens.to(embeds.dtype)
        if int(region_slots.sum()):
            if region_tokens is None or region_tokens.shape[0] != int(region_slots.sum()):
                raise ValueError("the prompt's <region> count differs from the number of visual prompts")
            embeds[region_slots] = region_tokens.to(embeds.dtype)
        return embeds

    def llm_hidden(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Final post-norm hidden states of the LLM (no lm_head: tensor mode never samples).

        Args:
            inputs_embeds (torch.Tensor): (B, T, H_llm).

        Returns:
            torch.Tensor: (B, T, H_llm).
        """
        out = self.llm.model(inputs_embeds=inputs_embeds, use_cache=False)
        return out.last_hidden_state

    def condition_embeds(
        self, hidden: torch.Tensor, spans: list[tuple[int, int]], seg_position: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Project hidden states to decoder space; average each ``<p>…</p>`` span; read ``<SEG>``.

        Args:
            hidden (torch.Tensor): (T, H_llm) one sequence's last hidden states.
            spans (list[tuple[int, int]]): inclusive (start, end) positions of the phrase spans.
            seg_position (int): position where ``<SEG>`` is the input token.

        Returns:
            tuple[torch.Tensor, torch.Tensor]: cond (C, D) and seg (D,).
        """
        projected = self.llm_projector(hidden)  # (T, D)
        cond = torch.stack([projected[s : e + 1].mean(dim=0) for s, e in spans])  # (C, D)
        return cond, projected[seg_position]

    # -- decoder -------------------------------------------------------------------------------
    def decode(
        self,
        inputs: DecoderInputs,
        seg_embed: torch.Tensor,
        cond: torch.Tensor,
        cond_valid: torch.Tensor,
        all_layers: bool = False,
    ) -> tuple[torch.Tensor, DecoderOutput]:
        """Masked-attention decoder conditioned on the LLM, and the open-vocabulary class head.

        Args:
            inputs (DecoderInputs): mask features (B, D, m, m) and memory from ``decoder_inputs``.
            seg_embed (torch.Tensor): (B, D) the ``<SEG>`` embedding, added to every query.
            cond (torch.Tensor): (B, C, D) condition (class) embeddings.
            cond_valid (torch.Tensor): (B, C) bool, False for padded slots.
            all_layers (bool): also return every intermediate prediction (deep supervision).

        Returns:
            tuple[torch.Tensor, DecoderOutput]: class logits (B, Q, C+1) of the final layer (last column is
            background) and the decoder output (mask logits (B, Q, m, m)).
        """
        out = self.segmentor.decoder(inputs.memory, inputs.mask_features, seg_embed, all_layers=all_layers)
        logits = self.class_logits(out.queries, cond, cond_valid)
        return logits, out

    def class_logits(
        self, queries: torch.Tensor, cond: torch.Tensor, cond_valid: torch.Tensor
    ) -> torch.Tensor:
        """Cosine class head against the conditions plus the learned background embedding."""
        return cosine_class_logits(
            queries,
            cond,
            cond_valid,
            self.bg_embeds.weight[0],
            self.segmentor.logit_scale,
            self.config.decoder.logit_clamp,
        )
