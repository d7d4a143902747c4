"""Bundle export (ONNX + OpenVINO; ExecuTorch apart), bundle integrity, EdgeSession parity with PyTorch.

The ExecuTorch bundle is exported on its own (lowering takes minutes), so only its tests wait for it and
they are marked slow. Its programs (the image and segment graphs, the joint LLM program) are checked here
too, from that one lowering, rather than lowered again in test_export_executorch_coreml.py.
"""

import json
import platform
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

from conftest import every_task_requests, make_image, make_tiny_model, with_grid_sampler  # noqa: E402
from test_export_executorch_coreml import MIN_PSNR_DB, check_et_program  # noqa: E402

from xsam_edge.backends import get_backend  # noqa: E402
from xsam_edge.export.graphs import SlotConfig, build_graph  # noqa: E402
from xsam_edge.export.placement import psnr  # noqa: E402
from xsam_edge.export.to_bundle import export_bundle  # noqa: E402
from xsam_edge.model.predictor import XSamPredictor  # noqa: E402
from xsam_edge.runtime.session import EdgeSession  # noqa: E402
from xsam_edge.spec.bundle import MANIFEST_FILE, BundleError, load_bundle  # noqa: E402
from xsam_edge.spec.tokenizer import tiny_tokenizer  # noqa: E402
from xsam_edge.spec.types import SegmentationRequest, Task  # noqa: E402

SLOTS = SlotConfig(max_regions=2, max_conditions=4, prefill_len=16)
BACKENDS = ("onnx", "openvino")
SESSION_BACKENDS = (*BACKENDS, pytest.param("executorch", marks=pytest.mark.slow))
# logits against eager FP32. ExecuTorch measured ≤ 1e-5 on the tiny model (class logits up to ~11: XNNPACK's
# FP32 kernels sum in another order and use their own vectorised exp), so 1e-4 leaves 10× for other CPUs
ATOL = {"onnx": 1e-3, "openvino": 1e-3, "executorch": 1e-4}


@pytest.fixture(scope="module")
def model():
    return with_grid_sampler(make_tiny_model(seed=3))


@pytest.fixture(scope="module")
def bundle(model, tmp_path_factory):
    path, graphs = export_bundle(
        model, tiny_tokenizer(), tmp_path_factory.mktemp("b") / "bundle", BACKENDS, SLOTS, progress=False
    )
    assert all(g.min_psnr_db >= 40 for g in graphs), [(g.backend, g.name, g.min_psnr_db) for g in graphs]
    return path


@pytest.fixture(scope="module")
def et_export(model, tmp_path_factory):
    """The same model as an ExecuTorch-only bundle, and its programs by name: the ExecuTorch checks below
    read the graphs this export lowered (the image graph's lowering alone takes ~2 minutes)."""
    pytest.importorskip("executorch")
    path, graphs = export_bundle(
        model,
        tiny_tokenizer(),
        tmp_path_factory.mktemp("et") / "bundle",
        ("executorch",),
        SLOTS,
        progress=False,
    )
    assert all(g.min_psnr_db >= 40 for g in graphs), [(g.name, g.min_psnr_db) for g in graphs]
    return path, {g.name: g for g in graphs}


@pytest.fixture(scope="module")
def et_bundle(et_export):
    return et_export[0]


@pytest.fixture(scope="module")
def predictor(model):
    return XSamPredictor(model, tiny_tokenizer(), max_new_tokens=12, region_sampler="grid")


@pytest.fixture(scope="module", params=SESSION_BACKENDS)
def session(request):
    bundle = request.getfixturevalue("et_bundle" if request.param == "executorch" else "bundle")
    return EdgeSession(bundle, request.param, max_new_tokens=12)


def test_every_task_matches_the_pytorch_predictor(session, predictor):
    for request in every_task_requests(make_image()):
        want = predictor.run(request)
        got = session.run(request)
        assert got.text == want.text, request.task
        if want.class_logits is None:
            assert got.class_logits is None
            continue
        atol = ATOL[session.backend]
        np.testing.assert_allclose(got.class_logits, want.class_logits, atol=atol, err_msg=request.task)
        np.testing.assert_allclose(got.mask_logits, want.mask_logits, atol=atol, err_msg=request.task)
        a, b = session.segment(request), predictor.segment(request)
        assert a.labels == b.labels and a.masks.shape == b.masks.shape
        union = (a.masks | b.masks).sum()
        assert union == 0 or (a.masks & b.masks).sum() / union >= 0.99, request.task


