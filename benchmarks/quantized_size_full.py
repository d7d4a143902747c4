"""Quantized bundle size at full X-SAM size: per recipe and graph, bytes before and after (random weights).

Run: ``python -m benchmarks.quantized_size_full [--recipes intel-openvino,int8-openvino,…]
[--depths 1,2] [--encoder-depths 1,2] [--work DIR] [--out PATH]``.

A full-size float model (18.5 GB) and its exports do not fit this 24 GB machine, so the LLM is built at full
width with ``--depths`` decoder layers (two depths). With ``--encoder-depths`` the two image encoders are
built at full width with that many blocks run too (SAM ViT-L's and SigLIP's; ExecuTorch's export of the
full image encoder alone peaks at 21 GB); without it they are at full size. Each point runs the real
``quantize_bundle`` (float export, calibration through the float session, the backend's quantizer, the
bundle). A stack's blocks are identical in shape, so every graph's bytes are linear in each stack's depth:
the points give the bytes per block, and the table extrapolates them to the preset's own depths (Phi-3-mini's
32 layers; the 24 SAM and 26 SigLIP blocks X-SAM runs). Encoder depths need three points: (LLM, SAM, SigLIP)
at (low, low, low), (high, high, low) and (high, high, high). The LLM and SAM grow together, since they are in
different graphs. The fit is exact if only the stacks grow. The results file keeps every graph's slope per
stack, and the graphs built from no stack must show zero. Two small exceptions are ignored: SAM's four
global-attention blocks hold relative-position tables 51 KB larger than a window block's, and the points
use window blocks only.

Sizes do not depend on the weights or on how many images calibrate, so weights are random and calibration uses
one image; accuracy is measured on the trained teacher (``benchmarks/quantization.py``), not here.
``int8-openvino`` is INT8 everywhere (W8A8 encoders and decoder, INT8 weight-only LLM and embeddings): the
recipe the "INT8-everything" goal is about. Writes ``docs/results/data/quantized-size-full-<date>.json`` and
``.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import RESULTS_DIR
from benchmarks.export_full_size import randomize_like_trained
from xsam_edge.bench.harness import peak_rss_bytes
from xsam_edge.files import atomic_write_text

RESULTS = RESULTS_DIR
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


# which repeated stacks each graph holds (graphs not named hold none: their bytes must not change)
GRAPH_STACKS = {"llm": ("llm",), "encode_image": ("sam", "siglip")}
STACKS = ("llm", "sam", "siglip")


def full_depths(config) -> dict[str, int]:
    """Blocks of each stack in the exported graphs: the LLM's layers, and the encoder blocks X-SAM runs."""
    return {
        "llm": config.llm.num_layers,
        "sam": config.seg_encoder.layers_run,
        "siglip": config.global_encoder.layers_run,
    }


def config_at(config, point: dict[str, int]):
    """``config`` with each stack cut to ``point``'s depth (full width; SAM taps all at its last block)."""
    llm = dataclasses.replace(config.llm, num_layers=point["llm"])
    config = dataclasses.replace(config, llm=llm)
    full = full_depths(config)
    if point["sam"] != full["sam"]:
        sam = point["sam"]
        seg = dataclasses.replace(
            config.seg_encoder,
            num_layers=sam,
            global_attn_indexes=(),
            projector_layer=sam,
            connector_layers=(sam,) * len(config.seg_encoder.connector_layers),
        )
        config = dataclasses.replace(config, seg_encoder=seg)
    if point["siglip"] != full["siglip"]:
        spare = config.global_encoder.num_layers - full["siglip"]  # blocks after select_layer (never run)
        glob = dataclasses.replace(config.global_encoder, num_layers=point["siglip"] + spare)
        config = dataclasses.replace(config, global_encoder=glob)
    return config


