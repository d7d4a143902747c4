"""The golden reference and the bench harness on a tiny model: formats, checks, and the harness's own numbers.

No timing thresholds: latency fields must exist and be positive, nothing more. The accuracy comparison must
flag a deliberately perturbed graph and only that graph.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from conftest import make_tiny_model, with_grid_sampler  # noqa: E402

from xsam_edge.bench.golden_set import GoldenError, decode_masks, encode_masks, load_golden_set  # noqa: E402
from xsam_edge.bench.harness import BenchOptions, GoldenMismatchError, bench  # noqa: E402
from xsam_edge.bench.profiles import PROFILES, get_profile  # noqa: E402
from xsam_edge.bench.reference import make_reference  # noqa: E402
from xsam_edge.bench.report import graph_table, markdown_table  # noqa: E402
from xsam_edge.cli import main  # noqa: E402
from xsam_edge.export.graphs import SlotConfig  # noqa: E402
from xsam_edge.export.to_bundle import export_bundle  # noqa: E402
from xsam_edge.model.checkpoint import save_pretrained, write_lineage  # noqa: E402
from xsam_edge.spec.bundle import BundleError  # noqa: E402
from xsam_edge.spec.tokenizer import tiny_tokenizer  # noqa: E402

SLOTS = SlotConfig(max_regions=4, max_conditions=6, prefill_len=16)
DATA = "shapes:val"


@pytest.fixture(scope="module")
def model():
    return with_grid_sampler(make_tiny_model(seed=5))


@pytest.fixture(scope="module")
def model_dir(model, tmp_path_factory):
    return save_pretrained(model, tmp_path_factory.mktemp("m") / "model", tiny_tokenizer())


@pytest.fixture(scope="module")
def golden(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("g") / "golden"
    return make_reference(model_dir, DATA, out, limit=1, traced=2, slots=SLOTS, progress=False)


@pytest.fixture(scope="module")
def bundle(model, tmp_path_factory):
    path, _ = export_bundle(
        model, tiny_tokenizer(), tmp_path_factory.mktemp("b") / "bundle", ("onnx",), SLOTS, progress=False
    )
    return path


def test_rle_round_trip():
    masks = np.zeros((3, 17, 23), bool)
    masks[0, 2:9, 4:20] = True
    masks[2, -1, -1] = True
    assert np.array_equal(decode_masks(encode_masks(masks), (17, 23)), masks)
    assert decode_masks([], (4, 5)).shape == (0, 4, 5)


def test_golden_holds_requests_results_and_traces(golden, model):
    loaded = load_golden_set(golden)
    assert loaded.model["name"] == model.config.name and len(loaded.model["fingerprint"]) == 16
    assert loaded.producer["device"] == "cpu" and loaded.data == DATA
    assert len(loaded.samples) > 2 and len(loaded.traced) == 2
    graphs = {call.graph for s in loaded.traced for call in s.trace}
    assert {"encode_image", "embed", "region", "llm", "segment"} <= graphs  # a prompted request is traced
    assert any(s.example.request.prompts for s in loaded.traced)
    for sample in loaded.samples:  # the reference result is the model's, at the image size
        assert sample.result.masks.shape[1:] == sample.example.request.image_size
        assert sample.example.target.masks.shape[1:] == sample.example.request.image_size


def test_eager_manifest_removes_its_temp_folder(model):
    import gc

    from xsam_edge.export.eager import eager_manifest

    manifest = eager_manifest(model, tiny_tokenizer(), SLOTS)
    root = manifest.root
    assert (root / "tokenizer.json").is_file()
    del manifest
    gc.collect()
    assert not root.exists()


def test_corrupted_golden_is_refused_with_the_file_named(golden, tmp_path):
    copy = shutil.copytree(golden, tmp_path / "g")
    (copy / "traces.npz").write_bytes(b"garbage")
    with pytest.raises(GoldenError, match="traces.npz does not match its checksum"):
        load_golden_set(copy)
    (copy / "golden.json").write_text("{ not json")
    with pytest.raises(GoldenError, match="not readable JSON"):
        load_golden_set(copy)
    with pytest.raises(GoldenError, match="no golden.json"):
        load_golden_set(tmp_path)


def test_bench_numbers_are_present_and_consistent(bundle, golden):
    result = bench(bundle, "onnx", golden, "x86-cpu", BenchOptions(warmup=1, repeats=2))
    lat = result["latency"]
    assert lat["load_s"] > 0
    assert lat["first_query"]["p50_ms"] > 0 and lat["next_query"]["p50_ms"] > 0
    assert lat["first_query"]["n"] == 2 * result["golden"]["samples"]
    for name in ("encode_image", "embed", "llm_prefill", "segment"):
        stats = lat["graphs"][name]
        assert stats["p50_ms"] > 0 and stats["p90_ms"] >= stats["p50_ms"] and stats["n"] > 0
    assert set(lat["stages_ms_per_query"]) >= {"encode", "prefill", "segment", "host"}
    assert result["memory"]["peak_rss_bytes"] > 0 and result["size"]["bundle_bytes"] > 0
    assert result["machine"]["cores"] and "onnxruntime" in result["machine"]["runtimes"]
    acc = result["accuracy"]
    # the float ONNX export of the golden's own model: every graph agrees, nothing is flagged
    assert result["golden"]["relation"] == "same"
    assert set(acc["graph_psnr"]) >= {"encode_image", "embed", "region", "llm", "segment"}
    assert (
        acc["flagged_graphs"] == [] and acc["nonfinite_outputs"] == {} and acc["graph_psnr_skipped"] is None
    )
    assert acc["mask_agreement"]["matched_miou"] > 99
    assert all(abs(d) < 1e-6 for d in acc["drop"].values()), acc["drop"]
    assert result["placement"]["segment"]["macs"] > 0
    json.dumps(result)  # the document is plain JSON
    assert "| float | onnx |" in markdown_table([result])
    assert "| segment |" in graph_table(result)


def test_a_perturbed_graph_is_flagged(model, golden, tmp_path):
    """Export a model whose mask decoder's weights moved: only ``segment`` may fall under 30 dB."""
    import torch

    perturbed = with_grid_sampler(make_tiny_model(seed=5))
    with torch.no_grad():
        for p in perturbed.segmentor.parameters():
            p.add_(0.5 * torch.randn_like(p))
    path, _ = export_bundle(perturbed, tiny_tokenizer(), tmp_path / "b", ("onnx",), SLOTS, progress=False)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["source"]["fingerprint"] = load_golden_set(golden).model["fingerprint"]  # claim the same model
    (path / "manifest.json").write_text(json.dumps(manifest))
    result = bench(path, "onnx", golden, options=BenchOptions(warmup=0))
    flagged = result["accuracy"]["flagged_graphs"]
    assert "segment" in flagged, result["accuracy"]["graph_psnr"]
    assert not {"embed", "llm"} & set(flagged), result["accuracy"]["graph_psnr"]


