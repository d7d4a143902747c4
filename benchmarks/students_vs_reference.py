"""The real X-SAM's students from quantized bundles against eager fp32 x-sam-phi3, in one run, and on paper.

Run: ``python -m benchmarks.students_vs_reference [--preset x-sam-student-s] [--recipes intel-openvino]
[--reference-layers 2] [--repeats 3] [--reference-repeats 1] [--threads 2] [--calibration-images 2]
[--work DIR] [--reference-from RESULTS.json]``.

1. **Reference**: eager fp32 ``x-sam-phi3`` (random weights: speed does not depend on them), its LLM cut to
   ``--reference-layers``; a first referring query on a new image, the next on the same image, with the time
   spent inside its decoder layers taken by hooks. The full 32-layer time adds the missing layers at the
   measured cost per layer (every layer costs the same: same widths, same tokens); the method is written
   into the results. A fit between two depths was tried first: the image side's run-to-run spread (±50 s)
   swamped the ~2 s a layer costs.
2. **Students**: the preset at full size (random weights drawn like trained ones), quantized with each
   recipe through ``quantize_bundle`` (float export, calibration recorded through its float session, the
   recipe's schemes), and the float bundle of the same backend from the same work folder. Each bundle is
   measured in its own process (``student_bundle.measure``): first / next query, decode, peak RSS, the call
   plan and each graph's median call.
   ``--reference-from`` reads step 1 from an earlier results file of the same machine instead (the eager
   reference takes ~12 minutes here); the output names that file and its date, so the comparison is no
   longer "in one run".
3. **Roofs**: each graph's fraction of this machine's measured roof (``bench.roofline``), and the on-paper
   first / next query on every device of ``bench.on_paper.DEVICES`` from the observed call plan, the
   exported graphs' MACs and the bytes each call moves.

Writes ``docs/results/data/students-vs-reference-<date>.{json,md}``. No thresholds: a measurement.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import RESULTS_DIR
from xsam_edge.bench.harness import peak_rss_bytes

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "x-sam-phi3"  # ``--reference-preset`` changes it (a smoke run on a tiny preset)
ANSWER_TOKENS = 16  # both sides: random weights never stop early, so every answer takes the whole budget


def measure_reference(preset: str, layers: int, repeats: int) -> dict[str, Any]:
    """Eager fp32 ``preset`` with ``layers`` LLM layers: first and next query seconds, peak RSS.

    The part of each query spent in the LLM's decoder layers is timed by hooks on every layer.
    """
    import torch

    from xsam_edge.model.build import build_model
    from xsam_edge.model.predictor import XSamPredictor
    from xsam_edge.model.presets import get_preset
    from xsam_edge.spec.tokenizer import word_tokenizer
    from xsam_edge.spec.types import SegmentationRequest, Task

    config = get_preset(preset)
    config = dataclasses.replace(config, llm=dataclasses.replace(config.llm, num_layers=layers))
    torch.manual_seed(0)
    model = build_model(config).eval()
    in_layers = [0.0]
    started: list[float] = []
    for layer in model.llm.model.layers:
        layer.register_forward_pre_hook(lambda *_: started.append(time.perf_counter()))
        layer.register_forward_hook(
            lambda *_: in_layers.__setitem__(0, in_layers[0] + time.perf_counter() - started.pop())
        )
    tokenizer = word_tokenizer(config.tokens)
    predictor = XSamPredictor(model, tokenizer, region_sampler="grid", max_new_tokens=ANSWER_TOKENS)
    rng = np.random.default_rng(0)
    rows: dict[str, list[float]] = {k: [] for k in ("first", "first_layers", "next", "next_layers")}
    with torch.no_grad():
        for i in range(repeats + 1):
            image = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
            for query, text in (("first", "the red circle"), ("next", "the blue square")):
                in_layers[0] = 0.0
                start = time.perf_counter()
                predictor.segment(SegmentationRequest(image, Task.REFERRING, text=text))
                if i:  # the first round warms kernels and the allocator
                    rows[query].append(time.perf_counter() - start)
                    rows[f"{query}_layers"].append(in_layers[0])
    return {
        "llm_layers": layers,
        "parameters": sum(p.numel() for p in model.parameters()),
        "first_query_s": [round(x, 3) for x in rows["first"]],
        "first_query_llm_layers_s": [round(x, 3) for x in rows["first_layers"]],
        "next_query_s": [round(x, 3) for x in rows["next"]],
        "next_query_llm_layers_s": [round(x, 3) for x in rows["next_layers"]],
        "peak_rss_mb": round(peak_rss_bytes() / 2**20),
    }


def scale_to_full(run: dict[str, Any], full_layers: int) -> dict[str, Any]:
    """The full-depth reference from a run at ``run["llm_layers"]`` layers, medians over repeats.

    Its time plus the missing layers, each costing what the run's layers cost on average.
    """
    n = run["llm_layers"]
    out = {
        "method": f"t({full_layers}) = t({n}) + ({full_layers} − {n}) × (time in the {n} decoder layers)/{n}"
    }
    for key in ("first_query_s", "next_query_s"):
        total = float(np.median(run[key]))
        per_layer = float(np.median(run[key.replace("_s", "_llm_layers_s")])) / n
        out[key] = total + (full_layers - n) * per_layer
        out[f"{key}_per_llm_layer"] = per_layer
        out[f"{key}_measured_at_{n}_layers"] = total
    return out


def quantized_bundles(preset: str, recipes: list[str], work: Path, images: int) -> dict[str, Any]:
    """Quantize the full-size preset with each recipe; the bundles, their float twins and the reports."""
    import torch

    from benchmarks.export_full_size import randomize_like_trained
    from xsam_edge.model.build import build_model
    from xsam_edge.model.presets import get_preset
    from xsam_edge.quantization.quantize import quantize_bundle
    from xsam_edge.quantization.recipes import get_recipe
    from xsam_edge.spec.tokenizer import word_tokenizer

    config = get_preset(preset)
    torch.manual_seed(0)
    model = build_model(config).eval()
    randomize_like_trained(model)
    out = {"parameters": sum(p.numel() for p in model.parameters()), "bundles": {}}
    for name in recipes:
        recipe = get_recipe(name)
        recipe = dataclasses.replace(
            recipe, calibration=dataclasses.replace(recipe.calibration, images=images)
        )
        start = time.perf_counter()
        result = quantize_bundle(
            model,
            word_tokenizer(config.tokens),
            recipe,
            work / name,
            work_dir=work / "quant-work",
            progress=False,
        )
        out["bundles"][name] = {
            "backend": recipe.backend,
            "bundle": str(result.bundle),
            "float_bundle": str(result.fp32_bundle),
            "seconds": round(time.perf_counter() - start, 1),
            "reports": [
                {"graph": r.graph, "scheme": r.scheme, "min_psnr_db": r.min_psnr, "notes": r.notes[:4]}
                for r in result.reports
            ],
        }
    return out


def _child(args: list[str]) -> dict[str, Any]:
    """Run this module with ``args`` in a fresh process (its peak RSS its own); its last JSON line."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.students_vs_reference", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-3:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- what one call costs: MACs, bytes, precision -------------------------------------------------------
