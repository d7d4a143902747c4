"""``xsam-edge``: one verb per stage, each a thin layer over one library function.

Errors a user can cause (bad files, bad prompts, wrong checkpoints) print one line and exit with 2; no
traceback. ``XSAM_EDGE_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

EXIT_USER_ERROR = 2

if TYPE_CHECKING:  # the export stack is imported lazily, by the verbs that need it
    from xsam_edge.export.graphs import SlotConfig


# -- info --------------------------------------------------------------------------------------
def _info_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="parameters and MACs per component of a preset")
    p.add_argument("--preset", required=True, help="preset name (e.g. x-sam-phi3, tiny)")
    p.add_argument("--text-tokens", type=int, default=48, help="text tokens of the referring query")
    p.add_argument("--json", action="store_true", help="print JSON for machines")
    p.set_defaults(run=_info)


def _info(args: argparse.Namespace) -> None:
    from xsam_edge.model.info import info_json, info_table
    from xsam_edge.model.presets import get_preset

    data = info_json(get_preset(args.preset), text_tokens=args.text_tokens)
    print(json.dumps(data, indent=2) if args.json else info_table(data))


# -- segment -----------------------------------------------------------------------------------
def _segment_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment one image with a text, category or visual-prompt query")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="model folder (save_pretrained / import-checkpoint output)")
    src.add_argument("--preset", help="preset with RANDOM weights (smoke runs only)")
    p.add_argument("--tokenizer", help="local HF tokenizer folder, for --preset other than tiny")
    _request_arguments(p)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_segment)


def _request_arguments(p: argparse.ArgumentParser) -> None:
    """The query arguments shared by ``segment`` and ``run``."""
    p.add_argument("--image", required=True, help="image file (PNG, JPEG, …)")
    p.add_argument(
        "--task",
        help="task; inferred from the query when omitted (text→referring, "
        "categories→panoptic, prompts→interactive)",
    )
    p.add_argument("--text", help="referring expression, reasoning question or chat message")
    p.add_argument("--categories", help="comma-separated class names")
    p.add_argument("--point", action="append", default=[], metavar="X,Y", help="point prompt (repeatable)")
    p.add_argument(
        "--box", action="append", default=[], metavar="X0,Y0,X1,Y1", help="box prompt (repeatable)"
    )
    p.add_argument("--scribble", action="append", default=[], metavar="X,Y;X,Y;…", help="scribble prompt")
    p.add_argument(
        "--mask", action="append", default=[], metavar="PNG", help="mask prompt image (repeatable)"
    )
    p.add_argument("--out", default="result.png", help="overlay PNG; the JSON goes beside it (.json)")


def _numbers(text: str, count: int, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count:
        raise ValueError(f"{what} needs {count} comma-separated numbers, got {text!r}")
    return values


def _build_request(args: argparse.Namespace, image) -> object:
    import numpy as np

    from xsam_edge.spec.image_io import load_image
    from xsam_edge.spec.types import Box, MaskPrompt, Point, Scribble, SegmentationRequest, Task

    prompts: list = [Point(*_numbers(v, 2, "--point")) for v in args.point]
    prompts += [Box(*_numbers(v, 4, "--box")) for v in args.box]
    for value in args.scribble:
        points = tuple(tuple(_numbers(pt, 2, "--scribble point")) for pt in value.split(";") if pt.strip())
        prompts.append(Scribble(points))
    for path in args.mask:
        prompts.append(MaskPrompt(load_image(path).max(axis=2) > 127))
    categories = [c.strip() for c in args.categories.split(",")] if args.categories is not None else []
    if args.task:
        try:
            task = Task(args.task)
        except ValueError:
            raise ValueError(
                f"unknown task {args.task!r}; tasks: {', '.join(t.value for t in Task)}"
            ) from None
    elif prompts:
        task = Task.INTERACTIVE
    elif args.categories is not None:
        task = Task.PANOPTIC
    elif args.text is not None:
        task = Task.REFERRING
    else:
        raise ValueError(
            "give a query: --text, --categories, or a visual prompt (--point/--box/--scribble/--mask)"
        )
    return SegmentationRequest(
        np.ascontiguousarray(image), task, text=args.text, categories=categories, prompts=prompts
    )


def _segment(args: argparse.Namespace) -> None:
    from xsam_edge.spec.image_io import load_image

    image = load_image(args.image)
    request = _build_request(args, image)  # validate before importing or loading any model
    from xsam_edge.model.predictor import load_predictor

    predictor = load_predictor(
        model_dir=args.model, preset=args.preset, tokenizer_dir=args.tokenizer, seed=args.seed
    )
    if args.preset:
        print(
            f"note: preset {args.preset!r} has random, untrained weights: the masks show the pipeline "
            "runs, not what a trained model sees",
            file=sys.stderr,
        )
    _write_result(args, image, request, predictor.segment(request))


def _write_result(args: argparse.Namespace, image, request, result) -> None:
    from xsam_edge.spec.image_io import save_overlay
    from xsam_edge.spec.tokenizer import atomic_write_text

    out = Path(args.out)
    save_overlay(out, image, result)
    summary = {"image": str(args.image), "task": request.task.value, **result.to_json()}
    atomic_write_text(out.with_suffix(".json"), json.dumps(summary, indent=2) + "\n")
    for item in summary["masks"]:
        print(
            f"{item['label']:<32} score {item['score']:.3f}  area {item['area']:>8} px  "
            f"box {item['box_xyxy']}"
        )
    if result.text:
        print(f"text: {result.text}")
    print(f"wrote {out} and {out.with_suffix('.json')}")


# -- import-checkpoint ---------------------------------------------------------------------------
def _import_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-checkpoint", help="convert a released X-SAM checkpoint to a model folder")
    p.add_argument("--checkpoint", required=True, help="pytorch_model.bin (archive or main-branch keys)")
    p.add_argument("--preset", required=True, help="the preset the checkpoint was trained with")
    p.add_argument("--tokenizer", required=True, help="local HF tokenizer folder (e.g. Phi-3-mini's)")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument(
        "--allow-partial", action="store_true", help="accept a stage-1/2 checkpoint with missing parts"
    )
    p.set_defaults(run=_import)


def _import(args: argparse.Namespace) -> None:
    from xsam_edge.model.checkpoint import import_checkpoint

    report = import_checkpoint(
        checkpoint=args.checkpoint,
        preset=args.preset,
        tokenizer_dir=args.tokenizer,
        out=args.out,
        dtype=args.dtype,
        allow_partial=args.allow_partial,
    )
    print(report.summary())
    print(f"wrote {args.out}")


# -- train / eval / cache -----------------------------------------------------------------------
def _steps(text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(
            "--steps needs three integers: segmentor,align,mixed (e.g. 600,300,1200)"
        )
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


def _train_parser(sub: argparse._SubParsersAction) -> None:
    from xsam_edge.training.recipe import TeacherRecipe

    default = TeacherRecipe()
    p = sub.add_parser("train", help="train a preset with the three-stage recipe (resumes a killed run)")
    p.add_argument("--preset", default=default.preset)
    p.add_argument("--out", required=True, help="run folder: checkpoint, log.jsonl, model/")
    p.add_argument("--data", default=default.data, help="training data (shapes:train)")
    p.add_argument("--val-data", default="shapes:val-fast", help="evaluated at each stage end")
    p.add_argument("--steps", type=_steps, default=default.steps, help="segmentor,align,mixed steps")
    p.add_argument("--batch-size", type=int, default=default.batch_size)
    p.add_argument("--lr", type=float, default=default.lr)
    p.add_argument("--seed", type=int, default=default.seed)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.set_defaults(run=_train)


def _train(args: argparse.Namespace) -> None:
    from xsam_edge.training.teacher import train_model

    model_dir = train_model(
        args.out,
        preset=args.preset,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        data=args.data,
        val_data=args.val_data or None,
    )
    print(f"wrote {model_dir}")


def _eval_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="every task's metric on a dataset, next to trivial baselines")
    p.add_argument("--model", required=True, help="model folder")
    p.add_argument("--data", default="shapes:val", help="shapes:<split> or a real dataset spec")
    p.add_argument("--limit", type=int, help="at most this many images")
    p.add_argument("--json", action="store_true", help="print JSON: {tasks, baselines}")
    p.add_argument("--region-sampler", choices=["random", "grid"], help="override the model's region sampler")
    p.set_defaults(run=_eval)


def _eval(args: argparse.Namespace) -> None:
    from xsam_edge.data.registry import load_dataset
    from xsam_edge.metrics.evaluate import eval_table, evaluate_model
    from xsam_edge.model.predictor import XSamPredictor

    predictor = XSamPredictor.from_pretrained(args.model, region_sampler=args.region_sampler)
    report = evaluate_model(predictor, load_dataset(args.data, limit=args.limit))
    print(json.dumps(report, indent=2) if args.json else eval_table(report))


def _cache_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="locate or clear the cached embedded teacher")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--path", action="store_true", help="print the cache folder")
    group.add_argument("--clear", action="store_true", help="delete the cache")
    p.set_defaults(run=_cache)


def _cache(args: argparse.Namespace) -> None:
    from xsam_edge.training.teacher import cache_root, clear_cache

    print(cache_root() if args.path else f"removed {clear_cache()}")


def _export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to edge backends as one checksummed bundle")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="model folder")
    src.add_argument("--preset", help="preset with RANDOM weights (export smoke runs)")
    p.add_argument("--backend", default="all", help="onnx, openvino, or all (comma-separated list allowed)")
    p.add_argument("--out", required=True, help="bundle folder (replaced atomically)")
    p.add_argument(
        "--et-partitioner",
        default="xnnpack",
        choices=("xnnpack", "coreml", "none"),
        help="ExecuTorch delegate: xnnpack (CPU, everywhere), coreml (Apple devices only), none (portable)",
    )
    _slot_arguments(p)
    p.set_defaults(run=_export)


def _slot_arguments(p: argparse.ArgumentParser) -> None:
    """The fixed slot sizes of the edge graphs (a golden reference must use its bundle's)."""
    p.add_argument("--max-regions", type=int, default=8, help="visual-prompt slots of the region graph")
    p.add_argument(
        "--max-conditions", type=int, default=16, help="category/phrase slots of the segment graph"
    )
    p.add_argument("--prefill-len", type=int, default=64, help="tokens per LLM prefill call")
    p.add_argument("--max-seq", type=int, help="KV-cache length (default: the LLM context)")


def _slots(args: argparse.Namespace) -> SlotConfig:
    from xsam_edge.export.graphs import SlotConfig

    return SlotConfig(
        max_regions=args.max_regions,
        max_conditions=args.max_conditions,
        prefill_len=args.prefill_len,
        max_seq=args.max_seq,
    )


def _export(args: argparse.Namespace) -> None:
    from xsam_edge.export.placement import format_placement, placement_report
    from xsam_edge.export.to_bundle import BACKEND_NAMES, export_bundle
    from xsam_edge.model.checkpoint import read_lineage
    from xsam_edge.model.predictor import load_predictor

    backends = BACKEND_NAMES if args.backend == "all" else tuple(b.strip() for b in args.backend.split(","))
    slots = _slots(args)
    predictor = load_predictor(model_dir=args.model, preset=args.preset)
    lineage = read_lineage(args.model) if args.model else None
    bundle, graphs = export_bundle(
        predictor.model,
        predictor.tokenizer,
        args.out,
        backends=backends,
        slots=slots,
        lineage=lineage,
        executorch_partitioner=args.et_partitioner,
    )
    for g in graphs:
        print(
            f"{g.backend:<10} {g.name:<18} {g.export_seconds:6.1f} s  "
            + (f"min PSNR {g.min_psnr_db:7.1f} dB  " if g.parity else "parity n/a (needs an Apple device)  ")
            + g.route
        )
    files = {f"{g.backend}/{g.name}": g.files[0] for g in graphs if g.backend in ("onnx", "openvino")}
    if files:
        print(format_placement(placement_report(files)))
    for g in graphs:  # ExecuTorch: delegated vs portable nodes per method; Core ML: the MIL op histogram
        if g.backend == "executorch":
            for method, info in g.placement.get("methods", {}).items():
                print(
                    f"executorch/{g.name}.{method}: {info['delegated_nodes']} nodes in "
                    f"{g.placement.get('partitioner', 'xnnpack')}, "
                    f"{info['portable_nodes']} portable ({', '.join(list(info['portable_ops'])[:6])})"
                )
        elif g.backend == "coreml":
            top = sorted(g.placement.get("histogram", {}).items(), key=lambda kv: -kv[1])[:6]
            print(f"coreml/{g.name}: " + ", ".join(f"{op}×{n}" for op, n in top))
    print(f"wrote {bundle}")


def _run_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="answer one request from a bundle on an edge runtime")
    p.add_argument("--bundle", required=True)
    p.add_argument("--backend", required=True, help="onnx, openvino or executorch (the bundle's backends)")
    _request_arguments(p)
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> None:
    from xsam_edge.runtime.session import EdgeSession
    from xsam_edge.spec.image_io import load_image

    image = load_image(args.image)
    request = _build_request(args, image)
    session = EdgeSession(args.bundle, args.backend)
    _write_result(args, image, request, session.segment(request))


