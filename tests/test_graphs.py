"""Edge graph wrappers: parity with the eager model, end to end against ``XSamPredictor``, and export."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import make_image, prefill_graph, rerandomize

from xsam_edge.export.eager import EAGER, EagerBackend, eager_manifest
from xsam_edge.export.graphs import (
    GRAPH_NAMES,
    PAD_POSITION,
    EmbedGraph,
    EncodeImageGraph,
    LLMGraph,
    LLMGraphKVIO,
    RegionGraph,
    SegmentGraph,
    SlotConfig,
    build_graph,
    example_inputs,
    export_graph,
    graph_specs,
)
from xsam_edge.export.graphs_llm import DecoderLM
from xsam_edge.model.build import build_model
from xsam_edge.model.llm import build_llm
from xsam_edge.model.predictor import XSamPredictor
from xsam_edge.model.presets import TINY
from xsam_edge.model.projector import Projector
from xsam_edge.model.region_sampler import sample_regions_grid
from xsam_edge.model.xsam import DecoderInputs
from xsam_edge.runtime.session import EdgeSession
from xsam_edge.spec.preprocess import PreprocessSpec
from xsam_edge.spec.prompts import build_request_prompt
from xsam_edge.spec.tokenizer import expand_image_placeholder
from xsam_edge.spec.types import Box, Point, SegmentationRequest, Task

# small slots keep the tests fast; prefill_len 16 makes a tiny prompt take several chunks
SLOTS = SlotConfig(max_regions=4, max_conditions=4, max_seq=128, prefill_len=16)
TOL = 1e-4


def _max_diff(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a, b = (torch.as_tensor(x).detach().double() for x in (a, b))
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max())


def _tuple(out) -> tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, tuple | list) else (out,)


def _image_inputs(model) -> tuple[torch.Tensor, torch.Tensor]:
    """Letterboxed pixels of the test image, as the predictor makes them."""
    spec = PreprocessSpec.from_config(model.config)
    image = make_image()
    seg, _ = spec.letterbox(image)
    return torch.from_numpy(seg)[None], torch.from_numpy(spec.global_pixels(image))[None]


# -- slots and specs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [dict(max_regions=0), dict(max_conditions=-1), dict(prefill_len=0), dict(max_seq=8, prefill_len=16)],
)
def test_slot_config_rejects_bad_sizes(kwargs):
    with pytest.raises(ValueError):
        SlotConfig(**kwargs)


def test_slot_config_defaults_and_context_check():
    slots = SlotConfig()
    assert (slots.max_regions, slots.max_conditions, slots.prefill_len) == (8, 16, 64)
    assert slots.seq_len(TINY) == TINY.llm.max_position_embeddings
    with pytest.raises(ValueError, match="exceeds the LLM context"):
        SlotConfig(max_seq=TINY.llm.max_position_embeddings + 1).seq_len(TINY)
    with pytest.raises(ValueError, match="unknown graph"):
        example_inputs(TINY, "nope", SLOTS)


def test_specs_describe_examples_and_outputs(tiny_model):
    specs = graph_specs(TINY, SLOTS)
    assert tuple(specs) == GRAPH_NAMES
    for name, spec in specs.items():
        inputs = example_inputs(TINY, name, SLOTS)
        assert [tuple(x.shape) for x in inputs] == [s.shape for s in spec.inputs], name
        assert [str(x.dtype).removeprefix("torch.") for x in inputs] == [s.dtype for s in spec.inputs]
        graph = build_graph(tiny_model, name, SLOTS)
        with torch.no_grad():
            outputs = _tuple(graph(*inputs))
        assert [tuple(y.shape) for y in outputs] == [s.shape for s in spec.outputs], name
        if spec.states:
            assert [tuple(c.shape) for pair in graph.caches() for c in pair] == [s.shape for s in spec.states]
        assert spec.to_dict()["name"] == name


# -- wrapper parity with the eager model -------------------------------------------------------------------
def test_encode_image_matches_the_model(tiny_model):
    seg, glob = _image_inputs(tiny_model)
    with torch.no_grad():
        out = EncodeImageGraph(tiny_model)(seg, glob)
        features = tiny_model.encode_image(seg, glob)
        decoder = tiny_model.decoder_inputs(features.pyramid)
    expected = (features.image_tokens, features.region_grid, decoder.mask_features, *decoder.memory)
    assert len(out) == len(expected) == 6
    for got, want in zip(out, expected, strict=True):
        assert _max_diff(got, want) < TOL
    assert [m.shape[-1] for m in out[3:]] == sorted(m.shape[-1] for m in out[3:])  # coarsest first


def test_embed_matches_the_model(tiny_model):
    ids = torch.tensor([[1, 5, 0, 300, 7]], dtype=torch.int32)
    with torch.no_grad():
        assert torch.equal(EmbedGraph(tiny_model)(ids), tiny_model.embed_ids(ids.long()))


def test_region_matches_the_grid_sampler(tiny_model):
    grid, masks = example_inputs(TINY, "region", SLOTS)
    with torch.no_grad():
        out = RegionGraph(tiny_model, SLOTS.max_regions)(grid, masks)
    assert _max_diff(out, sample_regions_grid(grid, masks)) < TOL
    assert masks[0, -1].sum() == 0 and torch.all(out[0, -1] == 0)  # empty slot → zero token
    assert torch.all(out[0, :-1].abs().sum(-1) > 0)


def test_segment_matches_decode_and_padding_is_inert(tiny_model):
    inputs = example_inputs(TINY, "segment", SLOTS)
    mask_features, *memory, cond, cond_valid, seg = inputs
    with torch.no_grad():
        class_logits, mask_logits = SegmentGraph(tiny_model, SLOTS.max_conditions)(*inputs)
        dec = DecoderInputs(mask_features, memory)
        want_cls, out = tiny_model.decode(dec, seg, cond, cond_valid > 0.5)
        # the same request without padded slots
        n = int(cond_valid.sum())
        small_cls, _ = tiny_model.decode(dec, seg, cond[:, :n], torch.ones(1, n, dtype=torch.bool))
    assert _max_diff(class_logits, want_cls) < TOL and _max_diff(mask_logits, out.mask_logits) < TOL
    assert torch.all(class_logits[0, :, n:-1] == -1e4)
    assert _max_diff(class_logits[0, :, :n], small_cls[0, :, :n]) < TOL
    assert _max_diff(class_logits[0, :, -1], small_cls[0, :, -1]) < TOL


# -- the LLM graph -----------------------------------------------------------------------------------------
def _lm_parts(family: str, **overrides) -> SimpleNamespace:
    """A standalone tiny LM of ``family`` plus a projector: all LLMGraph reads from an XSam."""
    llm_config = dataclasses.replace(TINY.llm, family=family, **overrides)
    config = dataclasses.replace(TINY, llm=llm_config)
    torch.manual_seed(0)
    llm = rerandomize(build_llm(llm_config), seed=1).eval()
    return SimpleNamespace(llm=llm, llm_projector=rerandomize(Projector(config.llm_projector), seed=2).eval())


LM_CASES = {
    "phi3": dict(),
    "phi3_gqa_window": dict(num_kv_heads=2, sliding_window=12),
    "llama_gqa": dict(num_kv_heads=1),
    "qwen2": dict(num_kv_heads=2),
    "qwen3": dict(),
}


@pytest.mark.parametrize("case", list(LM_CASES))
def test_llm_chunked_prefill_and_decode_match_transformers(case):
    family = case.split("_")[0]
    parts = _lm_parts(family, **LM_CASES[case])
    graph = LLMGraph(parts, max_seq=64, with_hidden=True).eval()
    embed = parts.llm.get_input_embeddings()
    prompt = torch.randn(37, TINY.llm.hidden_size)  # 3 chunks of 16, the last one left-padded

    with torch.no_grad():
        projected, logits = prefill_graph(graph, prompt, start=0, chunk=16)
        rows, all_logits = [projected], [logits]
        seq = prompt
        for step in range(3):  # greedy decode
            next_id = all_logits[-1].argmax(-1)
            x = embed(next_id)  # (1, H)
            seq = torch.cat((seq, x))
            out = graph(x[None], torch.tensor([prompt.shape[0] + step]))
            rows.append(out[0][0])
            all_logits.append(out[1])
        ref = parts.llm.model(inputs_embeds=seq[None], use_cache=False).last_hidden_state[0]  # (T, H)
        ref_projected = parts.llm_projector(ref)
        ref_logits = parts.llm.lm_head(ref)
        # control: a decode step that ignores the cache (empty cache, same position)
        graph.reset_cache()
        blind = graph(seq[-1:][None], torch.tensor([seq.shape[0] - 1]))[0][0, -1]

    ours = torch.cat(rows)
    assert ours.shape == ref_projected.shape
    assert _max_diff(ours, ref_projected) < TOL
    assert _max_diff(out[2][0, -1], ref[-1]) < TOL  # final-norm hidden of the last decode
    assert _max_diff(torch.cat(all_logits), ref_logits[[36, 37, 38, 39]]) < TOL
    assert _max_diff(blind, ref_projected[-1]) > 100 * TOL


def test_llm_kvio_matches_the_stateful_graph(tiny_model):
    stateful = LLMGraph(tiny_model, 64)
    functional = LLMGraphKVIO(tiny_model, 64)
    past_k, past_v = functional.empty_cache()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for t, start in ((16, 0), (16, 16), (1, 32), (1, 33)):
            x = torch.randn(1, t, TINY.llm.hidden_size, generator=gen)
            pos = torch.arange(start, start + t)
            want = stateful(x, pos)
            projected, logits, past_k, past_v = functional(x, pos, past_k, past_v)
            assert _max_diff(projected, want[0]) < 1e-6 and _max_diff(logits, want[1]) < 1e-6
    caches = stateful.caches()
    assert _max_diff(past_k, torch.cat([k for k, _ in caches])) < 1e-6
    assert _max_diff(past_v, torch.cat([v for _, v in caches])) < 1e-6
    assert torch.all(past_k[:, :, 34:] == 0)  # nothing written beyond the last position


def test_padding_rows_write_nothing(tiny_model):
    graph = LLMGraph(tiny_model, 32)
    x = torch.randn(1, 4, TINY.llm.hidden_size)
    with torch.no_grad():
        graph(x, torch.tensor([PAD_POSITION, PAD_POSITION, 0, 1]))
    k = graph.caches()[0][0]
    assert torch.all(k[:, :, 2:] == 0) and torch.all(k[:, :, :2].abs().sum(-1) > 0)


def test_llm_in_fp16_is_finite_and_close():
    parts = _lm_parts("phi3", num_kv_heads=2)
    prompt = torch.randn(21, TINY.llm.hidden_size)
    with torch.no_grad():
        want, want_logits = prefill_graph(LLMGraph(parts, max_seq=32), prompt, 0, 16)
        parts.llm.half()
        parts.llm_projector.half()
        got, logits = prefill_graph(
            LLMGraph(parts, max_seq=32), prompt.half(), 0, 16
        )  # left-padded last chunk
    assert got.dtype == torch.float16 and torch.isfinite(got).all() and torch.isfinite(logits).all()
    assert _max_diff(got, want) < 1e-2 and _max_diff(logits, want_logits) < 5e-2


def test_unsupported_llm_is_a_clear_error(tiny_model):
    fake = SimpleNamespace(config=SimpleNamespace(model_type="gpt2"))
    with pytest.raises(NotImplementedError, match="supported: phi3"):
        DecoderLM(fake, tiny_model.llm_projector, 16)
    rope = SimpleNamespace(model_type="phi3", rope_parameters={"rope_type": "yarn"})
    with pytest.raises(NotImplementedError, match="RoPE type 'yarn'"):
        DecoderLM(SimpleNamespace(config=rope), tiny_model.llm_projector, 16)


# -- host assembly: the graphs run by the runtime's own plan (EdgeSession over the eager wrappers) ----------
def _eager_session(model, tokenizer, slots: SlotConfig) -> EdgeSession:
    """``EdgeSession`` over the eager graph wrappers: the runtime's own plan, no export in between."""
    return EdgeSession(eager_manifest(model, tokenizer, slots), EAGER, runtime=EagerBackend(model, slots))


