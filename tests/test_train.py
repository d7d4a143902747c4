import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from xsam_edge.data.shapes import CATEGORIES, iter_shapes
from xsam_edge.model.build import build_model
from xsam_edge.model.checkpoint import from_pretrained
from xsam_edge.spec.tokenizer import tiny_tokenizer
from xsam_edge.spec.types import Task
from xsam_edge.training.collate import IGNORE_INDEX, Collator
from xsam_edge.training.losses import SetLossConfig, hungarian_match, lm_loss, set_loss
from xsam_edge.training.teacher import shapes_source
from xsam_edge.training.train import STATE_FILE, TrainConfig, balanced_stream, recipe, train

STEPS = (2, 2, 4)


def _run(out: Path, stop_after: int | None = None):
    torch.manual_seed(0)
    model = build_model("tiny")
    config = TrainConfig(stages=recipe(STEPS, batch_size=2), checkpoint_every=1, log_every=1)
    return train(
        model, tiny_tokenizer(), shapes_source("train"), config, out, CATEGORIES, stop_after=stop_after
    )


def _state(folder: Path) -> dict:
    return from_pretrained(folder).state_dict()


def test_train_runs_every_stage_and_saves_a_loadable_model(tmp_path):
    folder = _run(tmp_path / "run")
    model = from_pretrained(folder)
    assert (folder / "tokenizer.json").is_file()
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records if "loss" in r] == ["segmentor"] * 2 + ["align"] * 2 + ["mixed"] * 4
    assert all(np.isfinite(r["loss"]) for r in records if "loss" in r)
    mixed = [r for r in records if r["stage"] == "mixed"]
    assert {"lm", "class", "mask", "dice"} <= set(mixed[0])
    fresh = build_model("tiny")
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, fresh.state_dict()[k])]
    assert any(k.startswith("segmentor.decoder") for k in changed)
    assert any(k.startswith("llm.") for k in changed)


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tmp_path):
    reference = _state(_run(tmp_path / "a"))
    _run(tmp_path / "b", stop_after=3)  # stops inside the align stage, after a checkpoint
    assert (tmp_path / "b" / STATE_FILE).is_file()
    assert not (tmp_path / "b" / "model").exists()
    resumed = _state(_run(tmp_path / "b"))
    assert reference.keys() == resumed.keys()
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
    log_a = (tmp_path / "a" / "log.jsonl").read_text()
    log_b = (tmp_path / "b" / "log.jsonl").read_text()
    assert log_a == log_b  # the log is trimmed back to the checkpoint, no duplicate lines


@pytest.mark.slow
def test_killed_cli_run_resumes_to_the_uninterrupted_result(tmp_path):
    """A real SIGKILL mid-stage, then the same command again: same final weights as a run never killed."""
    args = ["--preset", "tiny", "--steps", "6,4,10", "--batch-size", "2", "--val-data", ""]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "xsam_edge.cli", "train"]
    subprocess.run([*cmd, "--out", str(tmp_path / "whole"), *args], check=True, env=env, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(killed), *args], env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    log = killed / "log.jsonl"
    while time.time() < deadline and proc.poll() is None:
        lines = log.read_text().splitlines() if log.is_file() else []
        if any('"align"' in line for line in lines):  # stage 1 checkpointed, stage 2 under way
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "model").exists()
    subprocess.run([*cmd, "--out", str(killed), *args], check=True, env=env, capture_output=True)
    whole, resumed = _state(tmp_path / "whole" / "model"), _state(killed / "model")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_collator_labels_only_the_answer_and_finds_spans():
    examples = [e for e in itertools.islice(iter_shapes("val"), 40)]
    referring = next(e for e in examples if e.task is Task.REFERRING)
    panoptic = next(e for e in examples if e.task is Task.PANOPTIC)
    chat = next(e for e in examples if e.task is Task.CHAT)
    tokenizer = tiny_tokenizer()
    collate = Collator(build_model("tiny").config, tokenizer)
    batch = collate([referring, panoptic, chat])
    ids, labels = batch.input_ids[0], batch.lm_labels[0]
    answer = tokenizer.decode([int(i) for i in ids[labels != IGNORE_INDEX]])
    assert answer.replace(" ", "") == "sure,itis<SEG>.<|end|>"
    assert len(batch.spans[0]) == 1 and batch.seg_positions[0] is not None
    assert int(ids[batch.seg_positions[0]]) == tokenizer.seg_id
    assert len(batch.spans[1]) == len(panoptic.request.categories)
    assert batch.seg_positions[2] is None  # chat: LM loss only
    assert batch.gt_masks[1].shape[1:] == (128, 128) and batch.gt_masks[1].shape[0] == len(
        panoptic.target.masks
    )
    lengths = batch.attention_mask.sum(1)
    assert int(lengths.max()) == batch.input_ids.shape[1] and int(lengths.min()) < batch.input_ids.shape[1]
    assert (batch.input_ids[batch.attention_mask == 0] == tokenizer.pad_id).all()


