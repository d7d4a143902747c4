"""Verbs on bundles: ``export``, ``quantize`` and ``run`` (every backend listed from the registry)."""

from __future__ import annotations

import argparse
from pathlib import Path

from xsam_edge.backends import BACKENDS, backend_names, get_backend, runnable_backends

from .common import build_request, request_arguments, slot_arguments, slots_from, write_result


def add_parsers(sub: argparse._SubParsersAction) -> None:
    for add in (_export_parser, _quantize_parser, _run_parser, _sign_parser):
        add(sub)


def _export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to edge backends as one checksummed bundle")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="model folder")
    src.add_argument("--preset", help="preset with RANDOM weights (export smoke runs)")
    p.add_argument("--tokenizer", help="local HF tokenizer folder, for --preset other than tiny")
    p.add_argument(
        "--backend",
        default="all",
        help=f"comma-separated backends, or all: {', '.join(backend_names())}",
    )
    p.add_argument("--out", required=True, help="bundle folder (replaced atomically)")
    p.add_argument(
        "--et-partitioner",
        default="xnnpack",
        choices=("xnnpack", "coreml", "none"),
        help="with executorch: its delegate, xnnpack (CPU, everywhere), coreml (Apple devices only) or "
        "none (portable kernels)",
    )
    slot_arguments(p)
    p.set_defaults(run=_export)


def _export(args: argparse.Namespace) -> None:
    from xsam_edge.export.placement import summarize_exports
    from xsam_edge.export.to_bundle import export_bundle
    from xsam_edge.model.checkpoint import read_lineage
    from xsam_edge.model.predictor import load_predictor

    backends = backend_names() if args.backend == "all" else tuple(b.strip() for b in args.backend.split(","))
    for name in backends:
        get_backend(name)  # an unknown name fails here, before the model loads
    options = {"executorch": {"partitioner": args.et_partitioner}} if "executorch" in backends else {}
    slots = slots_from(args)
    predictor = load_predictor(model_dir=args.model, preset=args.preset, tokenizer_dir=args.tokenizer)
    lineage = read_lineage(args.model) if args.model else None
    bundle, graphs = export_bundle(
        predictor.model,
        predictor.tokenizer,
        args.out,
        backends=backends,
        slots=slots,
        lineage=lineage,
        options=options,
    )
    for g in graphs:
        print(
            f"{g.backend:<10} {g.name:<18} {g.export_seconds:6.1f} s  "
            + (f"min PSNR {g.min_psnr_db:7.1f} dB  " if g.parity else "parity n/a (needs an Apple device)  ")
            + g.route
        )
    summary = summarize_exports(graphs)
    if summary:
        print(summary)
    print(f"wrote {bundle}")


def _run_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="answer one request from a bundle on an edge runtime")
    p.add_argument("--bundle", required=True)
    p.add_argument(
        "--backend",
        required=True,
        help=f"one of the bundle's backends (runtimes for this OS: {', '.join(runnable_backends())})",
    )
    p.add_argument("--public-key", help="refuse the bundle unless it is signed by this Ed25519 key (PEM)")
    request_arguments(p)
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> None:
    from xsam_edge.runtime.session import EdgeSession
    from xsam_edge.spec.image_io import load_image

    image = load_image(args.image)
    request = build_request(args, image)
    session = EdgeSession(args.bundle, args.backend, public_key=args.public_key)
    write_result(args, image, request, session.segment(request))


