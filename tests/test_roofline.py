"""Roofline: the machine peak is measured (no timing thresholds), the arithmetic is exact, MACs count."""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import make_tiny_model

from xsam_edge.bench import roofline
from xsam_edge.bench.roofline import MachinePeak, graph_bytes, graph_roofline, measure_peak
from xsam_edge.export.graphs import SlotConfig, build_graph, example_inputs, graph_specs
from xsam_edge.export.macs import graph_macs
from xsam_edge.model.info import count_macs

SLOTS = SlotConfig(max_regions=4, max_conditions=4, max_seq=128, prefill_len=16)
# ridge point: 100e9 / 10e9 = 10 MACs per byte (fp32), 40 (int8)
PEAK = MachinePeak(100e9, 400e9, 10e9, threads=1, method={"fp32": "synthetic"})


# -- measure_peak ------------------------------------------------------------------------------------------
def test_measure_peak_is_positive_and_round_trips():
    peak = measure_peak(threads=1, repeats=1)
    assert peak.fp32_macs_per_s > 0 and peak.bandwidth_bytes_per_s > 0
    assert peak.int8_macs_per_s is not None and peak.int8_macs_per_s > 0  # onnxruntime is in the test venv
    assert peak.threads == 1
    assert set(peak.method) == {"fp32", "int8", "bandwidth"}
    assert "onnxruntime" in peak.method["fp32"] and "MatMulInteger" in peak.method["int8"]
    assert MachinePeak.from_dict(peak.to_dict()) == peak


