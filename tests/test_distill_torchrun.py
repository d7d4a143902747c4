"""Distillation under ``torchrun --nproc_per_node 2`` on gloo: ranks stay in sync; a stopped run resumes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch.distributed
from conftest import make_tiny_model

from xsam_edge.checkpoint import from_pretrained, save_pretrained
from xsam_edge.distill.engine import LOG_FILE
from xsam_edge.tokenizer import tiny_tokenizer

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not built into this torch"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    cmd += ["-m", "xsam_edge.cli", "distill", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.slow  # two launches of two interpreters each
def test_two_ranks_stay_in_sync_and_resume_from_the_last_checkpoint(tmp_path):
    teacher = save_pretrained(make_tiny_model(0), tmp_path / "teacher", tiny_tokenizer())
    out = tmp_path / "run"
    common = ["--teacher", str(teacher), "--student-preset", "tiny-student", "--out", str(out)]
    common += ["--steps", "4", "--batch-size", "4", "--checkpoint-every", "1", "--log-every", "1"]
    common += ["--device", "cpu"]

    first = _torchrun([*common, "--stop-after", "2"])
    assert first.returncode == 0, first.stderr[-3000:]
    assert not (out / "model").exists()
    second = _torchrun(common)  # the same command again resumes at step 2
    assert second.returncode == 0, second.stderr[-3000:]

    records = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]
    checkpoints = [r for r in records if r.get("checkpoint")]
    assert [r["step"] for r in checkpoints] == [1, 2, 3, 4]
    # every rank's parameter checksum, gathered at each checkpoint: identical on both ranks
    assert all(len(r["rank_checksums"]) == 2 and len(set(r["rank_checksums"])) == 1 for r in checkpoints)
    assert len({r["rank_checksums"][0] for r in checkpoints}) == 4  # and the weights did change
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]  # resumed: no step lost or repeated
    from_pretrained(out / "model")