def _quantize_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="quantize a model by a recipe into a bundle (optionally to a budget)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="model folder (default: the embedded teacher, trained on first use)")
    src.add_argument("--preset", help="preset with RANDOM weights (size and smoke runs only)")
    p.add_argument("--recipe", help="a named recipe or a recipe .toml file (see --list-recipes)")
    p.add_argument("--list-recipes", action="store_true", help="print the named recipes and exit")
    p.add_argument("--out", help="bundle folder (replaced atomically)")
    p.add_argument("--work", help="intermediates (default: .<out>.work beside the bundle; reused on resume)")
    p.add_argument(
        "--max-drop",
        type=float,
        help="accuracy budget in points of every task's metric: keep the most sensitive layers, then "
        "graphs, float until it holds (evaluated on --eval-data)",
    )
    p.add_argument("--eval-data", default="shapes:val-fast", help="evaluation data for --max-drop")
    p.add_argument("--eval-limit", type=int, help="at most this many evaluation images")
    p.add_argument(
        "--max-layers",
        type=int,
        default=2,
        help="with --max-drop on ExecuTorch, ONNX or OpenVINO: the most sensitive layers per graph to try in "
        "float before the whole graph goes float (0: whole graphs only)",
    )
    p.add_argument("--prefill-len", type=int, default=64, help="tokens per LLM prefill call")
    p.add_argument("--max-seq", type=int, help="KV-cache length (default: the LLM context)")
    p.set_defaults(run=_quantize)


