"""Every named recipe on the trained embedded teacher: size, task metrics, drop vs float, latency on this CPU.

Run: ``python -m xsam_edge.bench.recipe_table [--recipes android-xnnpack,intel-openvino,jetson-trt]
[--data shapes:val] [--limit N] [--work DIR]``.

Per recipe it quantizes the teacher (calibrated on ``shapes:train``, never on the evaluation split), evaluates
the float export and the quantized bundle on the same backend through ``EdgeSession``, and writes
``outputs/results/quantization-<date>.json`` and ``.md``. Recipes whose runtime cannot run here but whose
bundles compress weights only (Core ML on Linux) are scored by replaying their decompressed weights in the
eager graphs (``quantization.replay``; fp32 arithmetic, no latency); others get their bundle, sizes and
handler reports, with the metrics marked as not measured. No thresholds:
the README quotes the numbers and the stated goals (INT8 ≤ 1 point, INT4 LLM ≤ 2 points) next to them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
from pathlib import Path

from xsam_edge.backends import runnable_backends
from xsam_edge.data.registry import load_dataset
from xsam_edge.files import atomic_write_text
from xsam_edge.metrics.significance import paired_bootstrap
from xsam_edge.metrics.tasks import PRIMARY_METRIC
from xsam_edge.model.predictor import XSamPredictor
from xsam_edge.quantization.accuracy import evaluate_bundle, task_drops
from xsam_edge.quantization.quantize import quantize_bundle
from xsam_edge.quantization.recipes import RECIPES, load_recipe
from xsam_edge.quantization.replay import replayable
from xsam_edge.training.teacher import ensure_teacher

RESULTS = Path("outputs") / "results"


def measure(
    recipe_name: str,
    data: str,
    limit: int | None,
    work: Path,
    model_dir: str | os.PathLike | None = None,
    progress: bool = True,
    resamples: int = 200,
) -> dict:
    """One recipe: quantize the model (default: the cached teacher); score the float and quantized bundles."""
    recipe = load_recipe(recipe_name)
    predictor = XSamPredictor.from_pretrained(model_dir or ensure_teacher())
    result = quantize_bundle(
        predictor.model,
        predictor.tokenizer,
        recipe,
        work / recipe.name,
        work_dir=work / "work",
        progress=progress,
    )
    row: dict = {
        "recipe": recipe.name,
        "backend": recipe.backend,
        "schemes": {r.graph: r.scheme for r in result.reports},
        "bytes_fp32": sum(r.bytes_fp32 for r in result.reports),
        "bytes_quant": sum(r.bytes_quant for r in result.reports),
        "graphs": [r.to_dict() for r in result.reports],
    }
    row["size_ratio"] = row["bytes_fp32"] / row["bytes_quant"]
    row["bundle"] = str(result.bundle)
    row["fp32_bundle"] = str(result.fp32_bundle)  # the float export it was made from (benched as "float")
    runs_here = recipe.backend in runnable_backends()
    if not runs_here and not replayable(recipe.backend):
        row["not_measured"] = f"{recipe.backend} prediction needs macOS"
        return row
    examples = load_dataset(data, limit=limit)
    replay = None if runs_here else predictor.model  # weight-only: its weights replayed in PyTorch
    reference = evaluate_bundle(result.fp32_bundle, recipe.backend, examples, progress, replay)
    quantized = evaluate_bundle(result.bundle, recipe.backend, examples, progress, replay)
    row |= {
        "float": reference.primary,
        "quantized": quantized.primary,
        "drops": task_drops(reference, quantized),
    }
    # the noise of each change: whole images resampled, the same draws for both bundles
    diffs = paired_bootstrap(examples, reference.results, quantized.results, resamples=resamples)
    row["change_interval_95"] = {task: [round(d.low, 2), round(d.high, 2)] for task, d in diffs.items()}
    if runs_here:
        row["ms_per_request_float"] = reference.seconds_per_request * 1e3
        row["ms_per_request_quant"] = quantized.seconds_per_request * 1e3
    else:
        row["runner"] = quantized.runner
    return row


def _cell(row: dict, task: str) -> str:
    """``float → quantized (change [95 % interval])``; rows from before the bootstrap have no interval."""
    text = f"{row['float'][task]:.1f} → {row['quantized'][task]:.1f} ({-row['drops'][task]:+.1f}"
    interval = row.get("change_interval_95", {}).get(task)
    return text + (f" [{interval[0]:+.1f}, {interval[1]:+.1f}])" if interval else ")")


def markdown(report: dict) -> str:
    """The README table: per recipe, size and per-task metric (float → quantized, drop)."""
    lines = [
        f"Quantization on the trained embedded teacher · {report['date']} · {report['machine']} · "
        f"evaluated on {report['data']}, calibrated on shapes:train · cells: float → quantized (change "
        "[95 % interval, paired bootstrap over images])",
        "",
        "| recipe | backend | size float → quant | ms/request float → quant | "
        + " | ".join(f"{t} {m}" for t, m in PRIMARY_METRIC.items())
        + " |",
        "|---|---|---|---|" + "---|" * len(PRIMARY_METRIC),
    ]
    for row in report["rows"]:
        size = f"{row['bytes_fp32'] / 1e6:.2f} → {row['bytes_quant'] / 1e6:.2f} MB ({row['size_ratio']:.2f}×)"
        if "not_measured" in row:
            cells = ["–"] * len(PRIMARY_METRIC)
            latency = row["not_measured"]
        else:
            latency = (
                f"{row['ms_per_request_float']:.1f} → {row['ms_per_request_quant']:.1f}"
                if "runner" not in row
                else "not measured: weights replayed in PyTorch (fp32 arithmetic)"
            )
            cells = [_cell(row, t) if t in row["float"] else "–" for t in PRIMARY_METRIC]
        lines.append(
            f"| {row['recipe']} | {row['backend']} | {size} | {latency} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--recipes", default=",".join(RECIPES), help="comma list of named recipes or .toml files"
    )
    parser.add_argument("--data", default="shapes:val", help="evaluation data")
    parser.add_argument("--limit", type=int, help="at most this many evaluation images")
    parser.add_argument("--work", default="outputs/bench-quantization", help="bundles and intermediates")
    parser.add_argument("--out", help="results JSON (default outputs/results/quantization-<date>.json)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("nncf").setLevel(logging.WARNING)
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    out = Path(args.out or RESULTS / f"quantization-{date}.json")
    rows = []
    for name in args.recipes.split(","):
        rows.append(measure(name.strip(), args.data, args.limit, Path(args.work)))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "graphs"}, default=str))
    report = {
        "date": date,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.system()}",
        "threads": os.environ.get("XSAM_EDGE_THREADS", "all cores"),
        "data": args.data + (f" (first {args.limit} images)" if args.limit else ""),
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=2, default=str) + "\n")
    atomic_write_text(out.with_suffix(".md"), markdown(report))
    print(markdown(report))
    print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
