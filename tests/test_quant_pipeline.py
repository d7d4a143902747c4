"""The quantization stage around the handlers: calibration from a real session, bundles, resume, budgets."""

import json
import shutil
from dataclasses import asdict

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from conftest import make_tiny_model  # noqa: E402

from xsam_edge.data.shapes import load_shapes  # noqa: E402
from xsam_edge.export.graphs import SlotConfig  # noqa: E402
from xsam_edge.quantization.calibration import CalibrationSet, record_calibration  # noqa: E402
from xsam_edge.quantization.quantize import model_fingerprint, quantize_bundle  # noqa: E402
from xsam_edge.quantization.recipes import Calibration, Recipe  # noqa: E402
from xsam_edge.quantization.schemes import Float32, Int8Static  # noqa: E402
from xsam_edge.runtime.session import EdgeSession  # noqa: E402
from xsam_edge.spec.bundle import load_bundle  # noqa: E402
from xsam_edge.spec.tokenizer import tiny_tokenizer  # noqa: E402

SLOTS = SlotConfig(max_regions=2, max_conditions=16, prefill_len=16)  # shapes lists up to 16 categories


@pytest.fixture(scope="module")
def model():
    return make_tiny_model(seed=5)


@pytest.fixture(scope="module")
def examples():
    # tiny preset images are 128 px; the shapes suite's requests work at any model size
    return load_shapes("val-fast", num_images=2)


@pytest.fixture(scope="module")
def float_work(model, tmp_path_factory):
    """A work folder holding the model's float ONNX export: the export every test here starts from (~40 s)."""
    from xsam_edge.quantization.quantize import prepare

    folder = tmp_path_factory.mktemp("q") / "work"
    prepare(model, tiny_tokenizer(), Recipe("float", "onnx", default=Float32()), folder, SLOTS, False)
    return folder


@pytest.fixture()
def seeded_work(float_work, tmp_path):
    """A copy of ``float_work`` for a test to change: the stage finds the float export and skips it."""

    def copy(name: str = "work"):
        return shutil.copytree(float_work, tmp_path / name)

    return copy


@pytest.fixture(scope="module")
def fp32_bundle(float_work):
    return next(float_work.glob("*/fp32"))


def test_calibration_records_every_graph_from_a_real_session(fp32_bundle, examples, tmp_path):
    calib = record_calibration(fp32_bundle, examples, max_samples=6, progress=False)
    counts = calib.counts()
    for name in ("encode_image", "embed", "segment", "llm_kvio_prefill", "llm_prefill"):
        assert 1 <= counts[name] <= 6, counts
    assert counts["encode_image"] == 2  # one per image: encode once, query many
    manifest = load_bundle(fp32_bundle)
    for name in ("encode_image", "segment", "llm_kvio_prefill"):
        spec = manifest.graph(name, "onnx").inputs
        sample = calib.samples[name][0]
        assert [list(x.shape) for x in sample] == [s["shape"] for s in spec], name
    # the stateful LLM sees the same prefill chunks, without the caches
    assert all(len(s) == 2 for s in calib.samples["llm_prefill"])
    # padded condition slots are real: cond_valid is a 0/1 mask with at least one slot used
    valid = calib.samples["segment"][0][-2]
    assert set(np.unique(valid)) <= {0.0, 1.0} and valid.sum() >= 1
    # backends whose LLM keeps its cache as state get the same chunks, and no caches are held in memory
    lean = record_calibration(fp32_bundle, examples, max_samples=6, progress=False, kv_caches=False)
    assert "llm_kvio_prefill" not in lean.samples and "llm_kvio_decode" not in lean.samples
    for a, b in zip(lean.samples["llm_prefill"], calib.samples["llm_prefill"], strict=True):
        assert len(a) == 2 and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))

    saved = CalibrationSet.load(calib.save(tmp_path / "c.npz"))
    assert saved.counts() == counts and saved.requests == calib.requests
    np.testing.assert_array_equal(saved.samples["segment"][1][0], calib.samples["segment"][1][0])
    calibration, holdout = calib.split(holdout=1)
    assert len(calibration["encode_image"]) == 1 and len(holdout["encode_image"]) == 1

    with pytest.raises(ValueError, match="empty calibration set"):
        record_calibration(fp32_bundle, [], progress=False)