def test_hungarian_match_finds_the_right_queries():
    gt = torch.zeros(2, 32, 32)
    gt[0, :16] = 1
    gt[1, 16:] = 1
    masks = torch.full((4, 8, 8), -8.0)
    masks[3, 4:] = 8.0  # query 3 predicts gt 1
    masks[1, :4] = 8.0  # query 1 predicts gt 0
    logits = torch.zeros(4, 3)
    points = torch.rand(500, 2, generator=torch.Generator().manual_seed(0))
    rows, cols = hungarian_match(logits, masks, torch.tensor([0, 1]), gt, points, SetLossConfig())
    assert dict(zip(rows.tolist(), cols.tolist(), strict=True)) == {1: 0, 3: 1}


def test_set_loss_is_small_for_a_perfect_prediction_and_large_for_a_wrong_one():
    gt = torch.zeros(1, 32, 32)
    gt[0, 8:24, 8:24] = 1
    good = torch.full((3, 32, 32), -20.0)
    good[0, 8:24, 8:24] = 20.0
    logits = torch.full((3, 3), -10.0)
    logits[0, 1] = 10.0
    logits[1:, 2] = 10.0  # the others say no-object
    gen = torch.Generator().manual_seed(0)
    perfect = set_loss(logits, good, torch.tensor([1]), gt, 2, SetLossConfig(), gen)
    wrong = set_loss(logits, torch.full_like(good, -20.0), torch.tensor([1]), gt, 2, SetLossConfig(), gen)
    assert (
        perfect["class"] < 1e-3 and perfect["dice"] < 0.05 and perfect["mask"] < 0.2
    )  # edge points are soft targets
    assert wrong["dice"] > 0.9 and wrong["mask"] > 5


def test_lm_loss_ignores_unlabelled_positions():
    logits = torch.zeros(1, 4, 5)
    logits[0, 1, 3] = 50.0  # position 1 predicts token 3 for position 2
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3, IGNORE_INDEX]])
    assert lm_loss(logits, labels).item() < 1e-6
    assert lm_loss(logits, torch.full((1, 4), IGNORE_INDEX)).item() == 0.0


def test_balanced_stream_repeats_rare_tasks():
    def source(seed):
        rare = next(e for e in iter_shapes("val") if e.task is Task.CHAT)
        common = next(e for e in iter_shapes("val") if e.task is Task.REFERRING)
        while True:
            yield from [common] * 19 + [rare]

    stream = balanced_stream(source, (Task.CHAT, Task.REFERRING), seed=0)
    picked = [e.task for e in itertools.islice(stream, 2000)]
    share = picked.count(Task.CHAT) / len(picked)
    # repeat factor r = sqrt(0.1 / 0.05) ≈ 1.41 for chat, 1 for referring: share ≈ 1.41 / 20.41
    assert 0.055 < share < 0.085


def test_recipe_encoder_lr_scale_reaches_every_stage():
    """Upstream's 0.1 stays the default; the embedded teacher (random encoders) trains them at 1.0."""
    from xsam_edge.training.recipe import TeacherRecipe
    from xsam_edge.training.train import _configure

    assert {s.encoder_lr_scale for s in recipe(STEPS)} == {0.1}
    stages = recipe(STEPS, lr=1e-3, encoder_lr_scale=1.0)
    assert {s.encoder_lr_scale for s in stages} == {1.0}
    groups = _configure(build_model("tiny"), stages[0])
    assert [g["lr"] for g in groups] == [1e-3, 1e-3]  # the encoder group learns at the full rate
    assert TeacherRecipe().encoder_lr_scale == 1.0