_RECIPE_GRAPH = {"llm_prefill": "llm", "llm_decode": "llm"}
_INT8_SCHEMES = ("w8a8", "w8a8-dyn", "8da4w")  # integer GEMMs (8da4w: INT8 activations × INT4 weights)
# OpenVINO's CPU plugin also runs weight-compressed layers with INT8 activations quantized at run time
_HOST_INT8 = {"openvino": ("w8", "w4")}


@functools.cache
def _graph_macs(preset: str, slots: Any) -> dict[str, int]:
    """MACs of one call of every graph the costs use, counted once per preset and slots (meta device)."""
    import torch

    from xsam_edge.export.macs import graph_macs
    from xsam_edge.model.build import build_model
    from xsam_edge.model.presets import get_preset

    with torch.device("meta"):
        twin = build_model(get_preset(preset))
    names = ("encode_image", "embed", "region", "segment", "llm_prefill", "llm_decode")
    return {name: graph_macs(twin, name, slots) for name in names}


def graph_costs(
    bundle: Path, backend: str, preset: str, recipe: str | None, cache_itemsize: int, host: bool = False
) -> dict:
    """Graph → ``GraphCost`` of one call of ``bundle`` on ``backend``.

    MACs: the exported graphs counted on a meta-device twin (``export.macs``) with the bundle's slots.
    Bytes: the graph's files as stored plus its inputs and outputs (``roofline.graph_bytes``); an LLM call
    also reads the whole KV cache it attends over (``cache_itemsize`` bytes per value: 4 as exported here,
    2 for an FP16 cache on a device); ``embed`` reads only the rows it looks up, so its table is not counted.
    Precision: integer GEMMs for the INT8 schemes; on this machine (``host``) also what the backend's CPU
    kernels run in integers (OpenVINO's weight-compressed layers), on a device FP16 for weight-only schemes.
    """
    from xsam_edge.bench.harness import entry_bytes
    from xsam_edge.bench.on_paper import GraphCost
    from xsam_edge.bench.roofline import graph_bytes
    from xsam_edge.export.graphs import SlotConfig
    from xsam_edge.model.presets import get_preset
    from xsam_edge.quantization.recipes import get_recipe
    from xsam_edge.spec.bundle import load_bundle

    manifest = load_bundle(bundle)
    slots = SlotConfig(**manifest.slots)
    macs = _graph_macs(preset, slots)
    llm = manifest.model["llm"]
    head_dim = int(llm["hidden_size"]) // int(llm["num_heads"])
    seq = slots.seq_len(get_preset(preset))
    cache = 2 * int(llm["num_layers"]) * int(llm["num_kv_heads"]) * head_dim * seq
    entries = {e.name: e for e in manifest.graphs if e.backend == backend}
    llm_entry = next(e for n, e in entries.items() if n in ("llm", "llm_kvio_prefill", "llm_prefill"))
    costs = {}
    for name in ("encode_image", "embed", "region", "segment", "llm_prefill", "llm_decode"):
        entry = llm_entry if name.startswith("llm") else entries.get(name)
        if entry is None:
            continue
        weights = entry_bytes(manifest, entry)
        io = [s for s in entry.inputs + entry.outputs if "cache" not in s["name"]]
        if name == "llm_decode":
            io = [{**s, "shape": [1, 1, *s["shape"][2:]]} if len(s["shape"]) == 3 else s for s in io]
        moved = graph_bytes(0 if name == "embed" else weights, io)
        moved += cache * cache_itemsize if name.startswith("llm") else 0
        scheme = get_recipe(recipe).scheme_for(_RECIPE_GRAPH.get(name, name)).name if recipe else "fp32"
        int8 = scheme in _INT8_SCHEMES or (host and scheme in _HOST_INT8.get(backend, ()))
        costs[name] = GraphCost(macs[name], moved, int8)
    return costs


