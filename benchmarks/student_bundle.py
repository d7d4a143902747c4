"""A full-width student of the real X-SAM from a bundle: size, load, first / next query, decode speed, memory.

Run: ``python -m benchmarks.student_bundle [--preset x-sam-student-s] [--backend onnx,openvino]
[--llm-layers N] [--max-seq N] [--threads N] [--repeats 3] [--work outputs/student-bundle] [--out PATH]``.

Builds the preset with random weights drawn like trained ones (``randomize_like_trained``; speed and size do
not depend on the values) and a word-level tokenizer with the template's special tokens, exports one bundle
for every backend asked for, then measures each backend in its own process (so peak RSS is that backend's
alone): load time, a first referring query on a new image (encode + prefix + query), the next query on the
same image, decode tokens/s (16 single-token LLM steps) and peak RSS. Bundle bytes are per backend folder,
next to the float32 bytes of the model's weights. Writes ``docs/results/data/student-bundle-<date>.json``. No
thresholds: a measurement, not a test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks import RESULTS_DIR
from xsam_edge.bench.harness import peak_rss_bytes

ROOT = Path(__file__).resolve().parents[1]


def folder_bytes(folder: Path) -> int:
    """Bytes of every file under ``folder``."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def export(
    preset: str, backends: list[str], work: Path, llm_layers: int | None, max_seq: int | None = None
) -> dict:
    """Export the preset (random weights) to ``work``; export time, bundle and weight bytes."""
    import dataclasses

    import torch

    from benchmarks.export_full_size import randomize_like_trained
    from xsam_edge.export.graphs import SlotConfig
    from xsam_edge.export.to_bundle import export_bundle
    from xsam_edge.model.build import build_model
    from xsam_edge.model.presets import get_preset
    from xsam_edge.spec.tokenizer import word_tokenizer

    config = get_preset(preset)
    if llm_layers is not None:  # the LLM alone shallower (its cost per layer is the same at any depth)
        llm = dataclasses.replace(config.llm, num_layers=llm_layers)
        config = dataclasses.replace(config, llm=llm, name=f"{config.name}@{llm_layers}L")
    torch.manual_seed(0)
    model = build_model(config).eval()
    randomize_like_trained(model)
    start = time.perf_counter()
    slots = SlotConfig(max_seq=max_seq)
    path, graphs = export_bundle(model, word_tokenizer(config.tokens), work, backends, slots, progress=False)
    return {
        "preset": config.name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_fp32_bytes": sum(p.numel() * 4 for p in model.parameters()),
        "export_seconds": round(time.perf_counter() - start, 1),
        "bundle_bytes": {b: folder_bytes(path / b) for b in backends},
        "min_psnr_db": {f"{g.backend}/{g.name}": g.min_psnr_db for g in graphs},
        "max_seq": json.loads((path / "manifest.json").read_text())["slots"]["max_seq"],
    }


def _graph(name: str, inputs: list) -> str:
    """The observed call's graph: the LLM split into prefill chunks and one-token decode steps."""
    if name != "llm":
        return name
    return "llm_decode" if inputs[0].shape[1] == 1 else "llm_prefill"


def measure(bundle: Path, backend: str, repeats: int) -> dict:
    """This process's numbers for one backend of ``bundle``.

    Besides the wall times: the call plan of a first and a next query (graph → calls, as the runtime made
    them) and each graph's median call time, for the roofline and the on-paper device estimate.
    """
    from xsam_edge.runtime.observe import observe
    from xsam_edge.runtime.session import EdgeSession
    from xsam_edge.spec.types import SegmentationRequest, Task

    start = time.perf_counter()
    session = EdgeSession(bundle, backend, max_new_tokens=16)
    load = time.perf_counter() - start
    calls: list[tuple[str, float]] = []
    stop = observe(session, lambda name, i, o, s: calls.append((_graph(name, i), s)))
    rng = np.random.default_rng(0)
    first, second, decode, plans, per_graph = [], [], [], [], {}
    for i in range(repeats + 1):
        image = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
        calls.clear()
        t0 = time.perf_counter()
        session.segment(SegmentationRequest(image, Task.REFERRING, text="the red circle"))
        t1 = time.perf_counter()
        first_calls = list(calls)
        calls.clear()
        session.segment(SegmentationRequest(image, Task.REFERRING, text="the blue square"))
        t2 = time.perf_counter()
        plans = [Counter(n for n, _ in first_calls), Counter(n for n, _ in calls)]
        if i:
            for name, seconds in [*first_calls, *calls]:
                per_graph.setdefault(name, []).append(seconds)
        t3 = time.perf_counter()
        llm = session.engine.llm  # decode steps alone: one token in, the cache grown by one
        hidden = int(session.manifest.model["llm"]["hidden_size"])
        token = np.zeros((1, 1, hidden), np.float32)
        for k in range(16):
            llm.step(token, np.array([400 + k], dtype=np.int64))
        t4 = time.perf_counter()
        if i:  # the first round warms the runtime up
            first.append(t1 - t0)
            second.append(t2 - t1)
            decode.append((t4 - t3) / 16)
    stop()
    return {
        "backend": backend,
        "load_seconds": round(load, 2),
        "first_query_p50_s": round(float(np.median(first)), 3),
        "next_query_p50_s": round(float(np.median(second)), 3),
        "decode_tokens_per_s": round(1.0 / float(np.median(decode)), 1),
        "peak_rss_mb": round(peak_rss_bytes() / 2**20),
        "repeats": repeats,
        "plan": {"first_query": dict(plans[0]), "next_query": dict(plans[1])},
        "graph_p50_ms": {n: round(float(np.median(v)) * 1e3, 2) for n, v in sorted(per_graph.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="x-sam-student-s")
    parser.add_argument("--backend", default="onnx,openvino")
    parser.add_argument("--llm-layers", type=int, help="fewer LLM layers (default: the preset's)")
    parser.add_argument("--max-seq", type=int, help="KV-cache length (default: sized to the work)")
    parser.add_argument("--threads", type=int, help="runtime threads (default: every core)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", default="outputs/student-bundle")
    parser.add_argument("--out", help="results JSON (default docs/results/data/student-bundle-<date>.json)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one backend, in a child process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.work), args.measure, args.repeats)))
        return
    from xsam_edge.files import atomic_write_text

    if args.threads:
        os.environ["XSAM_EDGE_THREADS"] = str(args.threads)  # the measuring children inherit it
    backends = [b.strip() for b in args.backend.split(",")]
    exported = export(args.preset, backends, Path(args.work), args.llm_layers, args.max_seq)
    print(json.dumps(exported, indent=2))
    rows = []
    for backend in backends:
        child = [sys.executable, "-m", "benchmarks.student_bundle", "--work", args.work, "--measure", backend]
        out = subprocess.run(
            [*child, "--repeats", str(args.repeats)], capture_output=True, text=True, cwd=ROOT
        )
        if out.returncode:
            rows.append({"backend": backend, "error": out.stderr.strip().splitlines()[-1:]})
        else:
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]))
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    result = {
        "date": date,
        "command": "python -m benchmarks.student_bundle " + " ".join(sys.argv[1:]),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "threads": os.environ.get("XSAM_EDGE_THREADS", "all cores"),
        **exported,
        "results": rows,
    }
    out_path = Path(args.out or RESULTS_DIR / f"student-bundle-{date}.json")
    atomic_write_text(out_path, json.dumps(result, indent=2) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
