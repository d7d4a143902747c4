"""The distillation benchmarks: student decoder variants (folders, rows, recipes) and mask recall."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json

import pytest

from xsam_edge.distill.config import DistillConfig, LossWeights
from xsam_edge.model.info import info_json
from xsam_edge.model.presets import PRESETS, get_preset
from xsam_edge.training.recipe import TeacherRecipe


def test_student_variant_registers_a_preset_with_that_decoder_and_refuses_a_bad_spelling():
    from research.student_variants import Variant, register

    variant = Variant.parse("q20l4:20:4")
    name = register(variant)
    try:
        config = get_preset(name)
        base = get_preset("shapes-student")
        assert (config.decoder.num_queries, config.decoder.decoder_layers) == (20, 4)
        sizes = {"num_queries": base.decoder.num_queries, "decoder_layers": base.decoder.decoder_layers}
        assert dataclasses.replace(config.decoder, **sizes) == base.decoder  # only the decoder sizes change
        assert info_json(config)["total_macs"] > info_json(base)["total_macs"]
    finally:
        PRESETS.pop(name)
    with pytest.raises(ValueError, match="NAME:QUERIES:LAYERS"):
        Variant.parse("q16l4:16")


def test_the_measured_student_is_a_preset_and_its_recipe_resumes_the_benchmarks_runs():
    """The q16l4 variant the benchmark measured is the static preset, so its model folders load by name,
    and the pipeline's gated-5600 recipe computes what the benchmark's run did (its checkpoints resume)."""
    from research.student_variants import RunSettings, Variant, register
    from xsam_edge.distill.checkpoints import run_recipe
    from xsam_edge.distill.config import get_student_recipe

    static = PRESETS["shapes-student-q16l4"]
    try:
        assert get_preset(register(Variant.parse("q16l4:16:4"))) == static
    finally:
        PRESETS["shapes-student-q16l4"] = static
    recipe = get_student_recipe("gated-5600")
    assert recipe.preset == "shapes-student-q16l4"
    teacher = info_json(get_preset("shapes-teacher"))["total_macs"]
    assert teacher / info_json(static)["total_macs"] >= 5  # the MACs goal
    settings = RunSettings(recipe.losses, recipe.steps, gated=True)
    benchmark_run = settings.folder(Variant.parse("q16l4:16:4"))
    assert benchmark_run.name == "q16l4-feature-output-gt-s5600-gated"  # the README's measured folder
    # the config that run trained under (README's command): a changed recipe no longer names what was measured
    measured = DistillConfig(
        steps=5600, checkpoint_every=1400, losses=("feature", "output", "gt"), gate_output_by_labels=True
    )
    assert run_recipe(recipe.distill_config()) == run_recipe(measured)
    assert run_recipe(settings.distill_config(recipe.preset, benchmark_run.name)) == run_recipe(measured)
    with pytest.raises(ValueError, match="known recipes: quick, gated-5600"):
        get_student_recipe("fast")


def test_student_variant_folders_and_rows_keep_runs_apart():
    from research.student_variants import DEFAULT_STEPS, RunSettings, Variant, already_run

    variant, losses = Variant.parse("q16l4:16:4"), ("feature", "gt")
    # earlier runs (seed 0, ungated) keep their folder names, so the benchmark still finds and resumes them
    assert RunSettings(losses, DEFAULT_STEPS).folder(variant).name == "q16l4-feature-gt"
    assert RunSettings(losses, 2800, gated=True).folder(variant).name == "q16l4-feature-gt-s2800-gated"
    pairs = itertools.product((False, True), (0, 1, 2))
    folders = {RunSettings(losses, 2800, gated, seed).folder(variant) for gated, seed in pairs}
    assert len(folders) == 6  # another seed never resumes from, or overwrites, another seed's checkpoints
    longer = TeacherRecipe(steps=(600, 300, 4200))
    named = RunSettings(losses, 2800, True, 0, longer).folder(variant).name
    assert named == "q16l4-feature-gt-s2800-gated-t600-300-4200"  # never resumes a default teacher's run
    partly = RunSettings(losses, 2800, True, 1, longer, label_fraction=0.1)
    assert partly.folder(variant).name == "q16l4-feature-gt-s2800-gated-seed1-l0.1-t600-300-4200"
    # loss weights: only those off their defaults name the folder and key the row; bad ones are refused
    assert RunSettings.parse_weights("output=1, gt_mask=1") == ()
    output = ("feature", "output", "gt")
    less_output = RunSettings.parse_weights("output=0.3,feature=1")
    weighted = RunSettings(output, 2800, True, 1, longer, 0.1, less_output)
    assert weighted.weights == (("output", 0.3),)
    name = "q16l4-feature-output-gt-s2800-gated-seed1-l0.1-woutput0.3-t600-300-4200"
    assert weighted.folder(variant).name == name
    assert weighted.distill_config("shapes-student", "x").weights == LossWeights(output=0.3)
    with pytest.raises(ValueError, match="bad loss weight"):
        RunSettings.parse_weights("outputs=0.3")
    # a row written before gating, seeds, label fractions or weights existed counts as their defaults
    old_row = {**dataclasses.asdict(variant), "losses": list(losses), "steps": 2800}
    assert already_run([old_row], variant, RunSettings(losses, 2800))
    assert not already_run([old_row], variant, RunSettings(losses, 2800, weights=(("output", 0.3),)))
    new_row = {**dataclasses.asdict(variant), **weighted.row_fields()}
    assert already_run([json.loads(json.dumps(new_row))], variant, weighted)  # as read back from the file
    assert not already_run([new_row], variant, dataclasses.replace(weighted, weights=()))
    hard = dataclasses.replace(weighted, hard_masks=True)
    assert hard.folder(variant).name == name.replace("-t600", "-hardmasks-t600")
    assert hard.distill_config("shapes-student", "x").hard_teacher_masks
    assert not already_run([new_row], variant, hard)
    sure = dataclasses.replace(weighted, min_foreground=0.5)
    assert sure.folder(variant).name == name.replace("-t600", "-fg0.5-t600")
    assert sure.distill_config("shapes-student", "x").output_min_foreground == 0.5
    assert not already_run([new_row], variant, sure)
    sharp = dataclasses.replace(weighted, output_temperature=1.0)
    assert sharp.folder(variant).name == name.replace("-t600", "-ot1-t600")
    assert sharp.distill_config("shapes-student", "x").class_temperature == 1.0
    assert weighted.distill_config("shapes-student", "x").class_temperature == 2.0  # the text KD's
    assert not already_run([new_row], variant, sharp)
    sampled = dataclasses.replace(weighted, output_points=1024)
    assert sampled.folder(variant).name == name.replace("-t600", "-op1024-t600")
    assert sampled.distill_config("shapes-student", "x").output_points == 1024
    assert not already_run([new_row], variant, sampled)
    unsure = dataclasses.replace(sampled, output_point_importance=0.75)
    assert unsure.folder(variant).name == name.replace("-t600", "-op1024-opi0.75-t600")
    assert unsure.distill_config("shapes-student", "x").output_point_importance == 0.75
    assert not already_run([new_row], variant, unsure) and already_run([new_row], variant, weighted)


def test_mask_recall_matches_answers_to_the_ground_truth():
    import numpy as np

    from research.mask_recall import match_stats

    gt = np.zeros((2, 4, 4), bool)
    gt[0, :2, :2] = True  # 4 pixels
    gt[1, 2:, 2:] = True
    pred = np.zeros((3, 4, 4), bool)
    pred[0, :2, :2] = True  # ground truth 0 exactly
    pred[1, 2:, 2:3] = True  # half of ground truth 1: IoU 0.5, a hit
    pred[2, 0, 3] = True  # nothing
    stats = match_stats(pred, np.array([0.9, 0.6, 0.2], np.float32), gt)
    assert stats["best_iou"] == pytest.approx([1.0, 0.5])
    assert stats["hit_score"] == pytest.approx([0.9, 0.6]) and stats["miss_score"] == pytest.approx([0.2])
    assert match_stats(pred[:0], np.zeros(0, np.float32), gt)["best_iou"] == [0.0, 0.0]  # nothing answered
    assert match_stats(pred, np.ones(3, np.float32), gt[:0])["miss_score"] == [1.0, 1.0, 1.0]


def test_student_variants_keep_one_teacher_per_results_file(tmp_path):
    """Rows distilled from a longer-trained teacher never land in a file scored against another teacher."""
    from research.student_variants import check_same_teacher
    from xsam_edge.training.recipe import parse_teacher_steps

    out = tmp_path / "variants.json"
    longer = dataclasses.asdict(TeacherRecipe(steps=parse_teacher_steps("600,300,4200")))
    written = json.loads(json.dumps({"teacher_recipe": longer, "rows": []}))  # as read back from the file
    check_same_teacher(written, longer, out)
    check_same_teacher({"rows": []}, dataclasses.asdict(TeacherRecipe()), out)  # files before the option
    with pytest.raises(SystemExit, match="give --out another results file"):
        check_same_teacher({"rows": []}, longer, out)
    with pytest.raises(SystemExit, match="give --out another results file"):
        check_same_teacher(written, dataclasses.asdict(TeacherRecipe()), out)
    for bad in ("600,300", "600,x,1200", "600,0,1200"):
        with pytest.raises(argparse.ArgumentTypeError, match="three positive step counts"):
            parse_teacher_steps(bad)
