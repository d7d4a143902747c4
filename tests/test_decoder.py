"""Pixel decoder + masked-attention decoder: parity with transformers' Mask2Former, export, class head."""

from __future__ import annotations

import copy
import math
import os

import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from conftest import edge_op_shapes  # noqa: E402
from transformers import Mask2FormerConfig  # noqa: E402
from transformers.models.mask2former.modeling_mask2former import (  # noqa: E402
    Mask2FormerPixelDecoder,
    Mask2FormerTransformerModule,
)

from xsam_edge.model.mask_decoder import (  # noqa: E402
    MASKED_LOGIT,
    DecoderOutput,
    MaskDecoder,
    attend,
    attention_bias,
    cosine_class_logits,
)
from xsam_edge.model.pixel_decoder import PixelDecoder  # noqa: E402
from xsam_edge.model.presets import TINY  # noqa: E402
from xsam_edge.spec.config import DecoderConfig  # noqa: E402

DEC = TINY.decoder
CHANNELS = TINY.connector.out_channels  # finest first
SIZES = (16, 8, 4)  # finest first, strides 8/16/32 of a 128 input
TOL = 1e-4


def hf_config(dec: DecoderConfig) -> Mask2FormerConfig:
    return Mask2FormerConfig(
        feature_size=dec.hidden_dim,
        mask_feature_size=dec.mask_feature_size,
        hidden_dim=dec.hidden_dim,
        encoder_layers=dec.encoder_layers,
        decoder_layers=dec.decoder_layers,
        num_queries=dec.num_queries,
        num_attention_heads=dec.num_heads,
        encoder_feedforward_dim=dec.encoder_ffn_dim,
        dim_feedforward=dec.decoder_ffn_dim,
        feature_strides=[4, 8, 16, 32],
        common_stride=4,
        backbone_config=None,
        use_pretrained_backbone=False,
    )


