"""Distillation (issue #6): student presets, pairing checks, the resumable engine and its CLI.

Losses and pruning: test_distill_losses.py.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from conftest import make_tiny_model

from xsam_edge.cli import main
from xsam_edge.distill.checkpoints import CHECKPOINT_DIR
from xsam_edge.distill.config import LOSS_NAMES, DistillConfig, LossWeights
from xsam_edge.distill.engine import LOG_FILE, distill
from xsam_edge.distill.pairing import Adapters, ChannelAdapter, check_pair
from xsam_edge.distill.run import build_student, distill_run, example_source
from xsam_edge.export.graphs import SlotConfig, build_graph, example_inputs, graph_specs
from xsam_edge.model.build import build_model
from xsam_edge.model.checkpoint import from_pretrained, save_pretrained
from xsam_edge.model.info import info_json
from xsam_edge.model.presets import PRESETS, TINY, get_preset
from xsam_edge.spec.config import XSamConfig
from xsam_edge.spec.tokenizer import tiny_tokenizer
from xsam_edge.training.teacher import shapes_source

STUDENT = "tiny-student"
SLOTS = SlotConfig(max_regions=2, max_conditions=4, max_seq=96, prefill_len=16)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A tiny 'teacher' with visible random weights, saved as a model folder."""
    return save_pretrained(make_tiny_model(0), tmp_path_factory.mktemp("teacher") / "model", tiny_tokenizer())


def _config(**kwargs) -> DistillConfig:
    base = dict(steps=4, batch_size=2, checkpoint_every=1, log_every=1, device="cpu")
    return DistillConfig(**{**base, **kwargs})


# -- presets -------------------------------------------------------------------------------------------------
def test_shapes_student_has_five_times_fewer_macs_per_referring_query():
    teacher, student = info_json(get_preset("shapes-teacher")), info_json(get_preset("shapes-student"))
    assert teacher["total_macs"] / student["total_macs"] >= 5
    assert student["query"]["image_tokens"] < teacher["query"]["image_tokens"]
    assert student["total_params"] < teacher["total_params"]


@pytest.mark.parametrize("name", ["x-sam-student-s", "x-sam-student-s-conv", "x-sam-student-qwen2-0.5b"])
def test_real_size_students_fit_the_issue_budget(name):
    config = get_preset(name)
    with torch.device("meta"):
        model = build_model(config)

    def params(module) -> int:
        return sum(p.numel() for p in module.parameters())

    assert params(model.llm) <= 0.6e9
    assert params(model.visual_encoder) <= 30e6 and params(model.segmentor.encoder) <= 30e6
    assert config.num_image_tokens <= 300 < get_preset("x-sam-phi3").num_image_tokens
    assert config.decoder.hidden_dim == get_preset("x-sam-phi3").decoder.hidden_dim  # the shared 256-d space


@pytest.mark.parametrize("name", ["tiny-student", "shapes-student"])
def test_student_feeds_the_edge_graphs_unchanged(name):
    """A student is just another XSamConfig: the segment and encode_image graphs build and run on it."""
    torch.manual_seed(0)
    model = build_model(name).eval()
    specs = graph_specs(model.config, SLOTS)
    for graph in ("encode_image", "segment"):
        with torch.no_grad():
            outputs = build_graph(model, graph, SLOTS)(*example_inputs(model.config, graph, SLOTS))
        shapes = [tuple(t.shape) for t in outputs]
        assert shapes == [s.shape for s in specs[graph].outputs]


def test_student_presets_round_trip_through_json():
    for name in (
        "shapes-student",
        "tiny-student",
        "x-sam-student-s",
        "x-sam-student-s-conv",
        "x-sam-student-qwen2-0.5b",
    ):
        assert XSamConfig.from_dict(json.loads(PRESETS[name].to_json())) == PRESETS[name]


# -- configuration and pairing -------------------------------------------------------------------------------
def test_config_parsing_and_validation():
    assert DistillConfig.parse_losses("all") == LOSS_NAMES
    assert DistillConfig.parse_losses("gt,feature") == ("feature", "gt")
    assert LossWeights.parse("feature=2, output=0.5").feature == 2.0
    with pytest.raises(ValueError, match="unknown losses"):
        DistillConfig.parse_losses("feature,typo")
    with pytest.raises(ValueError, match="NAME=VALUE"):
        LossWeights.parse("nope=1")
    with pytest.raises(ValueError, match="≥ 0"):
        LossWeights(output=-1)


