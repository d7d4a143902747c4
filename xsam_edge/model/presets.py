"""Named configs. One mapping, exact names only: an unknown name lists the known ones."""

from __future__ import annotations

import dataclasses

from xsam_edge.spec.config import (
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

# Same architecture, every width tiny: unit tests run every task in seconds. The word-level tokenizer's
# 512-word vocabulary and ids replace Phi-3's.
TINY = XSamConfig(
    llm=dataclasses.replace(
        X_SAM_PHI3.llm,
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=4,
        max_position_embeddings=512,
        sliding_window=None,
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

# The embedded default's teacher: tiny's layout at widths a 2-core CPU still trains in minutes on the
# procedural "shapes" suite (xsam_edge.data.shapes), with the project's word-level tokenizer.
SHAPES_TEACHER = dataclasses.replace(
    TINY,
    llm=dataclasses.replace(TINY.llm, hidden_size=128, intermediate_size=256),
    global_encoder=dataclasses.replace(
        TINY.global_encoder, image_size=64, patch_size=16, hidden_size=64, intermediate_size=128
    ),
    seg_encoder=dataclasses.replace(
        TINY.seg_encoder,
        patch_size=8,
        hidden_size=96,
        intermediate_size=192,
        num_heads=4,
        window_size=8,
        output_channels=32,
    ),
    connector=ConnectorConfig(in_channels=96, hidden_size=64),
    decoder=dataclasses.replace(
        TINY.decoder,
        hidden_dim=64,
        num_queries=32,  # 16 before 2026-12-05: 32 gave better masks, instance AP and referring
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        mask_feature_size=64,
    ),
    name="shapes-teacher",
)

# -- students (xsam_edge.distill) ------------------------------------------------------------------------
# A student keeps the teacher's decoder width (the 256-d space, here 64-d, where the LLM's <p>…</p> and <SEG>
# embeddings meet the decoder), so its pruned decoder starts from the teacher's weights and the embeddings
# distil without an adapter. Everything else shrinks.

# Student of shapes-teacher: ≥ 5× fewer MACs per referring query (`xsam-edge info`). The image side dominates
# the teacher's cost (seg encoder + connector + pixel decoder ≈ 80 %), so the seg encoder is narrower and
# shallower, and the connector's scale factors (1, 1/2, 1/4) instead of (2, 1, 1/2) halve the pyramid's side:
# the pixel decoder runs on 4× fewer tokens (masks at 16² instead of 32²). The connector's output channels
# (48, 96, 192) equal the teacher's, so the pixel decoder's input projections copy over. The LLM is half as
# wide and sees 32 image tokens instead of 80 (2×2 pooled seg tokens).
SHAPES_STUDENT = dataclasses.replace(
    SHAPES_TEACHER,
    llm=dataclasses.replace(SHAPES_TEACHER.llm, hidden_size=64, intermediate_size=128),
    global_encoder=dataclasses.replace(SHAPES_TEACHER.global_encoder, hidden_size=32, intermediate_size=64),
    seg_encoder=dataclasses.replace(
        SHAPES_TEACHER.seg_encoder,
        hidden_size=48,
        intermediate_size=96,
        num_layers=3,
        num_heads=2,
        global_attn_indexes=(2,),
        projector_layer=2,
        connector_layers=(1, 2, 3),
    ),
    connector=ConnectorConfig(in_channels=48, hidden_size=24, scale_factors=(1.0, 0.5, 0.25)),
    decoder=dataclasses.replace(
        SHAPES_TEACHER.decoder,
        num_queries=12,
        encoder_layers=1,
        encoder_ffn_dim=64,
        decoder_layers=3,
        decoder_ffn_dim=64,
    ),
    seg_pool=2,
    name="shapes-student",
)

# shapes-student with 16 queries and 4 layers (the teacher's decoder size before it went to 32 queries;
# 5.46x fewer MACs than the 32-query teacher, 5.32x against the 16-query one): more of the teacher's decoder
# survives pruning, which instance and visual-grounded AP need. The student of the measured >= 95 %-of-the-
# teacher runs (docs/results/distillation.md; measured against the 16-query teacher).
SHAPES_STUDENT_Q16L4 = dataclasses.replace(
    SHAPES_STUDENT,
    decoder=dataclasses.replace(SHAPES_STUDENT.decoder, num_queries=16, decoder_layers=4),
    name="shapes-student-q16l4",
)

# Student of `tiny` for fast distillation tests (same decoder width, everything else smaller).
TINY_STUDENT = dataclasses.replace(
    TINY,
    llm=dataclasses.replace(
        TINY.llm, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=2
    ),
    global_encoder=dataclasses.replace(TINY.global_encoder, hidden_size=16, intermediate_size=32),
    seg_encoder=dataclasses.replace(
        TINY.seg_encoder,
        hidden_size=16,
        intermediate_size=32,
        num_layers=3,
        global_attn_indexes=(2,),
        output_channels=8,
        projector_layer=2,
        connector_layers=(1, 2, 3),
    ),
    connector=ConnectorConfig(in_channels=16, hidden_size=8),
    decoder=dataclasses.replace(TINY.decoder, num_queries=6, encoder_layers=1, decoder_layers=3),
    seg_pool=2,
    name="tiny-student",
)

# Students of the released x-sam-phi3 (XSAM.md §1): ≤ 0.6 B LLM, ≤ 30 M per encoder, 208 image tokens instead
# of 1753 (SigLIP-S/16 tokens 2×2 pooled: 144; SAM tokens 4×4 pooled: 64), decoder width 256 as the teacher.
# Phi-3's tokenizer and template, a 0.24 B Phi-3-shaped LLM with GQA: logit KD from x-sam-phi3 applies.
X_SAM_STUDENT_S = dataclasses.replace(
    X_SAM_PHI3,
    llm=dataclasses.replace(
        X_SAM_PHI3.llm, hidden_size=1024, intermediate_size=2816, num_layers=16, num_heads=16, num_kv_heads=4
    ),
    global_encoder=GlobalEncoderConfig(
        image_size=384, patch_size=16, hidden_size=384, intermediate_size=1536, num_layers=12, num_heads=6
    ),
    # a ViT-S SAM encoder; taps after the global-attention blocks as upstream (hidden_states[6], [9], [12])
    seg_encoder=dataclasses.replace(
        X_SAM_PHI3.seg_encoder,
        hidden_size=384,
        intermediate_size=1536,
        num_layers=12,
        num_heads=6,
        global_attn_indexes=(2, 5, 8, 11),
        projector_layer=11,
        connector_layers=(6, 9, 12),
    ),
    connector=dataclasses.replace(X_SAM_PHI3.connector, in_channels=384, hidden_size=256),
    decoder=dataclasses.replace(
        X_SAM_PHI3.decoder,
        num_queries=100,
        encoder_layers=3,
        encoder_ffn_dim=512,
        decoder_layers=7,
        decoder_ffn_dim=1024,
    ),
    visual_pool=2,
    seg_pool=4,
    name="x-sam-student-s",
)

# x-sam-student-s with a cheap seg encoder (#35 item 5): the ViT-S's global attention over 4,096 tokens was
# most of its 151 GMACs. A conv stem down to the same 64² grid, then 12 depthwise 7×7 blocks at width 384 with
# a 2× FFN and no attention: 38 GMACs and 8 M parameters; 166 GMACs per referring query instead of 278. The
# taps the connector, projector and region sampler read keep their shapes. Chosen on the embedded suite
# (research.seg_encoder_variants, docs/results/students.md): the pure-conv student scored as the ViT student
# did, and a global-attention block did not earn its MACs.
X_SAM_STUDENT_S_CONV = dataclasses.replace(
    X_SAM_STUDENT_S,
    seg_encoder=dataclasses.replace(
        X_SAM_STUDENT_S.seg_encoder, kind="conv", intermediate_size=768, global_attn_indexes=()
    ),
    name="x-sam-student-s-conv",
)

# Qwen2.5-0.5B shapes (0.49 B, tied embeddings): a pretrained small LM can be loaded into it. Its tokenizer is
# not Phi-3's, so only the 256-d embedding and output distillation apply (logit KD is refused).
X_SAM_STUDENT_QWEN2 = dataclasses.replace(
    X_SAM_STUDENT_S,
    llm=LLMConfig(
        family="qwen2",
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_layers=24,
        num_heads=14,
        num_kv_heads=2,
        max_position_embeddings=4096,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        sliding_window=None,
        tie_word_embeddings=True,
        bos_token_id=151643,
        eos_token_id=151645,
        pad_token_id=151643,
    ),
    tokens=TokenConfig(template="qwen_chat", add_bos=False),
    name="x-sam-student-qwen2-0.5b",
)

PRESETS: dict[str, XSamConfig] = {
    "x-sam-phi3": X_SAM_PHI3,
    "tiny": TINY,
    "shapes-teacher": SHAPES_TEACHER,
    "shapes-student": SHAPES_STUDENT,
    "shapes-student-q16l4": SHAPES_STUDENT_Q16L4,
    "tiny-student": TINY_STUDENT,
    "x-sam-student-s": X_SAM_STUDENT_S,
    "x-sam-student-s-conv": X_SAM_STUDENT_S_CONV,
    "x-sam-student-qwen2-0.5b": X_SAM_STUDENT_QWEN2,
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


def at_depth(config: XSamConfig, llm_layers: int = 2, encoder_layers: int = 3) -> XSamConfig:
    """``config`` at its real widths, token counts and resolutions but few layers.

    Tests and benchmarks use it to meet the scale bugs tiny presets hide (image-token counts, pooling, shape
    guards, cache sizes, memory) in seconds; the seg encoder keeps its window attention, with its last
    block global and the taps on the last blocks, as the full encoder places them.
    """
    if llm_layers < 1 or encoder_layers < 2:
        raise ValueError("at_depth needs at least 1 LLM layer and 2 encoder layers")
    n = encoder_layers
    seg = dataclasses.replace(
        config.seg_encoder,
        num_layers=n,
        global_attn_indexes=(n - 1,),
        projector_layer=n - 1,
        connector_layers=tuple(max(1, n - 2 + i) for i in range(3))[-3:],
    )
    return dataclasses.replace(
        config,
        llm=dataclasses.replace(config.llm, num_layers=llm_layers),
        global_encoder=dataclasses.replace(config.global_encoder, num_layers=n),
        seg_encoder=seg,
        decoder=dataclasses.replace(config.decoder, encoder_layers=1, decoder_layers=2),
        name=f"{config.name}@{llm_layers}L",
    )
