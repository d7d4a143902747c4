"""The main job on the embedded default: teacher → evaluation → examples → quantization recipes → report.

Each step writes its output atomically and is skipped when that output exists, so a killed run continues
where it stopped (the teacher's training resumes from its last checkpoint; a finished quantization recipe is
not redone). The stages not wired in yet (student distillation, device benchmarks against golden references)
are listed in the report as not run, never faked.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import logging
import os
import platform
from pathlib import Path

import torch

from xsam_edge.data.registry import load_dataset
from xsam_edge.evaluate import eval_table, evaluate_model
from xsam_edge.image_io import load_image, save_overlay
from xsam_edge.inference import XSamPredictor
from xsam_edge.teacher import TeacherRecipe, ensure_teacher
from xsam_edge.tokenizer import atomic_write_text
from xsam_edge.types import Box, Point, SegmentationRequest, Task

log = logging.getLogger(__name__)

NOT_BUILT = (
    "student distillation (built as `xsam-edge distill`; not wired into the pipeline yet)",
    "per-device benchmarks against golden references (not built yet)",
)
# the named recipes the main job runs: every one whose runtime runs here, then the Core ML ones (bundle,
# sizes and handler reports; their metrics need macOS)
PIPELINE_RECIPES = ("intel-openvino", "jetson-trt", "android-xnnpack", "apple-gpu", "apple-ane")
EXPORT_STACK = ("onnxruntime", "openvino", "nncf", "executorch", "coremltools")  # the `export` extra
EXAMPLE_IMAGE = Path(__file__).parent / "assets" / "example.png"


def _example_requests(image) -> dict[str, SegmentationRequest]:
    return {
        "referring": SegmentationRequest(image, Task.REFERRING, text="the red circle"),
        "panoptic": SegmentationRequest(
            image,
            Task.PANOPTIC,
            categories=["circle", "square", "triangle", "sky", "grass", "sand", "water", "wall"],
        ),
        "interactive": SegmentationRequest(
            image, Task.INTERACTIVE, prompts=[Point(215, 85), Box(195, 145, 305, 222)]
        ),
    }


def run_pipeline(
    out_dir: str | os.PathLike = "outputs/pipeline",
    data: str = "shapes:val",
    limit: int | None = None,
    teacher: TeacherRecipe | None = None,
    recipes: tuple[str, ...] = PIPELINE_RECIPES,
    quant_limit: int | None = 16,
) -> Path:
    """Run every built stage and write ``report.md`` + ``report.json`` into ``out_dir``.

    Args:
        out_dir (str | os.PathLike): results folder.
        data (str): evaluation data.
        limit (int | None): at most this many images of ``data``.
        teacher (TeacherRecipe | None): how the cached teacher is trained (default recipe if ``None``).
        recipes (tuple[str, ...]): named quantization recipes to run (each: quantize, export, evaluate
            float and quantized bundles on ``data``).
        quant_limit (int | None): at most this many images of ``data`` for each recipe's evaluation.

    Returns:
        Path: the report (Markdown).
    """
    teacher = teacher or TeacherRecipe()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = ensure_teacher(teacher)
    predictor = XSamPredictor.from_pretrained(model_dir)

    eval_path = out / "teacher_eval.json"
    if eval_path.is_file():
        report = json.loads(eval_path.read_text())
    else:
        report = evaluate_model(predictor, load_dataset(data, limit=limit))
        report["data"] = data
        atomic_write_text(eval_path, json.dumps(report, indent=2) + "\n")

    image = load_image(EXAMPLE_IMAGE)
    examples = {}
    for name, request in _example_requests(image).items():
        path = out / f"example_{name}.png"
        result = predictor.segment(request)
        save_overlay(path, image, result)
        examples[name] = {"file": path.name, **result.to_json()}

    missing = [m for m in EXPORT_STACK if importlib.util.find_spec(m) is None]
    not_run = list(NOT_BUILT)
    if missing and recipes:
        not_run.append(
            f"quantization recipes (the export stack is not installed: {', '.join(missing)}; "
            "pip install -c constraints.txt -e '.[export]')"
        )
        recipes = ()
    quantization = _quantize_stage(model_dir, out, recipes, data, quant_limit)

    summary = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": _machine(),
        "teacher": {"model": str(model_dir), "recipe": teacher.__dict__},
        "teacher_eval": report,
        "examples": examples,
        "quantization": {"data": data, "limit": quant_limit, "rows": quantization},
        "not_run": not_run,
    }
    atomic_write_text(out / "report.json", json.dumps(summary, indent=2, default=str) + "\n")
    markdown = _markdown(summary)
    atomic_write_text(out / "report.md", markdown)
    return out / "report.md"


def _quantize_stage(
    model_dir: Path, out: Path, recipes: tuple[str, ...], data: str, limit: int | None
) -> list[dict]:
    """Each recipe once: its result row is written when done, so a rerun skips finished recipes."""
    from xsam_edge.benchmarks.quantization import measure

    rows = []
    for name in recipes:
        path = out / "quantization" / f"{name}.json"
        if path.is_file():
            rows.append(json.loads(path.read_text()))
            continue
        log.info("quantizing with %s", name)
        row = measure(name, data, limit, out / "quantization", model_dir=model_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(row, indent=2, default=str) + "\n")
        rows.append(row)
    return rows


def _machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def _markdown(summary: dict) -> str:
    machine = summary["machine"]
    lines = [
        "# xsam_edge pipeline report",
        "",
        f"{summary['date']} · {machine['cpu']}, {machine['cores']} cores, {machine['os']}, "
        f"torch {machine['torch']}",
        "",
        f"## Teacher on {summary['teacher_eval'].get('data', '?')} "
        f"({summary['teacher_eval']['num_examples']} examples)",
        "",
        "Values are percentages; the baselines never see the answer.",
        "",
        "```",
        eval_table(summary["teacher_eval"]),
        "```",
        "",
        "## Examples",
        "",
    ]
    for name, example in summary["examples"].items():
        masks = ", ".join(f"{m['label']} ({m['score']:.2f})" for m in example["masks"]) or "no mask"
        lines.append(f"- {name}: `{example['file']}`: {masks}")
    quant = summary["quantization"]
    if quant["rows"]:
        from xsam_edge.benchmarks.quantization import markdown as quant_table

        limit = f" (first {quant['limit']} images)" if quant["limit"] else ""
        lines += [
            "",
            "## Quantization recipes",
            "",
            "Per recipe: graph bytes of the float and the quantized bundle, milliseconds per request on this "
            "CPU, and each task's primary metric, float → quantized (change), both through `EdgeSession` on "
            "the recipe's backend.",
            "",
            quant_table(
                {
                    "date": summary["date"],
                    "machine": f"{machine['cpu']}, {machine['cores']} cores",
                    "data": quant["data"] + limit,
                    "rows": quant["rows"],
                }
            ),
        ]
    lines += ["", "## Not run", ""] + [f"- {stage}" for stage in summary["not_run"]]
    return "\n".join(lines) + "\n"
