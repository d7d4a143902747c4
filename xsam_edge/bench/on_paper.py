"""On-paper latency on devices we do not have: MACs and bytes per graph call under a device's roof.

A phone or a Jetson is not here, so its latency is estimated the way a roofline does: each graph call takes
at least its MACs over the device's compute rate and at least its bytes over the memory bandwidth; the call
costs the larger of the two. The rates are the vendors' nominal peaks times an efficiency assumed and stated
(``COMPUTE_EFFICIENCY``: the issue's "≤ 30 % of nominal peak"; ``BANDWIDTH_EFFICIENCY``), so a reader can
redo the sum with their own. The call plan (which graphs a query calls, how often) is the one the runtime
really made, observed on this machine; the MACs are counted on the exported graphs (``export.macs``), so an
attention over the whole cache is charged as the graph computes it.

Torch-free: the numbers come in, the estimate goes out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "BANDWIDTH_EFFICIENCY",
    "COMPUTE_EFFICIENCY",
    "DEVICES",
    "Device",
    "GraphCost",
    "estimate",
]

COMPUTE_EFFICIENCY = 0.30
"""Fraction of the nominal compute peak a graph is assumed to reach (the issue's bound)."""

BANDWIDTH_EFFICIENCY = 0.60
"""Fraction of the nominal DRAM bandwidth a weight stream is assumed to reach (LPDDR5: 60–80 %)."""


@dataclass(frozen=True)
class Device:
    """A device's nominal peaks, with where each number comes from.

    Attributes:
        label (str): what it is.
        int8_macs_per_s (float): dense INT8 multiply-accumulates per second (vendor TOPS / 2).
        fp16_macs_per_s (float): dense FP16 multiply-accumulates per second.
        bandwidth_bytes_per_s (float): DRAM bandwidth.
        source (str): the vendor figures and how they were read.
    """

    label: str
    int8_macs_per_s: float
    fp16_macs_per_s: float
    bandwidth_bytes_per_s: float
    source: str


DEVICES: dict[str, Device] = {
    "iphone-15-pro-ane": Device(
        label="iPhone 15 Pro, A17 Pro Neural Engine",
        int8_macs_per_s=17.5e12,
        fp16_macs_per_s=8.75e12,
        bandwidth_bytes_per_s=51.2e9,
        source=(
            "Apple: 35 TOPS (no precision given; read as INT8, 2 ops per MAC, FP16 at half, the conservative "
            "reading); LPDDR5-6400 on a 64-bit bus = 51.2 GB/s"
        ),
    ),
    "jetson-orin-nano": Device(
        label="NVIDIA Jetson Orin Nano 8 GB (GPU, TensorRT)",
        int8_macs_per_s=10e12,
        fp16_macs_per_s=5e12,
        bandwidth_bytes_per_s=68e9,
        source=(
            "NVIDIA: 40 INT8 TOPS with 2:4 sparsity = 20 dense TOPS; FP16 tensor rate half of INT8; "
            "128-bit LPDDR5 = 68 GB/s (the 2024 'Super' mode: 67 sparse TOPS, 102 GB/s, not used here)"
        ),
    ),
}


@dataclass(frozen=True)
class GraphCost:
    """One call of a graph: its MACs, the bytes it must move, and whether its GEMMs run in INT8.

    Attributes:
        macs (int): multiply-accumulates of one call.
        bytes (int): bytes one call reads and writes at least (weights as stored, inputs, outputs, and for an
            LLM step the KV cache it attends over).
        int8 (bool): integer GEMMs (W8A8); ``False``: FP16 compute (float or weight-only graphs).
    """

    macs: int
    bytes: int
    int8: bool


def estimate(
    plan: Mapping[str, int],
    costs: Mapping[str, GraphCost],
    device: Device,
    compute_efficiency: float = COMPUTE_EFFICIENCY,
    bandwidth_efficiency: float = BANDWIDTH_EFFICIENCY,
) -> dict[str, Any]:
    """Seconds of the calls in ``plan`` on ``device``, per graph and in total, the two bounds apart.

    Args:
        plan (Mapping[str, int]): graph → calls (``{"encode_image": 1, "llm_prefill": 5, …}``).
        costs (Mapping[str, GraphCost]): graph → one call's cost; every graph of ``plan`` needs one.
        device (Device): the device.
        compute_efficiency (float): fraction of the compute peak reached, in (0, 1].
        bandwidth_efficiency (float): fraction of the bandwidth reached, in (0, 1].

    Returns:
        dict[str, Any]: ``seconds`` (Σ over calls of max(compute, memory)), ``compute_s`` and ``memory_s``
        (each bound summed alone), and per graph ``calls``, ``compute_s``, ``memory_s``, ``seconds``,
        ``bound``; plus the device and the efficiencies used.

    Raises:
        ValueError: an efficiency outside (0, 1], a negative call count, or a graph without a cost.
    """
    for name, value in (("compute", compute_efficiency), ("bandwidth", bandwidth_efficiency)):
        if not 0 < value <= 1:
            raise ValueError(f"{name} efficiency must be in (0, 1], got {value!r}")
    missing = sorted(set(plan) - set(costs))
    if missing:
        raise ValueError(f"no cost for graph(s) {', '.join(missing)}")
    bandwidth = device.bandwidth_bytes_per_s * bandwidth_efficiency
    graphs = {}
    for name, calls in plan.items():
        if calls < 0:
            raise ValueError(f"{name}: a call count is ≥ 0, got {calls}")
        cost = costs[name]
        peak = device.int8_macs_per_s if cost.int8 else device.fp16_macs_per_s
        compute = cost.macs / (peak * compute_efficiency)
        memory = cost.bytes / bandwidth
        graphs[name] = {
            "calls": calls,
            "compute_s": calls * compute,
            "memory_s": calls * memory,
            "seconds": calls * max(compute, memory),
            "bound": "compute" if compute >= memory else "memory",
            "precision": "int8" if cost.int8 else "fp16",
        }
    return {
        "device": asdict(device),
        "compute_efficiency": compute_efficiency,
        "bandwidth_efficiency": bandwidth_efficiency,
        "seconds": sum(g["seconds"] for g in graphs.values()),
        "compute_s": sum(g["compute_s"] for g in graphs.values()),
        "memory_s": sum(g["memory_s"] for g in graphs.values()),
        "graphs": graphs,
    }
