"""The main job on the embedded default: teacher, golden reference, student, recipes, bench, report.

Teacher → golden reference → student → quantization recipes → bench of every bundle against the golden
reference → report (Markdown, JSON, plots).

Each step writes its output atomically and is skipped when that output exists, so a killed run continues
where it stopped (the teacher's training and the student's distillation resume from their last checkpoint; a
finished golden sample, quantization recipe or bench row is not redone). Stages that cannot run here (Core ML
prediction needs macOS) are listed in the report as not run, never faked.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.util
import json
import logging
import os
import platform
from pathlib import Path

import torch

from xsam_edge.data.registry import load_dataset
from xsam_edge.distill.config import STUDENT_RECIPES, StudentRecipe
from xsam_edge.files import atomic_write_text
from xsam_edge.metrics.evaluate import eval_table, evaluate_model
from xsam_edge.model.predictor import XSamPredictor
from xsam_edge.progress import Progress, StageTicker, clock
from xsam_edge.spec.image_io import load_image, save_overlay
from xsam_edge.spec.types import Box, Point, SegmentationRequest, Task
from xsam_edge.training.teacher import TeacherRecipe, ensure_teacher, shipped_teacher

log = logging.getLogger(__name__)

NOT_BUILT = (
    "benches on Jetson, Apple Silicon and Android: the device profiles say how (xsam-edge bench "
    "--list-profiles); this run benches this machine's CPU only",
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


# The stages in run order and the seconds each took on 2 idle CPU cores from a fresh clone (2026-12-05,
# docs/results/pipeline.md): the progress display's time left, scaled by how fast this machine goes.
STAGES = (
    ("teacher", 1.0),
    ("examples", 1.0),
    ("teacher eval", 17.0),
    ("golden reference", 8.0),
    ("student", 137.0),
    ("student eval", 18.0),
    ("quantization recipes", 357.0),
    ("bench", 183.0),
)


def run_pipeline(
    out_dir: str | os.PathLike = "outputs/pipeline",
    data: str = "shapes:val",
    limit: int | None = None,
    teacher: TeacherRecipe | None = None,
    recipes: tuple[str, ...] = PIPELINE_RECIPES,
    quant_limit: int | None = 16,
    student: StudentRecipe | None = STUDENT_RECIPES["quick"],
    bench_repeats: int = 2,
    retrain_teacher: bool = False,
    progress: bool = True,
) -> Path:
    """Run every built stage and write ``report.md`` + ``report.json`` into ``out_dir``.

    The report is rewritten after every stage, so the examples and the teacher's table are there within the
    first minutes; stages not run yet are listed as pending.

    Args:
        out_dir (str | os.PathLike): results folder.
        data (str): evaluation data.
        limit (int | None): at most this many images of ``data``.
        teacher (TeacherRecipe | None): the teacher's recipe; ``None``: the teacher the package ships.
        recipes (tuple[str, ...]): named quantization recipes to run (each: quantize, export, evaluate
            float and quantized bundles on ``data``).
        quant_limit (int | None): at most this many images of ``data`` for each recipe's evaluation, the
            golden reference and the benches.
        student (StudentRecipe | None): the student distilled from the teacher and benched (``None``: no
            student). Its run, bundle and bench row are named after the recipe, so another recipe in the
            same ``out_dir`` is distilled anew, never mistaken for the first.
        bench_repeats (int): timed passes of each bench over the golden samples.
        retrain_teacher (bool): train the teacher afresh (cached) instead of using the shipped one.
        progress (bool): print the stage-by-stage progress (stage, step, time left) on stderr.

    Returns:
        Path: the report (Markdown).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stages = Progress(STAGES, enabled=progress)
    summary: dict = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": _machine(),
        "examples": {},
        "not_run": list(NOT_BUILT),
        "stage_seconds": {},
    }

    def report() -> Path:
        summary["stage_seconds"] = {s.name: s.seconds for s in stages.done()}
        summary["pending"] = [name for name, _ in STAGES if name not in summary["stage_seconds"]]
        atomic_write_text(out / "report.json", json.dumps(summary, indent=2, default=str) + "\n")
        atomic_write_text(out / "report.md", _markdown(summary))
        return out / "report.md"

    with stages.stage("teacher"):
        model_dir = ensure_teacher(teacher, retrain=retrain_teacher)
        summary["teacher"] = {"model": str(model_dir), "recipe": _teacher_record(model_dir, teacher)}
    with stages.stage("examples"):
        summary["examples"] = _examples(model_dir, out)
    report()
    with stages.stage("teacher eval") as ticker:
        summary["teacher_eval"] = _evaluate_once(model_dir, out / "teacher_eval.json", data, limit, ticker)
    report()

    missing = [m for m in EXPORT_STACK if importlib.util.find_spec(m) is None]
    if missing:
        summary["not_run"].append(
            f"student export, quantization recipes and benches (the export stack is not installed: "
            f"{', '.join(missing)}; pip install -c constraints.txt -e '.[export]')"
        )
        recipes = ()
    with stages.stage("golden reference"):
        golden = _reference_stage(model_dir, out, data, quant_limit)
        summary["golden"] = str(golden)
    students: dict[str, Path] = {}  # bench label -> model folder
    summary["student"] = None
    if student is None:
        stages.skip("student", "no student asked for (--student none)")
        stages.skip("student eval", "no student")
    else:
        label = f"student-{student.name}"
        with stages.stage("student"):
            students[label] = _student_stage(model_dir, out / label, student)
        with stages.stage("student eval") as ticker:
            evaluation = _evaluate_once(students[label], out / label / "eval.json", data, limit, ticker)
        summary["student"] = {
            "recipe": dataclasses.asdict(student),
            "model": str(students[label]),
            "eval": evaluation,
        }
    report()
    with stages.stage("quantization recipes") as ticker:
        quantization = _quantize_stage(model_dir, out, recipes, data, quant_limit, ticker)
        summary["quantization"] = {"data": data, "limit": quant_limit, "rows": quantization}
    report()
    if missing:
        stages.skip("bench", "the export stack is not installed")
        bench_rows = []
    else:
        with stages.stage("bench") as ticker:
            bench_rows = _bench_stage(
                model_dir, out, golden, students, quantization, bench_repeats, summary["not_run"], ticker
            )
    summary["bench"] = bench_rows
    summary["plots"] = [str(p.relative_to(out)) for p in _plots(bench_rows, out / "bench")]
    return report()