def roofline_rows(costs: dict, graph_ms: dict[str, float], peak: Any) -> dict[str, dict]:
    """Each graph's median call under this machine's measured roof (``bench.roofline.graph_roofline``)."""
    from xsam_edge.bench.roofline import graph_roofline

    rows = {}
    for name, cost in costs.items():
        if name in graph_ms and (cost.macs or cost.bytes):
            row = graph_roofline(cost.macs, cost.bytes, graph_ms[name] / 1e3, peak, int8=cost.int8)
            rows[name] = {k: row[k] for k in ("macs", "bytes", "seconds", "peak_kind", "fraction", "bound")}
    return rows


def openvino_op_times(bundle: Path, threads: int, top: int = 6) -> list[dict[str, Any]]:
    """Where one ``encode_image`` call spends its time on OpenVINO, largest first.

    The CPU plugin's per-layer counters summed by layer type and kernel: what holds the graph under its roof.
    """
    import openvino as ov

    from xsam_edge.spec.bundle import load_bundle

    manifest = load_bundle(bundle)
    entry = manifest.graph("encode_image", "openvino")
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": str(threads), "PERF_COUNT": "YES"}
    compiled = ov.Core().compile_model(str(manifest.path(entry.files[0])), "CPU", config)
    request = compiled.create_infer_request()
    rng = np.random.default_rng(0)
    feed = [rng.standard_normal(s["shape"]).astype(np.float32) for s in entry.inputs]
    for _ in range(2):  # the second run is the one read
        request.infer(feed)
    by_type: dict[str, float] = {}
    for info in request.get_profiling_info():
        key = f"{info.node_type} [{info.exec_type}]"
        by_type[key] = by_type.get(key, 0.0) + info.real_time.total_seconds()
    total = sum(by_type.values()) or 1.0
    ranked = sorted(by_type.items(), key=lambda kv: -kv[1])[:top]
    return [{"op": k, "ms": round(v * 1e3, 1), "share": round(v / total, 3)} for k, v in ranked]


