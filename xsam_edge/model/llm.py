"""The language model: any transformers causal-LM family, built from a config (no download)."""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from xsam_edge.spec.config import LLMConfig


def hf_llm_config(config: LLMConfig) -> PretrainedConfig:
    """The transformers config of ``config.family`` with our sizes."""
    kwargs = dict(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        max_position_embeddings=config.max_position_embeddings,
        rms_norm_eps=config.rms_norm_eps,
        tie_word_embeddings=config.tie_word_embeddings,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
    )
    if config.family == "phi3":
        kwargs["sliding_window"] = config.sliding_window
        kwargs["original_max_position_embeddings"] = config.max_position_embeddings
    if config.family in ("qwen3",):
        kwargs["head_dim"] = config.head_dim
    hf_config = AutoConfig.for_model(config.family, **kwargs)
    # eager-equivalent SDPA attention: exportable, no flash-attn (the upstream training kernel)
    hf_config._attn_implementation = "sdpa"
    return hf_config


def build_llm(config: LLMConfig) -> PreTrainedModel:
    """A randomly initialised causal LM (``llm.model.*``, ``llm.lm_head.*`` keys as upstream)."""
    model = AutoModelForCausalLM.from_config(hf_llm_config(config))
    model.generation_config.use_cache = True
    return model
