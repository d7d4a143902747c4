"""How the embedded teacher is trained, as a value (no torch: the CLI reads its defaults cheaply)."""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import asdict, dataclass

TEACHER_PRESET = "shapes-teacher"


@dataclass(frozen=True)
class TeacherRecipe:
    """How the cached teacher is made: steps per stage (segmentor, align, mixed), batch, lr, seed."""

    preset: str = TEACHER_PRESET
    steps: tuple[int, int, int] = (600, 300, 1200)
    batch_size: int = 8
    lr: float = 3e-4
    seed: int = 0
    data: str = "shapes:train"

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