def test_measure_peak_without_onnxruntime_falls_back_to_numpy(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import raises ImportError
    monkeypatch.setattr(roofline, "COPY_BYTES", 8 * 2**20)
    monkeypatch.setenv("XSAM_EDGE_THREADS", "1")
    peak = measure_peak(repeats=1)
    assert peak.threads == 1
    assert peak.fp32_macs_per_s > 0 and peak.bandwidth_bytes_per_s > 0
    assert peak.int8_macs_per_s is None
    assert "numpy" in peak.method["fp32"] and "not measured" in peak.method["int8"]
    assert MachinePeak.from_dict(peak.to_dict()) == peak


@pytest.mark.parametrize("kwargs", [dict(threads=0), dict(repeats=0)])
def test_measure_peak_rejects_bad_counts(kwargs):
    with pytest.raises(ValueError, match="must be ≥ 1"):
        measure_peak(**kwargs)


# -- graph_roofline ----------------------------------------------------------------------------------------
def test_compute_bound_graph():
    # intensity 1000 MACs/byte, far right of the ridge; seconds a power of two keep the arithmetic exact
    out = graph_roofline(macs=10**9, bytes_moved=10**6, seconds=0.25, peak=PEAK)
    assert out["arithmetic_intensity"] == 1000.0
    assert out["achieved_macs_per_s"] == 4e9
    assert out["peak_macs_per_s"] == 100e9 and out["peak_kind"] == "fp32"
    assert out["attainable_macs_per_s"] == 100e9
    assert out["fraction"] == 0.04
    assert out["bound"] == "compute"
    assert (out["macs"], out["bytes"], out["seconds"]) == (10**9, 10**6, 0.25)


def test_memory_bound_graph():
    # intensity 1 MAC/byte: the memory roof is 1 × 10e9 = 10e9 MAC/s, below the 100e9 peak
    out = graph_roofline(macs=10**6, bytes_moved=10**6, seconds=2**-10, peak=PEAK)
    assert out["arithmetic_intensity"] == 1.0
    assert out["achieved_macs_per_s"] == 1.024e9
    assert out["attainable_macs_per_s"] == 10e9
    assert out["fraction"] == 0.1024
    assert out["bound"] == "memory"
    assert out["achieved_bytes_per_s"] == 1.024e9 and out["peak_bytes_per_s"] == 10e9


def test_int8_graph_uses_the_int8_peak_when_measured():
    out = graph_roofline(macs=10**9, bytes_moved=10**6, seconds=0.25, peak=PEAK, int8=True)
    assert out["peak_macs_per_s"] == 400e9 and out["peak_kind"] == "int8"
    assert out["fraction"] == 0.01
    # intensity 20: compute-bound against the fp32 roof (ridge 10), memory-bound against int8 (ridge 40)
    assert graph_roofline(20 * 10**6, 10**6, 1.0, PEAK)["bound"] == "compute"
    assert graph_roofline(20 * 10**6, 10**6, 1.0, PEAK, int8=True)["bound"] == "memory"
    no_int8 = MachinePeak(100e9, None, 10e9, threads=1, method={})
    out = graph_roofline(macs=10**9, bytes_moved=10**6, seconds=0.25, peak=no_int8, int8=True)
    assert out["peak_macs_per_s"] == 100e9 and out["peak_kind"] == "fp32"


def test_graph_without_macs_is_judged_by_bandwidth():
    out = graph_roofline(macs=0, bytes_moved=10**9, seconds=0.5, peak=PEAK)
    assert out["fraction"] == 0.2  # 2e9 B/s of 10e9
    assert out["bound"] == "memory"
    assert out["achieved_macs_per_s"] == 0.0 and out["arithmetic_intensity"] == 0.0


@pytest.mark.parametrize(
    "args, match",
    [
        ((10, 10, 0.0), "seconds must be > 0"),
        ((10, 10, -1.0), "seconds must be > 0"),
        ((-1, 10, 1.0), "must be ≥ 0"),
        ((10, -1, 1.0), "must be ≥ 0"),
        ((0, 0, 1.0), "both 0"),
    ],
)
def test_graph_roofline_rejects_bad_values(args, match):
    with pytest.raises(ValueError, match=match):
        graph_roofline(*args, peak=PEAK)


# -- graph_bytes -------------------------------------------------------------------------------------------
def test_graph_bytes_counts_weights_and_every_tensor():
    specs = [
        {"name": "x", "shape": [1, 3, 4, 4], "dtype": "float32"},  # 192
        {"name": "pos", "shape": [5], "dtype": "int64"},  # 40
        {"name": "h", "shape": [2, 2], "dtype": "float16"},  # 8
        {"name": "b", "shape": [3], "dtype": "bfloat16"},  # 6
        {"name": "s", "shape": [], "dtype": "int32"},  # 4 (a scalar)
    ]
    assert graph_bytes(100, specs) == 100 + 192 + 40 + 8 + 6 + 4
    assert graph_bytes(0, []) == 0


def test_graph_bytes_on_manifest_specs(tiny_model):
    spec = graph_specs(tiny_model.config, SLOTS)["embed"].to_dict()
    h = tiny_model.config.llm.hidden_size
    assert graph_bytes(0, spec["inputs"] + spec["outputs"]) == 16 * 4 + 16 * h * 4


def test_graph_bytes_rejects_bad_values():
    with pytest.raises(ValueError, match="weight_bytes"):
        graph_bytes(-1, [])
    with pytest.raises(ValueError, match="unknown to numpy"):
        graph_bytes(0, [{"name": "q", "shape": [2], "dtype": "qint4"}])


# -- graph_macs --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def macs(tiny_model) -> dict[str, int]:
    names = ("encode_image", "embed", "segment", "llm_prefill", "llm_kvio_prefill", "llm_kvio_decode")
    return {name: graph_macs(tiny_model, name, SLOTS) for name in names}


def test_graph_macs_on_the_tiny_model(macs):
    assert macs["encode_image"] > 0 and macs["segment"] > 0 and macs["llm_kvio_prefill"] > 0
    assert 0 < macs["llm_kvio_decode"] < macs["llm_kvio_prefill"]
    assert macs["embed"] == 0  # a lookup: no multiply-accumulates
    # the stateful and the KV-I/O graph share one forward
    assert macs["llm_prefill"] == macs["llm_kvio_prefill"]


def test_graph_macs_counts_attention(macs):
    """Attention (SDPA) is counted: on CPU torch's FLOP counter would miss it, hence the meta twin. The image
    encoders use SDPA (the mask decoder writes its attention out, so its count is the same either way)."""
    model = make_tiny_model(0).requires_grad_(False)  # the counter's module tracker needs frozen parameters
    module = build_graph(model, "encode_image", SLOTS)
    inputs = example_inputs(model.config, "encode_image", SLOTS)
    assert macs["encode_image"] > count_macs(lambda: module(*inputs))
    segment = build_graph(model, "segment", SLOTS)
    assert macs["segment"] == count_macs(lambda: segment(*example_inputs(model.config, "segment", SLOTS)))


def test_graph_macs_ignores_cache_state_and_leaves_the_model_alone(tiny_model, macs):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    assert graph_macs(tiny_model, "llm_prefill", SLOTS) == macs["llm_prefill"]
    assert graph_macs(tiny_model, "llm_prefill", SLOTS) == macs["llm_prefill"]
    after = tiny_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_graph_macs_rejects_unknown_graph(tiny_model):
    with pytest.raises(ValueError, match="known graphs"):
        graph_macs(tiny_model, "llm", SLOTS)