def test_second_query_reuses_the_image_prefix_and_equals_a_fresh_session(session):
    image = make_image()
    first = SegmentationRequest(image, Task.REFERRING, text="the red circle")
    second = SegmentationRequest(image, Task.PANOPTIC, categories=["circle", "square"])
    session.run(first)
    warm = session.run(second)
    fresh = EdgeSession(session.manifest, session.backend).run(second)
    np.testing.assert_array_equal(warm.class_logits, fresh.class_logits)
    np.testing.assert_array_equal(warm.mask_logits, fresh.mask_logits)
    assert session._image.prefix_ids and warm.prompt_tokens > len(session._image.prefix_ids)


def test_a_short_prefill_runs_at_its_own_length_where_the_graph_allows(session):
    """OpenVINO's LLM IR and ExecuTorch's prefill method take any T up to the chunk: a next query's few tokens
    ran padded to the full chunk (the fixed-T graphs' way), so the work on padding rows was most of it. ONNX
    Runtime's fixed-T graph still pads."""
    from xsam_edge.runtime.observe import observe

    image = make_image()
    session.run(SegmentationRequest(image, Task.REFERRING, text="the red circle"))
    rows = []

    def record(name, inputs, outputs, seconds):
        if name == "llm":
            rows.append(inputs[0].shape[1])

    stop = observe(session, record)
    try:
        session.run(SegmentationRequest(image, Task.REFERRING, text="the blue square"))
    finally:
        stop()
    prefill = [r for r in rows if r > 1]
    assert prefill, rows
    if session.backend in ("openvino", "executorch"):
        assert prefill[-1] < SLOTS.prefill_len, rows  # the query's last rows, unpadded
    else:
        assert set(prefill) == {SLOTS.prefill_len}, rows


def test_more_conditions_than_slots_is_a_clear_error(session):
    request = SegmentationRequest(make_image(), Task.PANOPTIC, categories=[f"c{i}" for i in range(5)])
    with pytest.raises(ValueError, match="4 condition slots"):
        session.run(request)


def test_golden_vectors_are_reproduced(session):
    requests, outputs = session.manifest.load_golden()
    assert len(requests) == 3
    for request, golden in zip(requests, outputs, strict=True):
        got = session.run(request)
        np.testing.assert_allclose(got.class_logits, golden["class_logits"], atol=ATOL[session.backend])
        np.testing.assert_array_equal(session.segment(request).masks, golden["masks"])


def test_manifest_describes_every_graph(bundle):
    manifest = load_bundle(bundle)
    assert manifest.backends == ["onnx", "openvino"]
    assert manifest.slots["max_regions"] == 2 and manifest.slots["max_seq"] == 512
    names = {(g.backend, g.name) for g in manifest.graphs}
    assert ("onnx", "llm_kvio_prefill") in names and ("openvino", "llm_prefill") in names
    segment = manifest.graph("segment", "onnx")
    assert [i["name"] for i in segment.inputs][-3:] == ["cond", "cond_valid", "seg_embed"]
    assert all(p["psnr_db"] is None or p["psnr_db"] >= 40 for p in segment.parity)
    assert manifest.config.name == "tiny" and manifest.tokens["seg"] == tiny_tokenizer().seg_id
    json.loads((bundle / MANIFEST_FILE).read_text())  # strict JSON (no Infinity)


@pytest.mark.slow
def test_executorch_manifest_lists_the_llm_methods(et_bundle, model):
    manifest = load_bundle(et_bundle)
    assert manifest.backends == ["executorch"]
    assert {g.name for g in manifest.graphs} == {"encode_image", "embed", "region", "llm", "segment"}
    llm = manifest.graph("llm", "executorch")
    assert llm.files == ["executorch/llm.pte"]
    methods = {m["name"]: m for m in llm.methods}
    assert list(methods) == ["prefill", "decode", "read_cache", "write_cache"]
    assert set(llm.placement["methods"]) == set(methods)  # the manifest sorts its keys
    cfg = model.config.llm
    stacked = [cfg.num_layers, cfg.num_kv_heads, manifest.slots["max_seq"], cfg.head_dim]
    assert [i["shape"] for i in methods["write_cache"]["inputs"]] == [stacked, stacked]
    assert methods["prefill"]["inputs"][0]["shape"][1] == SLOTS.prefill_len
    assert len(llm.states) == 2 * cfg.num_layers
    assert all(g.methods == [] for g in manifest.graphs if g.name != "llm")