def _full_prefill(model, tokenizer, request: SegmentationRequest) -> tuple[torch.Tensor, torch.Tensor]:
    """The request through the model in one uncached pass (no prefix reuse, no chunks, no slots).

    Returns:
        tuple[torch.Tensor, torch.Tensor]: class logits (Q, n + 1) and mask logits (Q, m, m).
    """
    cfg, spec = model.config, PreprocessSpec.from_config(model.config)
    seg, _ = spec.letterbox(request.image)
    features = model.encode_image(
        torch.from_numpy(seg)[None], torch.from_numpy(spec.global_pixels(request.image))[None]
    )
    prompt = build_request_prompt(request, template=cfg.tokens.template, tokens=cfg.tokens)
    ids = expand_image_placeholder(tokenizer.encode(prompt, add_bos=cfg.tokens.add_bos), cfg.num_image_tokens)
    region_tokens = None
    if request.prompts:
        masks = spec.prompt_masks(request.prompts, request.image_size)
        region_tokens = model.region_tokens(
            features.region_grid, torch.from_numpy(masks).float(), sampler="grid"
        )
    embeds = model.splice(torch.tensor(ids), features.image_tokens[0], region_tokens)
    hidden = model.llm_hidden(embeds[None])[0]
    cond, seg_embed = model.condition_embeds(
        hidden, tokenizer.phrase_spans(ids), tokenizer.seg_positions(ids)[-1]
    )
    valid = torch.ones(1, cond.shape[0], dtype=torch.bool)
    class_logits, out = model.decode(
        model.decoder_inputs(features.pyramid), seg_embed[None], cond[None], valid
    )
    return class_logits[0], out.mask_logits[0]