def _model(preset: str, point: dict[str, int], meta: bool):
    """``preset`` cut to ``point`` with seeded random weights (std 0.02), or on the meta device."""
    import torch

    from xsam_edge.model.build import build_model
    from xsam_edge.model.presets import get_preset

    config = config_at(get_preset(preset), point)
    torch.manual_seed(0)  # 1-D parameters keep their constructors' random init: the fingerprint must repeat
    if meta:
        with torch.device("meta"):
            return build_model(config).eval()
    model = build_model(config).eval()
    randomize_like_trained(model)  # SAM's 1e-10 init would round to all-zero INT8 tensors, stored once
    return model


def _stage_work(work: Path, recipe) -> Path:
    """The quantize stage's work folder, one per backend (its float bundle holds that backend's graphs)."""
    return work / "q" / recipe.backend


def prepare_point(preset: str, point: dict, recipe_names: list[str], work: Path, slots) -> dict:
    """Child process 1: the real model's float export for every recipe, and its fingerprint."""
    from xsam_edge.model.checkpoint import model_fingerprint
    from xsam_edge.quantization.quantize import prepare
    from xsam_edge.spec.tokenizer import tiny_tokenizer

    start = time.perf_counter()
    model = _model(preset, point, meta=False)
    fingerprint = model_fingerprint(model)
    tokenizer = tiny_tokenizer(model.config.tokens)  # ids only index the embedding; its size does not matter
    for name in recipe_names:
        recipe = _recipe(name)
        prepare(
            model,
            tokenizer,
            recipe,
            _stage_work(work, recipe),
            slots,
            fingerprint=fingerprint,
            calibrate=False,
        )
    seconds = time.perf_counter() - start
    return {"fingerprint": fingerprint, "seconds": seconds, "peak_rss_bytes": peak_rss_bytes()}


def calibrate_point(preset: str, point: dict, recipe_names: list[str], fingerprint: str, work: Path, slots):
    """Child process 2: calibration through the float sessions, the model on the meta device."""
    from xsam_edge.quantization.quantize import prepare
    from xsam_edge.spec.tokenizer import tiny_tokenizer

    start = time.perf_counter()
    model = _model(preset, point, meta=True)
    tokenizer = tiny_tokenizer(model.config.tokens)
    for name in recipe_names:
        recipe = _recipe(name)
        prepare(model, tokenizer, recipe, _stage_work(work, recipe), slots, fingerprint=fingerprint)
    return {"seconds": time.perf_counter() - start, "peak_rss_bytes": peak_rss_bytes()}


def quantize_point(preset: str, point: dict, name: str, fingerprint: str, work: Path, slots) -> dict:
    """Child process 3 (one per recipe): quantize from the prepared work folder; bytes per graph.

    File-based quantizers (OpenVINO, ONNX, Core ML) get the model on the meta device, so this process holds
    only the calibration set and the quantizer's own copies; ExecuTorch quantizes modules and needs weights,
    and so does a calibrated Core ML recipe (its data-aware palettization weighs the torch graph's weights).
    """
    from xsam_edge.quantization.quantize import graph_entries, quantize_bundle
    from xsam_edge.quantization.report import files_bytes
    from xsam_edge.spec.bundle import load_bundle
    from xsam_edge.spec.tokenizer import tiny_tokenizer

    recipe = _recipe(name)
    needs_weights = recipe.backend == "executorch" or (recipe.backend == "coreml" and recipe.calibrated)
    model = _model(preset, point, meta=not needs_weights)
    start = time.perf_counter()
    tokenizer, stage = tiny_tokenizer(model.config.tokens), _stage_work(work, recipe)
    bundle = work / "bundles" / name
    result = quantize_bundle(model, tokenizer, recipe, bundle, stage, slots, fingerprint=fingerprint)
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
        "peak_rss_bytes": peak_rss_bytes(),
        "graphs": graphs,
    }


