"""A progress display for long jobs: which stage, which step, how long so far and how long is left.

A job declares its stages with the seconds each is expected to take on a reference machine (2 CPU cores);
while it runs, the time left is those expectations scaled by how fast this machine went on the stages done so
far, and within a stage by the rate of its steps. Lines go to stderr (one per stage start and end, and a step
line at most every ``every`` seconds), so a log file reads as well as a terminal.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO

MIN_EXPECTED = 10.0  # seconds: shorter stages do not move the speed estimate


def clock(seconds: float) -> str:
    """``75`` → ``1:15``; ``3725`` → ``1:02:05``."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass
class Stage:
    """One stage of a job: its name and the seconds it takes on the reference machine."""

    name: str
    expected: float
    seconds: float | None = None  # measured, once done (or skipped: 0)


@dataclass
class Progress:
    """Stage-by-stage progress of a job.

    Args:
        stages (Sequence[tuple[str, float]]): (name, expected seconds) in run order.
        stream (TextIO | None): where lines go (``None``: stderr).
        enabled (bool): print at all.
        every (float): seconds between two step lines of one stage.
    """

    stages: Sequence[tuple[str, float]]
    stream: TextIO | None = None
    enabled: bool = True
    every: float = 10.0
    _stages: list[Stage] = field(init=False)
    _start: float = field(init=False)

    def __post_init__(self) -> None:
        self._stages = [Stage(name, float(expected)) for name, expected in self.stages]
        self._start = time.monotonic()

    # -- what is known ------------------------------------------------------------------------------
    def speed(self) -> float:
        """Measured over expected seconds of the stages done, clamped to [1/4, 4].

        Only stages expected to take ``MIN_EXPECTED`` seconds or more count: a stage of a second says little
        about a machine's speed (1 before any such stage is done, or when all were skipped).
        """
        done = [s for s in self._stages if s.seconds and s.expected >= MIN_EXPECTED]
        expected = sum(s.expected for s in done)
        return min(max(sum(s.seconds for s in done) / expected, 0.25), 4.0) if expected else 1.0

    def left(self, current: str | None = None, current_left: float | None = None) -> float:
        """Seconds left in the whole job: the stages not done, scaled by ``speed``."""
        speed = self.speed()
        total = 0.0
        for stage in self._stages:
            if stage.seconds is not None:
                continue
            if stage.name == current and current_left is not None:
                total += current_left
            else:
                total += stage.expected * speed
        return total

    def done(self) -> list[Stage]:
        """The stages run or skipped so far, in order."""
        return [s for s in self._stages if s.seconds is not None]

    def elapsed(self) -> float:
        return time.monotonic() - self._start

    # -- reporting ----------------------------------------------------------------------------------
    def _print(self, text: str) -> None:
        if self.enabled:
            print(text, file=self.stream or sys.stderr, flush=True)

    def _index(self, name: str) -> int:
        return next(i for i, s in enumerate(self._stages) if s.name == name)

    def skip(self, name: str, why: str) -> None:
        """Mark a stage done without running it (its result exists, or it cannot run here)."""
        i = self._index(name)
        self._stages[i].seconds = 0.0
        self._print(f"[{i + 1}/{len(self._stages)}] {name}: {why}")

    @contextmanager
    def stage(self, name: str) -> Iterator[StageTicker]:
        """Run one stage: prints its start, hands out a ticker for its steps, records its time."""
        i = self._index(name)
        stage = self._stages[i]
        start = time.monotonic()
        self._print(
            f"[{i + 1}/{len(self._stages)}] {name} · {clock(self.elapsed())} elapsed, "
            f"~{clock(self.left())} left"
        )
        ticker = StageTicker(self, stage, i, start, start)
        yield ticker
        stage.seconds = max(time.monotonic() - start, 1e-3)
        self._print(
            f"[{i + 1}/{len(self._stages)}] {name} done in {clock(stage.seconds)} · "
            f"{clock(self.elapsed())} elapsed, ~{clock(self.left())} left"
        )


@dataclass
class StageTicker:
    """Step updates of one running stage."""

    progress: Progress
    stage: Stage
    index: int
    start: float
    _last: float  # when the last step line was printed (the stage start at first)

    def step(self, done: int, total: int, what: str = "") -> None:
        """Report ``done`` of ``total`` steps (printed at most every ``Progress.every`` s, and at the end)."""
        now = time.monotonic()
        if done < total and now - self._last < self.progress.every:
            return
        self._last = now
        spent = now - self.start
        stage_left = spent / done * (total - done) if done else self.stage.expected * self.progress.speed()
        detail = f" {what}" if what else ""
        all_left = self.progress.left(self.stage.name, stage_left)
        self.progress._print(
            f"[{self.index + 1}/{len(self.progress._stages)}] {self.stage.name} · step {done}/{total}{detail}"
            f" · ~{clock(stage_left)} left in stage, ~{clock(all_left)} in all"
        )
