"""Encode once, query many: first query on a new image vs the next query on the same image, per backend.

Run: ``python -m benchmarks.session_latency --bundle B [--backend onnx,openvino,executorch]
[--repeats 10]`` (each backend must be in the bundle).
Writes ``docs/results/data/session-latency-<date>.json`` (or ``--out``) and prints a table. No timing
thresholds anywhere: this is a measurement, not a test.
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
from xsam_edge.data.shapes import load_shapes
from xsam_edge.runtime.session import EdgeSession
from xsam_edge.spec.types import SegmentationRequest, Task


def _queries(image: np.ndarray) -> list[SegmentationRequest]:
    return [
        SegmentationRequest(image, Task.REFERRING, text="the red circle"),
        SegmentationRequest(image, Task.PANOPTIC, categories=["circle", "square", "sky"]),
    ]


def measure(bundle: str, backend: str, repeats: int = 10) -> dict:
    """p50 / p90 milliseconds of a first query on a fresh image and of a second query on the same image."""
    session = EdgeSession(bundle, backend)
    by_id = {e.image_id: e.request.image for e in load_shapes("val", num_images=repeats + 1)}
    images = list(by_id.values())
    first, second = [], []
    for i, image in enumerate(images):
        q1, q2 = _queries(image)
        t0 = time.perf_counter()
        session.segment(q1)  # new image: encode + prefix prefill + query
        t1 = time.perf_counter()
        session.segment(q2)  # same image: the query's own tokens only
        t2 = time.perf_counter()
        if i:  # the first image warms the runtime up
            first.append((t1 - t0) * 1e3)
            second.append((t2 - t1) * 1e3)

    def stats(values: list[float]) -> dict:
        return {"p50_ms": float(np.percentile(values, 50)), "p90_ms": float(np.percentile(values, 90))}

    result = {"backend": backend, "first_query": stats(first), "next_query": stats(second), "n": len(first)}
    result["speedup_p50"] = result["first_query"]["p50_ms"] / result["next_query"]["p50_ms"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--backend", default="onnx,openvino", help="comma list of the bundle's backends")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", help="results JSON (default docs/results/data/session-latency-<date>.json)")
    args = parser.parse_args()
    rows = [measure(args.bundle, b.strip(), args.repeats) for b in args.backend.split(",")]
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    report = {
        "date": date,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "bundle": str(args.bundle),
        "threads": os.environ.get("XSAM_EDGE_THREADS", "all cores"),
        "results": rows,
    }
    out = Path(args.out or RESULTS_DIR / f"session-latency-{date}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'backend':<10}{'first query p50':>18}{'next query p50':>17}{'speed-up':>10}")
    for r in rows:
        print(
            f"{r['backend']:<10}{r['first_query']['p50_ms']:>15.1f} ms{r['next_query']['p50_ms']:>14.1f} ms"
            f"{r['speedup_p50']:>9.1f}×"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
