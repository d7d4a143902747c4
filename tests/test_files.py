"""Atomic writes survive a kill at any point (issue #34): the old output or the new one, never litter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from xsam_edge.files import atomic_write_text, recover_dir, replace_dir, staged_dir, write_atomically

HOLD = """
import sys, time
from pathlib import Path
from xsam_edge.files import staged_dir
with staged_dir(Path(sys.argv[1])) as staging:
    (staging / "half").write_text("half written")
    print("staged", flush=True)
    time.sleep(600)
"""


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_killed_writer_leaves_the_old_folder_and_its_staging_goes_next_time(tmp_path):
    target = tmp_path / "bundle"
    with staged_dir(target) as staging:
        (staging / "v").write_text("1")
    writer = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "staged"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".bundle.staging-")]
    assert len(left) == 1 and (target / "v").read_text() == "1"  # the old one is whole
    with staged_dir(target) as staging:
        (staging / "v").write_text("2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"] and (target / "v").read_text() == "2"


def test_a_kill_between_the_two_renames_is_recovered(tmp_path):
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "v").write_text("old")
    # what a kill right after `os.replace(target, old)` leaves: no target, the old copy hidden beside it
    hidden = tmp_path / f".bundle.old-{_dead_pid()}"
    os.replace(target, hidden)
    recover_dir(target)
    assert (target / "v").read_text() == "old" and not hidden.exists()
    # load_bundle runs the same recovery before it reads
    os.replace(target, hidden)
    from xsam_edge.spec.bundle import BundleError, load_bundle

    with pytest.raises(BundleError, match="no manifest.json"):  # recovered, then read: not a bundle here
        load_bundle(target)
    assert (target / "v").read_text() == "old"


def test_replace_dir_swaps_whole_folders(tmp_path):
    new, target = tmp_path / "new", tmp_path / "target"
    for folder, text in ((new, "new"), (target, "old")):
        folder.mkdir()
        (folder / "v").write_text(text)
    replace_dir(new, target)
    assert (target / "v").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["target"]


def test_stale_temporary_files_of_dead_writers_are_removed(tmp_path):
    path = tmp_path / "report.json"
    stale = tmp_path / f".report.json.{_dead_pid()}-abc.tmp"
    stale.write_text("half")
    mine = tmp_path / f".report.json.{os.getpid()}-xyz.tmp"  # a live writer's file is left alone
    mine.write_text("in progress")
    atomic_write_text(path, "{}")
    assert path.read_text() == "{}" and not stale.exists() and mine.exists()
    folder = tmp_path / "graphs"
    folder.mkdir()
    stale_dir = folder / f".staging-{_dead_pid()}-q"
    stale_dir.mkdir()
    files, _ = write_atomically(folder, lambda tmp: (tmp / "g.onnx").write_bytes(b"x"))
    assert [f.name for f in files] == ["g.onnx"] and not stale_dir.exists()


def test_a_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "bundle"
    with pytest.raises(RuntimeError), staged_dir(target) as staging:
        (staging / "half").write_text("x")
        raise RuntimeError("export failed")
    assert os.listdir(tmp_path) == []
    start = time.monotonic()
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        blocker = tmp_path / "file"
        blocker.write_text("x")
        with staged_dir(blocker / "bundle"):
            pass
    assert time.monotonic() - start < 5