def _quantize_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="quantize a model by a recipe into a bundle (optionally to a budget)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="model folder (default: the embedded teacher, trained on first use)")
    src.add_argument("--preset", help="preset with RANDOM weights (size and smoke runs only)")
    p.add_argument("--tokenizer", help="local HF tokenizer folder, for --preset other than tiny")
    p.add_argument("--recipe", help="a named recipe or a recipe .toml file (see --list-recipes)")
    p.add_argument("--list-recipes", action="store_true", help="print the named recipes and exit")
    p.add_argument("--out", help="bundle folder (replaced atomically)")
    p.add_argument("--work", help="intermediates (default: .<out>.work beside the bundle; reused on resume)")
    p.add_argument(
        "--max-drop",
        type=float,
        help="accuracy budget in points of every task's metric: keep the most sensitive layers, then "
        "graphs, float until it holds (evaluated on --eval-data; Core ML off macOS by replaying its weights)",
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
    slot_arguments(p)
    own = p.add_argument_group("any model (instead of X-SAM): an .onnx file or a Hugging Face model folder")
    own.add_argument("--model-file", help="the model to quantize (writes its quantized file(s) into --out)")
    own.add_argument("--backend", help="onnx, openvino, executorch or coreml (with --model-file)")
    own.add_argument(
        "--scheme", help='a scheme name or its TOML table as JSON: \'{"scheme": "w4", "ratio": 0.8}\''
    )
    own.add_argument(
        "--calibration", help="calibration samples: .npz, one array per input, samples on axis 0"
    )
    own.add_argument("--holdout", help="held-out samples (.npz); default: 20 %% of --calibration held back")
    own.add_argument(
        "--target-cosine", type=float, help="worst held-out sample's cosine to reach by fallback"
    )
    own.add_argument("--keep-float", action="append", default=[], help="layer name pattern kept float")
    own.add_argument(
        "--output",
        action="append",
        default=[],
        help="an ONNX output to keep (repeat; default: all): the graph is cut to what you deploy",
    )
    p.set_defaults(run=_quantize)


def _quantize_file(args: argparse.Namespace) -> int:
    """``--model-file``: ``quantize_model`` on a user's file, the report, exit 1 when the target is missed."""
    import json

    from xsam_edge.quantization.any_model import load_samples, quantize_model
    from xsam_edge.quantization.report import format_reports

    if not (args.backend and args.scheme and args.out):
        raise ValueError("--model-file needs --backend, --scheme and --out")
    scheme = json.loads(args.scheme) if args.scheme.lstrip().startswith("{") else args.scheme
    result = quantize_model(
        args.model_file,
        args.backend,
        scheme,
        args.out,
        name=Path(args.model_file).stem or "model",
        calibration=load_samples(args.calibration) if args.calibration else (),
        holdout=load_samples(args.holdout) if args.holdout else (),
        keep_float=args.keep_float,
        outputs=args.output,
        target_cosine=args.target_cosine,
    )
    print(format_reports([result.report]))
    print(f"wrote {', '.join(str(f) for f in result.files)}")
    if result.target_met is False:
        print(
            f"worst held-out cosine {result.report.worst_cosine:.4f} MISSES the target {args.target_cosine}"
        )
        return 1
    return 0


def _quantize(args: argparse.Namespace) -> int | None:
    from xsam_edge.quantization.recipes import RECIPES, load_recipe

    if args.model_file:
        return _quantize_file(args)
    if args.list_recipes:
        for name, recipe in RECIPES.items():
            print(f"{name:<17}{recipe.backend:<11}{recipe.description}")
        print("\nschemes per backend (a recipe .toml maps graphs to these):")
        for backend in BACKENDS.values():
            print(f"{backend.name:<17}{', '.join(backend.schemes)}")
        return
    if not args.recipe or not args.out:
        raise ValueError("give --recipe NAME|FILE.toml and --out BUNDLE (or --list-recipes)")
    recipe = load_recipe(args.recipe)  # a bad recipe fails here, before the model loads
    if args.max_drop is not None:
        from xsam_edge.data.registry import parse_spec

        parse_spec(args.eval_data)
    from xsam_edge.model.predictor import load_predictor
    from xsam_edge.quantization.report import format_reports

    if args.model is None and args.preset is None:
        from xsam_edge.training.teacher import ensure_teacher

        args.model = str(ensure_teacher())
    predictor = load_predictor(model_dir=args.model, preset=args.preset, tokenizer_dir=args.tokenizer)
    slots = slots_from(args)
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
    if fit.score.runner:
        print(f"scored by {fit.score.runner}")
    print(f"every step of the search: {fit.folder / 'fit.json'}")


def _sign_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sign", help="sign a bundle's manifest (Ed25519), or make a key pair")
    p.add_argument("--bundle", help="the bundle to sign (checked first)")
    p.add_argument("--key", help="the private key (PEM) to sign with")
    p.add_argument("--new-key", metavar="DIR", help="write signing-key.pem and signing-key.pub.pem into DIR")
    p.set_defaults(run=_sign)


def _sign(args: argparse.Namespace) -> None:
    from xsam_edge.spec.bundle import load_bundle
    from xsam_edge.spec.signing import new_key_pair, sign_bundle

    if args.new_key:
        private, public = new_key_pair(args.new_key)
        print(f"wrote {private} (keep it secret) and {public} (ship it with the app)")
        return
    if not args.bundle or not args.key:
        raise ValueError("give --bundle B --key PRIVATE.pem, or --new-key DIR")
    load_bundle(args.bundle)  # never sign a bundle that does not check out
    print(f"wrote {sign_bundle(args.bundle, args.key)}")