def test_float_recipe_bundle_runs_like_the_export_and_resumes(model, examples, seeded_work, tmp_path):
    recipe = Recipe("float", "onnx", default=Float32())
    work = seeded_work()
    first = quantize_bundle(model, tiny_tokenizer(), recipe, tmp_path / "b", work, SLOTS, progress=False)
    manifest = load_bundle(first.bundle)
    assert manifest.backends == ["onnx"]
    assert manifest.quantization["recipe"]["name"] == "float"
    assert [r["graph"] for r in manifest.quantization["reports"]] == list(
        ("encode_image", "embed", "region", "llm", "segment")
    )
    assert all(r.ratio == 1.0 for r in first.reports)
    reference = EdgeSession(first.fp32_bundle, "onnx")
    session = EdgeSession(first.bundle, "onnx")
    for example in examples[:4]:
        a, b = reference.run(example.request), session.run(example.request)
        if a.class_logits is not None:
            np.testing.assert_array_equal(a.class_logits, b.class_logits)

    # a second run reuses the float export and every finished graph (no file is rewritten)
    part = next((first.work_dir / "graphs" / "onnx").glob("segment-*")) / "part.json"
    stamp = part.stat().st_mtime_ns
    again = quantize_bundle(model, tiny_tokenizer(), recipe, tmp_path / "b", work, SLOTS, progress=False)
    assert again.work_dir == first.work_dir and part.stat().st_mtime_ns == stamp


def test_prepared_work_quantizes_with_the_model_on_the_meta_device(model, seeded_work, tmp_path):
    """A full-size model on a small machine: export, then calibrate and quantize without weights."""
    import torch

    from xsam_edge.model.build import build_model
    from xsam_edge.quantization.quantize import prepare

    recipe = Recipe(
        "w8a8-seg", "onnx", {"segment": Int8Static()}, calibration=Calibration("shapes:val-fast", 1)
    )
    fingerprint = model_fingerprint(model)
    work = prepare(model, tiny_tokenizer(), recipe, seeded_work("w"), SLOTS, False, fingerprint, False)
    assert (work / "fp32" / "manifest.json").is_file() and not list(work.glob("calibration-*.npz"))
    with torch.device("meta"):
        weightless = build_model(model.config).eval()
    again = prepare(weightless, tiny_tokenizer(), recipe, tmp_path / "w", SLOTS, False, fingerprint)
    assert again == work and len(list(work.glob("calibration-*.npz"))) == 1
    result = quantize_bundle(
        weightless, tiny_tokenizer(), recipe, tmp_path / "b", tmp_path / "w", SLOTS, False, fingerprint
    )
    segment = next(r for r in result.reports if r.graph == "segment")
    assert result.work_dir == work and segment.integer_ops.get("QuantizeLinear", 0) > 0
    assert load_bundle(result.bundle).quantization["recipe"]["name"] == "w8a8-seg"


def test_a_recipe_of_another_backend_keeps_the_float_graphs_already_exported(model, seeded_work):
    """Two recipes sharing a work folder: the second backend's export keeps the first's graphs, as copies."""
    pytest.importorskip("openvino")
    from xsam_edge.quantization.quantize import prepare

    fingerprint = model_fingerprint(model)
    onnx, openvino = Recipe("a", "onnx", default=Float32()), Recipe("b", "openvino", default=Float32())
    folder = seeded_work()  # the ONNX recipe's float export is already there
    work = prepare(model, tiny_tokenizer(), onnx, folder, SLOTS, False, fingerprint)
    before = load_bundle(work / "fp32")
    segment_file = before.graph("segment", "onnx").files[0]
    digest, stamp = before.files[segment_file], before.path(segment_file).stat().st_mtime_ns
    prepare(model, tiny_tokenizer(), openvino, folder, SLOTS, False, fingerprint)
    after = load_bundle(work / "fp32")  # checksums verified
    assert after.backends == ["onnx", "openvino"]
    # the ONNX graphs were copied (same bytes, same time stamp), not exported again
    assert after.files[segment_file] == digest and after.path(segment_file).stat().st_mtime_ns == stamp
    assert [asdict(e) for e in after.graphs if e.backend == "onnx"] == [asdict(e) for e in before.graphs]


