"""Export cost at full X-SAM size: per graph, wall time, peak memory, file size and parity (random weights).

Run: ``python -m benchmarks.export_full_size [--preset x-sam-phi3] [--backend onnx]
[--graphs encode_image,segment,llm_kvio_prefill] [--llm-layers N] [--timeout 500] [--out PATH]``. Each graph
is exported in its own process (so its peak RSS is its own, and one that runs out of time or memory does not
take the others down). Weights are random at std 0.02 (``randomize_like_trained``): export cost does not
depend on them. ``--llm-layers`` builds the LLM with fewer decoder layers: the image and mask graphs do not
contain it, and a 24 GB machine cannot hold the whole 18.5 GB float model next to an exporter. Writes a JSON
results file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import RESULTS_DIR
from xsam_edge.bench.harness import peak_rss_bytes
from xsam_edge.files import atomic_write_text

EXPORTERS = ("onnx", "openvino", "executorch", "coreml")
_PLACEMENT_KEYS = (
    "methods",  # ExecuTorch: per method, delegated and portable nodes and ops
    "delegated_nodes",
    "portable_nodes",
    "delegate_subgraphs",
    "portable_ops",
    "max_rank",
    "spec_matches",
    "unknown_ops",
    "deployment_target",
    "precision",
    "parity_skipped",
)


def randomize_like_trained(model: Any, std: float = 0.02, seed: int = 0) -> None:
    """Draw every weight matrix from N(0, ``std``), seeded: sizes and parity as with trained weights.

    transformers initialises SAM at std 1e-10. INT8 rounds that to all-zero tensors and fp16 underflows it
    to zero, and serializers store identical constants once (OpenVINO stored 48 identical MLP weights once),
    so sizes come out small and parity is measured on near-zero outputs.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2:
                parameter.normal_(0.0, std, generator=generator)


def export_one(preset: str, backend: str, graph: str, out_dir: str, llm_layers: int | None = None) -> dict:
    """Build ``preset`` (random weights), export ``graph`` to ``backend``; the numbers of this process."""
    import dataclasses

    import torch

    from xsam_edge.backends import get_backend
    from xsam_edge.export.graphs import SlotConfig
    from xsam_edge.model.build import build_model
    from xsam_edge.model.presets import get_preset

    exporter = get_backend(backend).load_exporter()
    start = time.perf_counter()
    torch.manual_seed(0)
    config = get_preset(preset)
    if llm_layers is not None:
        config = dataclasses.replace(config, llm=dataclasses.replace(config.llm, num_layers=llm_layers))
    model = build_model(config).eval()
    randomize_like_trained(model)
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
        "peak_rss_bytes": peak_rss_bytes(),
        "route": exported.route,
        "llm_layers": model.config.llm.num_layers,
        # what tells whether the device takes it: ExecuTorch's delegation, Core ML's rank and spec checks
        "placement": {k: v for k, v in exported.placement.items() if k in _PLACEMENT_KEYS},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="x-sam-phi3")
    parser.add_argument("--backend", default="onnx", choices=EXPORTERS)
    parser.add_argument("--graphs", default="encode_image,segment,embed,region,llm_kvio_prefill")
    parser.add_argument("--timeout", type=int, default=500, help="seconds per graph")
    parser.add_argument("--llm-layers", type=int, help="LLM decoder layers (default: the preset's)")
    parser.add_argument("--out", help="results JSON (default docs/results/data/export-full-size-<date>.json)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: export this one graph
    args = parser.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(export_one(args.preset, args.backend, args.child, tmp, args.llm_layers)))
        return
    rows = []
    for graph in args.graphs.split(","):
        command = [sys.executable, "-m", "benchmarks.export_full_size", "--preset", args.preset,
                   "--backend", args.backend, "--child", graph]  # fmt: skip
        command += ["--llm-layers", str(args.llm_layers)] if args.llm_layers is not None else []
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
        "command": "python -m benchmarks.export_full_size " + " ".join(sys.argv[1:]),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "rows": rows,
    }
    out = Path(args.out or RESULTS_DIR / f"export-full-size-{date}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