def on_paper(costs: dict, plan: dict[str, dict[str, int]]) -> dict[str, dict]:
    """First and next query on every device of ``bench.on_paper.DEVICES``, from the observed plan."""
    from xsam_edge.bench.on_paper import DEVICES, estimate

    return {
        device: {query: estimate(calls, costs, spec) for query, calls in plan.items()}
        for device, spec in DEVICES.items()
    }


def students(args: argparse.Namespace, work: Path) -> tuple[dict, list[dict]]:
    """Quantize, then measure every quantized bundle and its float twin, each in its own process."""
    from benchmarks.student_bundle import folder_bytes
    from xsam_edge.bench.roofline import measure_peak

    made = quantized_bundles(args.preset, args.recipes.split(","), work, args.calibration_images)
    peak = measure_peak(args.threads)
    rows = []
    for recipe, info in made["bundles"].items():
        backend = info["backend"]
        for label, bundle, name in (
            ("quantized", info["bundle"], recipe),
            ("float", info["float_bundle"], None),
        ):
            row = {"recipe": recipe, "kind": label, "backend": backend, "bundle": bundle}
            row |= _child(["--measure", bundle, "--backend", backend, "--repeats", str(args.repeats)])
            row["bundle_bytes"] = folder_bytes(Path(bundle) / backend)
            if "error" not in row:
                cpu = graph_costs(Path(bundle), backend, args.preset, name, cache_itemsize=4, host=True)
                row["roofline"] = roofline_rows(cpu, row["graph_p50_ms"], peak)
                if backend == "openvino":
                    row["encode_image_ops"] = openvino_op_times(Path(bundle), args.threads)
                device = graph_costs(Path(bundle), backend, args.preset, name, cache_itemsize=2)
                row["on_paper"] = on_paper(device, row["plan"])
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("roofline", "on_paper")}), flush=True)
    made["peak"] = peak.to_dict()
    return made, rows