def _quantize(args: argparse.Namespace) -> None:
    from xsam_edge.quantization.recipes import RECIPES, load_recipe

    if args.list_recipes:
        for name, recipe in RECIPES.items():
            print(f"{name:<17}{recipe.backend:<11}{recipe.description}")
        return
    if not args.recipe or not args.out:
        raise ValueError("give --recipe NAME|FILE.toml and --out BUNDLE (or --list-recipes)")
    recipe = load_recipe(args.recipe)  # a bad recipe fails here, before the model loads
    if args.max_drop is not None:
        from xsam_edge.data.registry import parse_spec

        parse_spec(args.eval_data)
    from xsam_edge.export.graphs import SlotConfig
    from xsam_edge.model.predictor import load_predictor
    from xsam_edge.quantization.report import format_reports

    if args.model is None and args.preset is None:
        from xsam_edge.training.teacher import ensure_teacher

        args.model = str(ensure_teacher())
    predictor = load_predictor(model_dir=args.model, preset=args.preset)
    slots = SlotConfig(prefill_len=args.prefill_len, max_seq=args.max_seq)
    if args.max_drop is None:
        from xsam_edge.quantization.quantize import quantize_bundle

        result = quantize_bundle(
            predictor.model, predictor.tokenizer, recipe, args.out, work_dir=args.work, slots=slots
        )
        print(format_reports(result.reports))
        print(f"wrote {result.bundle}")
        return
    from xsam_edge.data.registry import load_dataset
    from xsam_edge.quantization.accuracy import fit_max_drop

    fit = fit_max_drop(
        predictor.model,
        predictor.tokenizer,
        recipe,
        load_dataset(args.eval_data, limit=args.eval_limit),
        max_drop=args.max_drop,
        out=args.out,
        work_dir=args.work,
        slots=slots,
        max_layers=args.max_layers,
    )
    print(format_reports(fit.result.reports))
    for graph, info in fit.sensitivity.get("graphs", {}).items():
        print(f"sensitivity: {graph:<14}{info['scheme']:<12} worst drop alone {info['worst']:6.2f} points")
    for graph, layers in fit.layers.items():
        for layer in layers[:5]:
            gain = layer["gain_db"]
            print(f"layer sensitivity: {graph:<14}{layer['module']:<48} float recovers {gain:6.2f} dB")
    for step in fit.history:
        kept = ", ".join(step["kept_float"]) or "none"
        layers = "; ".join(f"{g}: {', '.join(v)}" for g, v in step["float_layers"].items())
        print(f"kept float: {kept:<36} worst task drop {step['worst']:6.2f} points")
        if layers:
            print(f"  float layers: {layers}")
    worst = max((v for v in fit.drops.values() if v == v), default=0.0)
    verdict = "holds" if worst <= args.max_drop else "does NOT hold even with every quantized graph float"
    print(f"budget {args.max_drop:.2f} points {verdict} (worst drop {worst:.2f}); wrote {fit.result.bundle}")
    print(f"every step of the search: {fit.folder / 'fit.json'}")


