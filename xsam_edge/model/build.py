"""One builder: a preset name or a config in, an ``XSam`` with random weights out."""

from __future__ import annotations

from xsam_edge.model.connector import Connector
from xsam_edge.model.conv_seg_encoder import ConvSegEncoder
from xsam_edge.model.global_encoder import GlobalEncoder
from xsam_edge.model.llm import build_llm
from xsam_edge.model.mask_decoder import MaskDecoder
from xsam_edge.model.pixel_decoder import PixelDecoder
from xsam_edge.model.presets import get_preset
from xsam_edge.model.projector import Projector
from xsam_edge.model.seg_encoder import SegEncoder
from xsam_edge.model.xsam import Segmentor, XSam
from xsam_edge.spec.config import SegEncoderConfig, XSamConfig

# SegEncoderConfig.kind → the module that implements it (each has ``forward_taps``)
SEG_ENCODERS = {"sam-vit": SegEncoder, "conv": ConvSegEncoder}


def build_seg_encoder(config: SegEncoderConfig) -> SegEncoder | ConvSegEncoder:
    """The seg encoder of ``config.kind`` (the config checks the kind is known)."""
    return SEG_ENCODERS[config.kind](config)


def build_model(config: XSamConfig | str) -> XSam:
    """Build every part from its config and inject them into the composite.

    Use ``with torch.device("meta"):`` around the call to instantiate the full-size model without memory.

    Args:
        config (XSamConfig | str): a config, or the name of a preset.

    Returns:
        XSam: randomly initialised (load weights with ``xsam_edge.model.checkpoint``).
    """
    if isinstance(config, str):
        config = get_preset(config)
    global_encoder = GlobalEncoder(config.global_encoder) if config.global_encoder is not None else None
    visual_projector = Projector(config.visual_projector) if config.visual_projector is not None else None
    segmentor = Segmentor(
        encoder=build_seg_encoder(config.seg_encoder),
        pixel_decoder=PixelDecoder(config.decoder, config.connector.out_channels),
        decoder=MaskDecoder(config.decoder),
        logit_scale_init=config.decoder.logit_scale_init,
    )
    return XSam(
        config,
        llm=build_llm(config.llm),
        visual_encoder=global_encoder,
        visual_projector=visual_projector,
        seg_projector=Projector(config.seg_projector),
        llm_projector=Projector(config.llm_projector),
        seg_connector=Connector(config.connector),
        segmentor=segmentor,
    )
