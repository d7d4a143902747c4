"""``xsam-edge reference`` and ``xsam-edge bench``: golden references and device benches."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import slot_arguments, slots_from


def add_parsers(sub: argparse._SubParsersAction) -> None:
    _reference_parser(sub)
    _bench_parser(sub)


def _reference_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reference", help="run the full reference model over a dataset; store golden outputs")
    p.add_argument("--model", required=True, help="reference model folder")
    p.add_argument(
        "--data", default="shapes:val", help="dataset spec (shapes:val, refcoco:…, coco_panoptic:…)"
    )
    p.add_argument("--limit", type=int, help="at most this many images")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    p.add_argument("--traced", type=int, default=2, help="samples that also store every graph call's tensors")
    slot_arguments(p)
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
        slots=slots_from(args),
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
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="JSON",
        help="add results measured elsewhere (xsam_runner bench on a phone) to the report; repeatable",
    )
    p.set_defaults(run=_bench)


def _bench(args: argparse.Namespace) -> None:
    from xsam_edge.bench.imported import load_bench_results
    from xsam_edge.bench.profiles import PROFILES
    from xsam_edge.bench.report import graph_table, markdown_table, write_plots
    from xsam_edge.files import atomic_write_text

    if args.list_profiles:
        for profile in PROFILES.values():
            print(f"{profile.name:<14} {', '.join(profile.bench_backends()):<22} {profile.description}")
            print(f"{'':<14} install: {profile.install}")
        return
    imported = [r for path in args.imports for r in load_bench_results(path)]
    if not (args.bundle and args.golden) and not imported:
        raise ValueError("bench needs --bundle and --golden, or --import JSON (or --list-profiles)")
    results = (_bench_here(args) if args.bundle or args.golden else []) + imported
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


def _bench_here(args: argparse.Namespace) -> list[dict]:
    """Bench ``--bundle`` against ``--golden`` on this machine, one result per backend."""
    from xsam_edge.bench.harness import BenchOptions, bench
    from xsam_edge.bench.profiles import get_profile
    from xsam_edge.spec.bundle import load_bundle

    if not args.bundle or not args.golden:
        raise ValueError("bench needs both --bundle and --golden to measure here")
    profile = get_profile(args.device_profile)
    manifest = load_bundle(args.bundle)
    backends = (
        args.backend.split(",")
        if args.backend
        else [b for b in manifest.backends if b in profile.bench_backends()]
    )
    if not backends:
        raise ValueError(
            f"the bundle's backends ({', '.join(manifest.backends)}) are none of profile "
            f"{profile.name!r}'s ({', '.join(profile.bench_backends())})"
        )
    options = BenchOptions(
        repeats=args.repeats,
        warmup=args.warmup,
        limit=args.limit,
        cross_model=args.cross_model,
        roofline=args.roofline,
    )
    return [bench(args.bundle, b.strip(), args.golden, profile, options) for b in backends]