def coreml_fp32_point(preset: str, point: dict, name: str, fingerprint: str, work: Path, slots) -> dict:
    """Child process (Core ML recipes): every Core ML graph converted at fp32 compute, bytes per recipe graph.

    The stage's float Core ML bundle computes and stores in fp16, so its bytes are half of FP32's; the size
    goal is against FP32. The stateful LLM pair is merged into one package as the bundle ships it.
    """
    import shutil

    from xsam_edge.backends.coreml.export import export_coreml
    from xsam_edge.backends.coreml.pack import merge_llm_functions
    from xsam_edge.export.to_bundle import graph_entry
    from xsam_edge.quantization.quantize import prepare
    from xsam_edge.quantization.report import files_bytes
    from xsam_edge.spec.bundle import load_bundle
    from xsam_edge.spec.tokenizer import tiny_tokenizer

    start = time.perf_counter()
    model = _model(preset, point, meta=False)
    recipe = _recipe(name)  # its float bundle (exported by the prepare step) names the graphs
    tokenizer = tiny_tokenizer(model.config.tokens)
    stage = prepare(
        model, tokenizer, recipe, _stage_work(work, recipe), slots, fingerprint=fingerprint, calibrate=False
    )
    names = [e.name for e in load_bundle(stage / "fp32").graphs if e.backend == "coreml"]
    out = work / "coreml-fp32"
    shutil.rmtree(out, ignore_errors=True)
    entries = [graph_entry(export_coreml(model, n, slots, out, precision="fp32"), out) for n in names]
    sizes: dict[str, int] = {}
    for entry in merge_llm_functions(entries, out):
        graph = "llm" if entry.name.startswith("llm") else entry.name
        sizes[graph] = sizes.get(graph, 0) + files_bytes([out / f for f in entry.files])
    shutil.rmtree(out)
    return {"seconds": time.perf_counter() - start, "peak_rss_bytes": peak_rss_bytes(), "bytes_fp32": sizes}


def _child(args: list[str], timeout: int) -> dict:
    """Run one step in its own process (its memory is its own and returned to the OS when it ends)."""
    command = [sys.executable, "-m", "benchmarks.quantized_size_full", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-3:]
        raise RuntimeError(f"step {' '.join(args)} failed (exit {done.returncode}): {tail}")
    return json.loads(lines[-1])


def point_name(point: dict[str, int]) -> str:
    return "-".join(f"{stack}{point[stack]}" for stack in STACKS)


def measure_point(
    preset: str, point: dict, recipe_names: list[str], work: Path, max_seq: int | None, timeout: int
) -> dict:
    """Every recipe at one point (stack depths), resumable: finished steps are kept in ``work/steps.json``.

    A recipe's step is reused only while the recipe is unchanged (its dict is kept with the step), and the
    prepare and calibrate steps only while their work folder is still there. Core ML recipes' float bytes
    are replaced by the fp32-compute packages' (``coreml_fp32_point``); the fp16 ones are kept as
    ``bytes_fp16``.
    """
    steps_file = work / "steps.json"
    steps = json.loads(steps_file.read_text()) if steps_file.is_file() else {}
    if not (work / "q").is_dir():  # the exports and calibration were removed: only the steps file is left
        steps = {}
    for name in recipe_names:
        if name in steps and steps[name].get("recipe") != json.loads(json.dumps(_recipe(name).to_dict())):
            del steps[name]  # the recipe changed since (a scheme, a group size): measure it again
    common = ["--preset", preset, "--point", json.dumps(point), "--work", str(work)]
    common += ["--max-seq", str(max_seq)] if max_seq else []

    def save() -> None:
        work.mkdir(parents=True, exist_ok=True)
        atomic_write_text(steps_file, json.dumps(steps, indent=2))

    if "prepare" not in steps or set(steps["prepare"]["recipes"]) < set(recipe_names):
        steps["prepare"] = {
            **_child(["--child", "prepare", "--recipes", ",".join(recipe_names), *common], timeout),
            "recipes": recipe_names,
        }
        save()
    fingerprint = steps["prepare"]["fingerprint"]
    if "calibrate" not in steps or set(steps["calibrate"]["recipes"]) < set(recipe_names):
        args = ["--child", "calibrate", "--recipes", ",".join(recipe_names), "--fingerprint", fingerprint]
        steps["calibrate"] = {**_child([*args, *common], timeout), "recipes": recipe_names}
        save()
    coreml = [n for n in recipe_names if _recipe(n).backend == "coreml"]
    if coreml and "coreml-fp32" not in steps:
        args = ["--child", "coreml-fp32", "--recipes", coreml[0], "--fingerprint", fingerprint]
        steps["coreml-fp32"] = _child([*args, *common], timeout)
        save()
    for name in recipe_names:
        if name not in steps:
            steps[name] = _child(
                ["--child", "quantize", "--recipes", name, "--fingerprint", fingerprint, *common], timeout
            )
            save()
        print(json.dumps({"point": point, "recipe": name, "seconds": steps[name]["seconds"]}), flush=True)
    recipes = {}
    for name in recipe_names:
        rec = json.loads(json.dumps(steps[name]))
        if rec["backend"] == "coreml":
            for graph, row in rec["graphs"].items():
                row["bytes_fp16"] = row["bytes_fp32"]
                row["bytes_fp32"] = steps["coreml-fp32"]["bytes_fp32"][graph]
        recipes[name] = rec
    return {"point": point, "prepare": steps["prepare"], "recipes": recipes}