def _check_against_predictor(session: EdgeSession, predictor: XSamPredictor, request) -> None:
    raw = session.run(request)
    want = predictor.run(request)
    n = want.class_logits.shape[1] - 1
    assert raw.class_logits.shape[1] == n + 1
    assert _max_diff(raw.class_logits, want.class_logits) < TOL
    assert _max_diff(raw.mask_logits, want.mask_logits) < TOL


def test_end_to_end_referring_matches_the_predictor(tiny_model, tokenizer):
    image = make_image()
    session = _eager_session(tiny_model, tokenizer, SLOTS)
    request = SegmentationRequest(image, task=Task.REFERRING, text="the red circle")
    _check_against_predictor(session, XSamPredictor(tiny_model, tokenizer), request)


def test_end_to_end_interactive_matches_the_predictor(tokenizer):
    torch.manual_seed(0)
    model = rerandomize(build_model(dataclasses.replace(TINY, region_sampler="grid")), seed=0).eval()
    image = make_image()
    session = _eager_session(model, tokenizer, SLOTS)
    request = SegmentationRequest(image, task=Task.INTERACTIVE, prompts=[Point(20, 24), Box(50, 10, 75, 38)])
    _check_against_predictor(session, XSamPredictor(model, tokenizer), request)


def test_encode_once_query_many_equals_a_full_prefill(tiny_model, tokenizer):
    image = make_image()
    questions = [
        SegmentationRequest(image, task=Task.REFERRING, text="the red circle"),
        SegmentationRequest(image, task=Task.PANOPTIC, categories=["red circle", "blue square"]),
    ]
    session = _eager_session(tiny_model, tokenizer, SLOTS)
    predictor = XSamPredictor(tiny_model, tokenizer)
    with torch.no_grad():
        for request in questions:
            reused = session.run(request)  # the cached image prefix, then the question in 16-token chunks
            assert len(session._image.prefix_ids) > SLOTS.prefill_len  # the prefix itself spans chunks
            want_cls, want_masks = _full_prefill(tiny_model, tokenizer, request)
            assert _max_diff(reused.class_logits, want_cls) < 1e-5
            assert _max_diff(reused.mask_logits, want_masks) < 1e-5
            assert _max_diff(predictor.run(request).class_logits, want_cls) < 1e-5
        # control: the same question at the same positions over an empty cache (no image prefix) differs
        session.engine.reset()
        session._image.prefix_state = session.engine.snapshot()
        alone = session.run(questions[0])
        want_cls, _ = _full_prefill(tiny_model, tokenizer, questions[0])
        assert _max_diff(alone.class_logits, want_cls) > 100 * TOL


