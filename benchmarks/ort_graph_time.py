"""Where an ONNX bundle's time goes: ONNX Runtime wall time per graph, several bundles on the same requests.

Run: ``python -m benchmarks.ort_graph_time BUNDLE [BUNDLE ...] [--data shapes:test] [--limit 120]
[--passes 2] [--out PATH]``.

Each bundle answers the same requests through the project's own scorer (``evaluate_bundle``), the bundles
in turn, ``--passes`` times, so drift on a shared machine shows as the spread between passes. Every call
into ``InferenceSession.run`` / ``run_with_iobinding`` is timed and charged to its graph file, per request.
Answers why a quantized bundle is slower than its float one (which graph, not only that it is). Threads:
``XSAM_EDGE_THREADS`` (default 1 here). Writes ``docs/results/data/ort-graph-time-<date>.json``. A
measurement, not a test: no thresholds.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import RESULTS_DIR
from xsam_edge.files import atomic_write_text


def _timed(spent: collections.Counter, method: Callable[..., Any]) -> Callable[..., Any]:
    def run(session: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(session, *args, **kwargs)
        finally:
            spent[Path(session._model_path).stem] += time.perf_counter() - start

    return run


def measure(bundles: list[Path], data: str, limit: int, passes: int) -> list[dict[str, Any]]:
    """Per pass and bundle: ms per request overall and per graph (ONNX Runtime calls only)."""
    import onnxruntime as ort

    from xsam_edge.data.registry import load_dataset
    from xsam_edge.quantization.accuracy import evaluate_bundle

    spent: collections.Counter = collections.Counter()
    session = ort.InferenceSession
    originals = session.run, session.run_with_iobinding
    session.run = _timed(spent, originals[0])
    session.run_with_iobinding = _timed(spent, originals[1])
    examples = load_dataset(data, limit=limit)
    rows = []
    try:
        for index in range(passes):
            for bundle in bundles:
                spent.clear()
                score = evaluate_bundle(bundle, "onnx", examples, False)
                per_request = {k: v / score.requests * 1e3 for k, v in spent.most_common()}
                rows.append(
                    {
                        "pass": index + 1,
                        "bundle": str(bundle),
                        "requests": score.requests,
                        "ms_per_request": score.seconds_per_request * 1e3,
                        "graph_ms_per_request": per_request,
                    }
                )
                graphs = ", ".join(f"{k} {v:.2f}" for k, v in per_request.items())
                print(f"pass {index + 1} {bundle}: {rows[-1]['ms_per_request']:.2f} ms/request ({graphs})")
    finally:
        session.run, session.run_with_iobinding = originals
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", type=Path, help="ONNX bundle folders")
    parser.add_argument("--data", default="shapes:test", help="requests (a dataset spec)")
    parser.add_argument("--limit", type=int, default=120, help="at most this many images")
    parser.add_argument("--passes", type=int, default=2, help="times over every bundle, in turn")
    parser.add_argument("--out", type=Path, help="results JSON (default: docs/results/data/…)")
    args = parser.parse_args()
    os.environ.setdefault("XSAM_EDGE_THREADS", "1")
    rows = measure(args.bundles, args.data, args.limit, args.passes)
    today = datetime.date.today().isoformat()
    out = args.out or RESULTS_DIR / f"ort-graph-time-{today}.json"
    payload = {
        "command": "python -m benchmarks.ort_graph_time " + " ".join(str(b) for b in args.bundles),
        "date": today,
        "threads": os.environ["XSAM_EDGE_THREADS"],
        "data": args.data,
        "limit": args.limit,
        "rows": rows,
    }
    atomic_write_text(out, json.dumps(payload, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
