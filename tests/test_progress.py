"""The progress display: stage, step and time left, scaled by how fast this machine is going."""

from __future__ import annotations

import io

from xsam_edge.progress import Progress, clock


def test_clock():
    assert clock(0) == "0:00" and clock(75) == "1:15" and clock(3725) == "1:02:05" and clock(-3) == "0:00"


def test_stages_steps_and_time_left(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("xsam_edge.progress.time.monotonic", lambda: now[0])
    out = io.StringIO()
    progress = Progress([("first", 10.0), ("second", 20.0), ("third", 30.0)], stream=out, every=0.0)
    assert progress.left() == 60.0 and progress.speed() == 1.0
    with progress.stage("first"):
        now[0] += 20.0  # twice as slow as expected
    assert progress.speed() == 2.0 and progress.left() == 100.0  # (20 + 30) expected, doubled
    progress.skip("second", "its result exists")
    with progress.stage("third") as ticker:
        now[0] += 5.0
        ticker.step(1, 4, "item a")  # 5 s a step: 15 s left in the stage, and nothing after it
    lines = out.getvalue().splitlines()
    assert lines[0] == "[1/3] first · 0:00 elapsed, ~1:00 left"
    assert lines[1] == "[1/3] first done in 0:20 · 0:20 elapsed, ~1:40 left"
    assert lines[2] == "[2/3] second: its result exists"
    assert lines[4] == "[3/3] third · step 1/4 item a · ~0:15 left in stage, ~0:15 in all"
    assert lines[-1].startswith("[3/3] third done in 0:05") and [s.name for s in progress.done()] == [
        "first",
        "second",
        "third",
    ]


def test_step_lines_are_throttled_but_the_last_always_shows(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("xsam_edge.progress.time.monotonic", lambda: now[0])
    out = io.StringIO()
    progress = Progress([("only", 10.0)], stream=out, every=10.0)
    with progress.stage("only") as ticker:
        for i in range(1, 6):
            now[0] += 4.0  # a line at 12 s (10 s after the start), none at 16, the last at 20
            ticker.step(i, 5)
    steps = [line for line in out.getvalue().splitlines() if "step" in line]
    assert [line.split("step ")[1].split(" ")[0] for line in steps] == ["3/5", "5/5"]
    quiet = io.StringIO()
    silent = Progress([("only", 1.0)], stream=quiet, enabled=False)
    with silent.stage("only") as ticker:
        ticker.step(1, 1)
    assert quiet.getvalue() == ""