# -- export ------------------------------------------------------------------------------------------------
FP16_MIN = -65504.0
# transformers' SAM window partition reshapes to rank 6 and straight back (reshape → permute → reshape);
# coremltools rewrites that chain (expand_high_rank_reshape_and_transpose). Nothing else may exceed rank 5.
RANK6_VIEW_OPS = ("view", "reshape", "permute", "clone", "contiguous", "_unsafe_view")
FORBIDDEN_OPS = ("nonzero", "index_put", "index_copy")


def _check_graph(ep: torch.export.ExportedProgram, name: str) -> None:
    for node in ep.graph.nodes:
        target = str(node.target)
        assert not any(op in target for op in FORBIDDEN_OPS), f"{name}: {target}"
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor) and val.ndim > 5:
            assert name == "encode_image" and any(op in target for op in RANK6_VIEW_OPS), f"{name}: {node}"
            assert "modeling_sam" in node.meta.get("stack_trace", ""), f"{name}: {node}"
        for arg in (*node.args, *node.kwargs.values()):
            if isinstance(arg, float):
                assert arg >= FP16_MIN, f"{name}: constant {arg} in {node}"
    for tensor in (*ep.constants.values(), *ep.state_dict.values()):
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and tensor.numel():
            assert float(tensor.detach().min()) >= FP16_MIN, name


