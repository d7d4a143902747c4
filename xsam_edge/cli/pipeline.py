"""``xsam-edge pipeline``: the main job on the embedded default."""

from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction) -> None:
    _pipeline_parser(sub)


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
    p.add_argument(
        "--retrain-teacher",
        action="store_true",
        help="train the teacher afresh (cached; 30-90 min on 2 cores) instead of using the shipped one",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(run=_pipeline)


def _pipeline(args: argparse.Namespace) -> None:
    from xsam_edge.distill.config import get_student_recipe
    from xsam_edge.pipeline import run_pipeline

    student = None if args.student == "none" else get_student_recipe(args.student)
    report = run_pipeline(
        args.out,
        data=args.data,
        limit=args.limit,
        student=student,
        retrain_teacher=args.retrain_teacher,
        progress=not args.quiet,
    )
    print(report.read_text())
    print(f"wrote {report}")