def _fit(points: list[dict[str, int]], values: list[float], stacks: tuple[str, ...], full: dict) -> dict:
    """Least-squares line in the stacks that vary over ``points``; the value at ``full`` and each slope.

    A stack that does not vary must already be at its full depth (nothing to extrapolate), and the stacks
    that do vary must be told apart by the points.
    """
    import numpy as np

    varying = [k for k in stacks if len({p[k] for p in points}) > 1]
    for k in stacks:
        if k not in varying and points[0][k] != full[k]:
            raise ValueError(
                f"{k} is measured at one depth ({points[0][k]}, not its full {full[k]}): cannot fit"
            )
    design = np.array([[1.0, *(p[k] for k in varying)] for p in points])
    if np.linalg.matrix_rank(design) < design.shape[1]:
        raise ValueError(f"the points {points} do not tell apart the stacks {varying}")
    coef, *_ = np.linalg.lstsq(design, np.array(values, dtype=float), rcond=None)
    at_full = coef[0] + sum(c * full[k] for c, k in zip(coef[1:], varying, strict=True))
    residual = float(np.max(np.abs(design @ coef - np.array(values))))
    return {
        "value": round(float(at_full)),
        "slopes": {k: float(c) for c, k in zip(coef[1:], varying, strict=True)},
        "residual": residual,
    }


