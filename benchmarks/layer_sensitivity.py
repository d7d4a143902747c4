"""Per-layer sensitivity of recipe graphs on the trained embedded teacher: which layer causes the error.

Run: ``python -m benchmarks.layer_sensitivity [--graphs intel-openvino:llm,jetson-trt:encode_image]
[--work DIR] [--top N]``.

Per ``recipe:graph`` it runs ``quantize.layer_sensitivity``: the graph quantized by the recipe as a whole,
then once per quantized layer with that layer alone kept float, each compared with the float graph on the
calibration set's held-out samples in the backend's runtime (ExecuTorch ranks modules in PyTorch). Writes
``docs/results/data/layer-sensitivity-<date>.json`` (every layer) and ``.md`` (the top ``N`` per graph).
No thresholds: the README reads the ranking.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import time
from pathlib import Path

from benchmarks import RESULTS_DIR
from xsam_edge.files import atomic_write_text
from xsam_edge.model.predictor import XSamPredictor
from xsam_edge.quantization.quantize import layer_sensitivity
from xsam_edge.quantization.recipes import get_recipe
from xsam_edge.training.teacher import ensure_teacher

RESULTS = RESULTS_DIR
DEFAULT = "intel-openvino:llm,intel-openvino:segment,intel-openvino:encode_image,jetson-trt:encode_image"


def measure(predictor: XSamPredictor, recipe_name: str, graph: str, work: Path) -> dict:
    """One recipe graph: its PSNR quantized as a whole and every layer's gain when kept float."""
    recipe = get_recipe(recipe_name)
    start = time.perf_counter()
    base, scores = layer_sensitivity(predictor.model, predictor.tokenizer, recipe, graph, work, progress=True)
    return {
        "recipe": recipe.name,
        "backend": recipe.backend,
        "graph": graph,
        "scheme": recipe.scheme_for(graph).label(),
        "seconds": round(time.perf_counter() - start, 1),
        "psnr_db": base,
        "layers": [{"layer": s.module, "gain_db": s.gain_db, "psnr_db": s.psnr_db} for s in scores],
    }


def markdown(report: dict, top: int) -> str:
    """Per graph: whole-graph PSNR, layer count, and the ``top`` layers by gain."""
    lines = [
        f"Per-layer sensitivity on the trained embedded teacher · {report['date']} · {report['machine']}",
        "",
        "| recipe | graph | scheme | whole graph PSNR (dB) | layers "
        "| most sensitive (gain dB when kept float) | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        psnr = ", ".join(f"{k} {v:.1f}" for k, v in row["psnr_db"].items())
        ranked = "; ".join(f"`{s['layer']}` {s['gain_db']:+.2f}" for s in row["layers"][:top])
        lines.append(
            f"| {row['recipe']} | {row['graph']} | {row['scheme']} | {psnr} | {len(row['layers'])} | "
            f"{ranked} | {row['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graphs", default=DEFAULT, help="comma list of recipe:graph")
    parser.add_argument("--work", default="outputs/bench-quantization/work", help="float export, calibration")
    parser.add_argument("--top", type=int, default=3, help="layers per graph in the Markdown table")
    parser.add_argument("--out", help="results JSON (default: results/layer-sensitivity-<date>.json)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("nncf").setLevel(logging.WARNING)
    pairs = [p.strip().split(":") for p in args.graphs.split(",")]
    if any(len(p) != 2 for p in pairs):
        parser.error(f"--graphs takes recipe:graph pairs, got {args.graphs!r}")
    predictor = XSamPredictor.from_pretrained(ensure_teacher())
    rows = []
    for recipe_name, graph in pairs:
        rows.append(measure(predictor, recipe_name, graph, Path(args.work)))
        summary = {k: v for k, v in rows[-1].items() if k != "layers"}
        print(json.dumps(summary | {"top": rows[-1]["layers"][:3]}))
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    report = {
        "date": date,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.system()}",
        "threads": os.environ.get("XSAM_EDGE_THREADS", "all cores"),
        "rows": rows,
    }
    out = Path(args.out or RESULTS / f"layer-sensitivity-{date}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=1) + "\n")
    atomic_write_text(out.with_suffix(".md"), markdown(report, args.top))
    print(markdown(report, args.top))
    print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
