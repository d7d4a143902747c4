"""ONNX Runtime LLM steps with the cache on the host against the cache bound in ``OrtValue`` buffers.

Run: ``python -m benchmarks.ort_cache_binding [--preset x-sam-student-s] [--threads 2] [--rounds 7]
[--steps 16] [--work outputs/ort-cache-binding] [--out PATH]``.

Exports the preset's ONNX bundle once (random weights drawn like trained ones; reused when the folder holds
one), opens the prefill/decode pair once, and times the same work through both runners of the one session,
alternating A, B, A, B … so drift hits both alike: ``--steps`` one-token decode steps after a 64-token prefill
chunk, and the prefill chunk itself. ``HostCacheLLM`` passes numpy caches in and gets fresh ones back from
every call; ``BoundCacheLLM`` binds two pairs of ``OrtValue`` buffers in and out in turn (I/O binding).
Reports medians and the spread (min–max over rounds) per runner and the ratio of medians. Writes
``docs/results/data/ort-cache-binding-<date>.json``. A measurement, not a test: no thresholds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from benchmarks import RESULTS_DIR


def _time(llm, hidden: int, chunk: int, steps: int) -> tuple[float, float]:
    """Seconds for one prefill chunk, then per decode step, on a reset cache."""
    llm.reset()
    x = np.zeros((1, chunk, hidden), np.float32)
    t0 = time.perf_counter()
    llm.step(x, np.arange(chunk, dtype=np.int64))
    t1 = time.perf_counter()
    token = np.zeros((1, 1, hidden), np.float32)
    for k in range(steps):
        llm.step(token, np.array([chunk + k], dtype=np.int64))
    return t1 - t0, (time.perf_counter() - t1) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="x-sam-student-s")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--work", default="outputs/ort-cache-binding")
    parser.add_argument(
        "--out", help="results JSON (default docs/results/data/ort-cache-binding-<date>.json)"
    )
    args = parser.parse_args()
    os.environ["XSAM_EDGE_THREADS"] = str(args.threads)

    from benchmarks.student_bundle import export
    from xsam_edge.backends.onnx.runtime import BoundCacheLLM, OnnxRuntimeBackend
    from xsam_edge.files import atomic_write_text
    from xsam_edge.runtime.protocol import HostCacheLLM
    from xsam_edge.spec.bundle import load_bundle

    work = Path(args.work)
    made = None if (work / "manifest.json").is_file() else export(args.preset, ["onnx"], work, None)
    manifest = load_bundle(work)
    backend = OnnxRuntimeBackend()
    prefill, decode = (backend.graph(manifest, n) for n in backend.llm_graphs)
    entry = manifest.graph(backend.llm_graphs[0], backend.name)
    runners = {
        "host": HostCacheLLM(prefill, decode, entry),
        "bound": BoundCacheLLM(backend.ort, prefill, decode, entry),
    }
    hidden = int(manifest.model["llm"]["hidden_size"])
    times: dict[str, dict[str, list[float]]] = {n: {"prefill_s": [], "decode_s": []} for n in runners}
    for round_ in range(args.rounds + 1):
        for name, llm in runners.items():
            chunk_s, step_s = _time(llm, hidden, llm.chunk, args.steps)
            if round_:  # the first round warms both up
                times[name]["prefill_s"].append(chunk_s)
                times[name]["decode_s"].append(step_s)

    def summary(values: list[float]) -> dict:
        return {
            "median_ms": round(float(np.median(values)) * 1e3, 2),
            "min_ms": round(min(values) * 1e3, 2),
            "max_ms": round(max(values) * 1e3, 2),
        }

    result = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
        "command": "python -m benchmarks.ort_cache_binding "
        + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None and k != "out"
        ),
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "cache_shape": list(runners["host"].cache_shape),
        "export": made,
        "runners": {n: {k: summary(v) for k, v in t.items()} for n, t in times.items()},
        "decode_speedup_bound_vs_host": round(
            float(np.median(times["host"]["decode_s"]) / np.median(times["bound"]["decode_s"])), 3
        ),
        "prefill_speedup_bound_vs_host": round(
            float(np.median(times["host"]["prefill_s"]) / np.median(times["bound"]["prefill_s"])), 3
        ),
    }
    out = Path(args.out or RESULTS_DIR / f"ort-cache-binding-{result['date']}.json")
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2), f"\nwrote {out}")


if __name__ == "__main__":
    main()