def markdown(result: dict) -> str:
    """The results as the tables ``docs/results/students.md`` quotes."""
    ref = result["reference"]["full"]
    lines = [
        f"`{result['command']}`",
        "",
        f"Reference: eager fp32 {result['reference']['preset']}, {ref['method']}: "
        f"first query {ref['first_query_s']:.1f} s, next query {ref['next_query_s']:.1f} s"
        + (f" (read from {result['reference']['from']})." if "from" in result["reference"] else "."),
        "",
        "| bundle | backend | size | first query | × vs ref. | next query | × vs ref. | decode | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["students"]:
        if "error" in r:
            lines.append(f"| {r['recipe']} {r['kind']} | {r['backend']} | failed: {r['error']} |||||||")
            continue
        first, nxt = r["first_query_p50_s"], r["next_query_p50_s"]
        lines.append(
            f"| {r['recipe']} {r['kind']} | {r['backend']} | {r['bundle_bytes'] / 1e6:.0f} MB "
            f"| {first:.2f} s "
            f"| {ref['first_query_s'] / first:.0f}× | {nxt:.3f} s | {ref['next_query_s'] / nxt:.0f}× "
            f"| {r['decode_tokens_per_s']:.1f} tok/s | {r['peak_rss_mb'] / 1e3:.1f} GB |"
        )
    for r in (r for r in result["students"] if "roofline" in r):
        lines += [
            "",
            f"Per graph, {r['recipe']} {r['kind']} ({r['backend']}): median call, fraction of roof",
            "",
        ]
        lines += ["| graph | calls (first / next) | median call | MACs | bytes | roof | fraction | bound |"]
        lines += ["|---|---|---|---|---|---|---|---|"]
        plan = r["plan"]
        for name, row in r["roofline"].items():
            calls = f"{plan['first_query'].get(name, 0)} / {plan['next_query'].get(name, 0)}"
            lines.append(
                f"| {name} | {calls} | {row['seconds'] * 1e3:.1f} ms | {row['macs'] / 1e9:.2f} G "
                f"| {row['bytes'] / 1e6:.1f} MB | {row['peak_kind']} | {row['fraction']:.2f} "
                f"| {row['bound']} |"
            )
        if r.get("encode_image_ops"):
            ops = ", ".join(f"{o['op']} {o['ms']:.0f} ms ({o['share']:.0%})" for o in r["encode_image_ops"])
            lines += ["", f"encode_image by op type (OpenVINO per-layer counters): {ops}"]
        lines += [
            "",
            "| device | query | estimate | compute bound | memory bound | LLM memory | image memory |",
        ]
        lines += ["|---|---|---|---|---|---|---|"]
        for device, queries in r["on_paper"].items():
            for query, est in queries.items():
                g = est["graphs"]
                llm_mem = sum(v["memory_s"] for k, v in g.items() if k.startswith("llm"))
                image_mem = sum(v["memory_s"] for k, v in g.items() if k in ("encode_image", "segment"))
                lines.append(
                    f"| {device} | {query} | {est['seconds'] * 1e3:.0f} ms | {est['compute_s'] * 1e3:.0f} ms "
                    f"| {est['memory_s'] * 1e3:.0f} ms | {llm_mem * 1e3:.0f} ms | {image_mem * 1e3:.0f} ms |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="x-sam-student-s")
    parser.add_argument("--recipes", default="intel-openvino", help="comma list of recipes")
    parser.add_argument("--reference-preset", default=REFERENCE)
    parser.add_argument("--reference-layers", type=int, default=2, help="LLM layers the reference runs with")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per student bundle")
    parser.add_argument("--reference-repeats", type=int, default=1, help="timed rounds of the reference")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--calibration-images", type=int, default=2, help="shapes:train images to calibrate on"
    )
    parser.add_argument("--work", default="outputs/students-vs-reference")
    parser.add_argument(
        "--reference-from", help="an earlier results JSON whose reference to reuse (named in the output)"
    )
    parser.add_argument("--out", help="results stem (default docs/results/data/students-vs-reference-<date>)")
    parser.add_argument("--reference", type=int, help=argparse.SUPPRESS)  # internal: one depth, in a child
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one bundle, in a child
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ["XSAM_EDGE_THREADS"] = str(args.threads)  # the runtimes, and every child, use these threads
    if args.reference:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(measure_reference(args.reference_preset, args.reference, args.repeats)))
        return
    if args.measure:
        from benchmarks.student_bundle import measure

        print(json.dumps(measure(Path(args.measure), args.backend, args.repeats)))
        return
    from xsam_edge.files import atomic_write_text
    from xsam_edge.model.presets import get_preset

    work = Path(args.work)
    if args.reference_from:
        earlier = json.loads(Path(args.reference_from).read_text())
        reference = earlier["reference"] | {"from": f"{args.reference_from}, measured {earlier['date']}"}
    else:
        common = ["--repeats", str(args.reference_repeats), "--threads", str(args.threads)]
        run = _child(
            ["--reference", str(args.reference_layers), "--reference-preset", args.reference_preset, *common]
        )
        print(json.dumps(run), flush=True)
        if "error" in run:
            raise SystemExit(f"the reference failed: {run}")
        full = scale_to_full(run, get_preset(args.reference_preset).llm.num_layers)
        reference = {"preset": args.reference_preset, "run": run, "full": full}
    made, rows = students(args, work)
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    result = {
        "date": date,
        "command": " ".join(["python -m benchmarks.students_vs_reference", *argv]),
        "threads": args.threads,
        "answer_tokens": ANSWER_TOKENS,
        "reference": reference,
        "student": {k: v for k, v in made.items() if k != "bundles"} | {"quantization": made["bundles"]},
        "students": rows,
    }
    stem = Path(args.out) if args.out else RESULTS_DIR / f"students-vs-reference-{date}"
    atomic_write_text(stem.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
    atomic_write_text(stem.with_suffix(".md"), markdown(result) + "\n")
    print(markdown(result), f"\nwrote {stem}.{{json,md}}", sep="\n")


if __name__ == "__main__":
    main()