def _pipeline_parser(sub: argparse._SubParsersAction) -> None:
    from xsam_edge.distill.config import STUDENT_RECIPES

    p = sub.add_parser("pipeline", help="the main job on the embedded default (resumable)")
    p.add_argument("--out", default="outputs/pipeline", help="results folder (report.md, report.json, PNGs)")
    p.add_argument("--data", default="shapes:val", help="evaluation data")
    p.add_argument("--limit", type=int, help="at most this many evaluation images")
    p.add_argument(
        "--student",
        default="quick",
        choices=[*STUDENT_RECIPES, "none"],
        help="student recipe: quick (shapes-student, 600 steps: minutes), gated-5600 (the recipe measured "
        "at >= 95 %% of the teacher on every task: about an hour more on 2 cores), or none",
    )
    p.set_defaults(run=_pipeline)


def _pipeline(args: argparse.Namespace) -> None:
    from xsam_edge.distill.config import get_student_recipe
    from xsam_edge.pipeline import run_pipeline

    student = None if args.student == "none" else get_student_recipe(args.student)
    report = run_pipeline(args.out, data=args.data, limit=args.limit, student=student)
    print(report.read_text())
    print(f"wrote {report}")


# -- reference / bench ------------------------------------------------------------------------
def _reference_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reference", help="run the full reference model over a dataset; store golden outputs")
    p.add_argument("--model", required=True, help="reference model folder")
    p.add_argument(
        "--data", default="shapes:val", help="dataset spec (shapes:val, refcoco:…, coco_panoptic:…)"
    )
    p.add_argument("--limit", type=int, help="at most this many images")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    p.add_argument("--traced", type=int, default=2, help="samples that also store every graph call's tensors")
    _slot_arguments(p)
    p.add_argument(
        "--out", required=True, help="golden folder (replaced when complete; a killed run resumes)"
    )
    p.set_defaults(run=_reference)


