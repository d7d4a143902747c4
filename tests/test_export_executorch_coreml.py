"""ExecuTorch (XNNPACK) and Core ML backends: placement reports, parity, the stateful LLM, spec checks.

ExecuTorch lowering takes seconds per graph, so each program is lowered once per module (lazily, on first
use). The image, segment and LLM programs are checked in test_bundle_runtime.py, where the ExecuTorch bundle
lowers them once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from conftest import edge_op_shapes

from xsam_edge.export.graphs import GRAPH_NAMES, SlotConfig, build_graph, graph_specs
from xsam_edge.export.placement import ExportedGraph

SLOTS = SlotConfig(max_regions=4, max_conditions=4, max_seq=128, prefill_len=16)
MIN_PSNR_DB = 40.0  # the FP32 threshold, on every output


def _report(graph: ExportedGraph) -> str:
    numbers = ", ".join(f"{p.name} {p.psnr_db:.1f} dB / {p.max_abs_diff:.1e}" for p in graph.parity)
    return f"{graph.backend:10s} {graph.name:17s} {graph.export_seconds:5.1f} s  {numbers}"


# -- ExecuTorch --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def et_graph(tiny_model, tmp_path_factory) -> Callable[[str], ExportedGraph]:
    """Lower a graph on first request and keep it for the module (``llm`` is the joint prefill/decode)."""
    pytest.importorskip("executorch")
    from xsam_edge.backends.executorch.export import export_executorch

    out = tmp_path_factory.mktemp("executorch")
    cache: dict[str, ExportedGraph] = {}

    def get(name: str) -> ExportedGraph:
        if name not in cache:
            cache[name] = export_executorch(tiny_model, "llm_prefill" if name == "llm" else name, SLOTS, out)
        return cache[name]

    return get


def check_et_program(graph: ExportedGraph, name: str) -> None:
    """The checks every lowered ExecuTorch program passes (test_bundle_runtime.py uses them too)."""
    print(_report(graph), graph.placement["methods"])
    assert graph.file.name == f"{name}.pte" and graph.file.is_file()
    assert graph.placement["file_bytes"] == graph.file.stat().st_size > 0
    assert graph.min_psnr_db >= MIN_PSNR_DB, _report(graph)
    assert not list(graph.file.parent.glob(".*")), "temporary files left behind"


@pytest.mark.parametrize("name", ["embed", "region"])
def test_et_small_graphs_match_eager(et_graph, name):
    graph = et_graph(name)
    check_et_program(graph, name)
    assert [p.name for p in graph.parity] == graph.outputs


def test_et_region_is_delegated_and_embed_is_not(et_graph):
    region = et_graph("region").placement["methods"]["forward"]
    assert region["delegated_nodes"] > 0 and region["delegate_subgraphs"] > 0
    # adaptive_max_pool2d has no ExecuTorch kernel; the export rewrites it to max_pool2d_with_indices
    assert not any("adaptive_max_pool" in op for op in region["portable_ops"])
    # XNNPACK has no embedding op: the embed graph is a portable gather (nothing to delegate)
    embed = et_graph("embed").placement["methods"]["forward"]
    assert embed["delegated_nodes"] == 0
    assert any("embedding" in op for op in embed["portable_ops"])


@pytest.mark.parametrize("name", ["segment", "llm_prefill", "llm_decode"])
def test_et_graphs_cast_no_integer_constants(tiny_model, name):
    """An int scalar in float arithmetic (``1 - x``) becomes an int64 constant that ExecuTorch casts to float
    with a portable copy at every call: the LLM's cache write did it twice per layer and step, the mask
    decoder's attention bias once per layer. Float scalars leave nothing to cast (the image graph's row
    lookups: test_decoder.py)."""
    pytest.importorskip("executorch")
    from executorch.exir import to_edge

    from xsam_edge.backends.executorch.export import EXECUTORCH_DECOMPOSITIONS, xnnpack_trace_form
    from xsam_edge.export.graphs import example_inputs

    module = build_graph(tiny_model, name, SLOTS)
    with xnnpack_trace_form(module), torch.no_grad():
        program = torch.export.export(
            module, tuple(example_inputs(tiny_model.config, name, SLOTS)), strict=False
        )
    graph = to_edge(program.run_decompositions(EXECUTORCH_DECOMPOSITIONS)).exported_program().graph
    casts = [
        n
        for n in graph.nodes
        if n.op == "call_function" and "_to_dim_order_copy" in str(n.target) and n.args[0].op == "placeholder"
    ]
    assert not casts, [(n.name, n.meta.get("original_aten")) for n in casts]


@pytest.mark.parametrize("masked", [False, True])
def test_et_unmasked_attention_has_no_portable_safe_softmax(masked, tmp_path):
    """Unmasked SDPA lowers whole into XNNPACK (the default decomposition's safe softmax, eq/any/where over
    every score, ran portable); a masked one keeps the default decomposition. Both match eager."""
    pytest.importorskip("executorch")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.extension.pybindings.portable_lib import _load_for_executorch

    from xsam_edge.backends.executorch.export import EXECUTORCH_DECOMPOSITIONS, delegation_report

    class Attention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = torch.nn.Linear(64, 192)

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            q, k, v = self.qkv(x).view(1, 100, 3, 4, 16).permute(2, 0, 3, 1, 4)
            mask = mask if masked else None
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    torch.manual_seed(0)
    module = Attention().eval()
    example = (torch.randn(1, 100, 64), torch.rand(1, 1, 100, 100) > 0.3)
    program = torch.export.export(module, example).run_decompositions(EXECUTORCH_DECOMPOSITIONS)
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    portable = delegation_report(edge)["portable_ops"]
    safe_softmax = {op for op in portable if any(k in op for k in ("any", "eq_", "where", "logical_not"))}
    assert bool(safe_softmax) == masked, portable
    path = tmp_path / "attention.pte"
    path.write_bytes(edge.to_executorch().buffer)
    got = _load_for_executorch(str(path)).forward(list(example))[0]
    with torch.no_grad():
        np.testing.assert_allclose(got.numpy(), module(*example).numpy(), atol=1e-5)


def test_et_batched_matmul_copies_no_operand(tmp_path):
    """A 4-D matmul whose batch dims match lowers to one delegated bmm: the default decomposition's
    ``expand`` to the same shape was a portable ``expand_copy`` of each operand (the LLM's K and V caches,
    twice per layer and step). Broadcasting still works, and both match eager."""
    pytest.importorskip("executorch")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.extension.pybindings.portable_lib import _load_for_executorch

    from xsam_edge.backends.executorch.export import EXECUTORCH_DECOMPOSITIONS, delegation_report

    class Scores(torch.nn.Module):
        def forward(self, q: torch.Tensor, k: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return q @ k.transpose(2, 3), w @ k  # same batch dims; (S, T) @ (1, h, T, d) broadcasts

    torch.manual_seed(0)
    example = (torch.randn(1, 4, 8, 16), torch.randn(1, 4, 32, 16), torch.randn(32, 32))
    program = torch.export.export(Scores(), example).run_decompositions(EXECUTORCH_DECOMPOSITIONS)
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    expands = edge_op_shapes(edge, "expand_copy")
    assert all(before != after for before, after in expands), expands  # only the broadcast operand
    assert delegation_report(edge)["delegated_ops"].get("aten_bmm_default") == 2
    path = tmp_path / "scores.pte"
    path.write_bytes(edge.to_executorch().buffer)
    got = _load_for_executorch(str(path)).forward(list(example))
    for g, want in zip(got, Scores()(*example), strict=True):
        np.testing.assert_allclose(g.numpy(), want.numpy(), atol=1e-5)

    # the profiler that found the copies sees them in the default decomposition's program, not in ours
    from benchmarks.executorch_profile import ab, profile

    default = tmp_path / "default.pte"
    lowered = to_edge_transform_and_lower(
        torch.export.export(Scores(), example), partitioner=[XnnpackPartitioner()]
    )
    default.write_bytes(lowered.to_executorch().buffer)
    kinds = {name: profile(pte, runs=2)["count"] for name, pte in (("default", default), ("ours", path))}
    assert kinds["default"].get("native_call_expand_copy.out") == 4, kinds["default"]
    assert kinds["ours"].get("native_call_expand_copy.out") == 1, kinds["ours"]  # the broadcast (32, 32)
    assert all(kinds[name]["DELEGATE_CALL"] >= 1 for name in kinds), kinds
    result = ab(default, path, rounds=2)
    assert result["max_abs_diff"] < 1e-5 and set(result["ms"]) == {"before", "after"}, result


def test_et_rejects_kvio_and_unknown(tiny_model, tmp_path):
    pytest.importorskip("executorch")
    from xsam_edge.backends.executorch.export import export_executorch

    with pytest.raises(ValueError, match="program state"):
        export_executorch(tiny_model, "llm_kvio_decode", SLOTS, tmp_path)
    with pytest.raises(ValueError, match="unknown graph"):
        export_executorch(tiny_model, "nope", SLOTS, tmp_path)
    with pytest.raises(ValueError, match="unknown partitioner"):
        export_executorch(tiny_model, "embed", SLOTS, tmp_path, partitioner="qnn")
    with pytest.raises(ValueError, match="MPS partitioner is not in the executorch wheel"):
        export_executorch(tiny_model, "embed", SLOTS, tmp_path, partitioner="mps")


def test_et_coreml_partitioner_lowers_the_region_graph(tiny_model, tmp_path):
    """The Core ML delegate lowers here; its program runs only where ExecuTorch registers Core ML (Apple)."""
    pytest.importorskip("executorch")
    pytest.importorskip("coremltools")
    import platform

    from xsam_edge.backends.executorch.export import export_executorch

    graph = export_executorch(tiny_model, "region", SLOTS, tmp_path, partitioner="coreml")
    method = graph.placement["methods"]["forward"]
    assert graph.placement["partitioner"] == "coreml" and "(coreml)" in graph.route
    assert method["delegated_nodes"] > 0 and method["portable_nodes"] == 0, method
    assert "CoreMLBackend" in graph.files[0].read_bytes().decode("latin-1")  # the delegate's id in the .pte
    if platform.system() != "Darwin":
        assert (
            graph.parity == []
            and "runs only where ExecuTorch has that backend" in graph.placement["parity_skipped"]
        )


# -- Core ML -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def coreml_graphs(tiny_model, tmp_path_factory) -> dict[tuple[str, str], ExportedGraph]:
    """Every graph in FP16; segment and the LLM also in FP32."""
    pytest.importorskip("coremltools")
    from xsam_edge.backends.coreml.export import export_coreml

    out = tmp_path_factory.mktemp("coreml")
    graphs = {(name, "fp16"): export_coreml(tiny_model, name, SLOTS, out / "fp16") for name in GRAPH_NAMES}
    for name in ("segment", "llm_prefill", "llm_decode"):
        graphs[name, "fp32"] = export_coreml(tiny_model, name, SLOTS, out / "fp32", precision="fp32")
    return graphs


def test_coreml_every_graph_converts_with_declared_spec(coreml_graphs, tiny_model):
    import coremltools as ct

    from xsam_edge.backends.coreml.export import PREDICT_SKIP_REASON, coreml_predict_available

    specs = graph_specs(tiny_model.config, SLOTS)
    for (name, precision), graph in coreml_graphs.items():
        spec, placement = specs[name], graph.placement
        print(graph.name, precision, placement["file_bytes"], placement["histogram"])
        assert graph.file.name == f"{name}.mlpackage" and graph.file.is_dir()
        assert graph.inputs == [s.name for s in spec.inputs]
        assert graph.outputs == [s.name for s in spec.outputs]
        assert graph.input_shapes == [s.shape for s in spec.inputs]
        assert graph.output_shapes == [s.shape for s in spec.outputs]
        assert sorted(graph.states) == sorted(s.name for s in spec.states)
        assert placement["spec_matches"], name
        assert placement["unknown_ops"] == [], (name, placement["unknown_ops"])
        assert 2 <= placement["max_rank"] <= 5, (name, placement["max_rank"])  # the tiny SAM has windows too
        assert placement["precision"] == precision and placement["total_ops"] > 0
        expected_target = "iOS17" if name.startswith("llm_kvio") else "iOS18"
        assert placement["deployment_target"] == expected_target
        assert not list(graph.file.parent.glob(".*")), "temporary folders left behind"
        # integer inputs are int32 for Core ML
        for s, dtype in zip(spec.inputs, graph.input_dtypes, strict=True):
            assert dtype == ("int32" if s.dtype.startswith("int") else "float32"), (name, s.name, dtype)
        if not coreml_predict_available():
            assert placement["parity_skipped"] == PREDICT_SKIP_REASON
        loaded = ct.models.MLModel(str(graph.file), skip_model_load=True)
        assert loaded.get_spec().WhichOneof("Type") == "mlProgram"


def test_coreml_sam_l_window_geometry_converts_to_rank_5(tmp_path):
    """SAM ViT-L's window partition is a rank-6 reshape in PyTorch (64² tokens padded to 70², windows of
    14); coremltools must turn it into rank ≤ 5 steps or the device refuses the model. Full-size geometry,
    narrow widths (the rank does not depend on them)."""
    ct = pytest.importorskip("coremltools")
    from xsam_edge.backends.coreml.export import max_tensor_rank
    from xsam_edge.model.seg_encoder import SegEncoder
    from xsam_edge.spec.config import SegEncoderConfig

    config = SegEncoderConfig(
        image_size=1024,
        patch_size=16,
        hidden_size=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=2,
        window_size=14,
        global_attn_indexes=(1,),
        output_channels=16,
        projector_layer=1,
        connector_layers=(1, 2),
    )
    encoder = SegEncoder(config).eval()

    class Taps(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            taps = self.encoder.forward_taps(pixels)
            return taps[1], taps[2]  # a windowed block, then a global one

    pixels = torch.randn(1, 3, 1024, 1024)
    with torch.no_grad():
        program = torch.export.export(Taps(), (pixels,)).run_decompositions({})
    ranks = [n.meta["val"].dim() for n in program.graph.nodes if isinstance(n.meta.get("val"), torch.Tensor)]
    assert max(ranks) == 6  # the PyTorch graph does carry the rank-6 window tensor
    mlmodel = ct.convert(
        program,
        inputs=[ct.TensorType(name="pixels", shape=pixels.shape)],
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS18,
        skip_model_load=True,
    )
    assert max_tensor_rank(mlmodel.get_spec()) == 5


def test_coreml_llm_is_stateful_and_kvio_is_not(coreml_graphs):
    for precision in ("fp16", "fp32"):
        for phase in ("prefill", "decode"):
            graph = coreml_graphs[f"llm_{phase}", precision]
            assert len(graph.states) == 4 and graph.placement["histogram"].get("write_state", 0) > 0
    kvio = coreml_graphs["llm_kvio_decode", "fp16"]
    assert kvio.states == [] and "write_state" not in kvio.placement["histogram"]
    assert kvio.inputs[-2:] == ["past_keys", "past_values"]


def test_coreml_llm_ships_as_one_multifunction_package_with_weights_once(coreml_graphs, tiny_model, tmp_path):
    import shutil

    import coremltools as ct
    import coremltools.optimize.coreml as cto

    from xsam_edge.backends.coreml.export import spec_signature
    from xsam_edge.backends.coreml.pack import function_signatures, join_tied_embed, merge_llm_functions
    from xsam_edge.export.to_bundle import graph_entry

    (tmp_path / "coreml").mkdir()
    entries = []
    for name in ("embed", "llm_prefill", "llm_decode"):
        graph = coreml_graphs[name, "fp32"] if name != "embed" else coreml_graphs[name, "fp16"]
        shutil.copytree(graph.file, tmp_path / "coreml" / graph.file.name)
        graph = dataclasses.replace(graph, files=[tmp_path / "coreml" / graph.file.name])
        entries.append(graph_entry(graph, tmp_path))
    merged = merge_llm_functions(entries, tmp_path)
    assert [e.name for e in merged] == ["embed", "llm"] and merged[0] is entries[0]
    llm = merged[1]
    assert llm.files == ["coreml/llm.mlpackage"] and llm.inputs == entries[1].inputs
    assert [m["name"] for m in llm.methods] == ["prefill", "decode"]
    assert llm.methods[1]["inputs"] == entries[2].inputs and llm.states == entries[1].states
    assert sorted(p.name for p in (tmp_path / "coreml").iterdir()) == ["embed.mlpackage", "llm.mlpackage"]
    spec = ct.models.MLModel(str(tmp_path / llm.files[0]), skip_model_load=True).get_spec()
    assert spec.description.defaultFunctionName == "prefill"
    for function, source in (("prefill", "llm_prefill"), ("decode", "llm_decode")):
        single = ct.models.MLModel(str(coreml_graphs[source, "fp32"].file), skip_model_load=True).get_spec()
        assert function_signatures(spec)[function] == spec_signature(single)
    # the weights are stored once: the package is about half of the two it replaced
    print("multifunction bytes", llm.placement["file_bytes"], "before", llm.placement["bytes_before_merge"])
    assert llm.placement["file_bytes"] < 0.55 * llm.placement["bytes_before_merge"]
    # untied, embed shares no constant with the LLM: it keeps its package, and the trial leaves nothing behind
    assert not tiny_model.config.llm.tie_word_embeddings
    assert join_tied_embed(merged, tmp_path) is merged
    assert sorted(p.name for p in (tmp_path / "coreml").iterdir()) == ["embed.mlpackage", "llm.mlpackage"]

    # compressed packages (coremltools.optimize refuses multifunction models) merge the same way
    (tmp_path / "q" / "coreml").mkdir(parents=True)
    config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(weight_threshold=512))
    quantized = []
    for entry in entries[1:]:
        source = ct.models.MLModel(str(coreml_graphs[entry.name, "fp32"].file), skip_model_load=True)
        cto.linear_quantize_weights(source, config).save(
            str(tmp_path / "q" / "coreml" / f"{entry.name}.mlpackage")
        )
        quantized.append(dataclasses.replace(entry, files=[f"coreml/{entry.name}.mlpackage"]))

    def weight_bytes(package):
        return (package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").stat().st_size

    before = sum(weight_bytes(tmp_path / "q" / e.files[0]) for e in quantized)
    (q_llm,) = merge_llm_functions(quantized, tmp_path / "q")
    after = weight_bytes(tmp_path / "q" / q_llm.files[0])
    print("int8 weights", before, "→", after, "package", q_llm.placement["file_bytes"])
    assert after < 0.55 * before  # (the two functions' programs are not shared: at tiny size they weigh in)
    assert q_llm.placement["file_bytes"] < 0.5 * llm.placement["file_bytes"]


def test_coreml_encode_uses_resample(coreml_graphs):
    placement = coreml_graphs["encode_image", "fp16"].placement
    assert "resample" in placement["risks"]  # grid_sample → MIL resample


def test_coreml_unstateful_llm_means_kvio(tiny_model, tmp_path):
    pytest.importorskip("coremltools")
    from xsam_edge.backends.coreml.export import export_coreml

    graph = export_coreml(tiny_model, "llm_decode", SLOTS, tmp_path, stateful=False)
    assert graph.name == "llm_kvio_decode" and graph.states == []
    with pytest.raises(ValueError, match="precision"):
        export_coreml(tiny_model, "embed", SLOTS, tmp_path, precision="int8")


def test_coreml_predict_available_is_false_off_macos():
    pytest.importorskip("coremltools")
    import platform

    from xsam_edge.backends.coreml.export import coreml_predict_available

    if platform.system() != "Darwin":
        assert coreml_predict_available() is False


def _skip_without_coreml_predict() -> None:
    pytest.importorskip("coremltools")
    from xsam_edge.backends.coreml.export import PREDICT_SKIP_REASON, coreml_predict_available

    if not coreml_predict_available():
        pytest.skip(PREDICT_SKIP_REASON)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_coreml_predict_matches_eager(coreml_graphs, tiny_model, precision):
    _skip_without_coreml_predict()
    from xsam_edge.backends.coreml.export import predict_parity
    from xsam_edge.export.graphs import example_inputs

    specs = graph_specs(tiny_model.config, SLOTS)
    threshold = MIN_PSNR_DB if precision == "fp32" else 25.0
    for (name, prec), graph in coreml_graphs.items():
        if prec != precision:
            continue
        inputs = example_inputs(tiny_model.config, name, SLOTS)
        parity = predict_parity(graph.file, build_graph(tiny_model, name, SLOTS), specs[name], inputs)
        worst = min((p.psnr_db for p in parity), default=math.inf)
        assert worst >= threshold, (name, parity)
        assert all(np.isfinite(p.max_abs_diff) for p in parity)


# -- Core ML bundles scored on Linux: their weights replayed in the eager graphs (quantization.replay) -------
@pytest.fixture(scope="module")
def coreml_bundle(coreml_graphs, tiny_model, tmp_path_factory):
    """The fp16 packages above sealed into a bundle as ``export`` does (the LLM one multifunction package)."""
    import shutil

    from xsam_edge.backends import get_backend
    from xsam_edge.backends.coreml.pack import pack_llm
    from xsam_edge.export.to_bundle import bundle_manifest, graph_entry
    from xsam_edge.spec.bundle import finalize_bundle
    from xsam_edge.spec.tokenizer import tiny_tokenizer

    root = tmp_path_factory.mktemp("coreml_bundle")
    staging = root / "staging"
    (staging / "coreml").mkdir(parents=True)
    entries = []
    for name in get_backend("coreml").graphs:
        graph = coreml_graphs[name, "fp16"]
        shutil.copytree(graph.file, staging / "coreml" / graph.file.name)
        graph = dataclasses.replace(graph, files=[staging / "coreml" / graph.file.name])
        entries.append(graph_entry(graph, staging))
    entries = pack_llm(entries, staging)
    tiny_tokenizer().save(staging)
    manifest = bundle_manifest(tiny_model, tiny_tokenizer(), SLOTS, entries, source={"name": "tiny"})
    return finalize_bundle(staging, root / "bundle", manifest)


def test_coreml_replayed_bundle_carries_its_own_weights_into_every_graph(coreml_bundle, tiny_model):
    """fp16 packages: every weight moves by its fp16 rounding only, and a graph computes what eager does to
    that rounding. Compressed values (palettized, INT8, INT4): ``test_quant_executorch_coreml.py``."""
    from xsam_edge.backends.coreml.weights import parameter_name
    from xsam_edge.export.eager import EagerBackend
    from xsam_edge.export.graphs import example_inputs
    from xsam_edge.quantization.accuracy import evaluate_bundle
    from xsam_edge.quantization.replay import REPLAY_RUNNER, WeightReplay
    from xsam_edge.runtime.session import EdgeSession
    from xsam_edge.spec.bundle import load_bundle

    name = "p_lm_blocks_0_qkv_proj_weight"
    assert parameter_name(f"{name}_to_fp16_palettized") == parameter_name(f"{name}_quantized") == name
    model = tiny_model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runtime = WeightReplay(model, "coreml")
    EdgeSession(coreml_bundle, "coreml", runtime=runtime)
    summary = runtime.summary()
    assert set(summary) == {"encode_image", "embed", "region", "segment", "llm:prefill", "llm:decode"}
    table = model.llm.get_input_embeddings().weight
    assert summary["embed"]["elements"] == table.numel()
    llm = sum(p.numel() for p in [*model.llm.parameters(), *model.llm_projector.parameters()])
    assert summary["llm:prefill"]["elements"] == summary["llm:decode"]["elements"] == llm - table.numel()
    biggest = max(float(p.abs().max()) for p in model.parameters())
    assert all(0 <= g["max_abs_change"] <= biggest * 2**-10 for g in summary.values())  # fp16 rounding
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is not changed

    inputs = [x.numpy() for x in example_inputs(model.config, "encode_image", SLOTS)]
    eager = EagerBackend(model, SLOTS).graph(None, "encode_image").run(*inputs)
    replayed = runtime.graph(load_bundle(coreml_bundle), "encode_image").run(*inputs)
    for want, got in zip(eager, replayed, strict=True):
        np.testing.assert_allclose(got, want, atol=0.02 * float(np.abs(want).max()))

    from conftest import shapes_examples

    from xsam_edge.spec.types import Task

    examples = shapes_examples(4, (Task.REFERRING, Task.INTERACTIVE))  # within the 4 condition slots
    score = evaluate_bundle(coreml_bundle, "coreml", examples, False, replay_model=model)
    assert score.runner == REPLAY_RUNNER and score.requests == 4
    assert set(score.metrics) == {"referring", "interactive"}


def test_coreml_replay_refuses_a_bundle_of_another_model(coreml_bundle, tiny_model):
    import copy

    from conftest import shapes_examples

    from xsam_edge.quantization.accuracy import evaluate_bundle
    from xsam_edge.quantization.replay import WeightReplay
    from xsam_edge.runtime.session import EdgeSession

    other = copy.deepcopy(tiny_model)
    other.llm.model.layers = other.llm.model.layers[:1]  # the bundle's LLM has a second layer
    refused = "name no parameter of the 'llm:prefill' graph.*not made from this model"
    with pytest.raises(ValueError, match=refused):
        EdgeSession(coreml_bundle, "coreml", runtime=WeightReplay(other, "coreml"))
    with pytest.raises(RuntimeError, match="cannot be evaluated on this machine"):
        evaluate_bundle(coreml_bundle, "coreml", shapes_examples(1), False)
    with pytest.raises(ValueError, match="cannot be replayed"):
        WeightReplay(other, "onnx")