def test_calibrated_recipe_checks_its_data_before_exporting(model, tmp_path):
    recipe = Recipe("x", "onnx", {"segment": Int8Static()}, calibration=Calibration("nowhere:val", 2))
    with pytest.raises(ValueError, match="unknown dataset 'nowhere:val'"):
        quantize_bundle(model, tiny_tokenizer(), recipe, tmp_path / "b", slots=SLOTS, progress=False)
    assert not (tmp_path / "b").exists() and not (tmp_path / ".b.work").exists()


def test_fingerprint_tells_weights_apart(model):
    other = make_tiny_model(seed=6)
    assert model_fingerprint(model) == model_fingerprint(model)
    assert model_fingerprint(model) != model_fingerprint(other)


def test_sensitivity_and_budget_on_a_real_recipe(model, examples, seeded_work, tmp_path):
    from xsam_edge.quantization.accuracy import fit_max_drop, sensitivity
    from xsam_edge.quantization.schemes import Int4WeightOnly

    recipe = Recipe(
        "tiny-onnx",
        "onnx",
        # the head at INT4 too: with an INT8 head (head_bits 8, the default) no task drops, and the search
        # this test watches stops at its first step
        {"segment": Int8Static(), "llm": Int4WeightOnly(group_size=16, head_bits=4)},
        calibration=Calibration("shapes:val-fast", 1),
    )
    work = seeded_work()
    report = sensitivity(model, tiny_tokenizer(), recipe, examples[:6], tmp_path / "s", SLOTS, False, work)
    assert list(report["graphs"]) and set(report["graphs"]) == {"segment", "llm"}
    worst = [g["worst"] for g in report["graphs"].values()]
    assert worst == sorted(worst, reverse=True)  # most sensitive first
    assert set(report["reference"]) == {e.task.value for e in examples[:6]}

    # a zero budget ends with every drop ≤ 0: at worst every quantized graph is back to float
    fit = fit_max_drop(
        model,
        tiny_tokenizer(),
        recipe,
        examples[:6],
        0.0,
        tmp_path / "out",
        work_dir=seeded_work("fit"),
        slots=SLOTS,
        progress=False,
    )
    assert max(fit.drops.values()) <= 0.0
    assert load_bundle(fit.result.bundle).quantization["recipe"]["name"] == fit.recipe.name
    assert all(fit.recipe.scheme_for(g).name == "fp32" for g in fit.history[-1]["kept_float"])
    # ONNX's per-layer pass ran on each graph the search visited, and the layer steps are in the history
    assert fit.layers and set(fit.layers) <= {"segment", "llm"}
    for graph, scores in fit.layers.items():
        gains = [s["gain_db"] for s in scores]
        assert gains == sorted(gains, reverse=True) and len({s["module"] for s in scores}) == len(scores)
        tried = [s["float_layers"].get(graph) for s in fit.history if s["float_layers"].get(graph)]
        picks = [s["module"] for s in scores if s["gain_db"] >= 1.0][:2]
        assert tried == [picks[: i + 1] for i in range(len(tried))], (tried, picks)
    record = json.loads((tmp_path / "fit" / "fit.json").read_text())
    assert record["steps"] == fit.history and record["worst"] <= 0.0

    with pytest.raises(ValueError, match="budget in metric points"):
        fit_max_drop(model, tiny_tokenizer(), recipe, examples, -1.0, tmp_path / "x")


