"""The README's main command from a fresh clone, timed: install, first output, whole report.

Run: ``python -m benchmarks.main_job [--rev HEAD] [--keep DIR] [--out PATH]`` from the repository root.

It clones the committed ``--rev`` into a temporary folder, gives the command an empty HOME (no pip cache, no
trained teacher, nothing cached), runs the README's main command there exactly as written, and watches the
pipeline's report: the *first output* is the moment ``report.md`` holds the segmented example images and the
teacher's table; the *report* is the command's end. The pipeline's own stage times come from its
``report.json``. Writes ``docs/results/data/main-job-<date>.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import RESULTS_DIR
from xsam_edge.files import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]


def main_command(readme: Path) -> str:
    """The README's main command: the first ``xsam-edge pipeline`` line of a bash block."""
    for block in re.findall(r"```bash\n(.*?)```", readme.read_text(), flags=re.S):
        for line in block.splitlines():
            if "xsam-edge pipeline" in line and "pip install" in line:
                return line.strip()
    raise SystemExit(f"{readme} has no main command (a bash line with pip install and xsam-edge pipeline)")


def first_output_seen(report: Path) -> bool:
    """The report already shows the example overlays and the teacher's table."""
    if not report.is_file():
        return False
    text = report.read_text()
    return "## Examples" in text and "## Teacher on" in text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD", help="the commit to clone")
    parser.add_argument("--keep", help="keep the clone and its outputs in this folder")
    parser.add_argument("--timeout", type=float, default=7200, help="give up after this many seconds")
    parser.add_argument("--out", help="results JSON (default docs/results/data/main-job-<date>.json)")
    args = parser.parse_args()

    work = Path(args.keep or tempfile.mkdtemp(prefix="xsam-main-job-"))
    clone, home = work / "main", work / "home"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", args.rev], check=True)
    commit = subprocess.run(
        ["git", "-C", str(clone), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    home.mkdir(parents=True, exist_ok=True)
    command = main_command(clone / "README.md")
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "CI": "true"}
    env["PYENV_ROOT"] = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    for name in ("VIRTUAL_ENV", "XSAM_EDGE_CACHE", "PYTHONPATH"):
        env.pop(name, None)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if "/.venv/" not in p)
    report = clone / "outputs" / "pipeline" / "report.md"
    log = work / "main-job.log"
    start = time.monotonic()
    installed = first = None
    with open(log, "w") as sink:
        process = subprocess.Popen(
            ["bash", "-c", command],
            cwd=clone,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        while process.poll() is None:
            time.sleep(1.0)
            if installed is None and "[1/" in log.read_text(errors="replace"):
                installed = time.monotonic() - start  # the pipeline printed its first stage line
            if first is None and first_output_seen(report):
                first = time.monotonic() - start
            if time.monotonic() - start > args.timeout:
                process.kill()
                break
    total = time.monotonic() - start
    summary = (
        json.loads((clone / "outputs" / "pipeline" / "report.json").read_text()) if report.is_file() else {}
    )
    result = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "command": command,
        "machine": {"cores": os.cpu_count(), "os": f"{platform.system()} {platform.release()}"},
        "exit_code": process.returncode,
        "seconds": {
            "install": installed,
            "first_output_after_install": None if first is None or installed is None else first - installed,
            "first_output": first,
            "report": total,
            "report_after_install": None if installed is None else total - installed,
        },
        "stage_seconds": summary.get("stage_seconds", {}),
        "log_tail": log.read_text(errors="replace").splitlines()[-20:],
    }
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    out = Path(args.out or RESULTS_DIR / f"main-job-{date}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result["seconds"], indent=2))
    print(f"exit {process.returncode}; wrote {out}")
    sys.exit(process.returncode or 0)


if __name__ == "__main__":
    main()
