"""Roofline of this machine and each graph's achieved fraction of it (issue 7, point 5).

A latency alone does not say whether a graph is slow or the machine is: ``measure_peak`` measures what this
machine can do (GEMM throughput in FP32 and INT8, memory bandwidth) with the thread count the runtimes use,
and ``graph_roofline`` places one graph call, from its MACs and bytes, under that roof.

Torch-free on purpose: a bundle-only install (a Jetson with numpy and onnxruntime) measures its own peak.
onnxruntime and onnx are imported lazily; without them FP32 falls back to numpy and INT8 is not measured.

Run: ``python -m xsam_edge.bench.roofline [--threads N] [--repeats R]`` prints the peak as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from xsam_edge.runtime.protocol import threads as default_threads

GEMM_SIZE = 1024  # (N, N) @ (N, N): 1.07 GMACs, large enough for the blocked kernels to reach their peak
COPY_BYTES = 256 * 2**20  # per array, well beyond any last-level cache
MIN_REPEAT_S = 0.02  # a timed repeat loops the op until it lasts this long, so timer noise stays small
_EXTRA_ITEMSIZE = {"bfloat16": 2}  # torch dtype names numpy does not know


@dataclass(frozen=True)
class MachinePeak:
    """What this machine can do, measured with ``threads`` threads.

    Attributes:
        fp32_macs_per_s (float): FP32 GEMM multiply-accumulates per second.
        int8_macs_per_s (float | None): INT8 GEMM multiply-accumulates per second; ``None`` when not measured
            (no onnxruntime).
        bandwidth_bytes_per_s (float): memory bytes read plus written per second.
        threads (int): threads the measurement used.
        method (dict[str, str]): how each number was measured, keyed ``fp32``, ``int8``, ``bandwidth``.
    """

    fp32_macs_per_s: float
    int8_macs_per_s: float | None
    bandwidth_bytes_per_s: float
    threads: int
    method: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for a benchmark result file)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MachinePeak:
        """Inverse of ``to_dict``."""
        int8 = data.get("int8_macs_per_s")
        return cls(
            fp32_macs_per_s=float(data["fp32_macs_per_s"]),
            int8_macs_per_s=None if int8 is None else float(int8),
            bandwidth_bytes_per_s=float(data["bandwidth_bytes_per_s"]),
            threads=int(data["threads"]),
            method={str(k): str(v) for k, v in data.get("method", {}).items()},
        )


def measure_peak(threads: int | None = None, repeats: int = 5) -> MachinePeak:
    """Measure FP32 and INT8 GEMM throughput and memory bandwidth (about 1 to 3 s on 2 cores).

    Each number is the best of ``repeats`` timed repeats after a warm-up: the peak is what the machine can do,
    and anything slower is interference. The GEMMs run through onnxruntime, as the exported graphs do, with a
    constant right operand (prepacked, like model weights).

    Args:
        threads (int | None): intra-op threads; ``None`` means ``XSAM_EDGE_THREADS``, or every core (the
            runtimes' default).
        repeats (int): timed repeats per measurement.

    Returns:
        MachinePeak: the measured peak, with how each number was measured.

    Raises:
        ValueError: ``threads`` or ``repeats`` is below 1.
    """
    threads = default_threads() if threads is None else threads
    if threads < 1 or repeats < 1:
        raise ValueError(f"threads and repeats must be ≥ 1, got threads={threads}, repeats={repeats}")
    n = GEMM_SIZE
    macs = n**3
    method: dict[str, str] = {}
    try:
        import onnx  # noqa: F401  (only to know the model builder is there)
        import onnxruntime as ort
    except ImportError:
        ort = None
    if ort is None:
        a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
        b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
        fp32 = macs / _best_seconds(lambda: a @ b, repeats)
        method["fp32"] = (
            f"numpy matmul {n}x{n}x{n} float32 (BLAS threads as the BLAS library sets them; onnxruntime or "
            f"onnx not installed), best of {repeats}"
        )
        int8 = None
        method["int8"] = "not measured: onnxruntime or onnx not installed"
    else:
        detail = f"{threads} intra-op threads, B constant, best of {repeats} after a warm-up"
        fp32 = macs / _best_seconds(_ort_gemm(ort, threads, int8=False), repeats)
        method["fp32"] = f"onnxruntime {ort.__version__} MatMul {n}x{n}x{n} float32, {detail}"
        int8 = macs / _best_seconds(_ort_gemm(ort, threads, int8=True), repeats)
        method["int8"] = (
            f"onnxruntime {ort.__version__} MatMulInteger {n}x{n}x{n} uint8 x int8 -> int32, {detail}"
        )
    bandwidth = _bandwidth(threads, repeats)
    method["bandwidth"] = (
        f"numpy copy of {COPY_BYTES // 2**20} MiB split across {threads} threads, 2 bytes (read + write) per "
        f"byte copied as STREAM Copy counts, best of {repeats} after a warm-up"
    )
    return MachinePeak(fp32, int8, bandwidth, threads, method)


def _best_seconds(run: Callable[[], object], repeats: int) -> float:
    """Seconds of one ``run()``: best of ``repeats`` timed loops after a warm-up."""
    run()  # warm-up: allocation, prepacking, thread-pool start-up, page faults
    start = time.perf_counter()
    run()
    once = time.perf_counter() - start
    loops = max(1, math.ceil(MIN_REPEAT_S / max(once, 1e-9)))
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(loops):
            run()
        best = min(best, (time.perf_counter() - start) / loops)
    return best


def _ort_gemm(ort: Any, threads: int, int8: bool) -> Callable[[], object]:
    """One-node MatMul (or uint8 x int8 MatMulInteger) session, built in memory; returns its run call."""
    from onnx import TensorProto, helper, numpy_helper

    n = GEMM_SIZE
    rng = np.random.default_rng(0)
    if int8:
        a = rng.integers(0, 256, (n, n), dtype=np.uint8)
        b = rng.integers(-128, 128, (n, n), dtype=np.int8)
        node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    else:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
    graph = helper.make_graph(
        [node],
        "gemm",
        [helper.make_tensor_value_info("A", a_type, [n, n])],
        [helper.make_tensor_value_info("Y", y_type, [n, n])],
        initializer=[numpy_helper.from_array(b, "B")],
    )
    # IR 8 / opset 17: old enough for every onnxruntime a device may carry
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {"A": a}
    return lambda: session.run(None, feeds)


def _bandwidth(threads: int, repeats: int) -> float:
    """Bytes read plus written per second by a large copy, split across ``threads`` threads.

    Threads because one core cannot saturate the memory bus on most machines, and the graphs run with
    ``threads``; numpy releases the GIL while it copies. The source is filled, not ``np.zeros``: untouched
    zero pages would be read from one cached page.
    """
    count = COPY_BYTES // 8
    src = np.ones(count, dtype=np.float64)
    dst = np.empty_like(src)
    pairs = list(zip(np.array_split(dst, threads), np.array_split(src, threads), strict=True))
    with ThreadPoolExecutor(max_workers=threads) as pool:

        def copy() -> None:
            for future in [pool.submit(np.copyto, d, s) for d, s in pairs]:
                future.result()

        seconds = _best_seconds(copy, repeats)
    return 2 * src.nbytes / seconds


def graph_roofline(
    macs: int, bytes_moved: int, seconds: float, peak: MachinePeak, int8: bool = False
) -> dict[str, Any]:
    """Where one graph call sits under this machine's roof.

    The attainable rate is ``min(peak, intensity × bandwidth)``: a graph with few MACs per byte cannot reach
    the GEMM peak however good its kernels are, so its fraction is taken against the memory roof. A graph
    with no MACs (an embedding lookup) is judged by its bandwidth alone.

    Args:
        macs (int): multiply-accumulates of one call (``export.macs.graph_macs``).
        bytes_moved (int): bytes one call reads and writes (``graph_bytes``).
        seconds (float): measured seconds of one call.
        peak (MachinePeak): this machine's peak (``measure_peak``).
        int8 (bool): the graph's GEMMs run in INT8; the INT8 peak is used when it was measured.

    Returns:
        dict[str, Any]: ``macs``, ``bytes``, ``seconds``, ``achieved_macs_per_s``, ``arithmetic_intensity``
        (MACs per byte), ``peak_macs_per_s`` and ``peak_kind`` (``"int8"`` or ``"fp32"``),
        ``attainable_macs_per_s``, ``achieved_bytes_per_s``, ``peak_bytes_per_s``, ``fraction`` (achieved
        over attainable; bandwidth over peak bandwidth when ``macs`` is 0) and ``bound`` (``"compute"`` or
        ``"memory"``).

    Raises:
        ValueError: ``seconds`` is not positive, ``macs`` or ``bytes_moved`` is negative, or both are 0.
    """
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0 (a measured call time), got {seconds!r}")
    if macs < 0 or bytes_moved < 0:
        raise ValueError(f"macs and bytes_moved must be ≥ 0, got macs={macs}, bytes_moved={bytes_moved}")
    if macs == 0 and bytes_moved == 0:
        raise ValueError("macs and bytes_moved are both 0: a call that does nothing has no roofline")
    use_int8 = int8 and peak.int8_macs_per_s is not None
    peak_macs = peak.int8_macs_per_s if use_int8 else peak.fp32_macs_per_s
    bandwidth = peak.bandwidth_bytes_per_s
    achieved_bytes = bytes_moved / seconds
    result: dict[str, Any] = {
        "macs": macs,
        "bytes": bytes_moved,
        "seconds": seconds,
        "achieved_macs_per_s": macs / seconds,
        "peak_macs_per_s": peak_macs,
        "peak_kind": "int8" if use_int8 else "fp32",
        "achieved_bytes_per_s": achieved_bytes,
        "peak_bytes_per_s": bandwidth,
    }
    if macs == 0:
        return result | {
            "arithmetic_intensity": 0.0,
            "attainable_macs_per_s": 0.0,
            "fraction": achieved_bytes / bandwidth,
            "bound": "memory",
        }
    intensity = macs / bytes_moved if bytes_moved else math.inf
    memory_roof = intensity * bandwidth
    attainable = min(peak_macs, memory_roof)
    return result | {
        "arithmetic_intensity": intensity,
        "attainable_macs_per_s": attainable,
        "fraction": (macs / seconds) / attainable,
        "bound": "compute" if memory_roof >= peak_macs else "memory",
    }


def graph_bytes(weight_bytes: int, io_specs: list[dict[str, Any]]) -> int:
    """Bytes one graph call moves at least: its weights read once plus every input and output tensor.

    Intermediate activations are left out (they may stay in cache), so this is the traffic floor and the
    memory roof it gives is the most optimistic one. A stateful graph's cache that is read and rewritten
    each call is listed twice.

    Args:
        weight_bytes (int): bytes of the graph's weights as stored (after quantization).
        io_specs (list[dict[str, Any]]): ``{"name", "shape", "dtype"}`` per tensor, dtype a numpy or torch
            dtype name ("float32", "int64"); the manifest's ``inputs`` plus ``outputs``.

    Returns:
        int: bytes.

    Raises:
        ValueError: negative ``weight_bytes``, or a dtype numpy does not know.
    """
    if weight_bytes < 0:
        raise ValueError(f"weight_bytes must be ≥ 0, got {weight_bytes}")
    total = int(weight_bytes)
    for spec in io_specs:
        name = str(spec["dtype"])
        if name in _EXTRA_ITEMSIZE:
            itemsize = _EXTRA_ITEMSIZE[name]
        else:
            try:
                itemsize = np.dtype(name).itemsize
            except TypeError as err:
                raise ValueError(f"tensor {spec.get('name')!r} has dtype {name!r}, unknown to numpy") from err
        total += math.prod(int(d) for d in spec["shape"]) * itemsize
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description="Measure this machine's GEMM and memory peak.")
    parser.add_argument("--threads", type=int, default=None, help="default: XSAM_EDGE_THREADS or all cores")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(measure_peak(threads=args.threads, repeats=args.repeats).to_dict(), indent=2))


if __name__ == "__main__":
    main()
