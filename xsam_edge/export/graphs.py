"""Edge graphs of the DESIGN.md contract: one static-shape, fixed-slot export wrapper per graph.

The wrappers exist for export only. Each takes a built ``XSam``, calls its core methods and exposes plain
tensors in and out, with every size fixed by the config and a ``SlotConfig``:

=================  ==========================================================================================
graph              signature
=================  ==========================================================================================
encode_image       seg_pixels (1,3,S,S), global_pixels (1,3,s,s) → image_tokens (1,N_img,H),
                   region_grid (1,H,G,G), mask_features (1,D_m,m,m), memory_0..L-1 (coarsest first)
embed              input_ids (1,P) int32 → embeddings (1,P,H)
region             region_grid (1,H,G,G), prompt_masks (1,K,S,S) → region_tokens (1,K,H)
llm_prefill        inputs_embeds (1,P,H), cache_position (P,) int64 → projected (1,P,D), logits (1,V);
                   state: k_cache_i, v_cache_i (1,kv_heads,max_seq,head_dim)
llm_decode         the same with T = 1
llm_kvio_prefill   + past_keys, past_values (L_llm,kv_heads,max_seq,head_dim) → + present_keys, present_values
llm_kvio_decode    the same with T = 1
segment            mask_features, memory_0..L-1, cond (1,C,D), cond_valid (1,C) float 0/1, seg_embed (1,D)
                   → class_logits (1,Q,C+1), mask_logits (1,Q,m,m)
=================  ==========================================================================================

The host does what graphs do badly (tokenization, splicing, span averaging): that is the request plan
(``spec.plan``), run over these wrappers eagerly by ``export.eager`` and over exported files by the runtime.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from xsam_edge.model.xsam import DecoderInputs, XSam
from xsam_edge.spec.config import XSamConfig

from .graphs_llm import PAD_POSITION, LLMGraph, LLMGraphKVIO

__all__ = [
    "GRAPH_NAMES",
    "PAD_POSITION",
    "EmbedGraph",
    "EncodeImageGraph",
    "GraphSpec",
    "LLMGraph",
    "LLMGraphKVIO",
    "RegionGraph",
    "SegmentGraph",
    "SlotConfig",
    "TensorSpec",
    "build_graph",
    "example_inputs",
    "export_graph",
    "graph_specs",
]

GRAPH_NAMES = (
    "encode_image",
    "embed",
    "region",
    "llm_prefill",
    "llm_decode",
    "llm_kvio_prefill",
    "llm_kvio_decode",
    "segment",
)


# -- slots and specs ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SlotConfig:
    """The fixed sizes a bundle is exported with.

    Args:
        max_regions (int): K, visual-prompt slots of the ``region`` graph.
        max_conditions (int): C, condition slots of the ``segment`` graph.
        max_seq (int | None): T cache length of the ``llm`` graph; ``None`` sizes it to the work:
            the image tokens plus ``text_budget``, rounded up to whole prefill chunks and capped at the
            LLM's context (see ``seq_len``).
        prefill_len (int): tokens per prefill chunk (also the ``embed`` graph's length).
        text_budget (int): tokens a request may use besides the image tokens (template, user text or
            category list, region tokens, answer); a longer request is refused with a ``RequestError``.
            Only read when ``max_seq`` is ``None``.

    Raises:
        ValueError: a size is not a positive int, or ``prefill_len`` exceeds ``max_seq``.
    """

    max_regions: int = 8
    max_conditions: int = 16
    max_seq: int | None = None
    prefill_len: int = 64
    text_budget: int = 1024

    def __post_init__(self) -> None:
        for name in ("max_regions", "max_conditions", "prefill_len", "max_seq", "text_budget"):
            value = getattr(self, name)
            if value is None and name == "max_seq":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SlotConfig.{name} must be a positive int, got {value!r}")
        if self.max_seq is not None and self.prefill_len > self.max_seq:
            raise ValueError(
                f"prefill_len {self.prefill_len} is longer than the cache (max_seq {self.max_seq})"
            )

    def seq_len(self, config: XSamConfig) -> int:
        """The cache length for ``config``, checked against its context.

        Raises:
            ValueError: ``max_seq`` is beyond the LLM's context, or shorter than ``prefill_len``.
        """
        context = config.llm.max_position_embeddings
        if self.max_seq is None:
            # every cache slot costs attention MACs on every step (the graphs attend over the whole cache):
            # size it to what a request can use, not to the context
            need = config.num_image_tokens + self.text_budget
            max_seq = min(context, -(-need // self.prefill_len) * self.prefill_len)
        else:
            max_seq = self.max_seq
        if max_seq > context:
            raise ValueError(f"max_seq {max_seq} exceeds the LLM context {context}; pass max_seq ≤ {context}")
        if self.prefill_len > max_seq:
            raise ValueError(f"prefill_len {self.prefill_len} is longer than the cache (max_seq {max_seq})")
        return max_seq

    def manifest_entry(self, config: XSamConfig) -> dict:
        """The bundle manifest's ``slots`` (also a golden reference's): the traced sizes.

        ``max_seq`` is resolved for ``config``; ``text_budget`` is spent in it, so it is not listed.
        """
        entry = {**dataclasses.asdict(self), "max_seq": self.seq_len(config)}
        del entry["text_budget"]
        return entry


@dataclass(frozen=True)
class TensorSpec:
    """One named graph input, output or state; ``dtype`` is a torch dtype name ("float32", "int64")."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class GraphSpec:
    """The static signature of one edge graph.

    Attributes:
        name (str): one of ``GRAPH_NAMES``.
        inputs (tuple[TensorSpec, ...]): positional inputs, in order.
        outputs (tuple[TensorSpec, ...]): outputs, in order.
        states (tuple[TensorSpec, ...]): mutable buffers the program keeps between calls (stateful LLM only).
    """

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    states: tuple[TensorSpec, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the bundle manifest)."""

        def dump(specs: tuple[TensorSpec, ...]) -> list[dict[str, Any]]:
            return [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in specs]

        return {
            "name": self.name,
            "inputs": dump(self.inputs),
            "outputs": dump(self.outputs),
            "states": dump(self.states),
        }


def _memory_sizes(config: XSamConfig) -> list[int]:
    """Side of each decoder memory level, coarsest first (the pixel decoder reverses the pyramid)."""
    grid = config.seg_encoder.grid_size
    levels = config.decoder.num_feature_levels
    return [round(grid * s) for s in config.connector.scale_factors[::-1][:levels]]


def graph_specs(config: XSamConfig, slots: SlotConfig | None = None) -> dict[str, GraphSpec]:
    """The signature of every edge graph for ``config`` exported with ``slots``.

    Args:
        config (XSamConfig): the model config.
        slots (SlotConfig | None): fixed slot sizes; ``None`` means the defaults.

    Returns:
        dict[str, GraphSpec]: keyed by graph name, in ``GRAPH_NAMES`` order.
    """
    slots = slots or SlotConfig()
    llm = config.llm
    h, d = llm.hidden_size, config.decoder.hidden_dim
    s_seg = config.seg_encoder.image_size
    g = config.seg_token_grid
    m = config.mask_resolution
    k, c, p = slots.max_regions, slots.max_conditions, slots.prefill_len
    max_seq = slots.seq_len(config)
    memory = [TensorSpec(f"memory_{i}", (1, d, n, n)) for i, n in enumerate(_memory_sizes(config))]
    mask_features = TensorSpec("mask_features", (1, config.decoder.mask_feature_size, m, m))
    region_grid = TensorSpec("region_grid", (1, h, g, g))

    encode_inputs = [TensorSpec("seg_pixels", (1, 3, s_seg, s_seg))]
    if config.global_encoder is not None:
        s_glob = config.global_encoder.image_size
        encode_inputs.append(TensorSpec("global_pixels", (1, 3, s_glob, s_glob)))
    specs = {
        "encode_image": GraphSpec(
            "encode_image",
            tuple(encode_inputs),
            (
                TensorSpec("image_tokens", (1, config.num_image_tokens, h)),
                region_grid,
                mask_features,
                *memory,
            ),
        ),
        "embed": GraphSpec(
            "embed", (TensorSpec("input_ids", (1, p), "int32"),), (TensorSpec("embeddings", (1, p, h)),)
        ),
        "region": GraphSpec(
            "region",
            (region_grid, TensorSpec("prompt_masks", (1, k, s_seg, s_seg))),
            (TensorSpec("region_tokens", (1, k, h)),),
        ),
    }
    cache = (1, llm.num_kv_heads, max_seq, llm.head_dim)
    stacked = (llm.num_layers, llm.num_kv_heads, max_seq, llm.head_dim)
    states = tuple(
        TensorSpec(f"{kind}_cache_{i}", cache) for i in range(llm.num_layers) for kind in ("k", "v")
    )
    for phase, t in (("prefill", p), ("decode", 1)):
        inputs = (TensorSpec("inputs_embeds", (1, t, h)), TensorSpec("cache_position", (t,), "int64"))
        outputs = (TensorSpec("projected", (1, t, d)), TensorSpec("logits", (1, llm.vocab_size)))
        specs[f"llm_{phase}"] = GraphSpec(f"llm_{phase}", inputs, outputs, states)
        specs[f"llm_kvio_{phase}"] = GraphSpec(
            f"llm_kvio_{phase}",
            (*inputs, TensorSpec("past_keys", stacked), TensorSpec("past_values", stacked)),
            (*outputs, TensorSpec("present_keys", stacked), TensorSpec("present_values", stacked)),
        )
    q = config.decoder.num_queries
    specs["segment"] = GraphSpec(
        "segment",
        (
            mask_features,
            *memory,
            TensorSpec("cond", (1, c, d)),
            TensorSpec("cond_valid", (1, c)),
            TensorSpec("seg_embed", (1, d)),
        ),
        (TensorSpec("class_logits", (1, q, c + 1)), TensorSpec("mask_logits", (1, q, m, m))),
    )
    return {name: specs[name] for name in GRAPH_NAMES}


def example_inputs(
    config: XSamConfig,
    graph_name: str,
    slots: SlotConfig | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> tuple[Tensor, ...]:
    """Deterministic example tensors matching ``graph_specs(config, slots)[graph_name].inputs``.

    Float inputs are N(0, 1) (pixels, features, embeddings), masks and validity flags are 0/1 with some empty
    slots, token ids are in the vocabulary and positions are ``0 .. T-1``.

    Args:
        config (XSamConfig): the model config.
        graph_name (str): one of ``GRAPH_NAMES``.
        slots (SlotConfig | None): fixed slot sizes; ``None`` means the defaults.
        dtype (torch.dtype): dtype of the float inputs.
        seed (int): seeds the draw.

    Returns:
        tuple[Tensor, ...]: positional inputs of the graph.

    Raises:
        ValueError: unknown graph name.
    """
    specs = graph_specs(config, slots)
    if graph_name not in specs:
        raise ValueError(f"unknown graph {graph_name!r}; known graphs: {', '.join(GRAPH_NAMES)}")
    gen = torch.Generator().manual_seed(seed)
    tensors = []
    for spec in specs[graph_name].inputs:
        if spec.name == "input_ids":
            x = torch.randint(0, config.llm.vocab_size, spec.shape, generator=gen, dtype=torch.int32)
        elif spec.name == "cache_position":
            x = torch.arange(spec.shape[0], dtype=torch.int64)
        elif spec.name == "prompt_masks":
            x = _example_masks(spec.shape, gen, dtype)
        elif spec.name == "cond_valid":
            x = torch.zeros(spec.shape, dtype=dtype)
            x[:, : max(1, spec.shape[1] // 2)] = 1
        elif spec.name in ("past_keys", "past_values"):
            x = torch.zeros(spec.shape, dtype=dtype)
        else:
            x = torch.randn(spec.shape, generator=gen).to(dtype)
        tensors.append(x)
    return tuple(tensors)


def _example_masks(shape: tuple[int, ...], gen: torch.Generator, dtype: torch.dtype) -> Tensor:
    """(1, K, S, S) random rectangles; the last slot is left empty (an unused prompt slot)."""
    _, k, s, _ = shape
    masks = torch.zeros(shape, dtype=dtype)
    for i in range(max(1, k - 1)):
        y0, x0 = (int(v) for v in torch.randint(0, s // 2, (2,), generator=gen))
        hh, ww = (int(v) for v in torch.randint(1, s // 2, (2,), generator=gen))
        masks[0, i, y0 : y0 + hh, x0 : x0 + ww] = 1
    return masks


# -- wrappers ----------------------------------------------------------------------------------------------
class EncodeImageGraph(nn.Module):
    """``encode_image`` edge graph: both encoders, projectors, connector and pixel decoder. For export only.

    Everything that runs once per image.

    Args:
        model (XSam): the model.
    """

    def __init__(self, model: XSam) -> None:
        super().__init__()
        self.model = model

    def forward(self, seg_pixels: Tensor, global_pixels: Tensor | None = None) -> tuple[Tensor, ...]:
        """Encode one image.

        Args:
            seg_pixels (Tensor): (1, 3, S, S) SAM-letterboxed, normalised pixels.
            global_pixels (Tensor | None): (1, 3, s, s) SigLIP pixels; absent when the model has no global
                encoder.

        Returns:
            tuple[Tensor, ...]: image_tokens (1, N_img, H), region_grid (1, H, G, G), mask_features
            (1, D_m, m, m), then memory_0 .. memory_{L-1}, each (1, D, h_l, h_l), coarsest first.
        """
        features = self.model.encode_image(seg_pixels, global_pixels)
        decoder = self.model.decoder_inputs(features.pyramid)
        return (features.image_tokens, features.region_grid, decoder.mask_features, *decoder.memory)


class EmbedGraph(nn.Module):
    """``embed`` edge graph: token ids → LLM input embeddings (an INT8-able table). For export only.

    Args:
        model (XSam): the model.
    """

    def __init__(self, model: XSam) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor) -> Tensor:
        """Look the ids up.

        Args:
            input_ids (Tensor): (1, T) int32 ids; the host has replaced placeholders by 0.

        Returns:
            Tensor: (1, T, H) embeddings.
        """
        # int32 in (Core ML has no int64 inputs), int64 for the lookup
        return self.model.embed_ids(input_ids.long())


class RegionGraph(nn.Module):
    """``region`` edge graph: K prompt slots → K region tokens (deterministic grid sampler). For export only.

    Args:
        model (XSam): the model.
        max_regions (int): K slots.
    """

    def __init__(self, model: XSam, max_regions: int) -> None:
        super().__init__()
        self.model = model
        self.max_regions = max_regions

    def forward(self, region_grid: Tensor, prompt_masks: Tensor) -> Tensor:
        """Pool one token per prompt slot.

        Args:
            region_grid (Tensor): (1, H, G, G) from ``encode_image``.
            prompt_masks (Tensor): (1, K, S, S) letterboxed masks in {0, 1}; an empty slot is all zeros.

        Returns:
            Tensor: (1, K, H) region tokens; empty slots give zero vectors.
        """
        return self.model.region_tokens(region_grid, prompt_masks[0], sampler="grid")[None]  # (1, K, H)


class SegmentGraph(nn.Module):
    """``segment`` edge graph: final-layer decoder outputs for C fixed condition slots. For export only.

    Args:
        model (XSam): the model.
        max_conditions (int): C slots.


    Raises:
        ValueError: the decoder does not have 3 feature levels (the signature names memory_0..2).
    """

    def __init__(self, model: XSam, max_conditions: int) -> None:
        super().__init__()
        levels = model.config.decoder.num_feature_levels
        if levels != 3:
            raise ValueError(f"the segment graph takes 3 memory levels; this decoder has {levels}")
        self.model = model
        self.max_conditions = max_conditions

    def forward(
        self,
        mask_features: Tensor,
        memory_0: Tensor,
        memory_1: Tensor,
        memory_2: Tensor,
        cond: Tensor,
        cond_valid: Tensor,
        seg_embed: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Decode masks and score them against the conditions.

        Args:
            mask_features (Tensor): (1, D_m, m, m) from ``encode_image``.
            memory_0 (Tensor): (1, D, h_0, h_0) coarsest decoder memory level.
            memory_1 (Tensor): (1, D, h_1, h_1) middle level.
            memory_2 (Tensor): (1, D, h_2, h_2) finest level.
            cond (Tensor): (1, C, D) condition embeddings, zeros in unused slots.
            cond_valid (Tensor): (1, C) float, 1 for a real slot and 0 for padding (Core ML takes no bool
                inputs).
            seg_embed (Tensor): (1, D) the ``<SEG>`` embedding.

        Returns:
            tuple[Tensor, Tensor]: class_logits (1, Q, C + 1) with background last, and mask_logits
            (1, Q, m, m) at the decoder's resolution (no upsampling).
        """
        inputs = DecoderInputs(mask_features, [memory_0, memory_1, memory_2])
        class_logits, out = self.model.decode(inputs, seg_embed, cond, cond_valid > 0.5)
        return class_logits, out.mask_logits


