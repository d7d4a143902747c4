"""Distillation under ``torchrun --nproc_per_node 2`` on gloo: ranks stay in sync; a stopped run resumes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed
from conftest import make_tiny_model

from xsam_edge.distill.engine import LOG_FILE, check_gpu_per_rank
from xsam_edge.model.checkpoint import from_pretrained, save_pretrained
from xsam_edge.spec.tokenizer import tiny_tokenizer

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not built into this torch"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], ranks: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks)]
    cmd += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    cmd += ["-m", "xsam_edge.cli", "distill", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.slow  # three launches of two interpreters each
def test_two_ranks_stay_in_sync_and_a_stopped_run_resumes_to_the_uninterrupted_result(tmp_path):
    teacher = save_pretrained(make_tiny_model(0), tmp_path / "teacher", tiny_tokenizer())
    common = ["--teacher", str(teacher), "--student-preset", "tiny-student"]
    common += ["--steps", "4", "--batch-size", "4", "--checkpoint-every", "1", "--log-every", "1"]
    common += ["--device", "cpu"]
    whole, out = tmp_path / "whole", tmp_path / "stopped"
    for args in ([*common, "--out", str(whole)], [*common, "--out", str(out), "--stop-after", "2"]):
        done = _torchrun(args)
        assert done.returncode == 0, done.stderr[-3000:]
    assert not (out / "model").exists()
    resumed = _torchrun([*common, "--out", str(out)])  # the same command again resumes at step 2
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    records = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]
    checkpoints = [r for r in records if r.get("checkpoint")]
    assert [r["step"] for r in checkpoints] == [1, 2, 3, 4]
    # every rank's parameter checksum, gathered at each checkpoint: identical on both ranks
    assert all(len(r["rank_checksums"]) == 2 and len(set(r["rank_checksums"])) == 1 for r in checkpoints)
    assert len({r["rank_checksums"][0] for r in checkpoints}) == 4  # and the weights did change
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]  # no step lost or repeated
    # stopped + resumed = uninterrupted: same losses at every step, same final weights
    assert (out / LOG_FILE).read_text() == (whole / LOG_FILE).read_text()
    a, b = from_pretrained(out / "model").state_dict(), from_pretrained(whole / "model").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # three launches of two interpreters each
def test_fsdp2_shards_the_student_follows_ddp_and_resumes(tmp_path):
    """``--sharding fsdp2`` on gloo: same losses as DDP on the same batches (up to reduction order), a
    stopped run resumes, and a checkpoint is not resumed under the other sharding."""
    teacher = save_pretrained(make_tiny_model(0), tmp_path / "teacher", tiny_tokenizer())
    common = ["--teacher", str(teacher), "--student-preset", "tiny-student"]
    common += ["--steps", "3", "--batch-size", "4", "--checkpoint-every", "1", "--log-every", "1"]
    common += ["--device", "cpu"]
    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp"
    for args in (
        [*common, "--out", str(ddp)],
        [*common, "--out", str(fsdp), "--sharding", "fsdp2", "--stop-after", "2"],
        [*common, "--out", str(fsdp), "--sharding", "fsdp2"],  # resumes at step 2
    ):
        done = _torchrun(args)
        assert done.returncode == 0, done.stderr[-3000:]

    def losses(run):
        records = [json.loads(line) for line in (run / LOG_FILE).read_text().splitlines()]
        return [r["loss"] for r in records if "loss" in r], [r for r in records if r.get("checkpoint")]

    (ddp_losses, _), (fsdp_losses, checkpoints) = losses(ddp), losses(fsdp)
    assert len(fsdp_losses) == 3 and fsdp_losses == pytest.approx(ddp_losses, rel=1e-4, abs=1e-5)
    assert all(len(set(r["rank_checksums"])) == 1 for r in checkpoints)  # both ranks gather the same weights
    _, ddp_checkpoints = losses(ddp)
    whole = ddp_checkpoints[-1]["rank_elements"]
    assert whole[0] == whole[1]  # DDP: a full replica per rank
    shards = checkpoints[-1]["rank_elements"]
    assert max(shards) < 0.6 * whole[0] and sum(shards) >= whole[0]  # FSDP2: about half each
    state = json.loads((fsdp / "checkpoint" / "state.json").read_text())
    assert state["sharding"] == "fsdp2" and state["step"] == 3
    a, b = from_pretrained(fsdp / "model").state_dict(), from_pretrained(ddp / "model").state_dict()
    # within AdamW's weight decay on parameters a step leaves unused (lr·wd ≈ 5e-5 per step): FSDP2 gives
    # them an explicit zero gradient, which AdamW decays; DDP leaves them without one, which AdamW skips
    worst = max((float((a[k] - b[k]).abs().max()), k) for k in a)
    assert worst[0] < 1e-3, worst

    other = _torchrun([*common, "--steps", "4", "--out", str(fsdp)])  # the default sharding is ddp
    assert other.returncode != 0 and "written with --sharding fsdp2" in other.stderr


def test_one_rank_under_torchrun_runs_the_sharding_asked_for(tmp_path):
    """One rank still joins a process group, so ``--sharding fsdp2`` shards (trivially) rather than falling
    back to plain state: what a one-GPU machine can check of the NCCL/FSDP2 path. Same losses as DDP."""
    teacher = save_pretrained(make_tiny_model(0), tmp_path / "teacher", tiny_tokenizer())
    common = ["--teacher", str(teacher), "--student-preset", "tiny-student", "--steps", "2"]
    common += ["--batch-size", "2", "--checkpoint-every", "2", "--log-every", "1", "--device", "cpu"]
    runs = {name: tmp_path / name for name in ("ddp", "fsdp2")}
    for name, out in runs.items():
        done = _torchrun([*common, "--out", str(out), "--sharding", name], ranks=1)
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads((out / "checkpoint" / "state.json").read_text())["sharding"] == name

    def losses(run):
        return [json.loads(line).get("loss") for line in (run / LOG_FILE).read_text().splitlines()]

    assert [x for x in losses(runs["fsdp2"]) if x is not None] == pytest.approx(
        [x for x in losses(runs["ddp"]) if x is not None], rel=1e-5
    )


def test_more_ranks_than_gpus_is_refused_with_what_to_run():
    check_gpu_per_rank(0, 1, 1)  # one rank, one GPU: fine
    check_gpu_per_rank(1, 2, 2)
    with pytest.raises(RuntimeError, match="2 ranks on this node, but torch sees 1 GPU.*--nproc_per_node 1"):
        check_gpu_per_rank(0, 2, 1)  # rank 0 also refuses: NCCL would fail on the duplicate GPU later
    with pytest.raises(RuntimeError, match="--device cpu"):
        check_gpu_per_rank(1, 2, 1)