def randomise(module: torch.nn.Module, seed: int) -> None:
    """Every parameter (biases and norms too) ~ N(0, 0.2²), so no comparison is vacuous."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


def features(batch: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, s, s, generator=gen) for c, s in zip(CHANNELS, SIZES, strict=True)]


@pytest.fixture(scope="module")
def pair() -> tuple[Mask2FormerPixelDecoder, Mask2FormerTransformerModule, PixelDecoder, MaskDecoder]:
    cfg = hf_config(DEC)
    hf_pd = Mask2FormerPixelDecoder(cfg, feature_channels=list(CHANNELS)).eval()
    hf_tm = Mask2FormerTransformerModule(in_features=DEC.hidden_dim, config=cfg).eval()
    randomise(hf_pd, 1)
    randomise(hf_tm, 2)
    pd = PixelDecoder(DEC, CHANNELS).eval()
    md = MaskDecoder(DEC).eval()
    pd.load_state_dict(hf_pd.state_dict(), strict=True)
    md.load_state_dict(hf_tm.state_dict(), strict=True)
    return hf_pd, hf_tm, pd, md


def force_full_rows(
    hf_pd: torch.nn.Module, hf_tm: torch.nn.Module, pd: PixelDecoder, md: MaskDecoder
) -> None:
    """Give each query a constant mask-logit offset of either sign, so many rows are blocked everywhere."""
    with torch.no_grad():
        for proj in (hf_pd.mask_projection, pd.mask_projection):
            proj.weight[0].zero_()
            proj.bias[0] = 1.0  # mask feature channel 0 is the constant 1
        for tm in (hf_tm, md):
            last = tm.get_submodule("decoder.mask_predictor.mask_embedder.2.0")
            last.weight[0] *= 3.0  # per-query offset of either sign: a mix of full and partial rows


def run_both(hf_pd, hf_tm, pd, md, feats, seg_embeds=None):
    with torch.no_grad():
        hf_pix = hf_pd(feats)
        hf_out = hf_tm(list(hf_pix.multi_scale_features), hf_pix.mask_features)
        mask_features, memory = pd(feats)
        out = md(memory, mask_features, seg_embeds=seg_embeds, all_layers=True)
    return hf_pix, hf_out, mask_features, memory, out


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


@pytest.mark.parametrize("full_rows", [False, True])
def test_parity_with_transformers(pair, full_rows: bool) -> None:
    hf_pd, hf_tm, pd, md = pair
    if full_rows:
        hf_pd, hf_tm = _copies(hf_pd, hf_tm)
        pd, md = _copies(pd, md)
        force_full_rows(hf_pd, hf_tm, pd, md)
    feats = features(batch=2)
    hf_pix, hf_out, mask_features, memory, out = run_both(hf_pd, hf_tm, pd, md, feats)

    # pixel decoder
    assert mask_features.shape == (2, DEC.mask_feature_size, SIZES[0], SIZES[0])
    assert [m.shape[-1] for m in memory] == list(SIZES[::-1])
    assert max_diff(mask_features, hf_pix.mask_features) < TOL
    assert len(memory) == len(hf_pix.multi_scale_features) == 3
    for mine, ref in zip(memory, hf_pix.multi_scale_features, strict=True):
        assert max_diff(mine, ref) < TOL

    # transformer decoder: every prediction level
    levels = DEC.num_masked_layers + 1
    assert len(out.aux_queries) == len(out.aux_mask_logits) == levels
    assert len(hf_out.intermediate_hidden_states) == len(hf_out.masks_queries_logits) == levels
    for i in range(levels):
        assert max_diff(out.aux_queries[i], hf_out.intermediate_hidden_states[i].transpose(0, 1)) < TOL, i
        assert max_diff(out.aux_mask_logits[i], hf_out.masks_queries_logits[i]) < TOL, i
    assert torch.equal(out.queries, out.aux_queries[-1])
    assert torch.equal(out.mask_logits, out.aux_mask_logits[-1])

    # the masks the layers saw: partial rows always, fully blocked rows at least in the forced case
    n_full = n_partial = 0
    for i in range(DEC.num_masked_layers):
        h, w = memory[i % 3].shape[-2:]
        logits = torch.nn.functional.interpolate(out.aux_mask_logits[i], size=(h, w), mode="bilinear")
        blocked = (logits.flatten(2) < 0).float().mean(-1)
        n_full += int((blocked == 1).sum())
        n_partial += int(((blocked > 0) & (blocked < 1)).sum())
    assert n_partial > 0
    if full_rows:
        assert n_full > 0


def _copies(*modules: torch.nn.Module) -> list[torch.nn.Module]:
    return [copy.deepcopy(m) for m in modules]


def test_all_layers_off_returns_final_only(pair) -> None:
    _, _, pd, md = pair
    with torch.no_grad():
        mask_features, memory = pd(features(batch=1))
        full = md(memory, mask_features, all_layers=True)
        final = md(memory, mask_features)
    assert final.aux_queries == [] and final.aux_mask_logits == []
    assert torch.equal(final.queries, full.queries)
    assert torch.equal(final.mask_logits, full.mask_logits)
    assert final.queries.shape == (1, DEC.num_queries, DEC.hidden_dim)
    assert final.mask_logits.shape == (1, DEC.num_queries, SIZES[0], SIZES[0])


def test_seg_embeds_added_to_query_features(pair) -> None:
    hf_pd, hf_tm, pd, md = pair
    feats = features(batch=1, seed=3)
    seg = torch.randn(1, DEC.hidden_dim, generator=torch.Generator().manual_seed(4))
    _, _, mask_features, memory, plain = run_both(hf_pd, hf_tm, pd, md, feats)
    _, _, _, _, with_seg = run_both(hf_pd, hf_tm, pd, md, feats, seg_embeds=seg)
    # the first prediction sees the embedding directly; later layers dilute it (post-norm residuals)
    assert max_diff(plain.aux_mask_logits[0], with_seg.aux_mask_logits[0]) > 1e-1
    assert not torch.equal(plain.mask_logits, with_seg.mask_logits)

    (hf_tm_seg,) = _copies(hf_tm)
    with torch.no_grad():
        hf_tm_seg.queries_features.weight += seg[0]
        hf_out = hf_tm_seg(list(hf_pd(feats).multi_scale_features), mask_features)
    for i in range(DEC.num_masked_layers + 1):
        assert max_diff(with_seg.aux_queries[i], hf_out.intermediate_hidden_states[i].transpose(0, 1)) < TOL
        assert max_diff(with_seg.aux_mask_logits[i], hf_out.masks_queries_logits[i]) < TOL


def test_attention_bias_releases_fully_blocked_rows() -> None:
    logits = torch.tensor([[[-1.0, -2.0, -3.0], [-1.0, 2.0, -3.0], [1.0, 2.0, 3.0]]])
    bias = attention_bias(logits)
    assert bias.dtype == torch.float32
    assert bias.tolist() == [[[0.0, 0.0, 0.0], [MASKED_LOGIT, 0.0, MASKED_LOGIT], [0.0, 0.0, 0.0]]]
    assert (attention_bias(logits.half()) == attention_bias(logits).half()).all()  # FP16-finite
    # blocked exactly where logit < 0 (upstream's sigmoid < 0.5), at the edges of float32 too
    edges = [0.0, -0.0, -1e-45, 1e-45, -1e-30, -1.0, 1e30, -1e30, float("inf"), -float("inf")]
    row = torch.tensor([[edges]])
    want = [MASKED_LOGIT if x < 0 else 0.0 for x in edges]
    assert attention_bias(row).tolist() == [[want]]


@pytest.mark.parametrize("batch", [1, 2])
def test_attend_matches_sdpa_with_a_bool_mask_at_real_width(batch: int) -> None:
    """The written-out attention equals upstream's SDPA with the bool mask (-inf), at the decoder's width."""
    real = DecoderConfig()
    gen = torch.Generator().manual_seed(batch)
    heads, queries, pixels = real.num_heads, 40, 32 * 32
    hd = real.hidden_dim // heads
    q, k, v = (torch.randn(batch, heads, n, hd, generator=gen) * 2 for n in (queries, pixels, pixels))
    logits = torch.randn(batch, queries, pixels, generator=gen) - 1.0
    logits[:, 0] = -1.0  # one row blocked everywhere: released to attend everywhere
    bias = attention_bias(logits)
    allowed = bias == 0
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None])
    assert max_diff(attend(q, k, v, bias), want) < 5e-5  # fp32 rounding on values up to ~8
    assert max_diff(attend(q, k, v), F.scaled_dot_product_attention(q, k, v)) < 5e-5


def test_cosine_class_logits_hand_checked() -> None:
    queries = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # (1, 2, 2)
    cond = torch.tensor([[[3.0, 0.0], [1.0, 1.0], [0.0, 0.0]]])  # (1, 3, 2), last slot padded
    valid = torch.tensor([[True, True, False]])
    bg = torch.tensor([0.0, -1.0])
    out = cosine_class_logits(queries, cond, valid, bg, torch.tensor(math.log(10.0)))
    r = 10 / math.sqrt(2)
    expected = torch.tensor([[[10.0, r, MASKED_LOGIT, 0.0], [0.0, r, MASKED_LOGIT, -10.0]]])
    assert out.shape == (1, 2, 4)
    assert torch.allclose(out, expected, atol=2e-3)
    assert (out[..., 2] == -1e4).all()

    clamped = cosine_class_logits(queries, cond, valid, bg, torch.tensor(math.log(1000.0)), clamp=500.0)
    assert clamped[0, 0, 0].item() == 500.0 and clamped[0, 1, 3].item() == -500.0


def test_cosine_class_logits_fp16_with_zero_padding() -> None:
    gen = torch.Generator().manual_seed(0)
    queries = torch.randn(2, 200, 256, generator=gen) * 3
    cond = torch.randn(2, 32, 256, generator=gen) * 3
    valid = torch.zeros(2, 32, dtype=torch.bool)
    valid[0, :7] = True
    valid[1, :1] = True
    cond = cond * valid[..., None]  # padded slots are zero vectors
    bg = torch.randn(256, generator=gen)
    scale = torch.tensor(DEC.logit_scale_init)
    ref = cosine_class_logits(queries, cond, valid, bg, scale)
    half = cosine_class_logits(queries.half(), cond.half(), valid, bg.half(), scale.half())
    assert half.dtype == torch.float16
    assert torch.isfinite(half).all()
    pad = torch.cat((~valid, torch.zeros(2, 1, dtype=torch.bool)), dim=1)[:, None, :].expand_as(half)
    assert (half[pad] == MASKED_LOGIT).all()
    assert max_diff(half.float()[~pad], ref[~pad]) < 5e-2


def test_full_size_param_counts_on_meta() -> None:
    dec = DecoderConfig()
    with torch.device("meta"):
        pd = PixelDecoder(dec, (512, 1024, 2048))
        md = MaskDecoder(dec)
        cfg = hf_config(dec)
        hf_pd = Mask2FormerPixelDecoder(cfg, feature_channels=[512, 1024, 2048])
        hf_tm = Mask2FormerTransformerModule(in_features=dec.hidden_dim, config=cfg)
    assert sum(p.numel() for p in pd.parameters()) == 6_101_440
    assert sum(p.numel() for p in md.parameters()) == 14_509_824
    for mine, ref in ((pd, hf_pd), (md, hf_tm)):
        assert {k: v.shape for k, v in mine.state_dict().items()} == {
            k: v.shape for k, v in ref.state_dict().items()
        }


def test_torch_export_matches_eager(pair) -> None:
    _, _, pd, md = pair
    feats = features(batch=1, seed=5)
    seg = torch.randn(1, DEC.hidden_dim, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        mask_features, memory = pd(feats)
        eager = md(memory, mask_features, seg, True)

    ep_pd = torch.export.export(pd, (feats,), strict=False)
    ep_md = torch.export.export(md, (memory, mask_features, seg, True), strict=False)
    with torch.no_grad():
        mf, mem = ep_pd.module()(feats)
        exported = ep_md.module()(memory, mask_features, seg, True)
    assert max_diff(mf, mask_features) < TOL
    for a, b in zip(mem, memory, strict=True):
        assert max_diff(a, b) < TOL
    assert isinstance(exported, DecoderOutput)
    assert max_diff(exported.queries, eager.queries) < TOL
    assert max_diff(exported.mask_logits, eager.mask_logits) < TOL
    for a, b in zip(exported.aux_mask_logits, eager.aux_mask_logits, strict=True):
        assert max_diff(a, b) < TOL

    # Core ML takes rank ≤ 5 only; ET / Core ML / OV reject data-dependent shapes
    for ep in (ep_pd, ep_md):
        for node in ep.graph.nodes:
            val = node.meta.get("val")
            if isinstance(val, torch.Tensor):
                assert val.dim() <= 5, (node.name, tuple(val.shape))
            target = str(node.target)
            assert "nonzero" not in target and "index_put" not in target, target


# -- deformable sampling: grid_sample and its row-lookup form ----------------------------------------------
def _attention_pair(embed_dim: int, heads: int, levels: int, points: int, reach: float, seed: int):
    from xsam_edge.model.pixel_decoder import MultiScaleDeformableAttention

    torch.manual_seed(seed)
    attention = MultiScaleDeformableAttention(embed_dim, heads, levels, points).eval()
    with torch.no_grad():  # offsets of up to ``reach`` pixels: many points land outside their level
        attention.sampling_offsets.weight.mul_(reach)
        attention.sampling_offsets.bias.mul_(reach)
    return attention


def _both_samplers(attention, batch: int, shapes: list[tuple[int, int]], seed: int):
    from xsam_edge.model.pixel_decoder import deformable_sampler, reference_points

    torch.manual_seed(seed)
    tokens = sum(h * w for h, w in shapes)
    query = torch.randn(batch, tokens, attention.embed_dim)
    value = torch.randn(batch, tokens, attention.embed_dim)
    ref = reference_points(shapes, query.device, query.dtype)
    with torch.no_grad():
        want = attention(query, value, ref, shapes)
        with deformable_sampler(attention, "rows"):
            got = attention(query, value, ref, shapes)
    return want, got


@pytest.mark.parametrize("batch", [1, 2])
def test_rows_sampler_equals_grid_sample_at_real_width(batch) -> None:
    """The real decoder's width (256, 8 heads, 3 levels, 4 points) on small levels, points falling outside."""
    real = DecoderConfig()
    dims = (real.hidden_dim, real.num_heads, real.num_feature_levels, real.num_points)
    attention = _attention_pair(*dims, reach=40, seed=1)
    want, got = _both_samplers(attention, batch, [(24, 20), (12, 10), (6, 5)], seed=2)
    assert got.shape == want.shape == (batch, 24 * 20 + 12 * 10 + 6 * 5, real.hidden_dim)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4), (got - want).abs().max()
    assert attention.sampler == "grid_sample"


