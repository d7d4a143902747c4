"""The reference model's own cost where golden references are made: per-query latency and peak memory.

Run: ``python -m benchmarks.reference_latency [--model DIR | --preset x-sam-phi3] [--device cuda]
[--dtype bfloat16] [--repeats 10] [--out PATH]``. A preset gets random weights (latency does not depend on
them) and the built-in tiny tokenizer when no tokenizer folder is given, so its text tokens are not Phi-3's;
the image tokens, which dominate the LLM sequence, are the real count. Writes a JSON results file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import RESULTS_DIR
from xsam_edge.data.shapes import load_shapes
from xsam_edge.model.build import build_model
from xsam_edge.model.predictor import XSamPredictor
from xsam_edge.model.presets import get_preset
from xsam_edge.spec.tokenizer import tiny_tokenizer
from xsam_edge.spec.types import SegmentationRequest, Task


def _predictor(model_dir: str | None, preset: str | None, device: str, dtype: torch.dtype) -> XSamPredictor:
    if model_dir:
        predictor = XSamPredictor.from_pretrained(model_dir, region_sampler="grid")
        predictor.model.to(device=device, dtype=dtype)
        return predictor
    config = get_preset(preset or "x-sam-phi3")
    torch.manual_seed(0)
    with torch.device(device):
        model = build_model(config).to(dtype)
    return XSamPredictor(model, tiny_tokenizer(config.tokens), region_sampler="grid", max_new_tokens=16)


def measure(model_dir: str | None, preset: str | None, device: str, dtype: str, repeats: int) -> dict:
    """p50 / p90 of a first query on a new image and a next query on the same image; peak device memory."""
    torch_dtype = getattr(torch, dtype)
    start = time.perf_counter()
    predictor = _predictor(model_dir, preset, device, torch_dtype)
    build_s = time.perf_counter() - start
    by_id = {e.image_id: e.request.image for e in load_shapes("val", num_images=repeats + 1)}
    images = list(by_id.values())
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    first, nxt = [], []
    for i, image in enumerate(images):
        queries = [
            SegmentationRequest(image, Task.REFERRING, text="the red circle"),
            SegmentationRequest(image, Task.PANOPTIC, categories=["circle", "square", "sky"]),
        ]
        sync()
        t0 = time.perf_counter()
        predictor.segment(queries[0])
        sync()
        t1 = time.perf_counter()
        predictor.segment(queries[1])
        sync()
        t2 = time.perf_counter()
        if i:  # the first image warms up kernels and allocator
            first.append((t1 - t0) * 1e3)
            nxt.append((t2 - t1) * 1e3)

    def stats(values: list[float]) -> dict:
        return {"p50_ms": float(np.percentile(values, 50)), "p90_ms": float(np.percentile(values, 90))}

    model = predictor.model
    return {
        "model": model.config.name,
        "params": sum(p.numel() for p in model.parameters()),
        "device": torch.cuda.get_device_name() if cuda else platform.processor(),
        "dtype": dtype,
        "torch": torch.__version__,
        "build_s": build_s,
        "first_query": stats(first),
        "next_query_same_image": stats(nxt),
        "peak_device_bytes": int(torch.cuda.max_memory_allocated()) if cuda else None,
        "n": len(first),
        "note": "the predictor re-runs the whole LLM sequence per query (no KV reuse across queries)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--preset")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--out", help="results JSON (default docs/results/data/reference-latency-<date>.json)"
    )
    args = parser.parse_args()
    result = measure(args.model, args.preset, args.device, args.dtype, args.repeats)
    result["date"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    date = result["date"]
    out = Path(args.out or RESULTS_DIR / f"reference-latency-{date}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
