"""A real transformer encoder at INT8: worst held-out sample's per-token cosine against fp32, per backend.

``python -m benchmarks.real_weights.encoder [--tokens 128] [--calibrate 32] [--holdout 24]``

The test bed's encoder (all-MiniLM-L6-v2, BERT, width 384: a ViT-S-class transformer; no pretrained image
ViT of that size ships in a registry) is quantized through ``quantize_model`` with each named recipe's
``encode_image`` scheme on its backend, calibrated on Python's documentation and measured on held-out
news prose: per window, the mean per-token cosine of the last hidden state against fp32, the worst window
being the number. Beside the recipes: the libraries' defaults the issue measured (NNCF's TRANSFORMER
preset with SmoothQuant on; ONNX dynamic W8A8), and each recipe with a 0.99 fallback target.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.real_weights.common import (
    Runner,
    calibration_text,
    median_seconds,
    text_windows,
    write_results,
)
from benchmarks.real_weights.fetch import ARTEFACTS, fetch

TARGET = 0.99


class Encoder(torch.nn.Module):
    """``input_ids`` → last hidden state (every window is full, so no attention mask is built)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.inner(input_ids=input_ids).last_hidden_state  # no mask: every window is full


def variants() -> list[tuple[str, str, dict[str, Any], float | None]]:
    """(label, backend, scheme, target): the recipes' encoder schemes, the library defaults, the targets."""
    from xsam_edge.backends import get_backend
    from xsam_edge.quantization.recipes import RECIPES

    rows = []
    for name, recipe in RECIPES.items():
        if not get_backend(recipe.backend).runs_here():
            continue
        scheme = recipe.scheme_for("encode_image").to_dict()
        rows.append((f"recipe {name}", recipe.backend, scheme, None))
        if scheme["scheme"] == "w8a8":
            rows.append((f"recipe {name}, target {TARGET}", recipe.backend, scheme, TARGET))
    rows.append(("NNCF default (SmoothQuant on)", "openvino", {"scheme": "w8a8", "smooth_quant": "on"}, None))
    rows.append(("SmoothQuant off", "openvino", {"scheme": "w8a8", "smooth_quant": "off"}, None))
    dynamic = {"scheme": "w8a8-dyn"}
    rows.append(("ORT dynamic W8A8", "onnx", dynamic, None))
    rows.append((f"ORT dynamic W8A8, target {TARGET}", "onnx", dynamic, TARGET))
    rows.append(("OpenVINO dynamic W8A8 (groups of 32)", "openvino", dynamic, None))
    rows.append(("ExecuTorch dynamic W8A8 (per token)", "executorch", dynamic, None))
    asym = {"scheme": "w8a8", "symmetric_activations": False}
    rows.append(("ORT asymmetric activations (uint8)", "onnx", asym, None))
    rows.append((f"ORT asymmetric activations, target {TARGET}", "onnx", asym, TARGET))
    return rows


def _latency(backend: str, files: list[Path], sample: np.ndarray, threads: int) -> float | None:
    """Median seconds per window in the backend's runtime (ExecuTorch: not timed here)."""
    if backend not in ("onnx", "openvino"):
        return None
    runner = Runner(backend, files, threads)
    return median_seconds(lambda: runner.run(sample))


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from transformers import AutoModel, AutoTokenizer

    from xsam_edge.quantization.any_model import quantize_model

    paths = fetch(("encoder", "text"))
    tokenizer = AutoTokenizer.from_pretrained(str(paths["encoder"]))
    model = Encoder(AutoModel.from_pretrained(str(paths["encoder"])).eval()).eval()
    news = (paths["text"] / "lee_background.cor").read_text(encoding="utf-8", errors="replace")
    calibration = [
        [w[None]] for w in text_windows(calibration_text(), tokenizer, args.tokens, args.calibrate)
    ]
    held = [[w[None]] for w in text_windows(news, tokenizer, args.tokens, args.holdout)]
    example = (torch.from_numpy(held[0][0]),)
    rows = []
    for label, backend, scheme, target in variants():
        if args.backends and backend not in args.backends.split(","):
            continue
        if args.variants and not any(v in label for v in args.variants.split(",")):
            continue
        start = time.perf_counter()
        folder = Path(args.work) / label.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
        try:
            result = quantize_model(
                model,
                backend,
                scheme,
                folder,
                name="encoder",
                example_inputs=example,
                calibration=calibration,
                holdout=held,
                target_cosine=target,
            )
        except Exception as err:  # a backend that cannot take this model is a row, not the end of the run
            rows.append({"variant": label, "backend": backend, "error": f"{type(err).__name__}: {err}"[:400]})
            print(rows[-1], flush=True)
            continue
        report = result.report
        fidelity = next(iter(report.fidelity.values()))
        rows.append(
            {
                "variant": label,
                "backend": backend,
                "scheme": report.scheme,
                "target": target,
                "target_met": result.target_met,
                "worst_cosine": report.worst_cosine,
                "worst_window": fidelity["worst_sample"],
                "worst_psnr_db": fidelity["worst_psnr_db"],
                "pooled_psnr_db": fidelity["psnr_db"],
                "kept_float": [k for k in report.kept_float if "fallback" in k],
                "notes": report.notes,
                "quantize_s": time.perf_counter() - start,
                "latency_s": _latency(backend, result.files, held[0][0], args.threads),
                "bytes_fp32": report.bytes_fp32,
                "bytes_quant": report.bytes_quant,
                "measured_on": report.measured_on,
            }
        )
        print(_row(rows[-1]), flush=True)
    return {
        "rows": rows,
        "tokens": args.tokens,
        "calibration_windows": args.calibrate,
        "held_out": args.holdout,
    }


def _row(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"| {r['variant']} | {r['backend']} | failed: {r['error'][:120]} | | | | |"
    latency = f"{r['latency_s'] * 1000:.1f} ms" if r["latency_s"] else "n/a"
    kept = len(r["kept_float"])
    return (
        f"| {r['variant']} | {r['backend']} | {r['worst_cosine']:.4f} | {r['worst_psnr_db']:.1f} dB "
        f"| {r['pooled_psnr_db']:.1f} dB | {kept} | {latency} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128, help="tokens per window")
    parser.add_argument("--calibrate", type=int, default=32, help="calibration windows (Python docs)")
    parser.add_argument("--holdout", type=int, default=24, help="held-out windows (news prose)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backends", default="", help="comma list (default: every backend that runs here)")
    parser.add_argument("--variants", default="", help="comma list of label substrings to run (default: all)")
    parser.add_argument("--work", default=str(Path.home() / ".cache/xsam_edge/testbed/work/encoder"))
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    result = measure(args)
    command = ("python -m benchmarks.real_weights.encoder " + " ".join(argv or [])).strip()
    header = (
        "| variant | backend | worst-window cosine | worst PSNR | pooled PSNR | kept float | latency |\n"
        "|---|---|---|---|---|---|---|"
    )
    table = "\n".join([header, *(_row(r) for r in result["rows"])])
    markdown = f"`{command}`\n\nall-MiniLM-L6-v2 ({ARTEFACTS['encoder'].licence})\n\n{table}"
    subset = "-".join(x for x in (args.backends, args.variants) if x).replace(",", "-").replace(" ", "_")
    name = "encoder" + (f"-{subset}" if subset else "")
    path = write_results(name, {"command": command, **result, "args": vars(args)}, markdown)
    print(table, f"\nwrote {path}", sep="\n")


if __name__ == "__main__":
    main()