def _reference(args: argparse.Namespace) -> None:
    from xsam_edge.bench.reference import make_reference

    golden = make_reference(
        args.model,
        args.data,
        args.out,
        limit=args.limit,
        device=args.device,
        traced=args.traced,
        slots=_slots(args),
    )
    print(f"wrote {golden}")


def _bench_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="latency, memory and accuracy of a bundle against a golden reference")
    p.add_argument("--bundle", help="bundle folder")
    p.add_argument("--backend", help="the bundle's backend(s), comma-separated (default: all it has)")
    p.add_argument("--golden", help="golden folder from xsam-edge reference")
    p.add_argument("--device-profile", default="x86-cpu", help="device profile (see --list-profiles)")
    p.add_argument("--repeats", type=int, default=1, help="timed passes over the golden samples")
    p.add_argument("--warmup", type=int, default=1, help="untimed samples first")
    p.add_argument("--limit", type=int, help="at most this many golden samples")
    p.add_argument("--cross-model", action="store_true", help="allow a golden of another model (masks only)")
    p.add_argument("--roofline", action="store_true", help="measure this machine's peaks; graph fractions")
    p.add_argument("--json", help="result JSON (default: <out>/bench.json)")
    p.add_argument("--out", default="outputs/bench", help="folder for bench.json, bench.md and the plots")
    p.add_argument("--list-profiles", action="store_true", help="print the device profiles and exit")
    p.set_defaults(run=_bench)


