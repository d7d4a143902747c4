"""Structured decoder pruning: fewer queries, layers and FFN channels, weights copied from the teacher.

- Queries are ranked by how often the teacher's Hungarian matching assigns them to a ground-truth mask on
  training data (a query that is never matched only ever predicts "no object").
- Layers: the first layers are kept, so the kept ones still cycle over the memory levels in the order they
  were trained with (masked-attention layer i reads level i mod L). The same holds for the pixel decoder's
  deformable encoder layers.
- FFN channels of every kept layer are ranked by ‖fc1 row‖ · ‖fc2 column‖ (the channel's largest possible
  contribution) and the strongest are kept.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable

import torch

from xsam_edge.data.sample import Example
from xsam_edge.model.build import build_model
from xsam_edge.model.xsam import XSam
from xsam_edge.spec.config import DecoderConfig
from xsam_edge.spec.tokenizer import XSamTokenizer
from xsam_edge.training.collate import Collator
from xsam_edge.training.losses import SetLossConfig, hungarian_match
from xsam_edge.training.train import xsam_forward

log = logging.getLogger(__name__)

# sizes a pruned decoder must share with its source (they shape weights that are copied unchanged)
_FIXED = ("hidden_dim", "num_heads", "num_feature_levels", "num_points", "mask_feature_size")
_SHRINKABLE = ("num_queries", "decoder_layers", "decoder_ffn_dim", "encoder_layers", "encoder_ffn_dim")
# the tensors that make up "the decoder side": what a student takes from the teacher
# FFN weights of the masked-attention and deformable-encoder layers
_FFN_KEY = re.compile(r"^(segmentor\..*\.layers\.\d+)\.fc([12])\.(weight|bias)$")
DECODER_PREFIXES = ("segmentor.decoder.", "segmentor.pixel_decoder.", "segmentor.logit_scale", "bg_embeds.")


def decoder_problems(source: DecoderConfig, target: DecoderConfig) -> list[str]:
    """Why ``target`` is not a pruning of ``source`` (empty when it is)."""
    problems = [
        f"decoder {name} must stay {getattr(source, name)} to copy the teacher's weights, got "
        f"{getattr(target, name)}"
        for name in _FIXED
        if getattr(source, name) != getattr(target, name)
    ]
    problems += [
        f"decoder {name} {getattr(target, name)} exceeds the teacher's {getattr(source, name)} "
        "(pruning only shrinks; turn init_from_teacher off to train a larger decoder from scratch)"
        for name in _SHRINKABLE
        if getattr(target, name) > getattr(source, name)
    ]
    return problems


@torch.no_grad()
def query_usage(
    model: XSam,
    tokenizer: XSamTokenizer,
    examples: Iterable[Example],
    batch_size: int = 8,
    set_loss: SetLossConfig | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """How often each decoder query is matched to a ground-truth mask (final prediction, Hungarian).

    Args:
        model (XSam): the trained model.
        tokenizer (XSamTokenizer): its tokenizer.
        examples (Iterable[Example]): labelled examples; those without masks are skipped.
        batch_size (int): examples per forward.
        set_loss (SetLossConfig | None): matching costs (training defaults when ``None``).
        seed (int): point sampling and the region sampler.

    Returns:
        torch.Tensor: (Q,) int64 match counts.
    """
    cfg = set_loss or SetLossConfig()
    collate = Collator(model.config, tokenizer)
    gen = torch.Generator().manual_seed(seed)
    counts = torch.zeros(model.config.decoder.num_queries, dtype=torch.long)
    model.eval()
    chunk: list[Example] = []
    for example in examples:
        if len(example.target.masks):
            chunk.append(example)
        if len(chunk) == batch_size:
            _count(model, collate(chunk), counts, cfg, gen)
            chunk = []
    if chunk:
        _count(model, collate(chunk), counts, cfg, gen)
    return counts


def _count(model: XSam, batch, counts: torch.Tensor, cfg: SetLossConfig, gen: torch.Generator) -> None:
    out = xsam_forward(model, batch, gen, decode=True, all_layers=False)
    if not out.levels:
        return
    class_logits, mask_logits = out.levels[-1]
    for row, i in enumerate(out.segmented):
        points = torch.rand(cfg.num_points, 2, generator=gen)
        rows, _ = hungarian_match(
            class_logits[row], mask_logits[row], batch.gt_labels[i], batch.gt_masks[i], points, cfg
        )
        counts[rows] += 1


def _ffn_keep(fc1: torch.Tensor, fc2: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the ``keep`` strongest FFN channels, in their original order."""
    score = fc1.float().norm(dim=1) * fc2.float().norm(dim=0)  # (F,)
    return torch.sort(torch.topk(score, keep).indices).values


