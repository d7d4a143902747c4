"""Can a teacher and a student be distilled into each other, and the adapters between their feature widths.

Checks run before any training step, so a pair that cannot work fails with a message that says what to change
instead of a shape error deep inside a loss.
"""

from __future__ import annotations

import torch
from torch import nn

from xsam_edge.distill.config import DistillConfig
from xsam_edge.spec.config import XSamConfig
from xsam_edge.spec.tokenizer import XSamTokenizer


def same_tokenizer(a: XSamTokenizer, b: XSamTokenizer) -> bool:
    """Same vocabulary (ids included), special tokens and chat template: ids mean the same thing."""
    return (
        a.backend.get_vocab(with_added_tokens=True) == b.backend.get_vocab(with_added_tokens=True)
        and a.tokens == b.tokens
    )


def check_pair(
    teacher: XSamConfig,
    student: XSamConfig,
    teacher_tokenizer: XSamTokenizer,
    student_tokenizer: XSamTokenizer,
    config: DistillConfig,
) -> None:
    """Refuse a pair the configured losses cannot compare.

    Raises:
        ValueError: the decoder widths differ without ``decoder_adapter``; logit KD is on but the tokenizers
            differ; the feature loss is on but the pyramids have different level counts; a tokenizer does not
            fit its LLM.
    """
    problems = []
    d_t, d_s = teacher.decoder.hidden_dim, student.decoder.hidden_dim
    if d_t != d_s and not config.decoder_adapter:
        problems.append(
            f"the student's decoder width {d_s} differs from the teacher's {d_t}: the <p>…</p>/<SEG> "
            "embeddings and decoder features live in that space. Give the student hidden_dim "
            f"{d_t}, or learn linear adapters with decoder_adapter=True (--decoder-adapter)"
        )
    if config.on("logit") and not same_tokenizer(teacher_tokenizer, student_tokenizer):
        problems.append(
            "logit KD needs the teacher's tokenizer, but the student's differs (vocabulary, special tokens "
            "or template); drop 'logit' from the losses (the 256-d embedding and output losses still apply)"
        )
    if config.on("feature") and teacher.decoder.num_feature_levels != student.decoder.num_feature_levels:
        problems.append(
            f"the feature loss pairs pyramid levels one to one, but the teacher has "
            f"{teacher.decoder.num_feature_levels} and the student {student.decoder.num_feature_levels}"
        )
    for who, cfg, tok in (("teacher", teacher, teacher_tokenizer), ("student", student, student_tokenizer)):
        if len(tok) > cfg.llm.vocab_size:
            problems.append(
                f"the {who} tokenizer has {len(tok)} tokens but its LLM embeds {cfg.llm.vocab_size}"
            )
    if problems:
        raise ValueError(f"cannot distil {teacher.name!r} into {student.name!r}:\n- " + "\n- ".join(problems))


class ChannelAdapter(nn.Module):
    """A learned linear map over the channel axis of (B, C, H, W) maps or (..., C) vectors."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor, channels_first: bool = False) -> torch.Tensor:
        """Map channels; ``channels_first`` for (B, C, H, W) maps."""
        if channels_first:
            return self.linear(x.movedim(1, -1)).movedim(-1, 1)
        return self.linear(x)


def _adapter(in_features: int, out_features: int) -> nn.Module:
    # equal widths compare directly: the student's features can then feed modules copied from the teacher
    return nn.Identity() if in_features == out_features else ChannelAdapter(in_features, out_features)


class Adapters(nn.Module):
    """Student → teacher feature maps where widths differ (identity where they agree); trained, not exported.

    Attributes:
        tokens: LLM space (image tokens and the region grid), H_llm student → teacher.
        pyramid: one per connector level, channels student → teacher.
        mask_features: the pixel decoder's mask features.
        decoder: decoder space (memory, condition and ``<SEG>`` embeddings), only with ``decoder_adapter``.
    """

    def __init__(self, teacher: XSamConfig, student: XSamConfig) -> None:
        super().__init__()
        self.tokens = _adapter(student.llm.hidden_size, teacher.llm.hidden_size)
        self.pyramid = nn.ModuleList(
            _adapter(s, t)
            for s, t in zip(student.connector.out_channels, teacher.connector.out_channels, strict=False)
        )
        self.mask_features = _adapter(student.decoder.mask_feature_size, teacher.decoder.mask_feature_size)
        self.decoder = _adapter(student.decoder.hidden_dim, teacher.decoder.hidden_dim)


def adapt(module: nn.Module, x: torch.Tensor, channels_first: bool = False) -> torch.Tensor:
    """Apply an adapter (identity or :class:`ChannelAdapter`)."""
    if isinstance(module, ChannelAdapter):
        return module(x, channels_first)
    return x
