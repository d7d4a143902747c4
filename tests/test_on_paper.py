"""The on-paper device estimate (``bench/on_paper.py``): each call costs the larger of its two bounds."""

from __future__ import annotations

import math

import pytest

from xsam_edge.bench.on_paper import DEVICES, Device, GraphCost, estimate

DEVICE = Device("test", int8_macs_per_s=1e12, fp16_macs_per_s=5e11, bandwidth_bytes_per_s=1e10, source="-")


def test_each_call_costs_its_larger_bound_and_the_bounds_are_kept_apart():
    costs = {
        "encode_image": GraphCost(macs=10**9, bytes=10**6, int8=True),  # 2 ms compute, 0.2 ms memory
        "llm_decode": GraphCost(macs=10**6, bytes=10**8, int8=False),  # 4 µs compute, 20 ms memory
    }
    result = estimate({"encode_image": 2, "llm_decode": 3}, costs, DEVICE, 0.5, 0.5)
    image, decode = result["graphs"]["encode_image"], result["graphs"]["llm_decode"]
    assert image["bound"] == "compute" and math.isclose(image["seconds"], 4e-3)
    assert decode["bound"] == "memory" and math.isclose(decode["seconds"], 60e-3)
    assert decode["precision"] == "fp16" and math.isclose(decode["compute_s"], 3 * 1e6 / 2.5e11)
    assert math.isclose(result["seconds"], 64e-3)
    assert math.isclose(result["memory_s"], 2 * 0.2e-3 + 60e-3)
    assert result["device"]["label"] == "test"


def test_bad_estimates_are_refused():
    cost = {"segment": GraphCost(1, 1, True)}
    with pytest.raises(ValueError, match="compute efficiency"):
        estimate({"segment": 1}, cost, DEVICE, compute_efficiency=0)
    with pytest.raises(ValueError, match="no cost for graph"):
        estimate({"encode_image": 1}, cost, DEVICE)
    with pytest.raises(ValueError, match="≥ 0"):
        estimate({"segment": -1}, cost, DEVICE)


def test_the_devices_say_where_their_numbers_come_from():
    assert {"iphone-15-pro-ane", "jetson-orin-nano"} <= set(DEVICES)
    for device in DEVICES.values():
        assert device.int8_macs_per_s >= device.fp16_macs_per_s > 0 and device.bandwidth_bytes_per_s > 0
        assert "TOPS" in device.source and "GB/s" in device.source


def test_the_reference_is_scaled_by_its_measured_layers():
    """The benchmark's full-depth reference: the measured query plus the missing layers at their cost."""
    from benchmarks.students_vs_reference import scale_to_full

    run = {
        "llm_layers": 2,
        "first_query_s": [300.0, 310.0, 320.0],
        "first_query_llm_layers_s": [2.0, 2.2, 2.4],
        "next_query_s": [0.5],
        "next_query_llm_layers_s": [0.1],
    }
    full = scale_to_full(run, 32)
    assert math.isclose(full["first_query_s"], 310.0 + 30 * 1.1)
    assert math.isclose(full["next_query_s"], 0.5 + 30 * 0.05)
    assert "t(32) = t(2)" in full["method"]