def test_rows_sampler_equals_grid_sample_on_random_geometry() -> None:
    """Property: any level sizes (1 pixel wide too), heads, points and reach give grid_sample's values."""
    pytest.importorskip("hypothesis")
    from hypothesis import given, settings
    from hypothesis import strategies as st

    sizes = st.tuples(st.integers(1, 9), st.integers(1, 9))

    @settings(max_examples=25, deadline=None, derandomize=True)
    @given(
        shapes=st.lists(sizes, min_size=1, max_size=3),
        heads=st.sampled_from([1, 2, 4]),
        points=st.integers(1, 4),
        reach=st.floats(0.1, 30.0),
        batch=st.integers(1, 2),
    )
    def check(shapes, heads, points, reach, batch):
        attention = _attention_pair(8 * heads, heads, len(shapes), points, reach, seed=3)
        want, got = _both_samplers(attention, batch, shapes, seed=4)
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-4), (shapes, (got - want).abs().max())

    check()


def test_deformable_sampler_restores_and_rejects_unknown() -> None:
    from xsam_edge.model.pixel_decoder import deformable_sampler

    attention = _attention_pair(16, 2, 1, 2, 1.0, 0)
    with pytest.raises(RuntimeError), deformable_sampler(attention, "rows"):
        assert attention.sampler == "rows"
        raise RuntimeError("the block failed")
    assert attention.sampler == "grid_sample"
    with pytest.raises(ValueError, match="unknown deformable sampler"):
        with deformable_sampler(attention, "nearest"):
            pass