@pytest.mark.parametrize("name", GRAPH_NAMES)
def test_export_matches_eager_and_obeys_the_contract(tiny_model, name):
    graph = build_graph(tiny_model, name, SLOTS)
    inputs = example_inputs(TINY, name, SLOTS)
    ep = export_graph(graph, name, TINY, SLOTS)
    # the functional core-ATen graph is what the backends convert; check the contract on both forms
    lowered = ep.run_decompositions({})
    _check_graph(ep, name)
    _check_graph(lowered, name)
    with torch.no_grad():
        want = _tuple(graph(*inputs))
    # numbers from the exported program as exported: running the decomposed SAM graph in eager torch trips
    # over SDPA output strides that its fake-tensor meta gets wrong (a torch eager artefact; backends only
    # see shapes); the LLM's decomposed, functionalised program is run in the next test
    with torch.no_grad():
        got = _tuple(ep.module()(*inputs))
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert _max_diff(a, b) < TOL, name
    if name.startswith("llm_") and "kvio" not in name:
        mutated = set(lowered.graph_signature.buffers_to_mutate.values())
        assert mutated == {f"{kind}_cache_{i}" for i in range(TINY.llm.num_layers) for kind in "kv"}


def test_exported_decode_updates_the_cache(tiny_model):
    """Prefill eagerly, move the cache into the exported decode program, decode twice through it."""
    graph = build_graph(tiny_model, "llm_decode", SLOTS)
    decode = export_graph(graph, "llm_decode", TINY, SLOTS).run_decompositions({}).module()
    prompt = torch.randn(20, TINY.llm.hidden_size)
    steps = torch.randn(2, TINY.llm.hidden_size)
    with torch.no_grad():
        graph.reset_cache()
        prefill_graph(graph, prompt, 0, SLOTS.prefill_len)
        for name, value in graph.named_buffers():
            if "cache" in name:
                decode.get_buffer(name).copy_(value)
        outs = [decode(steps[i][None, None], torch.tensor([20 + i]))[0][0, 0] for i in range(2)]
        seq = torch.cat((prompt, steps))
        ref = tiny_model.llm_projector(tiny_model.llm_hidden(seq[None])[0])
    assert _max_diff(torch.stack(outs), ref[20:22]) < TOL
    k = decode.get_buffer("k_cache_0")
    assert torch.all(k[:, :, 22:] == 0) and torch.all(k[:, :, 20:22].abs().sum(-1) > 0)
