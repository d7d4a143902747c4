"""ExecuTorch and Core ML quantization handlers on the tiny preset: real programs, real packages, few of them.

ExecuTorch lowering costs 5-60 s per graph here, so each program is quantized once per module; the W8A8
``segment`` program (~1-2 min alone) is marked slow. Core ML compression is file to file on packages
converted once per module; Linux cannot run them, so those tests check ops, names and sizes.

PSNR floors, all against the eager float32 graph in the ExecuTorch runtime:

- INT8 per-row embeddings (``w8``): rounding error is uniform within ±scale/2 with scale = row max / 127, so
  PSNR ≥ 20·log10(127·√12) ≈ 52.9 dB even if every row reached the global peak; floor 50 dB.
- W8A8 (``segment``, toy module): a dozen per-tensor INT8 activation stages at ~48 dB each lose ~10 dB
  together; floor 30 dB (measured 45 dB).
- 8da4w LLM: INT4 weights in groups of 32 (step = group max / 7) leave ~28 dB per layer; floor 20 dB
  (measured ~30 dB). A decode that lost the cache is far below (cosine ~0.05, EXPORT-RISKS C).
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from conftest import TINY

from xsam_edge.backends import get_backend
from xsam_edge.export.graphs import SlotConfig, example_inputs
from xsam_edge.model.build import build_model
from xsam_edge.quantization.recipes import FRAGILE
from xsam_edge.quantization.schemes import (
    Float16,
    Float32,
    Int4WeightOnly,
    Int8DynActInt4Weight,
    Int8Dynamic,
    Int8Static,
    Int8WeightOnly,
    Palettize,
)

SLOTS = SlotConfig(max_regions=2, max_conditions=4, prefill_len=16)


def _samples(model, graph: str, n: int, seed: int) -> list[list[np.ndarray]]:
    """``n`` input sets of ``graph`` in the calibration layout (positional numpy arrays)."""
    return [[x.numpy() for x in example_inputs(model.config, graph, SLOTS, seed=seed + i)] for i in range(n)]


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class Toy(torch.nn.Module):
    """A user graph: an embedding, a Linear body and a Linear head (the keep-float target)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(100, 64)
        self.body = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 64))
        self.head = torch.nn.Linear(64, 16)

    def forward(self, ids: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.emb(ids) + x
        return self.head(self.body(h)), h


def _toy() -> tuple[Toy, tuple[torch.Tensor, ...], list[tuple[np.ndarray, ...]]]:
    torch.manual_seed(0)
    inputs = (torch.randint(0, 100, (1, 8)), torch.randn(1, 8, 64))
    calibration = [(torch.randint(0, 100, (1, 8)).numpy(), torch.randn(1, 8, 64).numpy()) for _ in range(4)]
    return Toy().eval(), inputs, calibration


# -- ExecuTorch --------------------------------------------------------------------------------------------
def _et_quantize_module(*args, **kwargs):
    """The generic ``quantize_module`` of the ExecuTorch handler (executorch is imported on first use)."""
    return get_backend("executorch").quantize_handler().quantize_module(*args, **kwargs)


@pytest.fixture(scope="module")
def et():
    pytest.importorskip("executorch")
    from xsam_edge.backends.executorch import quantize

    return quantize


@pytest.fixture(scope="module")
def et_llm_8da4w(et, tiny_model, tmp_path_factory):
    """The joint LLM program with 8da4w, from prefill samples recorded at two chunk positions."""
    before = _state(tiny_model)
    held = [[e, p + 16 * i] for i, (e, p) in enumerate(_samples(tiny_model, "llm_prefill", 2, 100))]
    out = tmp_path_factory.mktemp("et_llm")
    exported, report = et.quantize_graph(
        tiny_model, "llm", SLOTS, Int8DynActInt4Weight(32), FRAGILE, {}, {"llm_prefill": held}, out
    )
    return exported, report, _unchanged(tiny_model, before)


def test_et_w8_embed_is_byte_embedding_and_runs(et, tiny_model, tmp_path):
    before = _state(tiny_model)
    held = {"embed": _samples(tiny_model, "embed", 2, 100)}
    exported, report = et.quantize_graph(
        tiny_model, "embed", SLOTS, Int8WeightOnly(), FRAGILE, {}, held, tmp_path
    )
    print(report)
    assert _unchanged(tiny_model, before), "quantization must work on a copy"
    assert exported.file == tmp_path / "embed.pte" and report.files == [str(exported.file)]
    # the portable INT8 gather the .pte calls (ExecuTorch's quant fusion of torchao's pattern)
    assert report.integer_ops == {"portable:quantized_decomposed::embedding_byte.out": 1}
    assert report.quantized == 1 and report.kept_float == []
    table = tiny_model.config.llm.vocab_size * tiny_model.config.llm.hidden_size
    assert report.bytes_quant < table * 4 / 2  # the float32 table alone is 4 bytes per weight
    assert report.psnr_db["embeddings"] >= 50.0  # computed in the ExecuTorch runtime on held-out ids


def test_et_8da4w_llm_program_keeps_its_methods_and_decodes(et_llm_8da4w, tiny_model):
    from xsam_edge.backends.executorch.export import load_program, run_method

    exported, report, unchanged = et_llm_8da4w
    print(report)
    assert unchanged, "quantization must work on a copy"
    assert exported.file.name == "llm.pte"
    assert list(exported.placement["methods"]) == ["prefill", "decode", "read_cache", "write_cache"]
    assert (
        report.quantized == 11 and report.kept_float == []
    )  # qkv, o, gate_up, down ×2, lm_head, projector ×2
    for method in ("prefill", "decode"):  # the dynamic INT8 / INT4 kernels sit inside each method's delegate
        ops = exported.placement["methods"][method]["delegated_ops"]
        assert ops.get("torchao_choose_qparams_affine_default", 0) > 0, ops
    assert report.integer_ops["delegate:torchao_choose_qparams_affine_default"] > 0
    assert set(report.psnr_db) == {"prefill.projected", "prefill.logits", "decode.projected", "decode.logits"}
    assert report.min_psnr >= 20.0, report.psnr_db
    # the program keeps state across methods: a decode after a prefill differs from one on a fresh program
    steps = [
        example_inputs(tiny_model.config, "llm_prefill", SLOTS),
        (torch.randn(1, 1, 64), torch.tensor([16])),
    ]
    program = load_program(exported.file)
    run_method(program.load_method("prefill"), steps[0])
    after = run_method(program.load_method("decode"), steps[1])[0]
    fresh = run_method(load_program(exported.file).load_method("decode"), steps[1])[0]
    assert np.isfinite(after).all() and not np.allclose(after, fresh)


def test_et_one_layer_8da4w_llm_reads_the_cache_prefill_wrote(et, tmp_path):
    """At one layer ``read_cache`` is a bare copy of a buffer that method only reads; ExecuTorch's per-method
    constant propagation once folded it into a zero constant (stored in the program, ~50 MB at full size):
    the read returned zeros, and ``write_cache`` then ``decode`` no longer repeated the first decode."""
    config = dataclasses.replace(TINY, llm=dataclasses.replace(TINY.llm, num_layers=1))
    torch.manual_seed(0)
    model = build_model(config).eval()
    exported, _ = et.quantize_graph(model, "llm", SLOTS, Int8DynActInt4Weight(32), (), {}, {}, tmp_path)
    parity = {p.name: p for p in exported.parity}
    for name in ("read_cache.keys", "read_cache.values"):  # measured 46.5 dB; the zero read gave 26 dB
        assert parity[name].psnr_db > 40.0, parity[name]
    for output in ("projected", "logits"):  # the same program state, so the same numbers
        restored, first = parity[f"restored_decode1.{output}"], parity[f"decode1.{output}"]
        assert restored.max_abs_diff == pytest.approx(first.max_abs_diff, rel=1e-6)


@pytest.mark.slow
def test_et_w8a8_segment_has_integer_kernels(et, tiny_model, tmp_path):
    calib = {"segment": _samples(tiny_model, "segment", 4, 10)}
    held = {"segment": _samples(tiny_model, "segment", 2, 100)}
    exported, report = et.quantize_graph(
        tiny_model, "segment", SLOTS, Int8Static(), FRAGILE, calib, held, tmp_path
    )
    print(report)
    ops = report.integer_ops
    assert ops["delegate:quantized_decomposed_quantize_per_tensor_default"] > 0
    assert ops["delegate:quantized_decomposed_dequantize_per_channel_default"] > 0  # INT8 weights
    assert report.quantized > 0
    assert report.psnr_db["mask_logits"] >= 30.0
    assert exported.parity and exported.file.stat().st_size == report.bytes_quant


def test_et_quantize_module_w8a8_keeps_the_named_module_float(et, tmp_path):
    module, inputs, calibration = _toy()
    report = _et_quantize_module(
        module, inputs, calibration, Int8Static(), tmp_path, "toy", keep_float=("head",)
    )
    print(report)
    assert (tmp_path / "toy.pte").is_file()
    assert report.quantized == 2  # body.0, body.2
    assert "head: keep_float pattern 'head'" in report.kept_float
    assert any(k.startswith("emb: Embedding") for k in report.kept_float)  # XNNPACKQuantizer has no embedding
    assert report.integer_ops["delegate:quantized_decomposed_quantize_per_tensor_default"] > 0
    assert report.bytes_quant < report.bytes_fp32
    assert report.min_psnr >= 30.0, report.psnr_db


class _PackedProjection(torch.nn.Module):
    """A projection whose weight is a bare parameter used through ``F.linear`` (like packed q/k/v)."""

    def __init__(self) -> None:
        super().__init__()
        self.in_proj_weight = torch.nn.Parameter(torch.randn(64, 64) / 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.in_proj_weight)


def test_et_w8a8_keep_float_covers_modules_without_linear_children(et, tmp_path):
    """A keep-float pattern naming a module keeps every op traced inside it float, functional linears too."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(_PackedProjection(), torch.nn.ReLU(), torch.nn.Linear(64, 16)).eval()
    inputs = (torch.randn(1, 8, 64),)
    calibration = [(torch.randn(1, 8, 64).numpy(),) for _ in range(4)]
    both = _et_quantize_module(module, inputs, calibration, Int8Static(), tmp_path, "both")
    assert both.quantized == 2  # the packed projection and the Linear
    kept = _et_quantize_module(module, inputs, calibration, Int8Static(), tmp_path, "kept", keep_float=("0",))
    assert kept.quantized == 1 and kept.min_psnr > both.min_psnr, (kept, both)


def test_et_w8_keeps_linear_float_and_says_why(et, tmp_path):
    module, inputs, _ = _toy()
    report = _et_quantize_module(module, inputs, [], Int8WeightOnly(), tmp_path, "toy")
    assert report.quantized == 1 and report.integer_ops == {
        "portable:quantized_decomposed::embedding_byte.out": 1
    }
    assert sorted(k.split(":")[0] for k in report.kept_float) == ["body.0", "body.2", "head"]
    assert all("weight-only INT8 linear" in k for k in report.kept_float)
    assert report.min_psnr >= 50.0


def test_et_rejects_unsupported_schemes_and_missing_calibration(et, tiny_model, tmp_path):
    for scheme in (Float16(), Int4WeightOnly(), Palettize()):
        with pytest.raises(
            ValueError,
            match="not supported by ExecuTorch; supported: " + ", ".join(get_backend("executorch").schemes),
        ):
            et.quantize_graph(tiny_model, "segment", SLOTS, scheme, (), {}, {}, tmp_path)
    with pytest.raises(ValueError, match="empty calibration set for segment"):
        et.quantize_graph(tiny_model, "segment", SLOTS, Int8Static(), (), {"segment": []}, {}, tmp_path)
    with pytest.raises(ValueError, match="unknown graph 'llm_decode'"):
        et.quantize_graph(tiny_model, "llm_decode", SLOTS, Int8Dynamic(), (), {}, {}, tmp_path)
    module, inputs, _ = _toy()
    with pytest.raises(ValueError, match="empty calibration set for toy"):
        _et_quantize_module(module, inputs, [], Int8Static(), tmp_path, "toy")
    assert not list(tmp_path.iterdir()), "a rejected request writes nothing"


def test_et_layer_sensitivity_finds_the_outlier_layer(et, tiny_model):
    """A massive-activation channel planted before one linear ranks that linear first.

    The last block's post-attention norm weight grows 1000× on one channel and ``gate_up_proj``'s column for
    it shrinks 1000× (SmoothQuant's equivalence, backwards): in float nothing changes, but per-token INT8
    activations now spend their range on that channel and its INT4 weight group rounds the column away. The
    block's ``down_proj`` is scaled up first so that the random tiny MLP matters to the outputs at all.
    """
    import copy

    from xsam_edge.export.graphs import build_graph

    model = copy.deepcopy(tiny_model)
    wrapper = build_graph(model, "llm_prefill", SLOTS)  # shares the model's weights; names as in the pass
    block = wrapper.lm.blocks[-1]
    with torch.no_grad():
        block.down_proj.weight *= 10.0
    held = [[e, p + 16 * i] for i, (e, p) in enumerate(_samples(model, "llm_prefill", 2, 100))]
    before = [o.clone() for o in wrapper(*(torch.from_numpy(x) for x in held[0]))]
    wrapper.reset_cache()
    with torch.no_grad():
        block.post_attention_layernorm.weight[3] *= 1000.0
        block.gate_up_proj.weight[:, 3] /= 1000.0
    after = wrapper(*(torch.from_numpy(x) for x in held[0]))
    wrapper.reset_cache()
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(after, before, strict=True))

    base, scores = et.layer_sensitivity(
        model, "llm", SLOTS, Int8DynActInt4Weight(32), FRAGILE, {}, {"llm_prefill": held}
    )
    assert set(base) == {"projected", "logits"}
    assert len(scores) == 11 and len({s.module for s in scores}) == 11  # every quantized linear, once
    assert [s.gain_db for s in scores] == sorted((s.gain_db for s in scores), reverse=True)
    ranked = [(s.module, s.gain_db) for s in scores]
    assert scores[0].module == "lm.blocks.1.gate_up_proj" and scores[0].gain_db > 3 * max(
        scores[1].gain_db, 1
    ), ranked
    # with that layer float (what a recipe's float_layers does), the graph is as good as the pass predicted
    again, _ = et.layer_sensitivity(
        model,
        "llm",
        SLOTS,
        Int8DynActInt4Weight(32),
        FRAGILE + (scores[0].module,),
        {},
        {"llm_prefill": held},
    )
    assert again == scores[0].psnr_db


# -- Core ML -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def coreml_llm(tiny_model, tmp_path_factory):
    """The LLM's prefill and decode packages as the float bundle has them (fp16 compute)."""
    pytest.importorskip("coremltools")
    from xsam_edge.backends.coreml.export import export_coreml

    out = tmp_path_factory.mktemp("coreml_fp")
    return {g: [export_coreml(tiny_model, g, SLOTS, out).file] for g in ("llm_prefill", "llm_decode")}


@pytest.mark.parametrize(
    ("scheme", "op"),
    [
        (Int8WeightOnly(), "constexpr_blockwise_shift_scale"),
        (Int4WeightOnly(group_size=32), "constexpr_blockwise_shift_scale"),
        (Palettize(nbits=4, group_size=16), "constexpr_lut_to_dense"),
    ],
    ids=["w8", "w4", "palettize"],
)
def test_coreml_compresses_the_llm_packages(coreml_llm, tiny_model, tmp_path, scheme, op):
    import coremltools as ct

    from xsam_edge.backends.coreml.export import PREDICT_SKIP_REASON, mil_op_histogram

    quantize_graph = get_backend("coreml").quantize_handler().quantize_graph

    files, report = quantize_graph("llm", coreml_llm, scheme, ("lm_head",), {}, {}, tmp_path)
    print(report)
    assert files == {g: [tmp_path / f"{g}.mlpackage"] for g in coreml_llm}
    assert not list(tmp_path.glob(".*")), "temporary folders left behind"
    # 8 block linears (qkv, o, gate_up, down ×2) per package; lm_head kept; the projector is ≤ 2048 weights
    assert report.integer_ops == {op: 16} and report.quantized == 16
    assert report.kept_float == ["p_lm_lm_head_weight_to_fp16: keep_float pattern 'lm_head'"] * 2
    assert report.bytes_quant < report.bytes_fp32 and report.ratio > 1.3
    assert report.psnr_db == {} and PREDICT_SKIP_REASON in report.notes
    for graph, (package,) in files.items():
        spec = ct.models.MLModel(str(package), skip_model_load=True).get_spec()
        source = ct.models.MLModel(str(coreml_llm[graph][0]), skip_model_load=True).get_spec()
        assert [s.name for s in spec.description.state] == [s.name for s in source.description.state]
        compressed = [
            o.outputs[0].name
            for f in spec.mlProgram.functions.values()
            for b in f.block_specializations.values()
            for o in b.operations
            if o.type == op
        ]
        assert len(compressed) == mil_op_histogram(spec)[op] == 8
        # parameters only: the RoPE tables and the mask fill (folded constants) stay float, lm_head is kept
        assert all(n.startswith("p_lm_blocks_") for n in compressed), compressed
    _replays_as_compressed(files["llm_prefill"][0], scheme, tiny_model)


def _replays_as_compressed(package, scheme, model) -> None:
    """Decompressed on Linux (``quantization.replay``), each weight takes only its scheme's values, and every
    one lands in the eager wrapper the package was converted from."""
    from xsam_edge.backends.coreml.weights import package_weights
    from xsam_edge.export.graphs import build_graph
    from xsam_edge.quantization.replay import ReplayedGraph, load_package_weights

    weights = package_weights(package)
    qkv = weights["p_lm_blocks_0_qkv_proj_weight"].astype(np.float32)  # (out, in)
    if scheme.name == "w8":  # each row an integer multiple of its scale, max |row| / 127
        steps = qkv / (np.abs(qkv).max(axis=1, keepdims=True) / 127)
        assert np.abs(steps - steps.round()).max() < 0.1
    elif scheme.name == "w4":  # 16 levels in each block of 32 inputs of a row
        blocks = qkv.reshape(-1, 32)
        assert max(len(np.unique(b)) for b in blocks) <= 16
    else:  # palettize: one 16-entry table per 16 output channels
        assert max(len(np.unique(g)) for g in np.split(qkv, len(qkv) // 16)) <= 16
    wrapper = build_graph(copy.deepcopy(model), "llm_kvio_prefill", SLOTS)
    record = ReplayedGraph("llm_prefill", str(package))
    load_package_weights(wrapper, weights, record)
    assert record.elements == sum(p.numel() for p in wrapper.parameters()) and record.max_abs_change > 0


def test_coreml_quantized_llm_part_is_one_multifunction_package(coreml_llm, tiny_model, tmp_path):
    """The quantize stage compresses the two packages, then ships one; sizes compare merged with merged."""
    import shutil

    from xsam_edge.export.placement import ExportedGraph
    from xsam_edge.export.to_bundle import bundle_manifest, graph_entry
    from xsam_edge.quantization.quantize import _quantize_graph
    from xsam_edge.quantization.recipes import Recipe
    from xsam_edge.spec.bundle import finalize_bundle, load_bundle
    from xsam_edge.spec.tokenizer import tiny_tokenizer

    staging = tmp_path / "fp32-staging"
    entries = []
    for name, (package,) in coreml_llm.items():
        shutil.copytree(package, staging / "coreml" / package.name)
        graph = ExportedGraph(
            name, "coreml", [staging / "coreml" / package.name], [], [], [], [], [], [], 0.0, "t"
        )
        entries.append(graph_entry(graph, staging))
    manifest = bundle_manifest(tiny_model, tiny_tokenizer(), SLOTS, entries, source={"name": "tiny"})
    tiny_tokenizer().save(staging)  # a sealed bundle always carries its tokenizer
    fp32 = load_bundle(finalize_bundle(staging, tmp_path / "fp32", manifest))
    recipe = Recipe("c", "coreml", {"llm": Int4WeightOnly(group_size=32)}, default=Float16())
    part = _quantize_graph(
        tiny_model, fp32, recipe, "llm", recipe.scheme_for("llm"), None, SLOTS, tmp_path / "w"
    )
    (entry,) = part.entries
    assert entry.name == "llm" and [m["name"] for m in entry.methods] == ["prefill", "decode"]
    assert sorted(p.name for p in part.root.iterdir() if p.suffix == ".mlpackage") == ["llm.mlpackage"]
    report = part.report
    split_float = sum(f.stat().st_size for (p,) in coreml_llm.values() for f in p.rglob("*") if f.is_file())
    print(report.bytes_fp32, report.bytes_quant, split_float)
    assert report.files == ["llm.mlpackage"] and report.bytes_quant < report.bytes_fp32 < 0.6 * split_float
    again = _quantize_graph(
        tiny_model, fp32, recipe, "llm", recipe.scheme_for("llm"), None, SLOTS, tmp_path / "w"
    )
    assert again.entries == part.entries  # the finished part is reused, merged as it was saved


def test_coreml_w8_image_encoder_with_a_position_table_below_the_size_threshold(tiny_model, tmp_path):
    """tiny's SAM position table (2048 values) stays a plain constant, and coremltools 9.0's conv-bias
    fusion then fails on the compressed patch-embedding conv before it: the stage keeps that conv float."""
    pytest.importorskip("coremltools")
    from xsam_edge.backends.coreml.export import export_coreml

    quantize_graph = get_backend("coreml").quantize_handler().quantize_graph

    package = export_coreml(tiny_model, "encode_image", SLOTS, tmp_path / "fp").file
    files, report = quantize_graph("encode_image", {"encode_image": [package]}, Int8WeightOnly(), (), {}, {},
                                   tmp_path / "q")  # fmt: skip
    assert report.integer_ops.get("constexpr_blockwise_shift_scale", 0) > 0
    assert any("patch_embed" in k and "conv-bias fusion" in k for k in report.kept_float), report.kept_float
    assert report.bytes_quant < report.bytes_fp32


def test_coreml_fp16_copies_and_bad_requests_fail(coreml_llm, tmp_path):
    coreml = get_backend("coreml").quantize_handler()
    quantize_graph, quantize_module = coreml.quantize_graph, coreml.quantize_module

    files, report = quantize_graph("llm", coreml_llm, Float16(), FRAGILE, {}, {}, tmp_path / "fp16")
    assert report.bytes_quant == report.bytes_fp32 and report.integer_ops == {}
    assert any("copied as converted (fp16 compute" in n for n in report.notes)
    with pytest.raises(
        ValueError, match="not supported by 'coreml'; supported: " + ", ".join(get_backend("coreml").schemes)
    ):
        quantize_graph("llm", coreml_llm, Int8Static(), (), {}, {}, tmp_path)
    with pytest.raises(ValueError, match="no float32 files for 'llm_decode'"):
        quantize_graph(
            "llm", {"llm_prefill": coreml_llm["llm_prefill"]}, Int8WeightOnly(), (), {}, {}, tmp_path
        )
    # an fp32-compute package cannot become fp16 file to file: it is copied, and the note names the fix
    module, inputs, _ = _toy()
    fp32 = quantize_module(module, inputs, [], Float32(), tmp_path / "fp32", "toy")
    toy = {"toy": [fp32.files[0]]}  # a user's own package: quantized file by file, not as a recipe graph
    _, report = coreml.quantize_files("toy", ("toy",), toy, Float16(), (), {}, {}, tmp_path / "f16")
    assert any("precision='fp16'" in n for n in report.notes)


def test_coreml_conversion_and_compression_leave_no_package_in_the_temp_folder(tmp_path, monkeypatch):
    """coremltools writes every converted or compressed model to a temporary .mlpackage and deletes it only
    at exit: a long job kept a copy of every graph, and a killed worker left them in /tmp for good."""
    pytest.importorskip("coremltools")
    import tempfile

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    module = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 512)).eval()
    quantize_module = get_backend("coreml").quantize_handler().quantize_module
    quantize_module(module, (torch.randn(1, 64),), [], Int4WeightOnly(), tmp_path / "out", "mlp", ())
    assert (tmp_path / "out" / "mlp.mlpackage").is_dir()
    assert not list(temp.glob("*.mlpackage"))


@pytest.mark.parametrize("head_bits", [8, 4])
def test_coreml_w4_packs_the_output_layer_at_head_bits(tmp_path, head_bits):
    """The head (the layer whose result is the output) is INT8 per channel under ``w4`` unless told 4."""
    pytest.importorskip("coremltools")
    import coremltools as ct
    from coremltools.proto import MIL_pb2

    from xsam_edge.backends.coreml.quantize import _operations

    module = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 512)).eval()
    quantize_module = get_backend("coreml").quantize_handler().quantize_module
    scheme = Int4WeightOnly(group_size=32, head_bits=head_bits)
    report = quantize_module(module, (torch.randn(1, 64),), [], scheme, tmp_path, "mlp", ())
    assert report.integer_ops == {"constexpr_blockwise_shift_scale": 2}
    spec = ct.models.MLModel(str(tmp_path / "mlp.mlpackage"), skip_model_load=True).get_spec()
    stored = {  # the decompressed weight's name → the data type its values are stored in
        op.outputs[0].name: op.inputs["data"].arguments[0].value.type.tensorType.dataType
        for op in _operations(spec)
        if op.type == "constexpr_blockwise_shift_scale"
    }
    assert stored["p_0_weight_to_fp16_quantized"] == MIL_pb2.INT4
    assert stored["p_2_weight_to_fp16_quantized"] == (MIL_pb2.INT8 if head_bits == 8 else MIL_pb2.INT4)
    assert any("head_bits 8" in n for n in report.notes) == (head_bits == 8)


