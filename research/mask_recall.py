"""Why a model loses AP: worse masks, or worse scores? Recall and mask fit per task, for several models.

Run: ``python -m research.mask_recall --model NAME=MODEL_DIR [--model ...] [--data shapes:test]
[--images 48] [--tasks instance,visual_grounded,interactive] [--threads 1] [--out PATH]``. ``NAME=teacher``
stands for the cached embedded teacher (with ``--teacher-steps A,B,C``, the one trained with those steps).
For each example of the chosen tasks on the first ``--images`` images (sorted by id), every answered mask is
matched to the ground truth: per task, the mean number of masks answered, recall at IoU 0.5 (any score), the
mean best IoU of each ground-truth mask, and the mean score of the masks that hit (IoU >= 0.5 with some
ground truth) and of those that miss. Why: two students a few AP apart can rank their answers alike and
differ in the masks themselves, and each calls for another fix.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import numpy as np

from benchmarks import RESULTS_DIR
from research.paired_bootstrap import check_model_folders, parse_models
from xsam_edge.files import atomic_write_text
from xsam_edge.training.recipe import TeacherRecipe, parse_teacher_steps

DEFAULT_TASKS = "instance,visual_grounded,interactive"


def match_stats(pred_masks: np.ndarray, scores: np.ndarray, gt_masks: np.ndarray) -> dict[str, list[float]]:
    """One example: each ground truth's best IoU, and the scores of answers that hit and that miss."""
    from xsam_edge.metrics.masks import pairwise_iou

    if not len(pred_masks):
        return {"best_iou": [0.0] * len(gt_masks), "hit_score": [], "miss_score": []}
    if not len(gt_masks):
        return {"best_iou": [], "hit_score": [], "miss_score": list(map(float, scores))}
    iou = pairwise_iou(pred_masks, gt_masks)  # (answers, ground truths)
    hit = iou.max(1) >= 0.5
    return {
        "best_iou": list(map(float, iou.max(0))),
        "hit_score": list(map(float, scores[hit])),
        "miss_score": list(map(float, scores[~hit])),
    }


def model_stats(model_dir: Path, examples: list) -> dict[str, dict[str, float]]:
    """Per task: masks answered, recall at IoU 0.5, mean best IoU, mean score of hits and of misses."""
    from xsam_edge.model.predictor import XSamPredictor

    predictor = XSamPredictor.from_pretrained(model_dir)
    pooled: dict[str, dict[str, list[float]]] = {}
    for example in sorted(examples, key=lambda e: e.image_id):  # one image encoding per image
        result = predictor.segment(example.request)
        empty: dict[str, list[float]] = {"answered": [], "best_iou": [], "hit_score": [], "miss_score": []}
        task = pooled.setdefault(example.task.value, empty)
        task["answered"].append(float(len(result.masks)))
        for key, values in match_stats(result.masks, result.scores, example.target.masks).items():
            task[key] += values
    return {
        task: {
            "examples": len(v["answered"]),
            "masks_answered": float(np.mean(v["answered"])),
            "recall_at_0.5": float(np.mean(np.asarray(v["best_iou"]) >= 0.5)) if v["best_iou"] else 0.0,
            "mean_best_iou": float(np.mean(v["best_iou"])) if v["best_iou"] else 0.0,
            "hit_score": float(np.mean(v["hit_score"])) if v["hit_score"] else 0.0,
            "miss_score": float(np.mean(v["miss_score"])) if v["miss_score"] else 0.0,
        }
        for task, v in pooled.items()
    }


def main() -> None:
    import torch

    from xsam_edge.data.registry import load_dataset
    from xsam_edge.spec.types import Task

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="NAME=MODEL_DIR, or NAME=teacher")
    parser.add_argument("--data", default="shapes:test")
    parser.add_argument("--images", type=int, default=48, help="the first N images by id")
    parser.add_argument("--tasks", default=DEFAULT_TASKS)
    parser.add_argument("--teacher-steps", type=parse_teacher_steps, default=TeacherRecipe().steps)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="results JSON (default results/mask-recall-<date>.json)")
    args = parser.parse_args()
    groups = parse_models(args.model)
    if any(len(paths) > 1 for paths in groups.values()):
        parser.error("--model: one MODEL_DIR per NAME here (seeds are compared by paired_bootstrap)")
    check_model_folders(groups)
    models = {name: paths[0] for name, paths in groups.items()}
    try:
        tasks = {Task(t) for t in args.tasks.split(",")}
    except ValueError as err:
        parser.error(f"--tasks: {err}; choose from {', '.join(t.value for t in Task)}")
    torch.set_num_threads(args.threads)
    examples = load_dataset(args.data)
    images = set(sorted({e.image_id for e in examples})[: args.images])
    chosen = [e for e in examples if e.image_id in images and e.task in tasks]
    if not chosen:
        parser.error(f"no {args.tasks} examples on the first {args.images} images of {args.data}")
    if "teacher" in models.values():
        from xsam_edge.training.teacher import ensure_teacher

        teacher = ensure_teacher(TeacherRecipe(steps=args.teacher_steps))
        models = {name: str(teacher) if path == "teacher" else path for name, path in models.items()}
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    out = Path(args.out or RESULTS_DIR / f"mask-recall-{date}.json")
    result = {"date": date, "data": args.data, "images": len(images), "models": models, "stats": {}}
    for name, path in models.items():
        result["stats"][name] = model_stats(Path(path), chosen)
        print(json.dumps({name: result["stats"][name]}))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
