"""Quantized bundle size at full X-SAM size: per recipe and graph, bytes before and after (random weights).

Run: ``python -m xsam_edge.benchmarks.quantized_size_full [--recipes intel-openvino,int8-openvino,…]
[--depths 1,2] [--work DIR] [--out PATH]``.

A full-size float model (18.5 GB) and its exports do not fit this 24 GB machine, so the LLM is built at full
width with ``--depths`` decoder layers (two depths), and everything else at full size. Each depth runs the
real ``quantize_bundle`` (float export, calibration through the float session, the backend's quantizer, the
bundle). Decoder layers are identical in shape, so every graph's bytes are linear in the depth: the two depths
give the per-layer bytes, and the table extrapolates them to the preset's own depth (32 for Phi-3-mini). The
fit is exact only if nothing but the decoder layers grows with depth; the results file keeps the slope of
every graph, and graphs other than the LLM must show zero.

Sizes do not depend on the weights or on how many images calibrate, so weights are random and calibration uses
one image; accuracy is measured on the trained teacher (``benchmarks/quantization.py``), not here.
``int8-openvino`` is INT8 everywhere (W8A8 encoders and decoder, INT8 weight-only LLM and embeddings): the
recipe the "INT8-everything" goal is about. Writes ``benchmarks/results/quantized-size-full-<date>.json`` and
``.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from xsam_edge.benchmarks.export_full_size import randomize_like_trained
from xsam_edge.tokenizer import atomic_write_text

RESULTS = Path(__file__).parent / "results"
GOALS = {"int8": 3.5, "int4-llm": 6.0}  # issue #5: smaller than FP32 by at least this, at full size


def _extra_recipes() -> dict:
    from xsam_edge.quantization.recipes import Recipe
    from xsam_edge.quantization.schemes import Int8Static, Int8WeightOnly

    w8a8 = Int8Static()
    return {
        "int8-openvino": Recipe(
            "int8-openvino",
            "openvino",
            {"encode_image": w8a8, "segment": w8a8, "embed": Int8WeightOnly(), "llm": Int8WeightOnly()},
            description="OpenVINO INT8 everywhere: NNCF W8A8 encoders and decoder, INT8 weight-only LLM",
        ),
    }


def _recipe(name: str):
    from xsam_edge.quantization.recipes import Calibration, get_recipe

    extra = _extra_recipes()
    recipe = extra[name] if name in extra else get_recipe(name)
    return dataclasses.replace(recipe, calibration=Calibration(recipe.calibration.data, images=1))


def _goal(recipe) -> str:
    """Which size goal a recipe is held to: INT4 LLM with integer weights elsewhere, or INT8 everywhere."""
    labels = {g: recipe.scheme_for(g).label() for g in ("encode_image", "segment", "llm")}
    integer_rest = all(not labels[g].startswith(("fp", "pal")) for g in ("encode_image", "segment"))
    if not integer_rest:
        return "none (float graphs besides the LLM)"
    return "int8" if labels["llm"].startswith("w8") else "int4-llm"


def _model(preset: str, depth: int, meta: bool):
    """``preset`` with ``depth`` LLM layers and seeded random weights (std 0.02), or on the meta device."""
    import torch

    from xsam_edge.model.build import build_model
    from xsam_edge.presets import get_preset

    config = get_preset(preset)
    config = dataclasses.replace(config, llm=dataclasses.replace(config.llm, num_layers=depth))
    torch.manual_seed(0)  # 1-D parameters keep their constructors' random init: the fingerprint must repeat
    if meta:
        with torch.device("meta"):
            return build_model(config).eval()
    model = build_model(config).eval()
    randomize_like_trained(model)  # SAM's 1e-10 init would round to all-zero INT8 tensors, stored once
    return model


def prepare_depth(preset: str, depth: int, recipe_names: list[str], work: Path, slots) -> dict:
    """Child process 1: the real model's float export for every recipe, and its fingerprint."""
    from xsam_edge.checkpoint import model_fingerprint
    from xsam_edge.quantization.quantize import prepare
    from xsam_edge.tokenizer import tiny_tokenizer

    start = time.perf_counter()
    model = _model(preset, depth, meta=False)
    fingerprint = model_fingerprint(model)
    tokenizer = tiny_tokenizer(model.config.tokens)  # ids only index the embedding; its size does not matter
    for name in recipe_names:
        prepare(model, tokenizer, _recipe(name), work / "q", slots, fingerprint=fingerprint, calibrate=False)
    return {"fingerprint": fingerprint, "seconds": time.perf_counter() - start, "peak_rss_bytes": _peak_rss()}


