"""How well Core ML's 4-bit tables resolve one layer of the real LLM, per grouping, before a package is made.

Why: a perplexity run of one palettization costs 15-30 minutes here; the tables' own weighted error (the
output-sensitivity-weighted squared error per weight that ``backends.coreml.palettize`` minimises) costs a
minute a layer and ranks the groupings first. What: the real LLM of ``benchmarks.real_weights.llm``, one
decoder layer's seven weight tensors in fp16, the output sensitivity of ``benchmarks.real_weights.llm_coreml``
(its cache, or measured and cached here), and ``tables_for`` at each group size; ``+pcs`` variants first
divide each input column by its largest magnitude, as coremltools' ``enable_per_channel_scale`` does, and
weigh the error back by the scale².
Each error is relative to the tables per 16 rows (apple-ane's grouping until 2026-12-07).

Run: ``python -m benchmarks.real_weights.table_error [--layer 11] [--groups 16,8,4,2,1,16+pcs,1+pcs]``.
Writes ``docs/results/data/real-weights-table-error-<date>.json``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks import RESULTS_DIR
from benchmarks.real_weights.common import atomic_json, log, provenance
from benchmarks.real_weights.fetch import cache_dir, fetch
from benchmarks.real_weights.llm import WINDOW, load_model
from benchmarks.real_weights.llm_coreml import calibration_windows, sensitivity
from xsam_edge.backends.coreml.palettize import tables_for
from xsam_edge.quantization.importance import export_name


def weighted_error(weight: np.ndarray, importance: np.ndarray, variant: str) -> float:
    """Mean weighted squared error of ``weight``'s 4-bit tables under ``variant`` (``G`` or ``G+pcs``)."""
    group, _, scaled = variant.partition("+")
    if not scaled:
        return tables_for(weight, importance, 4, int(group)).error
    scale = np.abs(weight.astype(np.float32)).max(axis=0, keepdims=True)
    scale[scale == 0] = 1
    normalised = (weight / scale).astype(np.float16)
    return tables_for(normalised, importance * scale.astype(np.float64) ** 2, 4, int(group)).error


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", type=int, default=11)
    parser.add_argument("--groups", default="16,8,4,2,1,16+pcs,1+pcs", help="group sizes; +pcs: column scale")
    parser.add_argument("--out", help="results JSON (default: data/real-weights-table-error-<date>.json)")
    args = parser.parse_args(argv)
    variants = [v for v in args.groups.split(",") if v]
    if "16" not in variants:
        variants.insert(0, "16")
    tokenizer, module = load_model(fetch(("llm",))["llm"])
    calibration = calibration_windows(tokenizer, WINDOW)
    found = sensitivity(cache_dir() / "work" / "llm-coreml", "output", module, calibration)
    prefix = f"p_lm_model_layers_{args.layer}_"
    rows, totals = {}, dict.fromkeys(variants, 0.0)
    for name, parameter in module.named_parameters():
        key = export_name(name)
        if not key.startswith(prefix) or parameter.ndim != 2:
            continue
        weight = parameter.detach().numpy().astype(np.float16)
        importance = found[key].astype(np.float64)
        errors = {v: weighted_error(weight, importance, v) for v in variants}
        relative = {v: e / errors["16"] for v, e in errors.items()}
        rows[name] = {"shape": list(weight.shape), "relative": relative}
        for v, e in errors.items():
            totals[v] += e * weight.size
        log(f"{name} {weight.shape}: " + ", ".join(f"{v} {r:.3f}" for v, r in rows[name]["relative"].items()))
    doc = provenance("benchmarks.real_weights.table_error", argv) | {
        "layer": args.layer,
        "what": "weighted squared error per weight of 4-bit tables, relative to tables per 16 rows",
        "tensors": rows,
        "layer_relative": {v: t / totals["16"] for v, t in totals.items()},
    }
    out = Path(args.out) if args.out else RESULTS_DIR / f"real-weights-table-error-{doc['date']}.json"
    atomic_json(out, doc)
    log("layer: " + ", ".join(f"{v} {r:.3f}" for v, r in doc["layer_relative"].items()) + f"; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