def extrapolate(measured: list[dict], full: dict[str, int]) -> dict:
    """Per recipe and graph, bytes at the ``full`` stack depths from the measured points (linear in each)."""
    points = [m["point"] for m in measured]
    table = {}
    for name, first in measured[0]["recipes"].items():
        graphs = {}
        for graph, a in first["graphs"].items():
            rows = [m["recipes"][name]["graphs"][graph] for m in measured]
            row = {"scheme": a["scheme"]}
            for key in ("bytes_fp32", "bytes_quant", "bytes_fp16"):
                if key not in a:
                    continue
                fit = _fit(points, [r[key] for r in rows], GRAPH_STACKS.get(graph, ()), full)
                row[key] = fit["value"]
                row[f"{key}_per_block"] = fit["slopes"]
                row[f"{key}_fit_residual"] = fit["residual"]  # graphs of no stack: bytes that changed anyway
            graphs[graph] = row
        fp32 = sum(g["bytes_fp32"] for g in graphs.values())
        quant = sum(g["bytes_quant"] for g in graphs.values())
        goal = first["goal"]
        table[name] = {
            "backend": first["backend"],
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
    full = result["full_depths"]
    points = ", ".join("(" + ", ".join(str(p[k]) for k in STACKS) + ")" for p in result["points"])
    lines = [
        f"# Quantized bundle size at full `{result['preset']}` size ({result['date']})",
        "",
        f"Measured at (LLM layers, SAM blocks, SigLIP blocks) = {points}, full width; extrapolated linearly "
        f"to ({full['llm']}, {full['sam']}, {full['siglip']}). Everything else at full size. Random weights, "
        "one calibration image. Core ML's FP32 side is the fp32-compute package.",
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


def _pair(text: str, what: str, parser: argparse.ArgumentParser) -> list[int]:
    depths = [int(d) for d in text.split(",")]
    if len(depths) != 2 or depths[0] == depths[1] or min(depths) < 1:
        parser.error(f"{what} needs two different positive block counts, e.g. 1,2")
    return depths


def plan_points(llm: list[int], encoders: list[int] | None, full: dict[str, int]) -> list[dict[str, int]]:
    """The points to measure: the LLM's two depths (encoders full), or three that vary the encoders too."""
    if encoders is None:
        return [{"llm": d, "sam": full["sam"], "siglip": full["siglip"]} for d in llm]
    (l0, l1), (e0, e1) = llm, encoders
    return [
        {"llm": l0, "sam": e0, "siglip": e0},
        {"llm": l1, "sam": e1, "siglip": e0},
        {"llm": l1, "sam": e1, "siglip": e1},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="x-sam-phi3")
    parser.add_argument("--recipes", default="intel-openvino,int8-openvino,android-xnnpack,jetson-trt")
    parser.add_argument("--depths", default="1,2", help="two LLM depths to measure (layers)")
    parser.add_argument(
        "--encoder-depths", help="two depths (blocks run) of both image encoders; default: full encoders"
    )
    parser.add_argument(
        "--max-seq",
        type=int,
        help="KV cache length (default: the LLM's; sizes do not depend on it, memory does)",
    )
    parser.add_argument(
        "--only-point",
        type=int,
        help="measure only this point (0-based) and write no table: points can run in parallel processes",
    )
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per step")
    parser.add_argument("--work", default="outputs/quantized-size-full", help="intermediates (resumable)")
    parser.add_argument("--out", help="results JSON (default: results/quantized-size-full-<date>.json)")
    parser.add_argument(
        "--child", choices=("prepare", "calibrate", "quantize", "coreml-fp32"), help=argparse.SUPPRESS
    )
    parser.add_argument("--point", type=json.loads, help=argparse.SUPPRESS)
    parser.add_argument("--fingerprint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from xsam_edge.export.graphs import SlotConfig
    from xsam_edge.model.presets import get_preset

    names = args.recipes.split(",")
    for name in names:
        _recipe(name)  # an unknown recipe fails here, before any model is built
    slots = SlotConfig(max_seq=args.max_seq)
    work = Path(args.work)
    children = {
        "prepare": lambda: prepare_point(args.preset, args.point, names, work, slots),
        "calibrate": lambda: calibrate_point(args.preset, args.point, names, args.fingerprint, work, slots),
        "quantize": lambda: quantize_point(args.preset, args.point, names[0], args.fingerprint, work, slots),
        "coreml-fp32": lambda: coreml_fp32_point(
            args.preset, args.point, names[0], args.fingerprint, work, slots
        ),
    }
    if args.child:
        print(json.dumps(children[args.child]()))
        return
    llm = _pair(args.depths, "--depths", parser)
    encoders = _pair(args.encoder_depths, "--encoder-depths", parser) if args.encoder_depths else None
    full = full_depths(get_preset(args.preset))
    points = plan_points(llm, encoders, full)
    if args.only_point is not None:
        point = points[args.only_point]
        measure_point(args.preset, point, names, work / point_name(point), args.max_seq, args.timeout)
        return
    measured = [
        measure_point(args.preset, p, names, work / point_name(p), args.max_seq, args.timeout) for p in points
    ]
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    result = {
        "date": date,
        "preset": args.preset,
        "points": points,
        "full_depths": full,
        "max_seq": args.max_seq,
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "measured": measured,
        "full": extrapolate(measured, full),
    }
    out = Path(args.out or RESULTS / f"quantized-size-full-{date}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".md"), markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