def _bench(args: argparse.Namespace) -> None:
    from xsam_edge.bench.harness import BenchOptions, bench
    from xsam_edge.bench.profiles import PROFILES, get_profile
    from xsam_edge.bench.report import graph_table, markdown_table, write_plots
    from xsam_edge.spec.bundle import load_bundle
    from xsam_edge.spec.tokenizer import atomic_write_text

    if args.list_profiles:
        for profile in PROFILES.values():
            print(f"{profile.name:<14} {', '.join(profile.backends):<22} {profile.description}")
            print(f"{'':<14} install: {profile.install}")
        return
    if not args.bundle or not args.golden:
        raise ValueError("bench needs --bundle and --golden (or --list-profiles)")
    profile = get_profile(args.device_profile)
    manifest = load_bundle(args.bundle)
    backends = (
        args.backend.split(",") if args.backend else [b for b in manifest.backends if b in profile.backends]
    )
    if not backends:
        raise ValueError(
            f"the bundle's backends ({', '.join(manifest.backends)}) are none of profile "
            f"{profile.name!r}'s ({', '.join(profile.backends)})"
        )
    options = BenchOptions(
        repeats=args.repeats,
        warmup=args.warmup,
        limit=args.limit,
        cross_model=args.cross_model,
        roofline=args.roofline,
    )
    results = [bench(args.bundle, b.strip(), args.golden, profile, options) for b in backends]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    document = {"results": results}
    json_path = Path(args.json) if args.json else out / "bench.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json_path, json.dumps(document, indent=2) + "\n")
    markdown = "\n\n".join(
        [markdown_table(results)]
        + [f"### {r['label']} / {r['backend']}\n\n{graph_table(r)}" for r in results]
    )
    atomic_write_text(out / "bench.md", markdown + "\n")
    plots = write_plots(results, out)
    print(markdown)
    print(f"wrote {json_path}, {out / 'bench.md'}" + "".join(f", {p}" for p in plots))


# -- distill / prune ----------------------------------------------------------------------------
def _teacher_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--teacher", help="teacher model folder")
    src.add_argument(
        "--teacher-preset", help="teacher preset: shapes-teacher is the cached trained one; others are random"
    )