def test_coreml_quantize_module_w4(tmp_path):
    pytest.importorskip("coremltools")
    quantize_module = get_backend("coreml").quantize_handler().quantize_module

    module, inputs, calibration = _toy()
    report = quantize_module(
        module, inputs, calibration, Int4WeightOnly(group_size=32), tmp_path, "toy", ("head",)
    )
    print(report)
    assert (tmp_path / "toy.mlpackage").is_dir() and not list(tmp_path.glob(".*"))
    # the embedding table (100×64) and body.0 / body.2 (64×128) exceed 2048 weights; head (16×64) does not,
    # so its keep_float changes nothing and is not listed
    assert report.integer_ops == {"constexpr_blockwise_shift_scale": 3}
    assert report.kept_float == [] and report.bytes_quant < report.bytes_fp32
    assert math.isinf(report.min_psnr) and report.notes[-1] == "Core ML prediction needs macOS"


def test_executorch_mixed_8da4w_keeps_the_layer_int4_resolves_worst_at_int8():
    """``ratio < 1`` on 8da4w (mixed INT4/INT8, as ``w4`` has on OpenVINO and ONNX), at Qwen2.5-0.5B's widths:
    a down projection with one large weight in every group of 32 (which INT4 groups resolve worst) goes to
    INT8 per channel first; the head stays ``head_bits``'s; a uniform scheme keeps none at INT8."""
    pytest.importorskip("transformers")
    from test_tied_tables import _tied_qwen2

    from xsam_edge.backends.executorch.quant_plan import QuantPlan
    from xsam_edge.quantization.ranking import int4_weight_error

    module, samples, _ = _tied_qwen2()
    down = module.llm.model.layers[0].mlp.down_proj
    with torch.no_grad():
        down.weight[:, ::32] = 8 * down.weight.std() * torch.sign(down.weight[:, ::32])
    linear = [(n, m) for n, m in module.named_modules() if isinstance(m, torch.nn.Linear)]
    weights = {n: m.weight.detach().numpy() for n, m in linear}
    errors = {n: int4_weight_error(w.T, 32) for n, w in weights.items() if n != "llm.lm_head"}
    assert max(errors, key=errors.get) == "llm.model.layers.0.mlp.down_proj", errors  # the planted layer
    inputs = (torch.from_numpy(samples[0][0]),)

    def int8_layers(ratio: float) -> tuple[set[str], list[str]]:
        plan = QuantPlan(Int8DynActInt4Weight(32, ratio=ratio), (), inputs, [], stateful=False)
        quantized = plan.prepare(module)
        linear = [(n, m) for n, m in quantized.named_modules() if isinstance(m, torch.nn.Linear)]
        bits = {n: m.weight.target_dtype for n, m in linear}
        assert bits["llm.lm_head"] == torch.int4
        return {n for n, b in bits.items() if b == torch.int8}, plan.notes

    # 10 % of the 14.9 M non-head Linear weights: the down projection (4.4 M) alone fills it
    chosen, notes = int8_layers(0.9)
    assert chosen == {"llm.model.layers.0.mlp.down_proj"}
    assert "1 Linear(s) at INT8 (ratio 0.9): largest INT4 weight error" in notes[0]
    assert int8_layers(1.0)[0] == set()
    assert Int8DynActInt4Weight(ratio=0.8).label() == "8da4w-g32-r80"
    with pytest.raises(ValueError, match="8da4w: ratio must be a number in"):
        Int8DynActInt4Weight(ratio=0)