def calibrate_depth(preset: str, depth: int, recipe_names: list[str], fingerprint: str, work: Path, slots):
    """Child process 2: calibration through the float sessions, the model on the meta device."""
    from xsam_edge.quantization.quantize import prepare
    from xsam_edge.tokenizer import tiny_tokenizer

    start = time.perf_counter()
    model = _model(preset, depth, meta=True)
    tokenizer = tiny_tokenizer(model.config.tokens)
    for name in recipe_names:
        prepare(model, tokenizer, _recipe(name), work / "q", slots, fingerprint=fingerprint)
    return {"seconds": time.perf_counter() - start, "peak_rss_bytes": _peak_rss()}


def quantize_depth(preset: str, depth: int, name: str, fingerprint: str, work: Path, slots) -> dict:
    """Child process 3 (one per recipe): quantize from the prepared work folder; bytes per graph.

    File-based quantizers (OpenVINO, ONNX, Core ML) get the model on the meta device, so this process holds
    only the calibration set and the quantizer's own copies; ExecuTorch quantizes modules and needs weights.
    """
    from xsam_edge.bundle import load_bundle
    from xsam_edge.quantization.quantize import graph_entries, quantize_bundle
    from xsam_edge.quantization.report import files_bytes
    from xsam_edge.tokenizer import tiny_tokenizer

    recipe = _recipe(name)
    model = _model(preset, depth, meta=recipe.backend != "executorch")
    start = time.perf_counter()
    result = quantize_bundle(
        model, tiny_tokenizer(model.config.tokens), recipe, work / "bundles" / name, work / "q", slots,
        fingerprint=fingerprint,
    )  # fmt: skip
    fp32, bundle = load_bundle(result.fp32_bundle), load_bundle(result.bundle)
    graphs = {}
    for report in result.reports:
        float_files = [
            fp32.path(f) for e in graph_entries(fp32, recipe.backend, report.graph) for f in e.files
        ]
        quant_files = [
            bundle.path(f) for e in graph_entries(bundle, recipe.backend, report.graph) for f in e.files
        ]
        graphs[report.graph] = {
            "scheme": report.scheme,
            "bytes_fp32": files_bytes(float_files),
            "bytes_quant": files_bytes(quant_files),
            "integer_ops": report.integer_ops,
        }
    return {
        "recipe": recipe.to_dict(),
        "backend": recipe.backend,
        "goal": _goal(recipe),
        "seconds": time.perf_counter() - start,
        "peak_rss_bytes": _peak_rss(),
        "graphs": graphs,
    }


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child(args: list[str], timeout: int) -> dict:
    """Run one step in its own process (its memory is its own and returned to the OS when it ends)."""
    command = [sys.executable, "-m", "xsam_edge.benchmarks.quantized_size_full", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-3:]
        raise RuntimeError(f"step {' '.join(args)} failed (exit {done.returncode}): {tail}")
    return json.loads(lines[-1])


def measure_depth(
    preset: str, depth: int, recipe_names: list[str], work: Path, max_seq: int | None, timeout: int
) -> dict:
    """Every recipe at one LLM depth, resumable: each finished step is kept in ``work/steps.json``.

    A recipe's step is reused only while the recipe is unchanged (its dict is kept with the step), and the
    prepare and calibrate steps only while their work folder is still there.
    """
    steps_file = work / "steps.json"
    steps = json.loads(steps_file.read_text()) if steps_file.is_file() else {}
    if not (work / "q").is_dir():  # the exports and calibration were removed: only the steps file is left
        steps = {}
    for name in recipe_names:
        if name in steps and steps[name].get("recipe") != json.loads(json.dumps(_recipe(name).to_dict())):
            del steps[name]  # the recipe changed since (a scheme, a group size): measure it again
    common = ["--preset", preset, "--depth", str(depth), "--work", str(work)]
    common += ["--max-seq", str(max_seq)] if max_seq else []
    if "prepare" not in steps or set(steps["prepare"]["recipes"]) < set(recipe_names):
        steps["prepare"] = {
            **_child(["--child", "prepare", "--recipes", ",".join(recipe_names), *common], timeout),
            "recipes": recipe_names,
        }
        work.mkdir(parents=True, exist_ok=True)
        atomic_write_text(steps_file, json.dumps(steps, indent=2))
    fingerprint = steps["prepare"]["fingerprint"]
    if "calibrate" not in steps or set(steps["calibrate"]["recipes"]) < set(recipe_names):
        args = ["--child", "calibrate", "--recipes", ",".join(recipe_names), "--fingerprint", fingerprint]
        steps["calibrate"] = {**_child([*args, *common], timeout), "recipes": recipe_names}
        atomic_write_text(steps_file, json.dumps(steps, indent=2))
    for name in recipe_names:
        if name not in steps:
            steps[name] = _child(
                ["--child", "quantize", "--recipes", name, "--fingerprint", fingerprint, *common], timeout
            )
            atomic_write_text(steps_file, json.dumps(steps, indent=2))
        print(json.dumps({"depth": depth, "recipe": name, "seconds": steps[name]["seconds"]}), flush=True)
    return {"depth": depth, "prepare": steps["prepare"], "recipes": {n: steps[n] for n in recipe_names}}


