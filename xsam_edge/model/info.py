"""Parameters and MACs per component, counted on the meta device (no memory, any size).

MACs are torch's FLOP counter over the real forward code halved (one multiply-accumulate = 2 FLOPs): matmuls,
convolutions and attention; element-wise ops, norms, softmax and ``grid_sample`` are not counted, as in
XSAM.md §4. The query is a referring query: one image plus ``text_tokens`` text tokens through the LLM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from xsam_edge.model.build import build_model
from xsam_edge.model.xsam import XSam
from xsam_edge.spec.config import XSamConfig

DEFAULT_TEXT_TOKENS = 48  # a typical referring prompt with its template and answer (XSAM.md §2: 35–60)


@dataclass(frozen=True)
class ComponentCost:
    params: int
    macs: int


def count_macs(fn: Callable[[], object]) -> int:
    """MACs of everything ``fn()`` runs: torch's FLOP count (matmuls, convolutions, attention) halved."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn()
    return counter.get_total_flops() // 2


def _params(*modules: nn.Module | None) -> int:
    return sum(p.numel() for m in modules if m is not None for p in m.parameters())


def model_info(config: XSamConfig, text_tokens: int = DEFAULT_TEXT_TOKENS) -> dict[str, ComponentCost]:
    """Parameters and MACs of every component for one referring query.

    Args:
        config (XSamConfig): the model config (the model is built on the meta device).
        text_tokens (int): text tokens in the LLM sequence besides the image tokens.

    Returns:
        dict[str, ComponentCost]: per component, in pipeline order. Parameters add up to the whole model.
    """
    with torch.device("meta"), torch.no_grad():
        # frozen: torch's module tracker cannot hook a Parameter that is passed as a layer input
        model = build_model(config).requires_grad_(False)
        return _count(model, text_tokens)


def _count(model: XSam, text_tokens: int) -> dict[str, ComponentCost]:
    cfg = model.config
    seg = cfg.seg_encoder
    costs: dict[str, ComponentCost] = {}
    taps: dict[int, torch.Tensor] = {}

    def run_seg() -> None:
        taps.update(model.segmentor.encoder.forward_taps(torch.empty(1, 3, seg.image_size, seg.image_size)))

    costs["seg_encoder"] = ComponentCost(_params(model.segmentor.encoder), count_macs(run_seg))
    if model.visual_encoder is not None:
        glob = cfg.global_encoder
        pixels = torch.empty(1, 3, glob.image_size, glob.image_size)
        hidden = model.visual_encoder(pixels)
        costs["visual_encoder"] = ComponentCost(
            _params(model.visual_encoder), count_macs(lambda: model.visual_encoder(pixels))
        )
        costs["visual_projector"] = ComponentCost(
            _params(model.visual_projector), count_macs(lambda: model.visual_projector(hidden))
        )
    tap = taps[seg.projector_layer]
    costs["seg_projector"] = ComponentCost(
        _params(model.seg_projector), count_macs(lambda: model.seg_projector(tap))
    )
    conn_in = [taps[i] for i in seg.connector_layers]
    pyramid = model.seg_connector(conn_in)
    costs["seg_connector"] = ComponentCost(
        _params(model.seg_connector), count_macs(lambda: model.seg_connector(conn_in))
    )

    length = cfg.num_image_tokens + text_tokens
    embeds = torch.empty(1, length, cfg.llm.hidden_size)
    # an explicit 4-D mask: transformers' own mask builder calls .item(), which meta tensors cannot answer
    mask = torch.ones(1, 1, length, length, dtype=torch.bool)
    positions = torch.arange(length)[None]

    def run_llm() -> None:
        model.llm.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False)

    costs["llm"] = ComponentCost(_params(model.llm), count_macs(run_llm))
    hidden_llm = torch.empty(1, length, cfg.llm.hidden_size)
    costs["llm_projector"] = ComponentCost(
        _params(model.llm_projector), count_macs(lambda: model.llm_projector(hidden_llm))
    )
    inputs = model.decoder_inputs(pyramid)
    costs["pixel_decoder"] = ComponentCost(
        _params(model.segmentor.pixel_decoder), count_macs(lambda: model.decoder_inputs(pyramid))
    )
    d = cfg.decoder.hidden_dim
    seg_embed, cond, valid = torch.empty(1, d), torch.empty(1, 1, d), torch.ones(1, 1, dtype=torch.bool)
    costs["mask_decoder"] = ComponentCost(
        _params(model.segmentor.decoder, model.bg_embeds) + model.segmentor.logit_scale.numel(),
        count_macs(lambda: model.decode(inputs, seg_embed, cond, valid)),
    )
    return costs


def info_json(config: XSamConfig, text_tokens: int = DEFAULT_TEXT_TOKENS) -> dict:
    """``{"components": {name: {"params", "macs"}}, "total_params", "total_macs", ...}`` for machines."""
    costs = model_info(config, text_tokens)
    return {
        "preset": config.name,
        "query": {"task": "referring", "image_tokens": config.num_image_tokens, "text_tokens": text_tokens},
        "components": {k: {"params": v.params, "macs": v.macs} for k, v in costs.items()},
        "total_params": sum(v.params for v in costs.values()),
        "total_macs": sum(v.macs for v in costs.values()),
    }


def _human(n: float, giga: str = "G") -> str:
    """3 significant digits with a K/M/G/T suffix (``giga="B"`` for parameter counts)."""
    for unit, scale in (("T", 1e12), (giga, 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.3g}"


def info_table(data: dict) -> str:
    """The ``info_json`` output as a fixed-width table for people."""
    rows = [f"{'component':<18}{'params':>12}{'MACs':>12}"]
    for name, cost in data["components"].items():
        rows.append(f"{name:<18}{_human(cost['params'], 'B'):>12}{_human(cost['macs']):>12}")
    rows.append(f"{'total':<18}{_human(data['total_params'], 'B'):>12}{_human(data['total_macs']):>12}")
    query = data["query"]
    rows.append(
        f"preset {data['preset']}; one referring query: {query['image_tokens']} image + "
        f"{query['text_tokens']} text tokens"
    )
    return "\n".join(rows)
