"""Distillation checkpoints: the student, the adapters and the optimizer in one folder, swapped in atomically.

A checkpoint is refused on resume when it was written for another student, teacher, recipe or sharding
(``read_checkpoint_state``); ``checkpoint_view`` gathers a sharded (FSDP2) state on rank 0 first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from xsam_edge.distill.config import DistillConfig
from xsam_edge.files import staged_dir
from xsam_edge.model.checkpoint import WEIGHTS_FILE, read_config, save_pretrained
from xsam_edge.model.xsam import XSam
from xsam_edge.spec.tokenizer import XSamTokenizer

if TYPE_CHECKING:
    from xsam_edge.distill.engine import DistillStep

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
ADAPTERS_FILE = "adapters.safetensors"
OPTIMIZER_FILE = "optimizer.pt"


def _identity(model: XSam) -> str:
    """Short fingerprint of a config (what a checkpoint must have been written for)."""
    return hashlib.sha256(model.config.to_json().encode()).hexdigest()[:16]


# settings that only say how often to log, checkpoint, or where to run: a resumed run may change them
_NOT_RECIPE = ("checkpoint_every", "log_every", "device", "sharding", "precision")
# recipe settings added after checkpoints recorded recipes, with the value those checkpoints ran under
_ADDED_SETTINGS = {
    "label_fraction": 1.0,
    "hard_teacher_masks": False,
    "output_min_foreground": 0.0,
    "output_temperature": None,
    "output_points": 0,
    "output_point_importance": 0.0,
}


def run_recipe(config: DistillConfig) -> dict:
    """What a run computes, as JSON: losses, weights, schedule, data. A checkpoint resumes only under it."""
    values = json.loads(json.dumps(dataclasses.asdict(config)))
    return {k: v for k, v in values.items() if k not in _NOT_RECIPE}


def checkpoint_view(
    step_module: DistillStep, optimizer: torch.optim.Optimizer, sharded: bool
) -> tuple[XSam, dict[str, torch.Tensor], dict]:
    """(student with full weights, adapter tensors, optimizer state) as a checkpoint stores them.

    Sharded (FSDP2), the full tensors are all-gathered into a CPU replica of the student: a collective, so
    every rank calls it; the optimizer state comes keyed by parameter name (``get_state_dict``).
    """
    if not sharded:
        adapters = {k: v.detach().cpu().contiguous() for k, v in step_module.adapters.state_dict().items()}
        return step_module.student, adapters, optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    from xsam_edge.model.build import build_model

    model_state, optim_state = get_state_dict(
        step_module, optimizer, options=StateDictOptions(full_state_dict=True)
    )
    replica = build_model(step_module.student.config)
    replica.load_state_dict(_part(model_state, "student."))
    return replica.eval(), _part(model_state, "adapters."), optim_state


def _part(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v.detach().cpu().contiguous() for k, v in state.items() if k.startswith(prefix)}


def save_checkpoint(
    out: Path,
    student: XSam,
    adapters: dict[str, torch.Tensor],
    optimizer_state: dict,
    step: int,
    teacher_id: str,
    tokenizer: XSamTokenizer,
    sharding: str = "ddp",
    recipe: dict | None = None,
) -> Path:
    """Write ``out/checkpoint`` whole or not at all (temporary folder, then rename)."""
    target = out / CHECKPOINT_DIR
    with staged_dir(target) as tmp:
        save_pretrained(student, tmp / "student", tokenizer)
        save_file(adapters, str(tmp / ADAPTERS_FILE))
        torch.save(optimizer_state, tmp / OPTIMIZER_FILE)
        state = {
            "step": step,
            "student": student.config.name,
            "student_config": _identity(student),
            "teacher": teacher_id,
            "sharding": sharding,
            "recipe": recipe,
        }
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
    return target


def read_checkpoint_state(
    out: Path, student: XSam, teacher_id: str, sharding: str = "ddp", recipe: dict | None = None
) -> dict | None:
    """The checkpoint's ``state.json``, after checking it was written for this student, teacher and sharding.

    Raises:
        ValueError: the checkpoint belongs to another student config (preset), another teacher, another run
            recipe (losses, weights, steps, learning rate: the schedule would no longer be the one it was
            written under), or was written under another sharding (the optimizer states are stored
            differently).
    """
    path = out / CHECKPOINT_DIR / STATE_FILE
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    if state["student_config"] != _identity(student):
        saved = read_config(out / CHECKPOINT_DIR / "student").name
        raise ValueError(
            f"{out} holds a checkpoint of student {saved!r} with another config than this run's "
            f"{student.config.name!r}; resume with the same --student-preset, or use a new --out"
        )
    if state["teacher"] != teacher_id:
        raise ValueError(
            f"{out} holds a checkpoint distilled from teacher {state['teacher']!r}, not {teacher_id!r}; "
            "resume with the same teacher, or use a new --out"
        )
    saved_sharding = state.get("sharding", "ddp")
    if saved_sharding != sharding:
        raise ValueError(
            f"{out} holds a checkpoint written with --sharding {saved_sharding} (fsdp2 counts only under "
            f"torchrun), not {sharding}; resume with --sharding {saved_sharding} on as many ranks, or "
            "use a new --out"
        )
    saved_recipe = state.get("recipe")  # absent in checkpoints written before it was recorded
    if saved_recipe is not None:  # settings added since: an older checkpoint ran at their defaults
        saved_recipe = {**_ADDED_SETTINGS, **saved_recipe}
    if recipe is not None and saved_recipe is not None and saved_recipe != recipe:
        keys = sorted(recipe.keys() | saved_recipe.keys())
        was = ", ".join(f"{k}={saved_recipe.get(k)}" for k in keys if recipe.get(k) != saved_recipe.get(k))
        raise ValueError(
            f"{out} holds a checkpoint of a run with other settings ({was}); resume with the same "
            "settings, or use a new --out (a longer run is a new run: its learning-rate schedule differs)"
        )
    return state


def load_checkpoint(out: Path, step_module: DistillStep) -> dict:
    """Weights of the student and the adapters; returns the optimizer state (load it after building)."""
    folder = out / CHECKPOINT_DIR
    state = load_file(folder / "student" / WEIGHTS_FILE)
    step_module.student.load_state_dict(state)
    step_module.adapters.load_state_dict(load_file(folder / ADAPTERS_FILE))
    return torch.load(folder / OPTIMIZER_FILE, map_location="cpu", weights_only=True)


def tensors_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of named tensors' bytes, in name order: equal on every rank iff the weights are equal."""
    digest = hashlib.sha256()
    for name, tensor in sorted(tensors.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]