@pytest.mark.slow
def test_rows_sampler_plans_less_executorch_memory_than_grid_sample() -> None:
    """One real-width layer lowered to XNNPACK: the row lookups must not all be alive at once (a merged
    delegate held every one of them: twice grid_sample's arena)."""
    pytest.importorskip("executorch")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from xsam_edge.backends.executorch.export import delegation_report
    from xsam_edge.model.pixel_decoder import deformable_sampler, reference_points

    real = DecoderConfig()
    shapes = [(32, 32), (16, 16), (8, 8)]
    attention = _attention_pair(
        real.hidden_dim, real.num_heads, real.num_feature_levels, real.num_points, 4, 0
    )

    class Layer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = attention

        def forward(self, query: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
            return self.attention(query, value, reference_points(shapes, query.device, query.dtype), shapes)

    tokens = sum(h * w for h, w in shapes)
    example = (torch.randn(1, tokens, real.hidden_dim), torch.randn(1, tokens, real.hidden_dim))
    arena, portable = {}, {}
    for sampler in ("grid_sample", "rows"):
        with deformable_sampler(attention, sampler):
            program = torch.export.export(Layer().eval(), example)
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        portable[sampler] = delegation_report(edge)["portable_ops"]
        if sampler == "rows":
            reshapes = edge_op_shapes(edge, "view_copy", in_delegates=True)
        arena[sampler] = sum(edge.to_executorch().executorch_program.execution_plan[0].non_const_buffer_sizes)
    # float32 index arithmetic: XNNPACK runs all of it. Left portable: the lookups, their int conversion,
    # views, the index constants and the one-element ordering probe (ne)
    kept = ("embedding", "copy", "arange", "aten_ne_tensor")
    left = {op for op in portable["rows"] if not any(k in op for k in kept)}
    assert not left, portable["rows"]
    # the only casts: each lookup's indices to int64 and each ordering probe's bool to float. An int scalar
    # in the index arithmetic became an int64 constant cast to float32 by a portable copy, one per use: 173
    # casts in this layer (397 in the tiny teacher's encode_image)
    lookups = real.num_feature_levels * 4
    assert portable["rows"]["dim_order_ops__to_dim_order_copy_default"] == 2 * lookups - 1, portable["rows"]
    lookup = tokens * real.num_heads * real.num_points * real.hidden_dim // real.num_heads * 4  # bytes
    assert arena["rows"] < arena["grid_sample"], arena
    assert arena["rows"] < 4 * lookup, (arena, lookup)  # 12 lookups alive at once would be 12 of them
    # in XNNPACK a reshape is a copy: only the value table and the result are reshaped, never a lookup's rows
    # or its sums (they were: 37 copies, 20 % of a full-size student's pixel decoder)
    large = [shapes for shapes in reshapes if math.prod(shapes[0]) >= tokens * real.hidden_dim]
    assert large == [
        ((1, tokens, real.hidden_dim), (tokens * real.num_heads, real.hidden_dim // real.num_heads)),
        ((tokens * real.num_heads, 1, real.hidden_dim // real.num_heads), (1, tokens, real.hidden_dim)),
    ], large


def test_masked_attention_layer_runs_in_xnnpack_on_executorch(tmp_path) -> None:  # noqa: ANN001
    """One real-width decoder layer lowered to XNNPACK: the projections and the masked softmax are delegated
    (a packed slice is no constant: portable addmm took 600 of 623 ms; SDPA's safe softmax added where, eq,
    any),
    the values match eager, and the eager layer keeps only its packed parameters."""
    pytest.importorskip("executorch")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.extension.pybindings.portable_lib import _load_for_executorch

    from xsam_edge.backends.executorch.export import delegation_report
    from xsam_edge.model.mask_decoder import MaskedAttentionDecoderLayer, separate_projections

    real = DecoderConfig()
    torch.manual_seed(0)
    layer = MaskedAttentionDecoderLayer(real).eval()
    keys = set(layer.state_dict())

    class Layer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = layer

        def forward(self, hidden, query_pos, memory, memory_pos, logits):  # noqa: ANN001, ANN201
            return self.layer(hidden, query_pos, memory, memory_pos, attention_bias(logits))

    queries, pixels, d = 100, 32 * 32, real.hidden_dim
    example = (
        *(torch.randn(1, queries, d) for _ in range(2)),
        torch.randn(1, pixels, d),
        torch.randn(pixels, d),
        torch.randn(1, queries, pixels),
    )
    with separate_projections(layer):
        program = torch.export.export(Layer().eval(), example)
    assert set(layer.state_dict()) == keys  # the copies are gone
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    portable = delegation_report(edge)["portable_ops"]
    slow = {op for op in portable if any(k in op for k in ("addmm", "mm_", "where", "eq_", "any", "expand"))}
    assert not slow, portable
    # the bias's blocked test is float ops: a comparison and its bool cast were portable over every pixel
    assert not any(k in op for op in portable for k in ("lt_", "gt_", "le_", "ge_")), portable
    casts = edge_op_shapes(edge, "to_dim_order_copy")
    assert all(math.prod(before) == 1 for before, _ in casts), casts  # a scalar constant's at most
    with torch.no_grad():
        want = Layer()(*example)
    path = tmp_path / "layer.pte"
    path.write_bytes(edge.to_executorch().buffer)
    got = _load_for_executorch(str(path)).forward(list(example))[0]
    assert max_diff(got, want) < 1e-4