@pytest.mark.slow
def test_executorch_needs_the_cache_methods(et_bundle):
    manifest = load_bundle(et_bundle, verify=False)
    manifest.graph("llm", "executorch").methods = manifest.graph("llm", "executorch").methods[:2]
    with pytest.raises(RuntimeError, match="lacks the method.*read_cache, write_cache.*re-export"):
        get_backend("executorch").make_runtime().llm(manifest)


@pytest.mark.slow
def test_executorch_prefill_bounds_its_tokens_and_a_fixed_one_pads(et_bundle):
    """The prefill's listed T is a bound where the manifest says ``dynamic_tokens``; a manifest without it (a
    bundle exported before) is padded as before, and a short chunk is then refused with the shape it needs."""
    manifest = load_bundle(et_bundle, verify=False)
    llm = get_backend("executorch").make_runtime().llm(manifest)
    hidden = llm.methods["prefill"].specs[0][0][2]
    assert not llm.pads_chunks
    with pytest.raises(ValueError, match=r"must be \(1, 16, \d+\) \(the token axis at most\), got \(1, 17"):
        llm.step(np.zeros((1, SLOTS.prefill_len + 1, hidden), np.float32), np.arange(17))
    for method in manifest.graph("llm", "executorch").methods:
        method.pop("dynamic_tokens", None)
    fixed = get_backend("executorch").make_runtime().llm(manifest)
    assert fixed.pads_chunks
    with pytest.raises(ValueError, match=r"input 0 must be \(1, 16, \d+\), got \(1, 3"):
        fixed.step(np.zeros((1, 3, hidden), np.float32), np.arange(3))


@pytest.mark.slow
def test_a_coreml_delegated_program_is_refused_off_macos(et_bundle):
    if platform.system() == "Darwin":
        pytest.skip("Macs run the Core ML delegate")
    manifest = load_bundle(et_bundle, verify=False)
    manifest.graph("region", "executorch").placement["partitioner"] = "coreml"
    with pytest.raises(
        RuntimeError, match="Core ML delegate, which only Apple devices run.*--et-partitioner"
    ):
        get_backend("executorch").make_runtime().graph(manifest, "region")


@pytest.mark.slow
def test_run_cli_on_executorch(et_bundle, tmp_path):
    from PIL import Image

    from xsam_edge.cli import main

    Image.fromarray(make_image()).save(tmp_path / "img.png")
    run = ["run", "--bundle", str(et_bundle), "--backend", "executorch", "--image", str(tmp_path / "img.png")]
    assert main([*run, "--text", "the red circle", "--out", str(tmp_path / "r.png")]) == 0
    printed = json.loads((tmp_path / "r.json").read_text())
    request = SegmentationRequest(make_image(), Task.REFERRING, text="the red circle")
    assert printed["masks"] == EdgeSession(et_bundle, "executorch").segment(request).to_json()["masks"]


def _copy(bundle, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(bundle, target)
    return target


def test_a_changed_byte_is_refused(bundle, tmp_path):
    copy = _copy(bundle, tmp_path)
    path = copy / "onnx" / "segment.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="onnx/segment.onnx does not match its checksum"):
        load_bundle(copy)


def test_a_missing_file_is_refused(bundle, tmp_path):
    copy = _copy(bundle, tmp_path)
    (copy / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="tokenizer.json is missing"):
        EdgeSession(copy, "onnx")


def test_a_newer_schema_is_refused(bundle, tmp_path):
    copy = _copy(bundle, tmp_path)
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    manifest["schema_version"] += 1
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="newer than this xsam_edge reads"):
        load_bundle(copy)


def test_not_a_bundle_and_unknown_backends(bundle, tmp_path):
    with pytest.raises(BundleError, match="not an xsam_edge bundle"):
        load_bundle(tmp_path)
    with pytest.raises(ValueError, match="exported for: onnx, openvino"):
        EdgeSession(bundle, "coreml")
    with pytest.raises(ValueError, match="registered backends"):
        get_backend("tensorrt")
    if platform.system() != "Darwin":
        with pytest.raises(RuntimeError, match="needs macOS"):
            get_backend("coreml").make_runtime()