def _teacher_record(model_dir: Path, teacher: TeacherRecipe | None) -> dict:
    """The teacher's recipe as the report shows it (the shipped one's record, or the recipe trained)."""
    if teacher is None and model_dir == shipped_teacher()[0]:
        record = shipped_teacher()[1]
        return {**record["recipe"], "shipped": True, "fingerprint": record["fingerprint"]}
    return {**dataclasses.asdict(teacher or TeacherRecipe()), "shipped": False}


def _examples(model_dir: Path, out: Path) -> dict[str, dict]:
    """The bundled example image answered three ways, each saved as a labelled overlay PNG."""
    predictor = XSamPredictor.from_pretrained(model_dir)
    image = load_image(EXAMPLE_IMAGE)
    examples = {}
    for name, request in _example_requests(image).items():
        path = out / f"example_{name}.png"
        result = predictor.segment(request)
        save_overlay(path, image, result)
        examples[name] = {"file": path.name, **result.to_json()}
    return examples


def _evaluate_once(
    model_dir: Path, path: Path, data: str, limit: int | None, ticker: StageTicker | None = None
) -> dict:
    """``model_dir`` evaluated on ``data``, once: the report is kept at ``path`` and reused by a rerun."""
    if path.is_file():
        return json.loads(path.read_text())
    report = evaluate_model(
        XSamPredictor.from_pretrained(model_dir),
        load_dataset(data, limit=limit),
        progress=False,
        on_step=ticker.step if ticker else None,
    )
    report["data"] = data
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    return report


def _quantize_stage(
    model_dir: Path,
    out: Path,
    recipes: tuple[str, ...],
    data: str,
    limit: int | None,
    ticker: StageTicker | None = None,
) -> list[dict]:
    """Each recipe once: its result row is written when done, so a rerun skips finished recipes."""
    from xsam_edge.bench.recipe_table import measure

    rows = []
    for done, name in enumerate(recipes):
        if ticker:
            ticker.step(done, len(recipes), name)
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


def _reference_stage(model_dir: Path, out: Path, data: str, limit: int | None) -> Path:
    """The teacher's golden reference on ``data`` (the first images), made once; resumes sample by sample."""
    from xsam_edge.bench.golden_set import GOLDEN_FILE
    from xsam_edge.bench.reference import make_reference

    golden = out / "golden"
    if not (golden / GOLDEN_FILE).is_file():
        log.info("golden reference of the teacher on %s", data)
        make_reference(model_dir, data, golden, limit=limit)
    return golden