def test_a_budget_on_core_ml_off_macos_is_scored_by_replaying_its_weights(model, examples, tmp_path):
    """``--max-drop`` refused Core ML on Linux; its packages' weights are now replayed in the eager graphs."""
    pytest.importorskip("coremltools")
    from xsam_edge.backends import runnable_backends
    from xsam_edge.quantization.accuracy import fit_max_drop
    from xsam_edge.quantization.replay import REPLAY_RUNNER
    from xsam_edge.quantization.schemes import Float16, Palettize

    if "coreml" in runnable_backends():
        pytest.skip("Core ML runs here (macOS): nothing is replayed")
    recipe = Recipe("pal", "coreml", {"llm": Palettize(4, 1)}, default=Float16())
    fit = fit_max_drop(model, tiny_tokenizer(), recipe, examples[:4], 100.0, tmp_path / "out", progress=False)
    assert fit.score.runner == fit.reference.runner == REPLAY_RUNNER
    assert fit.recipe.scheme_for("llm").label() == "pal4-g1" and fit.history[0]["kept_float"] == []
    assert set(fit.drops) == set(fit.reference.primary) and fit.result.bundle.is_dir()
    record = json.loads((fit.folder / "fit.json").read_text())
    assert record["scored_by"] == REPLAY_RUNNER
    # 4 requests over the tasks: one request moves a task by 100 / (its requests) points
    fewest = min(record["requests_per_task"].values())
    assert sum(record["requests_per_task"].values()) == 4 and record["coarsest_step"] == 100 / fewest


class _FakeScorer:
    """The budget search's scorer with metrics as a function of the recipe: tests the search, not kernels.

    ``llm`` costs 3 points quantized, 0.5 with ``lm.blocks.0.down_proj`` float; ``segment`` costs 2 points
    whatever its layers (its error is spread out).
    """

    def __init__(self) -> None:
        self.layer_calls: list[str] = []

    def _drop(self, recipe: Recipe) -> float:
        drop = 0.0
        if recipe.scheme_for("llm").name != "fp32":
            drop += 0.5 if "lm.blocks.0.down_proj" in recipe.float_layers.get("llm", ()) else 3.0
        if recipe.scheme_for("segment").name != "fp32":
            drop += 2.0
        return drop

    def score(self, recipe, folder):
        from xsam_edge.quantization.accuracy import BundleScore

        return None, BundleScore({"referring": {"giou": 50.0 - self._drop(recipe)}}, 0.01, 1)

    def layers(self, recipe, graph):
        from xsam_edge.quantization.report import LayerScore

        self.layer_calls.append(graph)
        names = {"llm": ["lm.blocks.0.down_proj", "lm.lm_head"], "segment": ["head.a", "head.b"]}[graph]
        return [LayerScore(n, 9.0 - i, {}) for i, n in enumerate(names)] + [LayerScore("tiny", 0.2, {})]

    def bundle(self, recipe, folder):
        return recipe


def test_budget_search_tries_layers_before_whole_graphs(tmp_path):
    from xsam_edge.quantization.accuracy import _search
    from xsam_edge.quantization.schemes import Int8DynActInt4Weight

    recipe = Recipe("phone", "executorch", {"segment": Int8Static(), "llm": Int8DynActInt4Weight(32)})
    # llm is the most sensitive (3 points alone); its down_proj in float brings it to 0.5, but segment's
    # 2 points cannot be fixed by layers: segment goes float whole, llm keeps one layer float
    scorer = _FakeScorer()
    fit = _search(scorer, recipe, 1.0, tmp_path, tmp_path / "out", max_layers=2, min_gain_db=1.0)
    steps = [(s["kept_float"], s["float_layers"], s["worst"]) for s in fit.history]
    assert steps[0] == ([], {}, 5.0)
    assert steps[1] == ([], {"llm": ["lm.blocks.0.down_proj"]}, 2.5)  # layers first
    assert steps[2] == ([], {"llm": ["lm.blocks.0.down_proj", "lm.lm_head"]}, 2.5)  # at most max_layers
    assert steps[3] == (["llm"], {}, 2.0)  # then the whole graph
    assert steps[4:6] == [
        (["llm"], {"segment": ["head.a"]}, 2.0),
        (["llm"], {"segment": ["head.a", "head.b"]}, 2.0),
    ]
    assert steps[6] == (["llm", "segment"], {}, 0.0) and fit.drops == {"referring": 0.0}
    assert scorer.layer_calls == ["llm", "segment"] and list(fit.layers) == ["llm", "segment"]

    # when a graph's layers suffice, the search stops there and the bundle keeps the graph quantized
    recipe = Recipe("phone", "executorch", {"llm": Int8DynActInt4Weight(32)})
    fit = _search(_FakeScorer(), recipe, 1.0, tmp_path, tmp_path / "out", max_layers=2, min_gain_db=1.0)
    assert fit.recipe.scheme_for("llm") == Int8DynActInt4Weight(32)
    assert fit.recipe.float_layers == {"llm": ("lm.blocks.0.down_proj",)} and fit.drops == {"referring": 0.5}
    assert fit.result is fit.recipe  # the fake's bundle: the chosen recipe

    # max_layers=0 (or a backend whose runtime cannot run here: Core ML) goes straight to whole graphs
    fit = _search(_FakeScorer(), recipe, 1.0, tmp_path, tmp_path / "out", max_layers=0, min_gain_db=1.0)
    assert [s["kept_float"] for s in fit.history] == [[], ["llm"]] and fit.layers == {}