def prune_decoder(model: XSam, decoder: DecoderConfig, usage: torch.Tensor | None = None) -> XSam:
    """A copy of ``model`` whose decoder has ``decoder``'s sizes, every weight taken from ``model``.

    Args:
        model (XSam): the source (teacher).
        decoder (DecoderConfig): the smaller decoder; only the sizes in ``_SHRINKABLE`` may differ (smaller).
        usage (torch.Tensor | None): (Q,) query match counts from :func:`query_usage`; ``None`` keeps the
            first queries.

    Returns:
        XSam: the pruned model (config name ``<source>-pruned``), in eval mode.

    Raises:
        ValueError: ``decoder`` is not a pruning of the source's decoder.
    """
    source = model.config.decoder
    problems = decoder_problems(source, decoder)
    if problems:
        raise ValueError("cannot prune the decoder: " + "; ".join(problems))
    if usage is None:
        usage = torch.zeros(source.num_queries)
    # most used first; ties go to the lower index (stable sort of the negated counts)
    ranked = torch.sort(-usage.float(), stable=True).indices
    keep_queries = torch.sort(ranked[: decoder.num_queries]).values
    config = dataclasses.replace(model.config, decoder=decoder, name=f"{model.config.name}-pruned")
    pruned = build_model(config).to(next(model.parameters()).dtype)
    state = model.state_dict()
    targets = pruned.state_dict()
    new_state = {}
    for key, target in targets.items():
        value = state[key]  # kept layers are the first ones, so every key exists in the source
        if key.endswith(("queries_embedder.weight", "queries_features.weight")):
            value = value[keep_queries]
        elif match := _FFN_KEY.match(key):
            stem, which, kind = match.groups()
            width = targets[f"{stem}.fc1.weight"].shape[0]
            keep = _ffn_keep(state[f"{stem}.fc1.weight"], state[f"{stem}.fc2.weight"], width)
            if which == "1":  # fc1: (F, D) weight and (F,) bias lose rows
                value = value[keep]
            elif kind == "weight":  # fc2: (D, F) weight loses columns; its bias is per output channel
                value = value[:, keep]
        if tuple(value.shape) != tuple(target.shape):
            raise AssertionError(f"pruning left {key} at {tuple(value.shape)}, not {tuple(target.shape)}")
        new_state[key] = value
    pruned.load_state_dict(new_state)
    log.info("pruned decoder: kept queries %s", keep_queries.tolist())
    return pruned.eval()


def transplant(source: XSam, target: XSam, prefixes: tuple[str, ...] = DECODER_PREFIXES) -> list[str]:
    """Copy every tensor under ``prefixes`` whose name and shape agree from ``source`` into ``target``.

    Returns:
        list[str]: the copied keys (the rest of ``target`` keeps its values).
    """
    src = source.state_dict()
    copied = []
    with torch.no_grad():
        for key, value in target.state_dict().items():
            if key.startswith(prefixes) and key in src and src[key].shape == value.shape:
                value.copy_(src[key].to(value.dtype))
                copied.append(key)
    return copied