def _student_stage(model_dir: Path, run: Path, recipe: StudentRecipe) -> Path:
    """The student distilled from the teacher in ``run`` (resumes from its last checkpoint)."""
    from xsam_edge.distill.run import distill_run

    final = run / "model"
    if (final / "lineage.json").is_file():
        return final
    log.info("distilling %s for %d steps (student recipe %s)", recipe.preset, recipe.steps, recipe.name)
    config = recipe.distill_config()
    return distill_run(out=run, student_preset=recipe.preset, config=config, teacher_dir=model_dir)


def _bench_stage(
    model_dir: Path,
    out: Path,
    golden: Path,
    students: dict[str, Path],
    quantization: list[dict],
    repeats: int,
    not_run: list[str],
    ticker: StageTicker | None = None,
) -> list[dict]:
    """Every bundle on its runtime against the golden reference; one JSON per row, reused by a rerun."""
    from xsam_edge.bench.harness import BenchOptions, GoldenMismatchError, bench
    from xsam_edge.spec.bundle import BundleError

    jobs: list[tuple[str, str, str]] = []  # (label, bundle, backend)
    for row in quantization:
        if "not_measured" in row:
            not_run.append(f"bench of {row['recipe']} ({row['not_measured']})")
            continue
        if "bundle" not in row:
            not_run.append(f"bench of {row['recipe']} (its result predates the bench; use a fresh --out)")
            continue
        jobs.append((row["recipe"], row["bundle"], row["backend"]))
    backends = tuple(dict.fromkeys(["onnx", *(j[2] for j in jobs)]))
    floats = _float_bundle(model_dir, out, backends, quantization)
    jobs = [("float", str(floats), b) for b in backends] + jobs
    for label, student in students.items():  # on ONNX, the CPU runtime every install has
        jobs.append((label, str(_export_once(student, out / "bundles" / label, ("onnx",))), "onnx"))
    rows = []
    for done, (label, bundle, backend) in enumerate(jobs):
        if ticker:
            ticker.step(done, len(jobs), f"{label} on {backend}")
        path = out / "bench" / f"{label}-{backend}.json"
        if path.is_file():
            rows.append(json.loads(path.read_text()))
            continue
        log.info("bench %s on %s", label, backend)
        try:
            row = bench(bundle, backend, golden, "x86-cpu", BenchOptions(repeats=repeats), label=label)
        except (GoldenMismatchError, BundleError) as err:
            not_run.append(f"bench of {label} on {backend}: {err}")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(row, indent=2) + "\n")
        rows.append(row)
    return rows


def _export_once(model_dir: Path, bundle: Path, backends: tuple[str, ...]) -> Path:
    """``model_dir`` exported to ``backends`` at ``bundle``, unless a bundle with those backends is there."""
    from xsam_edge.export.to_bundle import export_bundle
    from xsam_edge.model.checkpoint import read_lineage
    from xsam_edge.spec.bundle import BundleError, load_bundle

    try:
        if set(backends) <= set(load_bundle(bundle, verify=False).backends):
            return bundle
    except BundleError:
        pass  # absent or unusable: export it (again)
    predictor = XSamPredictor.from_pretrained(model_dir)
    lineage = read_lineage(model_dir)
    export_bundle(predictor.model, predictor.tokenizer, bundle, backends, progress=False, lineage=lineage)
    return bundle


def _float_bundle(model_dir: Path, out: Path, backends: tuple[str, ...], quantization: list[dict]) -> Path:
    """The teacher in float on every backend the recipes bench on (the rows they are compared with).

    The recipes' own float export is reused when it holds those backends (it does when every recipe ran).
    """
    from xsam_edge.spec.bundle import BundleError, load_bundle

    for row in quantization:
        path = row.get("fp32_bundle")
        try:
            if path and set(backends) <= set(load_bundle(path, verify=False).backends):
                return Path(path)
        except BundleError:
            continue
    return _export_once(model_dir, out / "bundles" / "float", backends)


def _plots(rows: list[dict], folder: Path) -> list[Path]:
    from xsam_edge.bench.report import write_plots

    return write_plots(rows, folder) if rows else []


