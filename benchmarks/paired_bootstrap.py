"""Which gaps between models are real: a paired bootstrap over test images, per task, for pairs of models.

Run: ``python -m xsam_edge.benchmarks.paired_bootstrap --model NAME=MODEL_DIR [--model ...] --pair A:B [--pair
...] [--data shapes:test] [--resamples 200] [--threads 1] [--out PATH]``. ``NAME=teacher`` stands for the
cached embedded teacher (``ensure_teacher``). Each model answers every example once; each pair is then
rescored on ``--resamples`` draws of the test images (``xsam_edge.significance``). The results file gets one
entry per pair: per task, A, B, B − A with its 95 % interval, the share of draws where B is ahead, and B as a
share of A with its interval. Why: ablation rows a point apart, on 256 images, can be the split's luck.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
from pathlib import Path

from xsam_edge.tokenizer import atomic_write_text


def parse_models(items: list[str]) -> dict[str, str]:
    models = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--model {item!r}: write NAME=MODEL_DIR, e.g. enc=outputs/run/model")
        models[name] = path
    return models


def parse_pairs(items: list[str], models: dict[str, str]) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        a, sep, b = item.partition(":")
        if not sep or a not in models or b not in models:
            names = ", ".join(sorted(models))
            raise SystemExit(f"--pair {item!r}: write A:B with A and B among the --model names ({names})")
        pairs.append((a, b))
    return pairs


def table(entry: dict) -> str:
    """Markdown: one row per task for one pair."""
    a, b = entry["a"], entry["b"]
    rows = [
        f"| task | {a} | {b} | {b} − {a} (95 % interval) | draws with {b} ahead "
        f"| {b} as % of {a} (95 % interval) |",
        "|---|---|---|---|---|---|",
    ]
    for task, d in entry["tasks"].items():
        share = 100 * d["b"] / d["a"] if d["a"] else float("nan")
        rows.append(
            f"| {task} | {d['a']:.2f} | {d['b']:.2f} "
            f"| {d['delta']:+.2f} ({d['low']:+.2f} … {d['high']:+.2f}) | {100 * d['b_ahead']:.0f} % "
            f"| {share:.0f} % ({d['share_low']:.0f} … {d['share_high']:.0f}) |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="NAME=MODEL_DIR (or NAME=teacher)")
    parser.add_argument("--pair", action="append", required=True, help="A:B, two --model names")
    parser.add_argument("--data", default="shapes:test")
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="results JSON (default results/paired-bootstrap-<date>.json)")
    args = parser.parse_args()
    models = parse_models(args.model)
    pairs = parse_pairs(args.pair, models)  # every spelling checked before minutes of inference
    missing = [
        f"{name}={path}" for name, path in models.items() if path != "teacher" and not Path(path).is_dir()
    ]
    if missing:
        raise SystemExit(
            f"no model folder at {', '.join(missing)}: give a distil or train run's model/ folder"
        )

    import torch

    from xsam_edge.data.registry import load_dataset
    from xsam_edge.evaluate import predict_all
    from xsam_edge.inference import XSamPredictor
    from xsam_edge.significance import bootstrap, compare
    from xsam_edge.teacher import ensure_teacher

    torch.set_num_threads(args.threads)
    examples = load_dataset(args.data)
    needed = sorted({name for pair in pairs for name in pair})
    paths = {name: str(ensure_teacher()) if models[name] == "teacher" else models[name] for name in needed}
    results = {}
    for name in needed:
        print(f"predicting {name} ({paths[name]}) on {args.data}", flush=True)
        results[name] = predict_all(XSamPredictor.from_pretrained(paths[name]), examples, progress=False)
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    out = Path(args.out or Path(__file__).parent / "results" / f"paired-bootstrap-{date}.json")
    report = {"date": date, "data": args.data, "resamples": args.resamples, "seed": args.seed, "pairs": []}
    boot = bootstrap(examples, results, args.resamples, seed=args.seed)  # one set of draws for all pairs
    for a, b in pairs:
        diffs = compare(boot, a, b)
        entry = {
            "a": a,
            "b": b,
            "a_model": paths[a],
            "b_model": paths[b],
            "tasks": {
                task: dataclasses.asdict(d) | {"ahead": {"A": a, "B": b}.get(d.verdict, "tie")}
                for task, d in diffs.items()
            },
        }
        report["pairs"].append(entry)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(report, indent=2) + "\n")
        print(table(entry), flush=True)


if __name__ == "__main__":
    main()