def test_a_bundle_of_another_model_is_refused(golden, tmp_path):
    other = with_grid_sampler(make_tiny_model(seed=9))
    path, _ = export_bundle(other, tiny_tokenizer(), tmp_path / "b", ("onnx",), SLOTS, progress=False)
    with pytest.raises(GoldenMismatchError, match="not distilled from it.*--cross-model"):
        bench(path, "onnx", golden)
    result = bench(path, "onnx", golden, options=BenchOptions(warmup=0, limit=2, cross_model=True))
    assert result["golden"]["relation"] == "other" and result["accuracy"]["graph_psnr"] == {}


def test_a_student_bundle_is_compared_by_masks(golden, model_dir, tmp_path):
    student = with_grid_sampler(make_tiny_model(seed=11))
    student_dir = save_pretrained(student, tmp_path / "student", tiny_tokenizer())
    write_lineage(student_dir, load_golden_set(golden).model["fingerprint"], str(model_dir))
    assert main(["export", "--model", str(student_dir), "--backend", "onnx", "--out", str(tmp_path / "b"),
                 "--max-regions", "4", "--max-conditions", "6", "--prefill-len", "16"]) == 0  # fmt: skip
    result = bench(tmp_path / "b", "onnx", golden, options=BenchOptions(warmup=0, limit=2))
    assert result["golden"]["relation"] == "student" and result["accuracy"]["graph_psnr"] == {}


