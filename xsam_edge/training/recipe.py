"""How the embedded teacher is trained, as a value (no torch: the CLI reads its defaults cheaply)."""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import asdict, dataclass

TEACHER_PRESET = "shapes-teacher"


@dataclass(frozen=True)
class TeacherRecipe:
    """How the cached teacher is made: steps per stage (segmentor, align, mixed), batch, lr, seed.

    ``encoder_lr_scale``: the image encoders' lr as a fraction of ``lr``; 1.0 because the teacher's encoders
    start from random weights (upstream's 0.1 is for pretrained SAM / SigLIP encoders).
    """

    preset: str = TEACHER_PRESET
    steps: tuple[int, int, int] = (1000, 300, 5000)
    batch_size: int = 8
    lr: float = 1e-3
    seed: int = 0
    data: str = "shapes:train"
    encoder_lr_scale: float = 1.0

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def parse_teacher_steps(text: str) -> tuple[int, int, int]:
    """``--teacher-steps A,B,C`` → the teacher's steps per stage (segmentor, align, mixed)."""
    try:
        steps = tuple(int(part) for part in text.split(","))
    except ValueError:
        steps = ()
    if len(steps) != 3 or min(steps) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: write three positive step counts, e.g. 600,300,4200")
    return steps  # type: ignore[return-value]