def test_export_refuses_an_unknown_backend_before_any_work(model, tmp_path):
    with pytest.raises(ValueError, match="unknown backend"):
        export_bundle(model, tiny_tokenizer(), tmp_path / "x", ("tflite",), SLOTS, progress=False)
    assert not (tmp_path / "x").exists()


def test_a_kept_bundle_of_other_weights_or_slots_is_refused_before_any_work(model, bundle, tmp_path):
    kept, out = load_bundle(bundle), tmp_path / "x"
    other = make_tiny_model(seed=4)
    with pytest.raises(ValueError, match="other weights"):
        export_bundle(other, tiny_tokenizer(), out, ("executorch",), SLOTS, progress=False, keep=kept)
    wider = SlotConfig(max_regions=3, max_conditions=4, prefill_len=16)
    with pytest.raises(ValueError, match="slots"):
        export_bundle(model, tiny_tokenizer(), out, ("executorch",), wider, progress=False, keep=kept)
    assert not list(tmp_path.iterdir())  # no bundle, no staging folder


def test_the_runtime_runs_without_torch(bundle, tmp_path):
    """The edge runtime imports numpy, onnxruntime, the tokenizer and the spec: never torch."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from xsam_edge.cli import main\n"
        f"sys.exit(main(['run', '--bundle', {str(bundle)!r}, '--backend', 'onnx', '--image', "
        f"{str(tmp_path / 'img.png')!r}, '--text', 'the red circle', '--out', {str(tmp_path / 'r.png')!r}]))"
    )
    from PIL import Image

    Image.fromarray(make_image()).save(tmp_path / "img.png")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "r.json").is_file()


def test_export_and_run_cli(tmp_path, capsys):
    from PIL import Image

    from xsam_edge.cli import main

    out = tmp_path / "bundle"
    args = ["export", "--preset", "tiny", "--backend", "onnx", "--out", str(out), "--max-regions", "2"]
    assert main([*args, "--max-conditions", "4", "--prefill-len", "16"]) == 0
    printed = capsys.readouterr().out
    assert "GridSample" in printed and f"wrote {out}" in printed
    assert load_bundle(out).backends == ["onnx"]
    Image.fromarray(make_image()).save(tmp_path / "img.png")
    run = ["run", "--bundle", str(out), "--backend", "onnx", "--image", str(tmp_path / "img.png")]
    assert main([*run, "--point", "10,10", "--out", str(tmp_path / "r.png")]) == 0
    assert (tmp_path / "r.json").is_file()
    assert main([*run[:4], "openvino", *run[5:], "--text", "a"]) == 2
    assert "exported for: onnx" in capsys.readouterr().err


def test_eval_compare_says_whether_a_bundle_drop_is_real(model, bundle, tmp_path, capsys):
    """`xsam-edge eval --compare BUNDLE`: the paired bootstrap of the bundle against its PyTorch model."""
    from xsam_edge.cli import main
    from xsam_edge.model.checkpoint import save_pretrained

    folder = save_pretrained(model, tmp_path / "model", tiny_tokenizer())
    common = ["eval", "--model", str(folder), "--data", "shapes:val-fast", "--limit", "3"]
    common += ["--resamples", "30", "--tasks", "referring,reasoning"]  # one phrase each: within 4 slots
    assert main([*common, "--compare", str(bundle), "--backend", "onnx", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    comparison = report["comparison"]
    assert comparison["resamples"] == 30
    assert set(comparison["tasks"]) == {"referring", "reasoning"}
    # the same weights exported: every task's difference is within the noise, and close to nothing
    for task, d in comparison["tasks"].items():
        assert d["verdict"] == "tie" and abs(d["delta"]) <= 5.0, (task, d)
    assert main([*common, "--compare", str(folder)]) == 0
    table = capsys.readouterr().out
    assert "| referring |" in table and "beyond noise" in table and "| tie |" in table
    # a model folder has no backend to pick
    assert main([*common, "--compare", str(folder), "--backend", "onnx"]) == 2


def test_onnx_cache_bound_in_ort_values_steps_as_the_host_cache(bundle):
    """I/O binding swaps two OrtValue pairs: each step, snapshot and restore must match the host cache's."""
    from xsam_edge.backends.onnx.runtime import BoundCacheLLM
    from xsam_edge.runtime.protocol import HostCacheLLM

    manifest = load_bundle(bundle)
    backend = get_backend("onnx").make_runtime()
    bound = backend.llm(manifest)
    assert isinstance(bound, BoundCacheLLM)
    host = HostCacheLLM(bound.prefill, bound.decode, manifest.graph(backend.llm_graphs[0], "onnx"))
    rng = np.random.default_rng(0)
    hidden = int(manifest.model["llm"]["hidden_size"])
    chunk = rng.standard_normal((1, bound.chunk, hidden)).astype(np.float32)
    steps = [(chunk, np.arange(bound.chunk))]
    steps += [
        (rng.standard_normal((1, 1, hidden)).astype(np.float32), np.array([bound.chunk + k]))
        for k in range(3)
    ]
    saved = {}
    for k, (x, positions) in enumerate(steps):
        for llm in (host, bound):
            got = llm.step(x, positions.astype(np.int64))
            saved.setdefault(k, []).append(got)
        if k == 1:
            snapshots = host.snapshot(), bound.snapshot()
    for k, (want, got) in saved.items():
        for a, b in zip(want, got, strict=True):
            np.testing.assert_array_equal(a, b, err_msg=f"step {k}")
    for llm, state in zip((host, bound), snapshots, strict=True):  # back to after step 1, step 2 again
        llm.restore(state)
    x, positions = steps[2]
    again = [llm.step(x, positions.astype(np.int64)) for llm in (host, bound)]
    for a, b, c in zip(*again, saved[2][0], strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


# -- the ExecuTorch programs of the bundle: placement, parity, the joint LLM program -------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["encode_image", "segment"])
def test_et_large_graphs_match_eager(et_export, name):
    graph = et_export[1][name]
    check_et_program(graph, name)
    assert [p.name for p in graph.parity] == graph.outputs
    assert graph.placement["methods"]["forward"]["delegated_nodes"] > 0


@pytest.mark.slow
def test_et_encode_placement_samples_by_rows_not_grid_sampler(et_export, model):
    placement = et_export[1]["encode_image"].placement["methods"]["forward"]
    portable = placement["portable_ops"]
    # deformable attention traced as row lookups: the portable grid_sampler_2d kernel took 61 % of a student
    assert not any("grid_sampler_2d" in op for op in portable), portable
    assert any("embedding" in op for op in portable), portable
    from xsam_edge.model.pixel_decoder import MultiScaleDeformableAttention

    layers = [m for m in model.modules() if isinstance(m, MultiScaleDeformableAttention)]
    assert layers and {m.sampler for m in layers} == {"grid_sample"}  # the eager model is left as it was
    assert any("native_layer_norm" in op for op in portable), portable
    assert placement["portable_nodes"] == sum(portable.values())


@pytest.mark.slow
def test_et_llm_one_program_four_methods_shared_cache(et_export, model):
    from xsam_edge.backends.executorch.export import llm_steps, load_program, run_method

    graph = et_export[1]["llm"]
    check_et_program(graph, "llm")
    # prefill, cache read, two decodes, a prefill shorter than the chunk (the method's T is dynamic), then the
    # read cache written back and the first decode again, through one loaded program, against eager with its
    # own caches
    calls = ("prefill", "decode1", "decode2", "short_prefill", "restored_decode1")
    steps = [f"{s}.{o}" for s in calls for o in ("projected", "logits")]
    steps[2:2] = ["read_cache.keys", "read_cache.values"]
    assert [p.name for p in graph.parity] == steps
    assert graph.states == [f"{k}_cache_{i}" for i in range(model.config.llm.num_layers) for k in ("k", "v")]
    methods = ["prefill", "decode", "read_cache", "write_cache"]
    assert list(graph.placement["methods"]) == methods
    assert all(graph.placement["methods"][m]["delegated_nodes"] > 0 for m in ("prefill", "decode"))
    llm = model.config.llm
    for method in ("prefill", "decode"):
        # the mask is an additive score bias built once: a select over every layer's scores was a portable
        # kernel per layer (a quarter of a full-size student's prefill chunk)
        portable = graph.placement["methods"][method]["portable_ops"]
        assert sum(n for op, n in portable.items() if "where" in op) <= 1 < llm.num_layers, portable
    stacked = [llm.num_layers, llm.num_kv_heads, SLOTS.seq_len(model.config), llm.head_dim]
    signatures = {m["name"]: m for m in graph.methods}
    assert list(signatures) == methods
    assert [i["name"] for i in signatures["prefill"]["inputs"]] == ["inputs_embeds", "cache_position"]
    assert signatures["prefill"]["dynamic_tokens"] is True  # its listed T is the bound
    assert not any(signatures[m].get("dynamic_tokens") for m in methods[1:])
    assert signatures["decode"]["inputs"][0]["shape"][1] == 1
    assert signatures["read_cache"]["inputs"] == [] and signatures["write_cache"]["outputs"] == []
    assert [o["shape"] for o in signatures["read_cache"]["outputs"]] == [stacked, stacked]
    assert signatures["write_cache"]["inputs"] == signatures["read_cache"]["outputs"]

    # control: decode on a freshly loaded, zeroed program matches eager decode on empty caches and is
    # far from eager decode after the prefill, so the parity above needs the cache that prefill wrote
    steps = llm_steps(model, SLOTS, torch.float32)
    after_prefill = build_graph(model, "llm_prefill", SLOTS)
    empty = build_graph(model, "llm_prefill", SLOTS)
    with torch.no_grad():
        after_prefill(*steps[0][1])
        want = after_prefill(*steps[1][1])[0].numpy()
        want_empty = empty(*steps[1][1])[0].numpy()
    fresh = load_program(graph.file)
    cache = [torch.zeros(o["shape"]) for o in signatures["read_cache"]["outputs"]]
    run_method(fresh.load_method("write_cache"), cache)  # a mutable buffer's first contents are undefined
    alone = run_method(fresh.load_method("decode"), steps[1][1])[0]
    matched = next(p.psnr_db for p in graph.parity if p.name == "decode1.projected")
    assert psnr(want_empty, alone) >= MIN_PSNR_DB
    assert psnr(want, alone) < matched - 40.0, "decode ignores the cache: the check proves nothing"


@pytest.mark.slow
def test_et_llm_write_cache_restores_a_prefix_and_resets(et_export, model):
    """Encode once, query many in the ExecuTorch runtime: a cache written into another program acts as the
    prefix that produced it, and writing zeros is a reset."""
    from xsam_edge.backends.executorch.export import load_program, run_method
    from xsam_edge.export.graphs import example_inputs

    graph = et_export[1]["llm"]
    p = SLOTS.prefill_len
    prefix = example_inputs(model.config, "llm_prefill", SLOTS)  # positions 0 .. P-1
    gen = torch.Generator().manual_seed(2)
    query = (torch.randn(prefix[0].shape, generator=gen), torch.arange(p, 2 * p))  # positions P .. 2P-1

    def methods():
        program = load_program(graph.file)
        return {m: program.load_method(m) for m in ("prefill", "decode", "read_cache", "write_cache")}

    first = methods()
    run_method(first["prefill"], prefix)
    saved = run_method(first["read_cache"], [])
    after_prefix = run_method(first["prefill"], query)

    # ExecuTorch serialises no initial value for a mutable buffer, so a fresh program is reset explicitly
    zeros = [torch.zeros(a.shape) for a in saved]
    second = methods()
    run_method(second["write_cache"], zeros)
    unrelated = run_method(second["prefill"], query)
    run_method(second["write_cache"], [torch.from_numpy(a) for a in saved])
    restored = run_method(second["prefill"], query)
    for got, want in zip(restored, after_prefix, strict=True):
        np.testing.assert_array_equal(got, want)  # same program, same kernels, same state: bit-exact

    eager = build_graph(model, "llm_prefill", SLOTS)
    with torch.no_grad():
        eager(*prefix)
        want = eager(*query)[0].numpy()
    assert psnr(want, restored[0]) >= MIN_PSNR_DB
    assert psnr(want, unrelated[0]) < psnr(want, restored[0]) - 40.0, "the query ignores the prefix"

    # reset: zeros written into a used program make it decode as eager does on empty caches
    run_method(first["write_cache"], zeros)
    assert all(np.all(a == 0) for a in run_method(first["read_cache"], []))
    step = (torch.randn((1, 1, prefix[0].shape[-1]), generator=gen), torch.tensor([0]))
    with torch.no_grad():
        want_empty = build_graph(model, "llm_prefill", SLOTS)(*step)[0].numpy()
    reset = run_method(first["decode"], step)[0]
    assert psnr(want_empty, reset) >= MIN_PSNR_DB
    run_method(second["write_cache"], zeros)
    np.testing.assert_array_equal(reset, run_method(second["decode"], step)[0])
