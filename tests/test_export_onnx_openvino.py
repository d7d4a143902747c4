"""ONNX Runtime and OpenVINO backends: every graph against eager, the LLM caches, end to end, placement."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

from conftest import make_image, prefill_graph  # noqa: E402

from xsam_edge.backends.onnx.export import ONNX_GRAPHS, export_onnx  # noqa: E402
from xsam_edge.backends.openvino.export import (  # noqa: E402
    STATEFUL_LLM_FILE,
    compile_model,
    export_openvino,
    run_stateful_llm,
)
from xsam_edge.export.graphs import GRAPH_NAMES, SlotConfig, build_graph  # noqa: E402
from xsam_edge.export.placement import (  # noqa: E402
    ExportedGraph,
    format_placement,
    openvino_op_histogram,
    placement_report,
    psnr,
)
from xsam_edge.export.to_bundle import bundle_manifest, graph_entry  # noqa: E402
from xsam_edge.model.predictor import XSamPredictor  # noqa: E402
from xsam_edge.model.presets import TINY  # noqa: E402
from xsam_edge.runtime.session import EdgeSession  # noqa: E402
from xsam_edge.spec.postprocess import postprocess  # noqa: E402
from xsam_edge.spec.types import SegmentationRequest, Task  # noqa: E402

SLOTS = SlotConfig(max_regions=4, max_conditions=4, max_seq=128, prefill_len=16)
MIN_PSNR_DB = 40.0  # the FP32 threshold, on every output


@pytest.fixture(scope="module")
def onnx_graphs(tiny_model, tmp_path_factory) -> dict[str, ExportedGraph]:
    out = tmp_path_factory.mktemp("onnx")
    return {name: export_onnx(tiny_model, name, SLOTS, out) for name in ONNX_GRAPHS}


@pytest.fixture(scope="module")
def openvino_graphs(tiny_model, tmp_path_factory) -> dict[str, ExportedGraph]:
    out = tmp_path_factory.mktemp("openvino")
    return {name: export_openvino(tiny_model, name, SLOTS, out) for name in GRAPH_NAMES}


def _report(graph: ExportedGraph) -> str:
    numbers = ", ".join(f"{p.name} {p.psnr_db:.1f} dB / {p.max_abs_diff:.1e}" for p in graph.parity)
    return f"{graph.backend:8s} {graph.name:17s} {graph.route:48s} {graph.export_seconds:5.2f} s  {numbers}"


# -- psnr and placement helpers ----------------------------------------------------------------------------
def test_psnr():
    ref = np.array([1.0, -2.0, 0.5])
    assert psnr(ref, ref) == math.inf
    assert psnr(ref, ref + 0.02) == pytest.approx(20 * math.log10(2.0 / 0.02))
    assert psnr(np.zeros(3), np.ones(3)) == -math.inf
    with pytest.raises(ValueError, match="different shapes"):
        psnr(ref, ref[:2])


# -- every graph against eager -----------------------------------------------------------------------------
def test_onnx_graphs_match_eager(onnx_graphs, tiny_model, tmp_path):
    assert set(onnx_graphs) == set(GRAPH_NAMES) - {"llm_prefill", "llm_decode"}
    for name, graph in onnx_graphs.items():
        print(_report(graph))
        assert graph.file.name == f"{name}.onnx" and graph.file.is_file()
        assert graph.route in ("dynamo", "torchscript")
        assert [p.name for p in graph.parity] == graph.outputs, name
        assert graph.min_psnr_db >= MIN_PSNR_DB, _report(graph)
        assert not list(graph.file.parent.glob(".*")), "temporary export folders left behind"
    encode = onnx_graphs["encode_image"]
    side = TINY.seg_encoder.image_size
    assert encode.inputs == ["seg_pixels", "global_pixels"] and encode.input_shapes[0] == (1, 3, side, side)
    assert onnx_graphs["embed"].input_dtypes == ["int32"]
    with pytest.raises(ValueError, match="llm_kvio_decode"):
        export_onnx(tiny_model, "llm_decode", SLOTS, tmp_path)


def test_onnx_falls_back_to_the_legacy_exporter(tiny_model, tmp_path, monkeypatch):
    real_export = torch.onnx.export

    def no_dynamo(*args, **kwargs):
        if kwargs.get("dynamo"):
            raise RuntimeError("dynamo export unavailable")
        return real_export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", no_dynamo)
    graph = export_onnx(tiny_model, "embed", SLOTS, tmp_path)
    assert graph.route == "torchscript" and graph.min_psnr_db == math.inf
    assert [f.name for f in tmp_path.iterdir()] == ["embed.onnx"]


def test_openvino_graphs_match_eager(openvino_graphs):
    for graph in openvino_graphs.values():
        print(_report(graph))
        assert graph.file.suffix == ".xml" and all(f.is_file() for f in graph.files)
        assert graph.min_psnr_db >= MIN_PSNR_DB, _report(graph)
    assert openvino_graphs["llm_prefill"].file.stem == STATEFUL_LLM_FILE
    assert openvino_graphs["segment"].input_shapes[-1] == (1, TINY.decoder.hidden_dim)  # static contract
    assert openvino_graphs["llm_kvio_decode"].states == []


# -- the LLM: state in the OpenVINO request, past/present through the host on ONNX --------------------------
def _eager_llm_reference(model, prompt: torch.Tensor, steps: torch.Tensor) -> list[torch.Tensor]:
    """Projected rows and logits of a chunked prefill then one-token decodes through the eager LLMGraph."""
    graph = build_graph(model, "llm_prefill", SLOTS)
    graph.reset_cache()
    with torch.no_grad():
        projected, logits = prefill_graph(graph, prompt, 0, SLOTS.prefill_len)
        out = [projected, logits]
        for i, x in enumerate(steps):
            out += list(graph(x[None, None], torch.tensor([prompt.shape[0] + i])))
    return out


def _llm_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    prompt = torch.randn(21, TINY.llm.hidden_size, generator=gen)  # 2 chunks, the last one left-padded
    return prompt, torch.randn(2, TINY.llm.hidden_size, generator=gen)


def _close(got: list, want: list[torch.Tensor]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        a = torch.as_tensor(np.asarray(a))
        assert a.shape == b.shape and psnr(b, a) >= 100 and float((a - b).abs().max()) < 1e-4


def test_openvino_stateful_llm_matches_eager(openvino_graphs, tiny_model):
    graph = openvino_graphs["llm_decode"]
    assert graph.file == openvino_graphs["llm_prefill"].file
    hist = openvino_op_histogram(graph.file)
    assert hist.get("ReadValue") == 2 and hist.get("Assign") == 2 and len(graph.states) == 2
    assert graph.inputs == ["inputs_embeds", "cache_position"]  # the caches are state, not inputs

    prompt, steps = _llm_inputs()
    want = _eager_llm_reference(tiny_model, prompt, steps)
    request = compile_model(graph.file).create_infer_request()

    def run_once() -> list:
        request.reset_state()
        projected, logits = prefill_graph(
            lambda x, p: [torch.from_numpy(a) for a in run_stateful_llm(request, x, p)],
            prompt,
            0,
            SLOTS.prefill_len,
        )
        out = [projected, logits]
        for i, x in enumerate(steps):
            out += run_stateful_llm(request, x[None, None], torch.tensor([prompt.shape[0] + i]))
        return out

    _close(run_once(), want)
    _close(run_once(), want)  # reset_state() starts a clean sequence


def test_onnx_kvio_llm_matches_eager(onnx_graphs, tiny_model):
    prompt, steps = _llm_inputs()
    want = _eager_llm_reference(tiny_model, prompt, steps)
    llm = _OnnxLLM(onnx_graphs)
    projected, logits = prefill_graph(llm, prompt, 0, SLOTS.prefill_len)
    got = [projected, logits]
    for i, x in enumerate(steps):
        got += llm(x[None, None], torch.tensor([prompt.shape[0] + i]))
    _close(got, want)
    assert np.all(llm.past[0][:, :, 23:] == 0)  # nothing written past the last position


# -- end to end: the runtime's own session over the exported files -------------------------------------------
class _OnnxLLM:
    """The KV-I/O LLM on ONNX Runtime with the caches kept by the host (the LLMGraph cache API)."""

    def __init__(self, graphs: dict[str, ExportedGraph]) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.sessions = {
            t: ort.InferenceSession(str(graphs[name].file), options, providers=["CPUExecutionProvider"])
            for t, name in ((SLOTS.prefill_len, "llm_kvio_prefill"), (1, "llm_kvio_decode"))
        }
        self.reset_cache()

    def reset_cache(self) -> None:
        shape = next(i.shape for i in self.sessions[1].get_inputs() if i.name == "past_keys")
        self.past = [np.zeros(shape, np.float32), np.zeros(shape, np.float32)]

    def snapshot_cache(self) -> list[np.ndarray]:
        return [c.copy() for c in self.past]

    def restore_cache(self, snapshot: list[np.ndarray]) -> None:
        self.past = [c.copy() for c in snapshot]

    def __call__(self, x: torch.Tensor, positions: torch.Tensor) -> list[torch.Tensor]:
        feeds = {
            "inputs_embeds": x.numpy(),
            "cache_position": positions.numpy(),
            "past_keys": self.past[0],
            "past_values": self.past[1],
        }
        projected, logits, keys, values = self.sessions[x.shape[1]].run(None, feeds)
        self.past = [keys, values]
        return [torch.from_numpy(projected), torch.from_numpy(logits)]


def _session(backend: str, graphs: dict[str, ExportedGraph], model, tokenizer) -> EdgeSession:
    """``EdgeSession`` on the backend's real runtime over these graph files (a manifest made in memory)."""
    root = next(iter(graphs.values())).file.parent
    entries = [graph_entry(g, root) for g in graphs.values()]
    manifest = bundle_manifest(model, tokenizer, SLOTS, entries)
    tokenizer.save(root)
    manifest.root = root
    return EdgeSession(manifest, backend)


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_end_to_end_referring_matches_the_predictor(backend, request, tiny_model, tokenizer):
    graphs = request.getfixturevalue(f"{backend}_graphs")
    if backend == "openvino":  # its bundle holds one stateful IR for the LLM
        graphs = {
            n: g for n, g in graphs.items() if n not in ("llm_decode", "llm_kvio_prefill", "llm_kvio_decode")
        }
    session = _session(backend, graphs, tiny_model, tokenizer)

    image = make_image()
    req = SegmentationRequest(image, task=Task.REFERRING, text="the red circle")
    predictor = XSamPredictor(tiny_model, tokenizer)
    raw_session = session.run(req)
    raw = predictor.run(req)
    want = predictor.segment(req)
    class_logits = raw_session.class_logits
    print(f"{backend}: class logits max |Δ| {np.abs(class_logits - raw.class_logits).max():.1e}")
    got = postprocess(req.task, class_logits, raw_session.mask_logits, raw.geometry, labels=raw.labels)
    assert got.masks.shape == want.masks.shape and got.labels == want.labels
    union = np.logical_or(got.masks, want.masks).sum()
    iou = np.logical_and(got.masks, want.masks).sum() / union if union else 1.0
    assert iou >= 0.99, iou
    assert np.allclose(got.scores, want.scores, atol=1e-4)


# -- placement ---------------------------------------------------------------------------------------------
def test_placement_report_lists_grid_sample(onnx_graphs, openvino_graphs):
    files = {f"{g.backend}/{g.name}": g.file for g in (*onnx_graphs.values(), *openvino_graphs.values())}
    report = placement_report(files)
    for backend in ("onnx", "openvino"):
        entry = report[f"{backend}/encode_image"]
        assert entry["histogram"]["GridSample"] >= 1 and "GridSample" in entry["risks"]
        assert entry["total_ops"] == sum(entry["histogram"].values())
    assert "GridSample" not in report["onnx/segment"]["risks"]
    assert report["onnx/encode_image"] == onnx_graphs["encode_image"].placement
    table = format_placement(report)
    print(table)
    assert "onnx/encode_image" in table and "GridSample×" in table
    with pytest.raises(ValueError, match=".onnx or an OpenVINO"):
        placement_report(["model.pte"])