class _MaskCodeOps(torch.nn.Module):
    """The ops a Hugging Face LLM's mask code leaves in an exported program: ``diff`` and ``new_ones``."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(8, 8)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        steps = torch.diff(ids, dim=-1).sum(-1, keepdim=True).float()
        return self.linear(ids.float()) + ids.new_ones(1, 1).float() * steps


def test_coreml_converts_a_user_module_with_ops_coremltools_cannot_translate(tmp_path):
    """coremltools 9 refuses ``diff`` and ``new_ones`` (``quantize_model`` of a Qwen2 LLM failed); only the
    ops it names are decomposed."""
    import coremltools as ct

    from xsam_edge.backends.coreml.export import mil_op_histogram
    from xsam_edge.backends.coreml.quantize import CoreMLQuantizer

    module, ids = _MaskCodeOps().eval(), torch.arange(8)[None] ** 2
    (package,) = CoreMLQuantizer().export_float(module, (ids,), tmp_path, "mask_ops", Float16())
    spec = ct.models.MLModel(str(package), skip_model_load=True).get_spec()
    assert [i.name for i in spec.description.input] == ["ids"]
    assert "linear" in mil_op_histogram(spec)


def test_coreml_mixed_w4_keeps_the_weights_int4_resolves_worst_at_int8(coreml_llm, tmp_path):
    """``ratio`` was ignored by Core ML (every weight INT4); now ``1 - ratio`` of them stay at INT8, ranked by
    their INT4 rounding error as on ONNX and ExecuTorch, and the decompressed weights show it."""
    from xsam_edge.backends.coreml.quantize import compress_package
    from xsam_edge.backends.coreml.weights import package_weights

    source, mixed = coreml_llm["llm_prefill"][0], tmp_path / "mixed.mlpackage"
    _, notes = compress_package(source, mixed, Int4WeightOnly(group_size=32, ratio=0.5))
    (note,) = [n for n in notes if "ratio 0.5" in n]
    chosen = int(note.split(": ")[1].split()[0])
    blocks = {
        k: w.astype(np.float32).reshape(-1, 32)
        for k, w in package_weights(mixed).items()
        if k.startswith("p_lm_blocks_") and w.ndim == 2  # the 8 block linears (the head: INT8, head_bits)
    }
    int8 = [k for k, b in blocks.items() if max(len(np.unique(row)) for row in b) > 16]
    assert 0 < len(int8) <= chosen and len(int8) < len(blocks), (int8, note)
