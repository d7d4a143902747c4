"""Arguments and helpers more than one verb shares: a request from the command line, fixed slot sizes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the export stack is imported lazily, by the verbs that need it
    from xsam_edge.export.graphs import SlotConfig


def request_arguments(p: argparse.ArgumentParser) -> None:
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


def build_request(args: argparse.Namespace, image) -> object:
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


def write_result(args: argparse.Namespace, image, request, result) -> None:
    from xsam_edge.files import atomic_write_text
    from xsam_edge.spec.image_io import save_overlay

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


def slot_arguments(p: argparse.ArgumentParser) -> None:
    """The fixed slot sizes of the edge graphs (a golden reference must use its bundle's)."""
    p.add_argument("--max-regions", type=int, default=8, help="visual-prompt slots of the region graph")
    p.add_argument(
        "--max-conditions", type=int, default=16, help="category/phrase slots of the segment graph"
    )
    p.add_argument("--prefill-len", type=int, default=64, help="tokens per LLM prefill call")
    p.add_argument(
        "--max-seq",
        type=int,
        help="KV-cache length (default: image tokens + --text-budget, whole prefill chunks)",
    )
    p.add_argument(
        "--text-budget", type=int, default=1024, help="tokens a request may use besides the image tokens"
    )


def slots_from(args: argparse.Namespace) -> SlotConfig:
    from xsam_edge.export.graphs import SlotConfig

    return SlotConfig(
        max_regions=args.max_regions,
        max_conditions=args.max_conditions,
        prefill_len=args.prefill_len,
        max_seq=args.max_seq,
        text_budget=args.text_budget,
    )
