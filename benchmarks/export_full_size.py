"""Export cost at full X-SAM size: per graph, wall time, peak memory, file size and parity (random weights).

Run: ``python -m xsam_edge.benchmarks.export_full_size [--preset x-sam-phi3] [--backend onnx]
[--graphs encode_image,segment,llm_kvio_prefill] [--timeout 500] [--out PATH]``. Each graph is exported in its
own process (so its peak RSS is its own, and one that runs out of time or memory does not take the others
down). Weights are random: export cost and parity do not depend on them. Writes a JSON results file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXPORTERS = ("onnx", "openvino", "executorch", "coreml")


def export_one(preset: str, backend: str, graph: str, out_dir: str) -> dict:
    """Build ``preset`` (random weights), export ``graph`` to ``backend``; the numbers of this process."""
    import torch

    from xsam_edge.export.graphs import SlotConfig
    from xsam_edge.model.build import build_model
    from xsam_edge.presets import get_preset

    exporter = getattr(__import__(f"xsam_edge.export.{backend}", fromlist=["x"]), f"export_{backend}")
    start = time.perf_counter()
    torch.manual_seed(0)
    model = build_model(get_preset(preset)).eval()
    build_s = time.perf_counter() - start
    with torch.no_grad():
        exported = exporter(model, graph, SlotConfig(), Path(out_dir))
    files = [Path(f) for f in exported.files]
    size = sum(
        p.stat().st_size if p.is_file() else sum(q.stat().st_size for q in p.rglob("*")) for p in files
    )
    return {
        "graph": graph,
        "backend": backend,
        "build_s": build_s,
        "export_s": exported.export_seconds,
        "file_bytes": size,
        "min_psnr_db": exported.min_psnr_db if exported.parity else None,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "route": exported.route,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="x-sam-phi3")
    parser.add_argument("--backend", default="onnx", choices=EXPORTERS)
    parser.add_argument("--graphs", default="encode_image,segment,embed,region,llm_kvio_prefill")
    parser.add_argument("--timeout", type=int, default=500, help="seconds per graph")
    parser.add_argument(
        "--out", help="results JSON (default benchmarks/results/export-full-size-<date>.json)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: export this one graph
    args = parser.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(export_one(args.preset, args.backend, args.child, tmp)))
        return
    rows = []
    for graph in args.graphs.split(","):
        command = [sys.executable, "-m", "xsam_edge.benchmarks.export_full_size", "--preset", args.preset,
                   "--backend", args.backend, "--child", graph]  # fmt: skip
        start = time.perf_counter()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            row = json.loads(lines[-1]) if done.returncode == 0 and lines else {
                "graph": graph, "error": done.stderr.strip().splitlines()[-1:]}  # fmt: skip
        except subprocess.TimeoutExpired:
            row = {"graph": graph, "error": f"did not finish in {args.timeout} s"}
        row["wall_s"] = time.perf_counter() - start
        print(json.dumps(row), flush=True)
        rows.append(row)
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    result = {
        "date": date,
        "preset": args.preset,
        "backend": args.backend,
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "rows": rows,
    }
    out = Path(args.out or Path(__file__).parent / "results" / f"export-full-size-{date}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
