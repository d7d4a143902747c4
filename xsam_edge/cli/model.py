"""Verbs on a PyTorch model: ``info``, ``segment``, ``import-checkpoint``, ``train``, ``eval``, ``cache``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from .common import build_request, request_arguments, write_result


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a count of tokens, 0 or more")
    return value


def add_parsers(sub: argparse._SubParsersAction) -> None:
    for add in (_info_parser, _segment_parser, _import_parser, _train_parser, _eval_parser, _cache_parser):
        add(sub)


def _info_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="parameters and MACs per component of a preset")
    p.add_argument("--preset", required=True, help="preset name (e.g. x-sam-phi3, tiny)")
    p.add_argument("--text-tokens", type=_non_negative, default=48, help="text tokens of the referring query")
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
    request_arguments(p)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_segment)


def _segment(args: argparse.Namespace) -> None:
    from xsam_edge.spec.image_io import load_image

    image = load_image(args.image)
    request = build_request(args, image)  # validate before importing or loading any model
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
    write_result(args, image, request, predictor.segment(request))


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
    p.add_argument(
        "--encoder-lr-scale",
        type=float,
        default=default.encoder_lr_scale,
        help="image encoders' lr as a fraction of --lr (0.1 upstream, for pretrained encoders)",
    )
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
        encoder_lr_scale=args.encoder_lr_scale,
    )
    print(f"wrote {model_dir}")


def _eval_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="every task's metric on a dataset next to trivial baselines; --compare: is a drop real?"
    )
    p.add_argument("--model", required=True, help="model folder")
    p.add_argument("--data", default="shapes:val", help="shapes:<split> or a real dataset spec")
    p.add_argument("--limit", type=int, help="at most this many images")
    p.add_argument("--tasks", help="only these tasks, comma-separated (default: every task in the data)")
    p.add_argument("--json", action="store_true", help="print JSON: {tasks, baselines[, comparison]}")
    p.add_argument("--region-sampler", choices=["random", "grid"], help="override the model's region sampler")
    p.add_argument(
        "--compare",
        metavar="MODEL_OR_BUNDLE",
        help="a second model folder, or a bundle (quantized, distilled …): paired bootstrap over the images, "
        "per task, of its score minus --model's, with the interval the test split alone explains",
    )
    p.add_argument("--backend", help="with a --compare bundle: the backend to run it on (default: its first)")
    p.add_argument("--resamples", type=int, default=200, help="bootstrap draws of the images")
    p.add_argument("--level", type=float, default=0.95, help="central interval of the difference")
    p.set_defaults(run=_eval)


def _eval(args: argparse.Namespace) -> None:
    from xsam_edge.data.registry import load_dataset
    from xsam_edge.metrics.evaluate import eval_table, evaluate_model, predict_all
    from xsam_edge.model.predictor import XSamPredictor

    if not 0 < args.level < 1 or args.resamples < 1:
        raise ValueError("--level must be in (0, 1) and --resamples at least 1")
    other = _comparison_predictor(args.compare, args.backend) if args.compare else None
    predictor = XSamPredictor.from_pretrained(args.model, region_sampler=args.region_sampler)
    examples = load_dataset(args.data, limit=args.limit)
    if args.tasks:
        wanted = {_task(name.strip()) for name in args.tasks.split(",")}
        examples = [e for e in examples if e.task in wanted]
        if not examples:
            raise ValueError(f"{args.data} has no example of {args.tasks}")
    if other is None:
        report = evaluate_model(predictor, examples)
        print(json.dumps(report, indent=2) if args.json else eval_table(report))
        return
    from xsam_edge.metrics.significance import bootstrap, compare, comparison_table
    from xsam_edge.metrics.tasks import evaluate, evaluate_baselines

    ours, theirs = predict_all(predictor, examples), predict_all(other, examples)
    report = {
        "tasks": evaluate(list(zip(examples, ours, strict=True))),
        "baselines": evaluate_baselines(list(examples)),
        "num_examples": len(examples),
    }
    boot = bootstrap(examples, {"model": ours, "compare": theirs}, args.resamples)
    diffs = compare(boot, "model", "compare", args.level)
    if args.json:
        report["comparison"] = {
            "compare": args.compare,
            "resamples": args.resamples,
            "level": args.level,
            "tasks": {task: dataclasses.asdict(d) | {"verdict": d.verdict} for task, d in diffs.items()},
        }
        print(json.dumps(report, indent=2))
        return
    print(eval_table(report))
    print(f"\n{args.compare} against {args.model} on {args.data}, {args.resamples} draws of the images:\n")
    print(comparison_table(diffs, "model", "compare", args.level))


def _task(name: str):
    from xsam_edge.spec.types import Task

    try:
        return Task(name)
    except ValueError:
        raise ValueError(f"unknown task {name!r}; tasks: {', '.join(t.value for t in Task)}") from None


def _comparison_predictor(path: str, backend: str | None):
    """A model folder's predictor, or a bundle's session on ``backend`` (its first backend by default)."""
    from pathlib import Path

    from xsam_edge.spec.bundle import MANIFEST_FILE, load_bundle

    if (Path(path) / MANIFEST_FILE).is_file():
        from xsam_edge.runtime.session import EdgeSession

        manifest = load_bundle(path)
        return EdgeSession(manifest, backend or manifest.backends[0])
    if backend:
        raise ValueError("--backend applies to a --compare bundle; this is a model folder")
    from xsam_edge.model.predictor import XSamPredictor

    return XSamPredictor.from_pretrained(path)


def _cache_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="locate or clear the cached embedded teacher")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--path", action="store_true", help="print the cache folder")
    group.add_argument("--clear", action="store_true", help="delete the cache")
    p.set_defaults(run=_cache)


def _cache(args: argparse.Namespace) -> None:
    from xsam_edge.training.teacher import cache_root, clear_cache

    print(cache_root() if args.path else f"removed {clear_cache()}")
