"""Bytes of a tied student's Core ML embed and LLM packages at each pack step: the tied table stored once.

Run: ``python -m benchmarks.coreml_tied_table [--preset x-sam-student-qwen2-0.5b] [--llm-layers 2]
[--work outputs/coreml-tied-table] [--out PATH]``.

Builds the preset at real widths and reduced depth (``at_depth``; random weights, seed 0), converts its
``embed``, ``llm_prefill`` and ``llm_decode`` graphs to fp16 Core ML packages, then runs the bundle's pack
step one part at a time and lists the folder's bytes after each: the three packages apart, the LLM merged
into one multifunction package (``merge_llm_functions``), and ``embed`` joined to it (``join_tied_embed``).
The table's saving does not depend on the depth. Writes ``docs/results/data/coreml-tied-table-<date>.json``.
A measurement, not a test: no thresholds.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shutil
import time
from pathlib import Path

from benchmarks import RESULTS_DIR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="x-sam-student-qwen2-0.5b")
    parser.add_argument("--llm-layers", type=int, default=2)
    parser.add_argument("--work", default="outputs/coreml-tied-table")
    parser.add_argument("--out", help="results JSON (default data/coreml-tied-table-<date>.json)")
    args = parser.parse_args()

    import torch

    from xsam_edge.backends.coreml.export import export_coreml
    from xsam_edge.backends.coreml.pack import join_tied_embed, merge_llm_functions
    from xsam_edge.export.graphs import SlotConfig
    from xsam_edge.export.to_bundle import graph_entry
    from xsam_edge.files import atomic_write_text
    from xsam_edge.model.build import build_model
    from xsam_edge.model.presets import at_depth, get_preset
    from xsam_edge.quantization.report import files_bytes

    config = at_depth(get_preset(args.preset), llm_layers=args.llm_layers)
    torch.manual_seed(0)
    model = build_model(config).eval()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    folder = work / "coreml"
    entries, seconds = [], {}
    for name in ("embed", "llm_prefill", "llm_decode"):
        start = time.perf_counter()
        graph = export_coreml(model, name, SlotConfig(), folder, precision="fp16")
        seconds[f"convert_{name}"] = round(time.perf_counter() - start, 1)
        entries.append(graph_entry(graph, work))
    steps = {"three packages": files_bytes([folder])}
    start = time.perf_counter()
    entries = merge_llm_functions(entries, work)
    seconds["merge_llm_functions"] = round(time.perf_counter() - start, 1)
    steps["LLM merged (prefill + decode), embed apart"] = files_bytes([folder])
    start = time.perf_counter()
    entries = join_tied_embed(entries, work)
    seconds["join_tied_embed"] = round(time.perf_counter() - start, 1)
    steps["embed joined to the LLM package"] = files_bytes([folder])
    table = model.llm.get_input_embeddings().weight
    result = {
        "date": datetime.date.today().isoformat(),
        "preset": args.preset,
        "llm_layers": args.llm_layers,
        "tie_word_embeddings": config.llm.tie_word_embeddings,
        "precision": "fp16",
        "table_fp16_bytes": table.numel() * 2,
        "llm_fp16_weight_bytes": 2 * sum(p.numel() for p in model.llm.parameters()),
        "folder_bytes": steps,
        "entries": {e.name: {"files": e.files, "methods": [m["name"] for m in e.methods]} for e in entries},
        "seconds": seconds,
        "slots": dataclasses.asdict(SlotConfig()),
    }
    out = Path(args.out or RESULTS_DIR / f"coreml-tied-table-{result['date']}.json")
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2), f"\nwrote {out}")


if __name__ == "__main__":
    main()