def extrapolate(low: dict, high: dict, depth: int) -> dict:
    """Per recipe and graph, bytes at ``depth`` layers from two measured depths (linear in the depth)."""
    d0, d1 = low["depth"], high["depth"]
    table = {}
    for name, rec in low["recipes"].items():
        graphs = {}
        for graph, a in rec["graphs"].items():
            b = high["recipes"][name]["graphs"][graph]
            row = {"scheme": a["scheme"]}
            for key in ("bytes_fp32", "bytes_quant"):
                slope = (b[key] - a[key]) / (d1 - d0)
                row[f"{key}_per_layer"] = slope
                row[key] = round(a[key] + slope * (depth - d0))
            graphs[graph] = row
        fp32 = sum(g["bytes_fp32"] for g in graphs.values())
        quant = sum(g["bytes_quant"] for g in graphs.values())
        goal = rec["goal"]
        table[name] = {
            "backend": rec["backend"],
            "goal": goal,
            "graphs": graphs,
            "bytes_fp32": fp32,
            "bytes_quant": quant,
            "ratio": fp32 / quant,
            "goal_ratio": GOALS.get(goal),
            "meets_goal": fp32 / quant >= GOALS[goal] if goal in GOALS else None,
        }
    return table


def markdown(result: dict) -> str:
    gb = 1e9
    lines = [
        f"# Quantized bundle size at full `{result['preset']}` size ({result['date']})",
        "",
        f"LLM measured at {result['depths'][0]} and {result['depths'][1]} layers (full width), extrapolated "
        f"to {result['full_depth']}; every other graph at full size. Random weights, one calibration image.",
        "",
        "| recipe | backend | encode_image | embed | region | llm | segment | bundle FP32 → quantized | "
        "smaller by | goal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rec in result["full"].items():
        cells = []
        for graph in ("encode_image", "embed", "region", "llm", "segment"):
            g = rec["graphs"][graph]
            cells.append(f"{g['scheme']} {g['bytes_fp32'] / gb:.2f} → {g['bytes_quant'] / gb:.2f} GB")
        verdict = "met" if rec["meets_goal"] else "missed"
        goal = f"≥ {rec['goal_ratio']}× ({verdict})" if rec["goal_ratio"] else "—"
        total = f"{rec['bytes_fp32'] / gb:.2f} → {rec['bytes_quant'] / gb:.2f} GB"
        row = [name, rec["backend"], *cells, total, f"{rec['ratio']:.2f}×", goal]
        lines.append(f"| {' | '.join(row)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="x-sam-phi3")
    parser.add_argument("--recipes", default="intel-openvino,int8-openvino,android-xnnpack,jetson-trt")
    parser.add_argument("--depths", default="1,2", help="two LLM depths to measure (layers)")
    parser.add_argument(
        "--max-seq",
        type=int,
        help="KV cache length (default: the LLM's; sizes do not depend on it, memory does)",
    )
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per step")
    parser.add_argument("--work", default="outputs/quantized-size-full", help="intermediates (resumable)")
    parser.add_argument("--out", help="results JSON (default: results/quantized-size-full-<date>.json)")
    parser.add_argument("--child", choices=("prepare", "calibrate", "quantize"), help=argparse.SUPPRESS)
    parser.add_argument("--depth", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--fingerprint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from xsam_edge.export.graphs import SlotConfig
    from xsam_edge.presets import get_preset

    names = args.recipes.split(",")
    for name in names:
        _recipe(name)  # an unknown recipe fails here, before any model is built
    slots = SlotConfig(max_seq=args.max_seq)
    if args.child == "prepare":
        print(json.dumps(prepare_depth(args.preset, args.depth, names, Path(args.work), slots)))
        return
    if args.child == "calibrate":
        row = calibrate_depth(args.preset, args.depth, names, args.fingerprint, Path(args.work), slots)
        print(json.dumps(row))
        return
    if args.child == "quantize":
        row = quantize_depth(args.preset, args.depth, names[0], args.fingerprint, Path(args.work), slots)
        print(json.dumps(row))
        return
    depths = [int(d) for d in args.depths.split(",")]
    if len(depths) != 2 or depths[0] == depths[1] or min(depths) < 1:
        parser.error("--depths needs two different positive layer counts, e.g. 1,2")
    work = Path(args.work)
    measured = [
        measure_depth(args.preset, d, names, work / f"depth-{d}", args.max_seq, args.timeout) for d in depths
    ]
    full_depth = get_preset(args.preset).llm.num_layers
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    result = {
        "date": date,
        "preset": args.preset,
        "depths": depths,
        "full_depth": full_depth,
        "max_seq": args.max_seq,
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "measured": measured,
        "full": extrapolate(measured[0], measured[1], full_depth),
    }
    out = Path(args.out or RESULTS / f"quantized-size-full-{date}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".md"), markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