def _distill_parser(sub: argparse._SubParsersAction) -> None:
    from xsam_edge.distill.config import LOSS_NAMES, DistillConfig

    default = DistillConfig()
    p = sub.add_parser(
        "distill", help="distil a teacher into a student preset (resumable; run under torchrun for DDP)"
    )
    _teacher_arguments(p)
    p.add_argument("--student-preset", required=True, help="student preset (e.g. shapes-student)")
    p.add_argument("--student-init", help="start from this model folder (must be of the student preset)")
    p.add_argument("--student-tokenizer", help="local HF tokenizer folder when the student's differs")
    p.add_argument("--data", default="shapes:train", help="training data spec (see xsam-edge eval --data)")
    p.add_argument("--out", required=True, help="run folder: checkpoint/, log.jsonl, model/")
    p.add_argument("--steps", type=int, default=default.steps)
    p.add_argument("--batch-size", type=int, default=default.batch_size, help="global batch over all ranks")
    p.add_argument("--lr", type=float, default=default.lr)
    p.add_argument("--losses", default="all", help=f"comma-separated, from {','.join(LOSS_NAMES)} (or all)")
    p.add_argument("--weights", default="", help="loss weights, e.g. feature=2,output=0.5,gt_mask=1")
    p.add_argument("--temperature", type=float, default=default.temperature)
    p.add_argument(
        "--hard-prompt-gamma",
        type=float,
        default=default.hard_prompt_gamma,
        help="0: no hard-prompt upweighting",
    )
    p.add_argument(
        "--gate-output-by-labels",
        action="store_true",
        help="copy teacher answers in proportion to how right the labels say they are (a weak teacher)",
    )
    p.add_argument(
        "--hard-teacher-masks",
        action="store_true",
        help="the output loss copies the teacher's masks thresholded, not its soft probabilities (EdgeSAM)",
    )
    p.add_argument(
        "--output-min-foreground",
        type=float,
        default=default.output_min_foreground,
        help="the output loss copies only teacher queries at least this sure of a foreground class (0: all)",
    )
    p.add_argument(
        "--output-temperature",
        type=float,
        default=None,
        help="class KD temperature of the output loss (default: --temperature)",
    )
    p.add_argument(
        "--output-points",
        type=int,
        default=default.output_points,
        help="compare the output loss's masks at this many random points, each model's own grid read "
        "bilinearly (0: on the student's grid)",
    )
    p.add_argument(
        "--output-point-importance",
        type=float,
        default=default.output_point_importance,
        help="with --output-points: read matched masks' losses at points of their own, this share where the "
        "student is least sure (Mask2Former/EdgeSAM: 0.75), the rest uniform (0: at the shared points)",
    )
    p.add_argument(
        "--label-fraction",
        type=float,
        default=default.label_fraction,
        help="share of the training images whose labels are used (the rest: teacher only), e.g. 0.1",
    )
    p.add_argument("--decoder-adapter", action="store_true", help="allow another decoder width via adapters")
    p.add_argument(
        "--no-init-from-teacher", action="store_true", help="do not copy the pruned teacher decoder"
    )
    p.add_argument("--checkpoint-every", type=int, default=default.checkpoint_every)
    p.add_argument("--log-every", type=int, default=default.log_every, help="steps between log.jsonl lines")
    p.add_argument("--val-data", help="evaluate the final student on this data (logged)")
    p.add_argument("--seed", type=int, default=default.seed)
    p.add_argument("--device", default=default.device, choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--precision",
        default=default.precision,
        choices=["auto", "fp32", "bf16"],
        help="autocast: auto is bf16 on CUDA and fp32 on CPU",
    )
    p.add_argument(
        "--sharding",
        default=default.sharding,
        choices=["ddp", "fsdp2"],
        help="under torchrun: ddp (a replica per rank) or fsdp2 (parameters and optimizer state sharded)",
    )
    p.add_argument("--stop-after", type=int, help="stop after this many steps (resume later)")
    p.set_defaults(run=_distill)