def test_pairing_refuses_another_decoder_width_unless_adapted():
    teacher = TINY
    wide = get_preset(STUDENT)
    student = dataclasses.replace(wide, decoder=dataclasses.replace(wide.decoder, hidden_dim=64))
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match="decoder width 64 differs from the teacher's 32"):
        check_pair(teacher, student, tok, tok, _config())
    check_pair(teacher, student, tok, tok, _config(decoder_adapter=True))
    adapters = Adapters(teacher, student)
    assert isinstance(adapters.decoder, ChannelAdapter)
    assert isinstance(adapters.tokens, ChannelAdapter)  # LLM widths 32 → 64 differ too
    assert isinstance(adapters.mask_features, torch.nn.Identity)


def test_pairing_refuses_logit_kd_across_tokenizers():
    other = tiny_tokenizer(dataclasses.replace(TINY.tokens, template="plain"))
    tok = tiny_tokenizer()
    student = get_preset(STUDENT)
    with pytest.raises(ValueError, match="logit KD needs the teacher's tokenizer"):
        check_pair(TINY, student, tok, other, _config())
    check_pair(TINY, student, tok, other, _config(losses=("feature", "embed", "output", "gt")))


def test_missing_or_unknown_dataset_fails_before_training(tmp_path, teacher_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        example_source(f"coco_panoptic:{tmp_path}/none.json:{tmp_path}/png:{tmp_path}/img")
    with pytest.raises(ValueError, match="unknown shapes split"):
        distill_run(
            out=tmp_path / "run",
            student_preset=STUDENT,
            config=_config(),
            teacher_dir=teacher_dir,
            data="shapes:nosuch",
        )
    assert not (tmp_path / "run").exists()


def test_a_model_folder_of_another_preset_is_refused_as_student_init(teacher_dir):
    with pytest.raises(
        ValueError, match="holds a model of preset 'tiny', not of student preset 'tiny-student'"
    ):
        build_student(STUDENT, teacher_dir)


# -- the engine ----------------------------------------------------------------------------------------------
def _run(out, teacher_dir, stop_after=None, **kwargs):
    return distill_run(
        out=out,
        student_preset=STUDENT,
        config=_config(**kwargs),
        teacher_dir=teacher_dir,
        stop_after=stop_after,
        rank_examples=8,
    )


def test_resume_after_a_stop_reaches_the_uninterrupted_result(tmp_path, teacher_dir):
    whole = from_pretrained(_run(tmp_path / "a", teacher_dir)).state_dict()
    _run(tmp_path / "b", teacher_dir, stop_after=2)
    assert (tmp_path / "b" / CHECKPOINT_DIR / "student" / "model.safetensors").is_file()
    assert not (tmp_path / "b" / "model").exists()
    resumed = from_pretrained(_run(tmp_path / "b", teacher_dir)).state_dict()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    log_a = (tmp_path / "a" / LOG_FILE).read_text()
    assert log_a == (tmp_path / "b" / LOG_FILE).read_text()
    records = [json.loads(line) for line in log_a.splitlines()]
    losses = [r for r in records if "loss" in r]
    assert [r["step"] for r in losses] == [1, 2, 3, 4]
    assert {"feature", "embed", "logit", "gt_lm"} <= set().union(*losses)


def test_a_label_gated_run_distils_outputs(tmp_path, teacher_dir):
    _run(tmp_path / "gated", teacher_dir, steps=2, losses=("output", "gt"), gate_output_by_labels=True)
    records = [json.loads(line) for line in (tmp_path / "gated" / LOG_FILE).read_text().splitlines()]
    losses = [r for r in records if "loss" in r]
    assert [r["step"] for r in losses] == [1, 2] and any("output" in r for r in losses)
    # the same at sampled points, three quarters of each matched pair's where the student is unsure
    sampled = dict(output_points=256, output_point_importance=0.75)
    _run(
        tmp_path / "unsure",
        teacher_dir,
        steps=2,
        losses=("output", "gt"),
        gate_output_by_labels=True,
        **sampled,
    )
    records = [json.loads(line) for line in (tmp_path / "unsure" / LOG_FILE).read_text().splitlines()]
    at_points = [r for r in records if "loss" in r]
    assert all(math.isfinite(r["output"]) for r in at_points if "output" in r)
    assert [r.get("output") for r in at_points] != [r.get("output") for r in losses]


def test_bf16_autocast_runs_every_loss_and_follows_fp32(tmp_path, teacher_dir):
    """``precision="bf16"`` is the CUDA default's autocast; run on CPU it checks that path without a GPU.

    Ten examples: every task once, visual prompts included.
    """
    kwargs = dict(steps=5, losses=LOSS_NAMES, gate_output_by_labels=True)
    runs = {p: tmp_path / p for p in ("fp32", "bf16")}
    for precision, out in runs.items():
        _run(out, teacher_dir, precision=precision, **kwargs)

    def losses(out):
        return [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines() if '"loss"' in line]

    fp32, bf16 = losses(runs["fp32"]), losses(runs["bf16"])
    assert {"feature", "embed", "logit", "output", "gt_mask"} <= set().union(*bf16)
    assert all(math.isfinite(r["loss"]) for r in bf16)
    # bf16 keeps ~3 significant digits: the first step (same weights, same batch) agrees to a few percent
    assert bf16[0]["loss"] == pytest.approx(fp32[0]["loss"], rel=0.05)
    assert bf16[0]["loss"] != fp32[0]["loss"]  # and autocast did take effect


def test_a_partly_labelled_run_trains_and_older_checkpoints_still_resume(tmp_path, teacher_dir, caplog):
    partly = dict(steps=2, losses=("output", "gt"), gate_output_by_labels=True, label_fraction=0.5)
    with caplog.at_level("WARNING", logger="xsam_edge.distill.engine"):
        _run(tmp_path / "partly", teacher_dir, **partly)
    assert "without the logit loss" in caplog.text  # the answer text would come from half the images
    records = [json.loads(line) for line in (tmp_path / "partly" / LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2]
    with pytest.raises(ValueError, match=r"other settings \(label_fraction=0.5\)"):
        _run(tmp_path / "partly", teacher_dir, **{**partly, "label_fraction": 1.0})
    # a checkpoint written before label_fraction was recorded ran with every label: it resumes as such
    _run(tmp_path / "old", teacher_dir, stop_after=1)
    state_file = tmp_path / "old" / CHECKPOINT_DIR / "state.json"
    state = json.loads(state_file.read_text())
    del state["recipe"]["label_fraction"]
    state_file.write_text(json.dumps(state))
    _run(tmp_path / "old", teacher_dir, stop_after=1)
    assert json.loads(state_file.read_text())["step"] == 2


def test_a_checkpoint_of_another_student_is_refused_before_any_step(tmp_path, teacher_dir):
    _run(tmp_path / "run", teacher_dir, stop_after=1)
    teacher = from_pretrained(teacher_dir)
    other = build_model(dataclasses.replace(get_preset(STUDENT), seg_pool=1, name="other"))
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match="checkpoint of student 'tiny-student' with another config"):
        distill(
            teacher,
            other,
            tok,
            tok,
            shapes_source("train"),
            _config(),
            tmp_path / "run",
            teacher_id=str(teacher_dir.resolve()),
        )
    with pytest.raises(ValueError, match="distilled from teacher"):
        distill(
            teacher,
            build_model(STUDENT),
            tok,
            tok,
            shapes_source("train"),
            _config(),
            tmp_path / "run",
            teacher_id="another",
        )


def test_a_checkpoint_of_a_run_with_other_settings_is_refused_before_any_step(tmp_path, teacher_dir):
    """A longer run resumed from a shorter one's checkpoint would follow another learning-rate schedule."""
    _run(tmp_path / "run", teacher_dir, stop_after=1)
    with pytest.raises(ValueError, match=r"other settings \(steps=4\); .*new --out"):
        _run(tmp_path / "run", teacher_dir, steps=8)
    with pytest.raises(
        ValueError, match=r"other settings \(losses=\['feature', 'embed', 'logit', 'output', 'gt'\]"
    ):
        _run(tmp_path / "run", teacher_dir, losses=("feature", "gt"))
    _run(tmp_path / "run", teacher_dir, stop_after=1, log_every=2, checkpoint_every=2)  # not the recipe
    assert json.loads((tmp_path / "run" / CHECKPOINT_DIR / "state.json").read_text())["step"] == 2


def test_cli_prune_writes_a_loadable_smaller_model(tmp_path, teacher_dir, capsys):
    out = tmp_path / "pruned"
    code = main(
        ["prune", "--teacher", str(teacher_dir), "--out", str(out), "--like", STUDENT, "--rank-examples", "8"]
    )
    assert code == 0
    assert "query usage" in capsys.readouterr().out
    model = from_pretrained(out)
    assert model.config.decoder == get_preset(STUDENT).decoder
    assert model.config.llm == TINY.llm


def test_cli_distill_reports_user_errors(tmp_path, teacher_dir, capsys):
    def distill_cli(preset: str, out: str, *extra: str) -> int:
        return main(
            ["distill", "--teacher", str(teacher_dir), "--student-preset", preset, "--out", out, *extra]
        )

    assert distill_cli(STUDENT, str(tmp_path / "x"), "--data", "shapes:nosuch") == 2
    assert "unknown shapes split" in capsys.readouterr().err
    assert distill_cli("nope", str(tmp_path)) == 2
    assert "known presets" in capsys.readouterr().err
    assert distill_cli(STUDENT, str(tmp_path / "y"), "--losses", "feature,gt", "--gate-output-by-labels") == 2
    assert "switch on the output loss" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()
