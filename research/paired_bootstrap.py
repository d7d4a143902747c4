"""Which gaps between models are real: a paired bootstrap over test images, per task, for pairs of models.

Run: ``python -m research.paired_bootstrap --model NAME=MODEL_DIR[,MODEL_DIR...] [--model ...]
--pair A:B [--pair ...] [--data shapes:test] [--resamples 200] [--threads 1] [--teacher-steps A,B,C] [--out
PATH]``. ``NAME=teacher`` stands for the cached embedded teacher (``ensure_teacher``; with
``--teacher-steps``, the one trained with those steps per stage, as ``student_variants --teacher-steps``
distils from). Several folders under one name (the same recipe trained at several seeds) make a group scored
as the mean of its models. Each model answers every example once; each pair is then rescored on
``--resamples`` draws of the test images (``metrics.significance``). The results file gets one entry per
pair: per task, A, B, B − A with its 95 % interval, the share of draws where B is ahead, and B as a share of A
with its interval; two groups of the same size also get B − A seed by seed (the i-th folder of each, in the
order given). Why: ablation rows a point apart, on 256 images, can be the split's luck, and one training run
each can be its seed's.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks import RESULTS_DIR
from xsam_edge.files import atomic_write_text
from xsam_edge.training.recipe import TeacherRecipe, parse_teacher_steps

if TYPE_CHECKING:
    from xsam_edge.metrics.significance import Bootstrap


def parse_models(items: list[str]) -> dict[str, list[str]]:
    """``NAME=DIR[,DIR...]`` items → name -> its folders (one per seed); ``teacher`` stands alone."""
    models = {}
    for item in items:
        name, sep, value = item.partition("=")
        paths = [p for p in value.split(",") if p]
        if not sep or not name or not paths or name in models:
            raise SystemExit(
                f"--model {item!r}: write NAME=MODEL_DIR (or NAME=DIR,DIR,... for one recipe's seeds) "
                "with a name used once, e.g. enc=outputs/run/model"
            )
        if "teacher" in paths and len(paths) > 1:
            raise SystemExit(f"--model {item!r}: the teacher is one model; give it a name of its own")
        models[name] = paths
    return models


def check_model_folders(models: dict[str, list[str]]) -> None:
    """Refuse, before any inference, a model folder that is not there (``teacher`` is trained if missing)."""
    missing = [
        f"{name}={path}"
        for name, group in models.items()
        for path in group
        if path != "teacher" and not Path(path).is_dir()
    ]
    if missing:
        raise SystemExit(
            f"no model folder at {', '.join(missing)}: give a distil or train run's model/ folder"
        )


def member_names(name: str, paths: list[str]) -> list[str]:
    """The names a group's models are scored under: the group's own for one model, ``NAME#i`` for seeds."""
    return [name] if len(paths) == 1 else [f"{name}#{i}" for i in range(len(paths))]


def parse_pairs(items: list[str], models: dict[str, list[str]]) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        a, sep, b = item.partition(":")
        if not sep or a not in models or b not in models:
            names = ", ".join(sorted(models))
            raise SystemExit(f"--pair {item!r}: write A:B with A and B among the --model names ({names})")
        pairs.append((a, b))
    return pairs


def table(entry: dict) -> str:
    """Markdown: one row per task for one pair (with a column of seed-by-seed gaps for two seed groups)."""
    a, b = entry["a"], entry["b"]
    per_seed = entry.get("per_seed_delta")
    rows = [
        f"| task | {a} | {b} | {b} − {a} (95 % interval) | draws with {b} ahead "
        f"| {b} as % of {a} (95 % interval) |" + (" seed by seed |" if per_seed else ""),
        "|---|---|---|---|---|---|" + ("---|" if per_seed else ""),
    ]
    for task, d in entry["tasks"].items():
        share = 100 * d["b"] / d["a"] if d["a"] else float("nan")
        rows.append(
            f"| {task} | {d['a']:.2f} | {d['b']:.2f} "
            f"| {d['delta']:+.2f} ({d['low']:+.2f} … {d['high']:+.2f}) | {100 * d['b_ahead']:.0f} % "
            f"| {share:.0f} % ({d['share_low']:.0f} … {d['share_high']:.0f}) |"
            + (f" {', '.join(f'{x:+.2f}' for x in per_seed[task])} |" if per_seed else "")
        )
    return "\n".join(rows)