def test_golden_traced_with_other_slots_skips_graph_psnr_and_says_why(model, golden, tmp_path):
    path, _ = export_bundle(model, tiny_tokenizer(), tmp_path / "b", ("onnx",), SlotConfig(max_regions=2,
                            max_conditions=6, prefill_len=16), progress=False)  # fmt: skip
    result = bench(path, "onnx", golden, options=BenchOptions(warmup=0, limit=2))
    acc = result["accuracy"]
    assert result["golden"]["relation"] == "same" and acc["graph_psnr"] == {}
    assert "--max-regions" in acc["graph_psnr_skipped"] and acc["mask_agreement"]["n"] == 2


def test_profile_errors_say_what_is_missing(bundle, golden):
    with pytest.raises(RuntimeError, match="CUDAExecutionProvider.*onnxruntime-gpu"):
        bench(bundle, "onnx", golden, "nvidia-cuda")
    with pytest.raises(RuntimeError, match="needs darwin"):
        get_profile("apple-ane").runtime("coreml")
    with pytest.raises(RuntimeError, match="runs on the phone"):
        get_profile("android-arm64").runtime("executorch")
    with pytest.raises(ValueError, match="benches onnx, not 'openvino'"):
        get_profile("jetson-orin").runtime("openvino")
    with pytest.raises(ValueError, match="unknown device profile 'pixel'.*x86-cpu"):
        get_profile("pixel")
    assert {"x86-cpu", "jetson-orin", "apple-ane", "android-arm64"} <= set(PROFILES)


def test_bench_cli_writes_json_markdown_and_plots(bundle, golden, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["bench", "--bundle", str(bundle), "--golden", str(golden), "--out", str(out), "--limit", "2",
                 "--warmup", "0", "--roofline"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    document = json.loads((out / "bench.json").read_text())
    roof = document["results"][0]["roofline"]
    assert roof["peak"]["fp32_macs_per_s"] > 0 and roof["graphs"]["segment"]["fraction"] > 0
    assert (out / "bench.md").read_text().startswith("| model |")
    for plot in ("accuracy_vs_latency.png", "sizes.png", "stages.png"):  # matplotlib: the `bench` extra
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code = main(["bench", "--bundle", str(bundle), "--golden", str(tmp_path / "nothing")])
    assert code == 2 and "no golden.json" in capsys.readouterr().err


def test_bench_cli_refuses_a_corrupted_bundle(bundle, golden, tmp_path, capsys):
    copy = shutil.copytree(bundle, tmp_path / "b")
    graph = copy / "onnx" / "segment.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte changed: only the checksum can tell
    graph.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="segment.onnx does not match its checksum"):
        bench(copy, "onnx", golden)


def test_reference_resumes_after_a_kill(model_dir, tmp_path, monkeypatch):
    """A run stopped after the first sample continues from the samples it wrote."""
    import xsam_edge.bench.reference as reference

    calls = {"n": 0}
    original = reference.sample_to_json

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(reference, "sample_to_json", dying)
    out = tmp_path / "golden"
    with pytest.raises(KeyboardInterrupt):
        make_reference(model_dir, DATA, out, limit=1, traced=0, slots=SLOTS, progress=False)
    assert not out.exists() and len(list((tmp_path / ".golden.partial" / "samples").glob("*.json"))) == 1
    monkeypatch.setattr(reference, "sample_to_json", original)
    done = []
    monkeypatch.setattr(reference, "sample_to_json", lambda *a, **k: done.append(a[1]) or original(*a, **k))
    make_reference(model_dir, DATA, out, limit=1, traced=0, slots=SLOTS, progress=False)
    assert 0 not in done and len(load_golden_set(out).samples) == len(done) + 1
    assert not (tmp_path / ".golden.partial").exists()