def _distill(args: argparse.Namespace) -> None:
    from xsam_edge.distill.config import DistillConfig, LossWeights
    from xsam_edge.distill.run import distill_run

    config = DistillConfig(
        losses=DistillConfig.parse_losses(args.losses),
        weights=LossWeights.parse(args.weights),
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        temperature=args.temperature,
        hard_prompt_gamma=args.hard_prompt_gamma,
        gate_output_by_labels=args.gate_output_by_labels,
        hard_teacher_masks=args.hard_teacher_masks,
        output_min_foreground=args.output_min_foreground,
        output_temperature=args.output_temperature,
        output_points=args.output_points,
        output_point_importance=args.output_point_importance,
        label_fraction=args.label_fraction,
        decoder_adapter=args.decoder_adapter,
        init_from_teacher=not args.no_init_from_teacher,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
        seed=args.seed,
        device=args.device,
        sharding=args.sharding,
        precision=args.precision,
    )
    try:
        model_dir = distill_run(
            out=args.out,
            student_preset=args.student_preset,
            config=config,
            data=args.data,
            teacher_dir=args.teacher,
            teacher_preset=args.teacher_preset,
            student_init=args.student_init,
            student_tokenizer_dir=args.student_tokenizer,
            val_data=args.val_data,
            stop_after=args.stop_after,
        )
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():  # under torchrun: leave NCCL/gloo cleanly
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        done = (model_dir / "config.json").is_file()
        print(f"wrote {model_dir}" if done else f"stopped; resume with the same command ({args.out})")


def _prune_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="prune a teacher's decoder (queries, layers, FFN) into a model folder")
    _teacher_arguments(p)
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--like", help="take the decoder sizes of this preset (e.g. shapes-student)")
    p.add_argument("--queries", type=int, help="decoder queries to keep (most matched by the teacher)")
    p.add_argument("--decoder-layers", type=int, help="prediction levels (1 + masked-attention layers)")
    p.add_argument("--decoder-ffn", type=int, help="FFN channels per masked-attention layer")
    p.add_argument("--encoder-layers", type=int, help="pixel-decoder deformable encoder layers")
    p.add_argument("--encoder-ffn", type=int, help="FFN channels per pixel-decoder encoder layer")
    p.add_argument("--data", default="shapes:train", help="labelled data that ranks the queries")
    p.add_argument("--rank-examples", type=int, default=64, help="examples used to rank the queries")
    p.set_defaults(run=_prune)


def _prune(args: argparse.Namespace) -> None:
    from xsam_edge.distill.run import prune_run

    folder, usage = prune_run(
        out=args.out,
        teacher_dir=args.teacher,
        teacher_preset=args.teacher_preset,
        like=args.like,
        num_queries=args.queries,
        decoder_layers=args.decoder_layers,
        decoder_ffn_dim=args.decoder_ffn,
        encoder_layers=args.encoder_layers,
        encoder_ffn_dim=args.encoder_ffn,
        data=args.data,
        rank_examples=args.rank_examples,
    )
    print(f"query usage (Hungarian matches per query): {usage.tolist()}")
    print(f"wrote {folder}")


# -- entry -------------------------------------------------------------------------------------
VERBS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _info_parser,
    _segment_parser,
    _import_parser,
    _train_parser,
    _eval_parser,
    _cache_parser,
    _pipeline_parser,
    _export_parser,
    _quantize_parser,
    _run_parser,
    _reference_parser,
    _bench_parser,
    _distill_parser,
    _prune_parser,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xsam-edge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    for add in VERBS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb; user errors become one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # torchao (pulled in by executorch) warns that its CUDA-only kernels do not load on CPU: harmless noise
    logging.getLogger("torchao").setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)  # torchao's enum registration
    logging.getLogger("nncf").setLevel(logging.WARNING)  # NNCF prints a bit-width table per graph at INFO
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # read by transformers when (and only if) a verb imports it: `run` stays free of torch
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, IsADirectoryError, PermissionError, RuntimeError) as err:
        if os.environ.get("XSAM_EDGE_DEBUG"):
            raise
        print(f"xsam-edge {args.verb}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head`
        sys.stderr.close()
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