def build_graph(model: XSam, graph_name: str, slots: SlotConfig | None = None) -> nn.Module:
    """The wrapper module of ``graph_name`` around ``model`` (shared weights, eval mode).

    Raises:
        ValueError: unknown graph name.
    """
    slots = slots or SlotConfig()
    model.eval()
    builders: dict[str, Callable[[], nn.Module]] = {
        "encode_image": lambda: EncodeImageGraph(model),
        "embed": lambda: EmbedGraph(model),
        "region": lambda: RegionGraph(model, slots.max_regions),
        "llm_prefill": lambda: LLMGraph(model, slots.seq_len(model.config)),
        "llm_decode": lambda: LLMGraph(model, slots.seq_len(model.config)),
        "llm_kvio_prefill": lambda: LLMGraphKVIO(model, slots.seq_len(model.config)),
        "llm_kvio_decode": lambda: LLMGraphKVIO(model, slots.seq_len(model.config)),
        "segment": lambda: SegmentGraph(model, slots.max_conditions),
    }
    if graph_name not in builders:
        raise ValueError(f"unknown graph {graph_name!r}; known graphs: {', '.join(GRAPH_NAMES)}")
    return builders[graph_name]().eval()


def export_graph(
    module: nn.Module,
    graph_name: str,
    config: XSamConfig,
    slots: SlotConfig | None = None,
    dtype: torch.dtype | None = None,
    dynamic_tokens: bool = False,
) -> torch.export.ExportedProgram:
    """``torch.export`` (non-strict) of a wrapper on its example inputs: the input of every backend module.

    Args:
        module (nn.Module): the wrapper of ``graph_name`` (``build_graph``); an LLM wrapper is exported at
            T = prefill_len for ``*_prefill`` and T = 1 for ``*_decode``.
        graph_name (str): one of ``GRAPH_NAMES``.
        config (XSamConfig): the model config.
        slots (SlotConfig | None): fixed slot sizes.
        dtype (torch.dtype | None): dtype of the float example inputs; ``None`` means that of the module's
            first floating-point parameter.
        dynamic_tokens (bool): an LLM prefill takes T ∈ [1, prefill_len] (``inputs_embeds`` axis 1,
            ``cache_position`` axis 0), so a runtime can run a short chunk unpadded. ``Dim.DYNAMIC``, not a
            named Dim: at real widths the GQA fold adds guards such as T·min(64, 256·T) = 64·T that hold for
            every T ≥ 1 but sympy cannot prove, and a named Dim makes them a ConstraintViolationError.

    Returns:
        torch.export.ExportedProgram: in the training IR (in-place cache writes kept as ``copy_``);
        ``run_decompositions({})`` gives the functional form that lists them in ``buffers_to_mutate``.
        Parameters of the model that the graph does not use are still lifted (ExecuTorch removes them with
        ``remove_unused_parameters_pass``; Core ML and ONNX drop them on conversion).
    """
    if dtype is None:
        dtype = next(p.dtype for p in module.parameters() if p.is_floating_point())
    inputs = example_inputs(config, graph_name, slots, dtype=dtype)
    dynamic = None
    if dynamic_tokens:
        tokens = torch.export.Dim.DYNAMIC(min=1, max=(slots or SlotConfig()).prefill_len)
        axes = {"inputs_embeds": {1: tokens}, "cache_position": {0: tokens}}
        dynamic = tuple(axes.get(s.name) for s in graph_specs(config, slots)[graph_name].inputs)
    with torch.no_grad():
        return torch.export.export(module, inputs, dynamic_shapes=dynamic, strict=False)