def pair_entry(
    boot: Bootstrap, groups: dict[str, list[str]], paths: dict[str, list[str]], a: str, b: str
) -> dict:
    """One results-file entry: the pair's per-task comparison, and seed by seed for two seed groups."""
    from xsam_edge.metrics.significance import average, compare

    grouped = average(boot, {a: groups[a], b: groups[b]})
    diffs = compare(grouped, a, b)
    entry = {
        "a": a,
        "b": b,
        "a_model": paths[a][0] if len(paths[a]) == 1 else paths[a],
        "b_model": paths[b][0] if len(paths[b]) == 1 else paths[b],
        "tasks": {
            task: dataclasses.asdict(d) | {"ahead": {"A": a, "B": b}.get(d.verdict, "tie")}
            for task, d in diffs.items()
        },
    }
    if len(groups[a]) == len(groups[b]) > 1:
        seeds = list(zip(groups[a], groups[b], strict=True))
        entry["per_seed_delta"] = {
            task: [round(boot.full[mb][task] - boot.full[ma][task], 2) for ma, mb in seeds] for task in diffs
        }
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="NAME=MODEL_DIR (or NAME=teacher)")
    parser.add_argument("--pair", action="append", required=True, help="A:B, two --model names")
    parser.add_argument("--data", default="shapes:test")
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--teacher-steps",
        type=parse_teacher_steps,
        default=TeacherRecipe().steps,
        help="steps per stage of the teacher NAME=teacher stands for (trained and cached if missing)",
    )
    parser.add_argument("--out", help="results JSON (default results/paired-bootstrap-<date>.json)")
    args = parser.parse_args()
    models = parse_models(args.model)
    pairs = parse_pairs(args.pair, models)  # every spelling checked before minutes of inference
    check_model_folders(models)

    import torch

    from xsam_edge.data.registry import load_dataset
    from xsam_edge.metrics.evaluate import predict_all
    from xsam_edge.metrics.significance import bootstrap
    from xsam_edge.model.predictor import XSamPredictor
    from xsam_edge.training.teacher import ensure_teacher

    torch.set_num_threads(args.threads)
    examples = load_dataset(args.data)
    needed = sorted({name for pair in pairs for name in pair})
    teacher_recipe = dataclasses.replace(TeacherRecipe(), steps=args.teacher_steps)
    paths = {
        name: [str(ensure_teacher(teacher_recipe)) if p == "teacher" else p for p in models[name]]
        for name in needed
    }
    groups = {name: member_names(name, paths[name]) for name in needed}
    results = {}
    for name in needed:
        for member, path in zip(groups[name], paths[name], strict=True):
            print(f"predicting {member} ({path}) on {args.data}", flush=True)
            results[member] = predict_all(XSamPredictor.from_pretrained(path), examples, progress=False)
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    out = Path(args.out or RESULTS_DIR / f"paired-bootstrap-{date}.json")
    report = {"date": date, "data": args.data, "resamples": args.resamples, "seed": args.seed}
    if any(p == "teacher" for name in needed for p in models[name]):
        report["teacher_recipe"] = dataclasses.asdict(teacher_recipe)
    report["pairs"] = []
    boot = bootstrap(examples, results, args.resamples, seed=args.seed)  # one set of draws for all pairs
    for a, b in pairs:
        entry = pair_entry(boot, groups, paths, a, b)
        report["pairs"].append(entry)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(report, indent=2) + "\n")
        print(table(entry), flush=True)


if __name__ == "__main__":
    main()
