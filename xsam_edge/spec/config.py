"""The X-SAM config tree: every size of the model as a value.

Derived sizes (projector widths, token counts, connector channels) are properties, never typed twice.
This module imports no torch, so the runtime, the benchmarks and a bundle-only install can read configs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class LLMConfig:
    """A decoder-only causal LM built from a transformers config (no download).

    Args:
        family (str): transformers ``model_type`` of the LM: ``phi3``, ``qwen2``, ``qwen3`` or ``llama``.
        vocab_size (int): embedding rows, including the three added tokens ``<SEG>``, ``<p>``, ``</p>``.
        sliding_window (int | None): Phi-3's local-attention window; ``None`` means full attention.
    """

    family: str = "phi3"
    vocab_size: int = 32014
    hidden_size: int = 3072
    intermediate_size: int = 8192
    num_layers: int = 32
    num_heads: int = 32
    num_kv_heads: int = 32
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    sliding_window: int | None = 2047
    tie_word_embeddings: bool = False
    bos_token_id: int = 1
    eos_token_id: int = 32000
    pad_token_id: int = 32000

    def __post_init__(self) -> None:
        if self.family not in LLM_FAMILIES:
            raise ValueError(f"unknown LLM family {self.family!r}; known: {sorted(LLM_FAMILIES)}")
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} must divide by num_heads {self.num_heads}, "
                f"and num_heads by num_kv_heads {self.num_kv_heads}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


LLM_FAMILIES = ("phi3", "qwen2", "qwen3", "llama")


@dataclass(frozen=True)
class GlobalEncoderConfig:
    """SigLIP vision tower; X-SAM reads ``hidden_states[select_layer]`` (before the post-LN)."""

    image_size: int = 384
    patch_size: int = 14
    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_layers: int = 27
    num_heads: int = 16
    select_layer: int = -2
    layer_norm_eps: float = 1e-6
    use_head: bool = True  # the MAP head is in the checkpoint but never run
    pad_to_square: bool = True  # eval convention (XSAM.md §3): pad with the mean colour first

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.grid_size**2

    @property
    def layers_run(self) -> int:
        """Blocks that must run to produce ``hidden_states[select_layer]``."""
        return self.select_layer % (self.num_layers + 1)


# The seg encoder's architectures (xsam_edge.model.build maps each to its module).
SEG_ENCODER_KINDS = ("sam-vit", "conv")


@dataclass(frozen=True)
class SegEncoderConfig:
    """The fine-grained image encoder: SAM's ViT, or for students a cheaper conv hybrid with the same taps.

    The ViT runs its vision tower only (the neck is kept for the checkpoint but not run).

    ``projector_layer`` and ``connector_layers`` index the ``hidden_states`` tuple of 1 + num_layers
    entries ([0] is the patch embedding, [i] the output of block i-1).

    ``kind`` "conv" (``xsam_edge.model.conv_seg_encoder``): a strided-conv stem down to the same
    ``patch_size`` grid, then ``num_layers`` depthwise-conv blocks, those in ``global_attn_indexes`` with
    global attention instead (EfficientViT-SAM / EdgeSAM manner); ``window_size`` is not used.
    """

    kind: str = "sam-vit"

    image_size: int = 1024
    patch_size: int = 16
    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_layers: int = 24
    num_heads: int = 16
    window_size: int = 14
    global_attn_indexes: tuple[int, ...] = (5, 11, 17, 23)
    output_channels: int = 256
    projector_layer: int = 23
    connector_layers: tuple[int, ...] = (12, 18, 24)
    layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        last = self.num_layers
        for layer in (self.projector_layer, *self.connector_layers):
            if not 0 < layer <= last:
                raise ValueError(f"SAM tap {layer} outside hidden_states 1..{last}")
        if self.kind not in SEG_ENCODER_KINDS:
            raise ValueError(f"unknown seg encoder kind {self.kind!r}; known: {list(SEG_ENCODER_KINDS)}")
        if self.kind == "conv" and (self.patch_size < 2 or self.patch_size & (self.patch_size - 1)):
            raise ValueError(
                f"a conv seg encoder downsamples by 2 per stem layer: patch_size must be a "
                f"power of two >= 2, got {self.patch_size}"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"seg encoder hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}"
            )

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def layers_run(self) -> int:
        return max(self.projector_layer, *self.connector_layers)


@dataclass(frozen=True)
class ProjectorConfig:
    """``DynamicProjectorModel``: optional pixel-unshuffle, then Linear → GELU → Linear.

    ``pool`` > 1 average-pools the token grid first (a student lever: fewer image tokens).
    """

    in_features: int
    out_features: int
    downsample_ratio: float = 1.0
    pool: int = 1

    @property
    def unshuffled_features(self) -> int:
        factor = round(1 / self.downsample_ratio)
        return self.in_features * factor * factor


@dataclass(frozen=True)
class ConnectorConfig:
    """Conv connector: one branch per SAM tap, pixel-(un)shuffle by ``scale_factors`` to a pyramid."""

    in_channels: int = 1024
    hidden_size: int = 512
    scale_factors: tuple[float, ...] = (2.0, 1.0, 0.5)
    bias: bool = False  # XSAM.md §1.4: the released connector convs have no bias

    @property
    def out_channels(self) -> tuple[int, ...]:
        """Channels after the shuffle, finest level first: [512, 1024, 2048] for SAM-L."""
        return tuple(round(self.in_channels / s) for s in self.scale_factors)


@dataclass(frozen=True)
class DecoderConfig:
    """Mask2Former-style pixel decoder + masked-attention transformer decoder."""

    hidden_dim: int = 256
    num_queries: int = 200
    num_heads: int = 8
    encoder_layers: int = 6
    encoder_ffn_dim: int = 1024
    decoder_layers: int = 10  # counted as upstream: 1 initial prediction + 9 masked-attention layers
    decoder_ffn_dim: int = 2048
    num_feature_levels: int = 3
    num_points: int = 4
    mask_feature_size: int = 256
    logit_scale_init: float = 2.6592600345611572  # log(1 / 0.07)
    logit_clamp: float = 500.0

    @property
    def num_masked_layers(self) -> int:
        return self.decoder_layers - 1


@dataclass(frozen=True)
class TokenConfig:
    """Special tokens and the chat template the LLM was trained with."""

    seg: str = "<SEG>"
    phrase_start: str = "<p>"
    phrase_end: str = "</p>"
    image: str = "<image>"
    region: str = "<region>"
    template: str = "phi3_chat"
    add_bos: bool = True  # eval convention; the upstream demo omits BOS
    builtin_tokenizer: str | None = None  # "tiny": the word-level tokenizer shipped in xsam_edge/assets

    @property
    def added(self) -> tuple[str, str, str]:
        return (self.seg, self.phrase_start, self.phrase_end)


@dataclass(frozen=True)
class XSamConfig:
    """The whole model. ``name`` is the preset it came from (informational only)."""

    llm: LLMConfig = field(default_factory=LLMConfig)
    global_encoder: GlobalEncoderConfig | None = field(default_factory=GlobalEncoderConfig)
    seg_encoder: SegEncoderConfig = field(default_factory=SegEncoderConfig)
    connector: ConnectorConfig = field(default_factory=ConnectorConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    tokens: TokenConfig = field(default_factory=TokenConfig)
    seg_projector_downsample: float = 0.5
    visual_pool: int = 1
    seg_pool: int = 1
    region_sampler: str = "random"  # "random": upstream 256-point max-pool; "grid": deterministic
    region_points: int = 256
    name: str = "custom"

    def __post_init__(self) -> None:
        if self.connector.in_channels != self.seg_encoder.hidden_size:
            raise ValueError(
                f"connector.in_channels {self.connector.in_channels} != seg_encoder.hidden_size "
                f"{self.seg_encoder.hidden_size}"
            )
        if len(self.connector.scale_factors) != self.decoder.num_feature_levels:
            raise ValueError("one connector branch per decoder feature level is required")
        if len(self.seg_encoder.connector_layers) != len(self.connector.scale_factors):
            raise ValueError("one SAM tap per connector branch is required")
        if self.region_sampler not in ("random", "grid"):
            raise ValueError(f"region_sampler must be 'random' or 'grid', got {self.region_sampler!r}")

    # -- derived sizes -------------------------------------------------------------------------
    @property
    def visual_projector(self) -> ProjectorConfig | None:
        if self.global_encoder is None:
            return None
        return ProjectorConfig(self.global_encoder.hidden_size, self.llm.hidden_size, pool=self.visual_pool)

    @property
    def seg_projector(self) -> ProjectorConfig:
        return ProjectorConfig(
            self.seg_encoder.hidden_size,
            self.llm.hidden_size,
            downsample_ratio=self.seg_projector_downsample,
            pool=self.seg_pool,
        )

    @property
    def llm_projector(self) -> ProjectorConfig:
        return ProjectorConfig(self.llm.hidden_size, self.decoder.hidden_dim)

    @property
    def seg_token_grid(self) -> int:
        """Side of the seg_projector's token grid (32 for SAM-L at 1024): also the region grid."""
        return round(self.seg_encoder.grid_size * self.seg_projector_downsample)

    @property
    def num_global_tokens(self) -> int:
        if self.global_encoder is None:
            return 0
        return (self.global_encoder.grid_size // self.visual_pool) ** 2

    @property
    def num_seg_tokens(self) -> int:
        return (self.seg_token_grid // self.seg_pool) ** 2

    @property
    def num_image_tokens(self) -> int:
        """LLM tokens that replace ``<image>``: 729 + 1024 = 1753 for the released model."""
        return self.num_global_tokens + self.num_seg_tokens

    @property
    def mask_resolution(self) -> int:
        """Side of the decoder's mask logits: the finest pyramid level (128 for 1024 input)."""
        return round(self.seg_encoder.grid_size * self.connector.scale_factors[0])

    @property
    def max_text_tokens(self) -> int:
        """Room left for text in the context after the image tokens."""
        return self.llm.max_position_embeddings - self.num_image_tokens - 1

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> XSamConfig:
        """Rebuild a config from ``to_dict`` output, checked before anything is built.

        Every section must be there (a missing one never falls back to the full-size defaults), every value
        of the type its field declares, every size within ``SIZE_LIMITS``.

        Raises:
            ValueError: not a config, a missing section, an unknown field, a wrong type or size, or a newer
                schema; the message names the field.
        """
        check_config_dict(data)
        data = dict(data)
        data.pop("schema_version", None)
        return _build(cls, data)


# Sections a stored config must hold: without them a config would silently mean the full-size model.
REQUIRED_SECTIONS = ("llm", "global_encoder", "seg_encoder", "connector", "decoder", "tokens")
# Bounds on integer fields (inclusive): far beyond any real X-SAM variant, so a bad or hostile file is refused
# before it can ask for terabytes. Fields not listed take the default range.
SIZE_LIMITS: dict[str, tuple[int, int]] = {
    "vocab_size": (1, 1 << 20),
    "hidden_size": (1, 1 << 15),
    "intermediate_size": (1, 1 << 17),
    "num_layers": (1, 512),
    "num_heads": (1, 1024),
    "num_kv_heads": (1, 1024),
    "max_position_embeddings": (1, 1 << 20),
    "image_size": (8, 8192),
    "patch_size": (1, 512),
    "window_size": (0, 1024),
    "output_channels": (1, 1 << 15),
    "num_queries": (1, 1 << 14),
    "encoder_layers": (0, 128),
    "decoder_layers": (1, 128),
    "encoder_ffn_dim": (1, 1 << 17),
    "decoder_ffn_dim": (1, 1 << 17),
    "mask_feature_size": (1, 1 << 15),
    "region_points": (1, 1 << 16),
    "visual_pool": (1, 64),
    "seg_pool": (1, 64),
    "num_points": (1, 64),
    "num_feature_levels": (1, 8),
}
DEFAULT_LIMITS = (-(1 << 20), 1 << 31)


def check_config_dict(data: Any, where: str = "config") -> None:
    """Check a stored config's structure, types and sizes (``XSamConfig.from_dict`` calls it).

    Raises:
        ValueError: the first problem found, with its field path.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a JSON object of config sections, got {type(data).__name__}")
    version = data.get("schema_version", SCHEMA_VERSION)
    if type(version) is not int or version < 1:
        raise ValueError(f"{where}.schema_version must be a positive integer, got {version!r:.40}")
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"{where} schema version {version} is newer than this xsam_edge understands ({SCHEMA_VERSION}); "
            "upgrade xsam_edge"
        )
    missing = [s for s in REQUIRED_SECTIONS if s not in data]
    if missing:
        raise ValueError(f"{where} has no {', '.join(missing)} section; save the model with save_pretrained")
    _check_fields(XSamConfig, {k: v for k, v in data.items() if k != "schema_version"}, where)
    tokens = data["tokens"]
    markers = [tokens.get(k, "?") for k in ("seg", "phrase_start", "phrase_end", "image", "region")]
    if not all(markers) or len(set(markers)) != len(markers):
        raise ValueError(
            f"{where}.tokens: the special-token spellings must be distinct and non-empty: {markers}"
        )


def _check_fields(cls: type, data: Any, where: str) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown} in {where}; known: {sorted(known)}")
    for name, value in data.items():
        _check_value(name, hints[name], value, f"{where}.{name}")


def _check_value(name: str, hint: Any, value: Any, where: str) -> None:
    """``value`` against the field's annotation: int, float, bool, str, a tuple of them, a section, None."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        _check_fields(hint, value, where)
    elif origin is tuple:
        if not isinstance(value, list | tuple) or len(value) > 64:
            raise ValueError(f"{where} must be a list of at most 64 values, got {value!r:.80}")
        for i, item in enumerate(value):
            _check_value(name, args[0], item, f"{where}[{i}]")
    elif hint is bool:
        if type(value) is not bool:
            raise ValueError(f"{where} must be true or false, got {value!r:.80}")
    elif hint is int:
        low, high = SIZE_LIMITS.get(name, DEFAULT_LIMITS)
        if type(value) is not int or not low <= value <= high:
            raise ValueError(f"{where} must be an integer in [{low}, {high}], got {value!r:.80}")
    elif hint is float:
        if type(value) not in (int, float) or not math.isfinite(value):
            raise ValueError(f"{where} must be a finite number, got {value!r:.80}")
    elif hint is str:
        if not isinstance(value, str) or len(value) > 256:
            raise ValueError(f"{where} must be a string of at most 256 characters, got {value!r:.80}")


def _build(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a (nested) frozen dataclass from checked ``asdict`` output, lists back into tuples."""
    kwargs: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        hint = hints[name]
        section = next(
            (
                a
                for a in (hint, *typing.get_args(hint))
                if isinstance(a, type) and dataclasses.is_dataclass(a)
            ),
            None,
        )
        if section is not None and isinstance(value, dict):
            value = _build(section, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)