def _machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def _student_table(teacher: dict, student: dict) -> list[str]:
    """Each task's primary metric, teacher and student on the same data, and the student's share of it."""
    from xsam_edge.metrics.tasks import PRIMARY_METRIC, primary_metrics

    ours, theirs = primary_metrics(student["tasks"]), primary_metrics(teacher["tasks"])
    lines = [
        f"On {student.get('data', '?')} ({student['num_examples']} examples); the goal is ≥ 95 % of the "
        "teacher on every task.",
        "",
        "| task | metric | teacher | student | student / teacher |",
        "|---|---|---|---|---|",
    ]
    for task, value in ours.items():
        base = theirs.get(task)
        share = f"{100 * value / base:.0f} %" if base else "-"  # no share of a teacher at 0 or without it
        shown = "-" if base is None else f"{base:.2f}"
        lines.append(f"| {task} | {PRIMARY_METRIC[task]} | {shown} | {value:.2f} | {share} |")
    return lines


def _markdown(summary: dict) -> str:
    """The report; sections appear as their stages finish, the rest is listed as pending."""
    machine = summary["machine"]
    lines = [
        "# xsam_edge pipeline report",
        "",
        f"{summary['date']} · {machine['cpu']}, {machine['cores']} cores, {machine['os']}, "
        f"torch {machine['torch']}",
    ]
    teacher = summary.get("teacher")
    if teacher:
        recipe = teacher["recipe"]
        origin = "shipped with the package" if recipe.get("shipped") else "trained here"
        steps = ", ".join(str(s) for s in recipe["steps"])
        lines += [
            "",
            f"Teacher: `{recipe['preset']}`, {origin} (steps {steps} per stage, seed {recipe['seed']}).",
        ]
    lines += ["", "## Examples", ""]
    for name, example in summary["examples"].items():
        masks = ", ".join(f"{m['label']} ({m['score']:.2f})" for m in example["masks"]) or "no mask"
        lines.append(f"- {name}: `{example['file']}`: {masks}")
    lines += [f"![{name}]({example['file']})" for name, example in summary["examples"].items()]
    evaluation = summary.get("teacher_eval")
    if evaluation:
        lines += [
            "",
            f"## Teacher on {evaluation.get('data', '?')} ({evaluation['num_examples']} examples)",
            "",
            "Values are percentages; the baselines never see the answer.",
            "",
            "```",
            eval_table(evaluation),
            "```",
        ]
    if summary.get("student"):
        recipe = summary["student"]["recipe"]
        gated = ", output gated by the labels" if recipe["gate_output_by_labels"] else ""
        lines += [
            "",
            f"## Student `{recipe['name']}`",
            "",
            f"`{recipe['preset']}` distilled from the teacher for {recipe['steps']} steps with the "
            f"{', '.join(recipe['losses'])} losses{gated}: `{summary['student']['model']}`.",
            "",
            *_student_table(summary["teacher_eval"], summary["student"]["eval"]),
        ]
    quant = summary.get("quantization")
    if quant and quant["rows"]:
        from xsam_edge.bench.recipe_table import markdown as quant_table

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
    if summary.get("bench"):
        from xsam_edge.bench.report import markdown_table

        golden = summary["bench"][0]["golden"]
        lines += [
            "",
            "## Bench against the golden reference",
            "",
            f"Every bundle on its runtime on this CPU, against the teacher's golden reference "
            f"({golden['samples']} samples of {golden['data']}, made on {golden['producer']['device']}). "
            "Δ: change of each task's primary metric against the reference model's on the same samples "
            "(points); mask IoU: matched-mask agreement with the reference model's masks (%); latencies are "
            "p50; worst graph dB: lowest per-graph PSNR on the golden traces (same-model bundles only).",
            "",
            markdown_table(summary["bench"]),
            "",
        ]
        lines += [f"![{Path(p).stem}]({p})" for p in summary.get("plots", [])]
    if summary.get("pending"):
        lines += ["", "## Pending", ""] + [f"- {stage}" for stage in summary["pending"]]
    lines += ["", "## Not run", ""] + [f"- {stage}" for stage in summary["not_run"]]
    seconds = summary.get("stage_seconds", {})
    if seconds:
        took = ", ".join(f"{name} {clock(s)}" for name, s in seconds.items())
        lines += ["", f"Stage times (m:s): {took}; in all {clock(sum(seconds.values()))}."]
    return "\n".join(lines) + "\n"
