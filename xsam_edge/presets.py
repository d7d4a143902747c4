"""Named configs. One mapping, exact names only: an unknown name lists the known ones."""

from __future__ import annotations

from xsam_edge.config import (
    ConnectorConfig,
    DecoderConfig,
    GlobalEncoderConfig,
    LLMConfig,
    SegEncoderConfig,
    TokenConfig,
    XSamConfig,
)

# The released model (XSAM.md §1): Phi-3-mini-4k + SigLIP2-so400m/14@384 + SAM ViT-L@1024 + M2F decoder.
X_SAM_PHI3 = XSamConfig(name="x-sam-phi3")

# Same architecture, every width tiny: unit tests run every task in seconds.
TINY = XSamConfig(
    llm=LLMConfig(
        family="phi3",
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=4,
        max_position_embeddings=512,
        sliding_window=None,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    ),
    global_encoder=GlobalEncoderConfig(
        image_size=56, patch_size=14, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2
    ),
    seg_encoder=SegEncoderConfig(
        image_size=128,
        patch_size=16,
        hidden_size=32,
        intermediate_size=64,
        num_layers=4,
        num_heads=2,
        window_size=4,
        global_attn_indexes=(1, 3),
        output_channels=16,
        projector_layer=3,
        connector_layers=(2, 3, 4),
    ),
    connector=ConnectorConfig(in_channels=32, hidden_size=16),
    decoder=DecoderConfig(
        hidden_dim=32,
        num_queries=10,
        num_heads=4,
        encoder_layers=2,
        encoder_ffn_dim=64,
        decoder_layers=4,
        decoder_ffn_dim=64,
        mask_feature_size=32,
    ),
    tokens=TokenConfig(builtin_tokenizer="tiny"),
    region_points=64,
    name="tiny",
)

# The embedded default's teacher: X-SAM architecture small enough to train on 2 CPU cores in minutes on the
# procedural "shapes" suite (xsam_edge.data.shapes), with the project's word-level tokenizer.
SHAPES_TEACHER = XSamConfig(
    llm=LLMConfig(
        family="phi3",
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_layers=2,
        num_heads=4,
        num_kv_heads=4,
        max_position_embeddings=512,
        sliding_window=None,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    ),
    global_encoder=GlobalEncoderConfig(
        image_size=64, patch_size=16, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2
    ),
    seg_encoder=SegEncoderConfig(
        image_size=128,
        patch_size=8,
        hidden_size=96,
        intermediate_size=192,
        num_layers=4,
        num_heads=4,
        window_size=8,
        global_attn_indexes=(1, 3),
        output_channels=32,
        projector_layer=3,
        connector_layers=(2, 3, 4),
    ),
    connector=ConnectorConfig(in_channels=96, hidden_size=64),
    decoder=DecoderConfig(
        hidden_dim=64,
        num_queries=16,
        num_heads=4,
        encoder_layers=2,
        encoder_ffn_dim=128,
        decoder_layers=4,
        decoder_ffn_dim=128,
        mask_feature_size=64,
    ),
    tokens=TokenConfig(builtin_tokenizer="tiny"),
    region_points=64,
    name="shapes-teacher",
)

PRESETS: dict[str, XSamConfig] = {
    "x-sam-phi3": X_SAM_PHI3,
    "tiny": TINY,
    "shapes-teacher": SHAPES_TEACHER,
}


def get_preset(name: str) -> XSamConfig:
    """The config registered under ``name``.

    Raises:
        ValueError: the name is not registered; the message lists the known names.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}") from None
