"""What one CUDA GPU can show of the distillation engine: bf16 autocast, NCCL, DDP and FSDP2, resume.

Run: ``python -m research.distill_cuda --teacher DIR [--student-preset shapes-student-q16l4]
[--steps 60] [--shardings ddp,fsdp2] [--resumed ddp,fsdp2] [--device cuda] [--out PATH]``. Every run is
``xsam-edge distill --device cuda`` with the same recipe (label-gated, a tenth labelled) and seed:

- ``plain``: one process, no ``torchrun`` (no process group);
- ``ddp`` and ``fsdp2``: ``torchrun --nproc_per_node 1`` (one rank still joins an NCCL process group, so
  the student is wrapped in DDP or sharded by ``fully_shard`` as asked), each run whole and again stopped
  half-way and resumed with the same command;
- ``two-ranks``: ``torchrun --nproc_per_node 2`` on a one-GPU machine, which must be refused before any step.

The results file holds each run's wall time and losses, and how far apart the runs end: resumed against
whole, and each sharding against the plain process (CUDA reductions are not bitwise deterministic, so these
are measured, not asserted). A one-GPU machine cannot show two NCCL ranks exchanging gradients.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from benchmarks import RESULTS_DIR
from xsam_edge.files import atomic_write_text


def _distill(args: list[str], ranks: int | None, env: dict[str, str] | None = None) -> dict:
    """One ``xsam-edge distill`` launch (under ``torchrun`` when ``ranks`` is given): rc, wall time, tail."""
    if ranks is None:
        cmd = [sys.executable, "-m", "xsam_edge.cli", "distill", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)]
        cmd += ["-m", "xsam_edge.cli", "distill", *args]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    # torchrun's failure summary buries the rank's own error: keep the exception lines as well
    errors = [
        line for line in done.stderr.splitlines() if "error:" in line or line.startswith("RuntimeError")
    ]
    return {
        "rc": done.returncode,
        "wall_s": round(time.perf_counter() - start, 2),
        "errors": errors[:4],
        "stderr_tail": done.stderr[-1500:] if done.returncode else "",
    }


def _log(run: Path) -> list[dict]:
    path = run / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in _log(run) if "loss" in r]


def _weights_gap(a: Path, b: Path) -> float | None:
    """Largest absolute difference between two runs' final student weights."""
    fa, fb = a / "model" / "model.safetensors", b / "model" / "model.safetensors"
    if not (fa.is_file() and fb.is_file()):
        return None
    wa, wb = load_file(str(fa)), load_file(str(fb))
    return max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)


def _loss_gap(a: list[float], b: list[float]) -> float | None:
    if not a or len(a) != len(b):
        return None
    return max(abs(x - y) / max(abs(y), 1e-8) for x, y in zip(a, b, strict=True))


def run_checks(
    teacher: str,
    preset: str,
    steps: int,
    work: Path,
    device: str = "cuda",
    shardings: tuple[str, ...] = ("ddp", "fsdp2"),
    resumed: tuple[str, ...] = ("ddp", "fsdp2"),
) -> dict:
    """Every launch of the module docstring; returns the results file's body.

    ``device="cpu"`` runs them on gloo: a dry run of this script on a machine without a GPU (no two-rank
    refusal there). ``resumed``: the shardings also run stopped half-way and resumed.
    """
    common = ["--teacher", teacher, "--student-preset", preset, "--steps", str(steps), "--device", device]
    common += ["--losses", "feature,logit,output,gt", "--gate-output-by-labels", "--label-fraction", "0.1"]
    common += ["--checkpoint-every", str(max(1, steps // 2)), "--log-every", "1"]
    runs: dict[str, dict] = {}
    plain = work / "plain"
    runs["plain"] = {**_distill([*common, "--out", str(plain)], ranks=None), "losses": _losses(plain)}
    for sharding in shardings:
        whole, stopped = work / sharding, work / f"{sharding}-resumed"
        args = [*common, "--sharding", sharding]
        row = _distill([*args, "--out", str(whole)], ranks=1)
        first = second = {"rc": None, "stderr_tail": ""}
        if sharding in resumed:
            first = _distill([*args, "--out", str(stopped), "--stop-after", str(steps // 2)], ranks=1)
            second = _distill([*args, "--out", str(stopped)], ranks=1)
        state = whole / "checkpoint" / "state.json"
        whole_losses = _losses(whole)
        runs[sharding] = {
            **row,
            "losses": whole_losses,
            "checkpoint_sharding": json.loads(state.read_text())["sharding"] if state.is_file() else None,
            "rank_elements": next(
                (r["rank_elements"] for r in reversed(_log(whole)) if "rank_elements" in r), None
            ),
            "resumed": {
                "rc": [first["rc"], second["rc"]],
                "stderr_tail": first["stderr_tail"] + second["stderr_tail"],
            },
            "resumed_vs_whole": {
                "max_rel_loss_gap": _loss_gap(_losses(stopped), whole_losses),
                "max_abs_weight_gap": _weights_gap(stopped, whole),
            },
            "vs_plain": {
                "max_rel_loss_gap": _loss_gap(whole_losses, runs["plain"]["losses"]),
                "max_abs_weight_gap": _weights_gap(whole, plain),
            },
        }
    if device == "cuda" and torch.cuda.device_count() == 1:
        two = _distill([*common, "--out", str(work / "two-ranks")], ranks=2)
        refused = any("NCCL needs one GPU per rank" in line for line in two["errors"])
        steps_logged = len(_losses(work / "two-ranks"))
        runs["two-ranks"] = {**two, "refused_with_message": refused, "steps_logged": steps_logged}
    return {
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "gpus": torch.cuda.device_count(),
        "torch": torch.__version__,
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else None,
        "preset": preset,
        "steps": steps,
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="teacher model folder")
    parser.add_argument("--student-preset", default="shapes-student-q16l4")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the script on gloo")
    parser.add_argument("--shardings", default="ddp,fsdp2", help="shardings run under torchrun")
    parser.add_argument("--resumed", default="ddp,fsdp2", help="shardings also stopped and resumed")
    parser.add_argument("--work", default="outputs/distill-cuda", help="run folders (removed first)")
    parser.add_argument("--out", help="results JSON (default results/distill-cuda-<date>.json)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("distill_cuda needs a CUDA GPU: torch sees none")
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    result = run_checks(
        args.teacher,
        args.student_preset,
        args.steps,
        work,
        args.device,
        tuple(args.shardings.split(",")),
        tuple(args.resumed.split(",")),
    )
    date = datetime.date.today().isoformat()
    out = Path(args.out or RESULTS_DIR / f"distill-cuda-{date}.json")
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}))
    for name, run in result["runs"].items():
        print(name, {k: v for k, v in run.items() if k not in ("losses", "stderr_tail")})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