def test_kv_io_calibration_samples_are_bounded_by_memory():
    """Each KV-I/O sample holds the whole past cache.

    At x-sam-student-s's 1280-slot cache a sample is 42 MB, so the default 2 GiB bound for the pair keeps 25
    per graph instead of 32 (issue #35: 4096 slots, two graphs and no bound were OOM-killed at 10 GB)."""
    from types import SimpleNamespace

    from xsam_edge.quantization.calibration import _cache_sample_limit

    cache = [16, 4, 1280, 64]  # layers, kv heads, slots, head dim of x-sam-student-s
    inputs = [
        {"shape": [1, 64, 1024], "dtype": "float32"},
        {"shape": [64], "dtype": "int64"},
        {"shape": cache, "dtype": "float32"},
        {"shape": cache, "dtype": "float32"},
    ]
    manifest = SimpleNamespace(graph=lambda name, backend: SimpleNamespace(inputs=inputs))
    per_sample = 2 * 16 * 4 * 1280 * 64 * 4 + 64 * 1024 * 4 + 64 * 8
    limit = _cache_sample_limit(manifest, 32, 2 << 30)
    assert limit == (2 << 30) // (2 * per_sample) == 25
    assert _cache_sample_limit(manifest, 4, 2 << 30) == 4  # fewer asked: as asked
    assert _cache_sample_limit(manifest, 32, 1) == 1  # at least one sample per graph


def test_recipe_target_falls_back_layers_and_says_so_in_the_bundle(model, seeded_work, tmp_path):
    """A per-graph target the whole quantized graph misses: layers go float by rank until it holds (or the
    limit), the manifest's report lists each with its rank, and the fidelity was measured on held-out data."""
    recipe = Recipe(
        "tiny-target",
        "onnx",
        {"segment": Int8Static(smooth_quant="off")},
        calibration=Calibration("shapes:val-fast", 2),
        targets={"segment": 0.99999},
    )
    result = quantize_bundle(
        model, tiny_tokenizer(), recipe, tmp_path / "b", seeded_work(), SLOTS, progress=False
    )
    report = next(r for r in load_bundle(result.bundle).quantization["reports"] if r["graph"] == "segment")
    assert "held-out" in report["measured_on"] and report["fidelity"]
    assert any(n.startswith("target worst cosine 0.99999") for n in report["notes"]), report["notes"]
    fallback = [k for k in report["kept_float"] if "fallback: sensitivity rank" in k]
    assert any("rank 1 of" in k for k in fallback), fallback
    assert EdgeSession(result.bundle, "onnx") is not None
    with pytest.raises(ValueError, match="targets.segment must be a cosine"):
        Recipe("bad", "onnx", targets={"segment": 1.5})
    with pytest.raises(ValueError, match="no graph named 'nope'"):
        Recipe("bad", "onnx", targets={"nope": 0.9})


def test_intermediates_of_other_code_are_not_reused(model, monkeypatch, tmp_path):
    """A graph part's key names its scheme and settings, not the code that made it: the work folder is keyed
    by the package's sources too, so an upgraded handler does not get the old one's parts back."""
    from xsam_edge.quantization import quantize

    here = quantize._work_folder(model, tmp_path, SLOTS, "fingerprint")
    assert quantize._work_folder(model, tmp_path, SLOTS, "fingerprint") == here  # same code: resumes
    monkeypatch.setattr(quantize, "code_digest", lambda: "other-code")
    assert quantize._work_folder(model, tmp_path, SLOTS, "fingerprint") != here
