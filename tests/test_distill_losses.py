"""Distillation losses and decoder pruning (issue #6), on one forward pass of a tiny teacher-student pair."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import make_tiny_model, rerandomize, shapes_examples

from xsam_edge.distill.config import DistillConfig
from xsam_edge.distill.losses import (
    embed_loss,
    feature_loss,
    hard_prompt_weights,
    label_trust,
    labelled_part,
    logit_kd_loss,
    output_loss,
    resize_maps,
    uncertain_points,
)
from xsam_edge.distill.pairing import Adapters
from xsam_edge.distill.prune import prune_decoder, query_usage, transplant
from xsam_edge.model.build import build_model
from xsam_edge.spec.tokenizer import tiny_tokenizer
from xsam_edge.spec.types import Task
from xsam_edge.training.collate import Collator
from xsam_edge.training.losses import SetLossConfig
from xsam_edge.training.train import gt_losses, xsam_forward

STUDENT = "tiny-student"


# -- losses --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def same_forward():
    """The tiny model's forward on a batch that has every task, twice (teacher = student)."""
    model = make_tiny_model(1)
    batch = Collator(model.config, tiny_tokenizer())(shapes_examples(10))
    with torch.no_grad():
        out = xsam_forward(model, batch, torch.Generator().manual_seed(0))
        again = xsam_forward(model, batch, torch.Generator().manual_seed(0))
    return model, batch, out, again


def test_distillation_losses_vanish_when_the_student_is_the_teacher(same_forward):
    model, batch, out, again = same_forward
    adapters = Adapters(model.config, model.config)
    parts = feature_loss(again, out, model.config, model.config, adapters)
    assert set(parts) == {"tokens", "region", "pyramid", "pixel"}
    assert all(float(v) < 1e-10 for v in parts.values())
    assert float(embed_loss(again, out, adapters)) < 1e-10
    head = model.llm.lm_head
    assert abs(float(logit_kd_loss(head, head, again, out, batch, batch, 2.0).detach())) < 1e-5


def test_output_loss_matches_queries_so_their_order_does_not_matter(same_forward):
    _, _, out, _ = same_forward
    teacher = dataclasses.replace(out, levels=out.levels[-1:])
    gen = torch.Generator().manual_seed(0)
    cls, mask = out.levels[-1]
    noisy = (cls + 0.3 * torch.randn(cls.shape, generator=gen), mask + torch.randn(mask.shape, generator=gen))
    perm = torch.randperm(cls.shape[1], generator=gen)
    shuffled = (noisy[0][:, perm], noisy[1][:, perm])
    args = (2.0, DistillConfig().set_loss_config, False, 0.0, 4.0)
    plain, _ = output_loss(dataclasses.replace(out, levels=[noisy]), teacher, *args)
    permuted, _ = output_loss(dataclasses.replace(out, levels=[shuffled]), teacher, *args)
    exact, _ = output_loss(teacher, teacher, *args)
    assert torch.allclose(plain, permuted, atol=1e-5)
    assert float(exact) < float(plain)


def test_output_loss_at_sampled_points_reads_each_models_own_grid(same_forward):
    """With points, a student on a coarser grid is compared with the teacher's fine masks where they are
    read, not with their resized copy: exact student → the smallest loss, and order still does not matter."""
    _, _, out, _ = same_forward
    teacher = dataclasses.replace(out, levels=out.levels[-1:])
    cls, mask = out.levels[-1]
    points = torch.rand(512, 2, generator=torch.Generator().manual_seed(1))
    args = (2.0, DistillConfig().set_loss_config, False, 0.0, 4.0)
    exact, _ = output_loss(teacher, teacher, *args, points=points)
    coarse = resize_maps(mask, (mask.shape[-1] // 2, mask.shape[-1] // 2))  # what a smaller student answers
    blurred, _ = output_loss(dataclasses.replace(out, levels=[(cls, coarse)]), teacher, *args, points=points)
    on_grid, _ = output_loss(dataclasses.replace(out, levels=[(cls, coarse)]), teacher, *args)
    perm = torch.randperm(cls.shape[1], generator=torch.Generator().manual_seed(2))
    shuffled = dataclasses.replace(out, levels=[(cls[:, perm], coarse[:, perm])])
    permuted, _ = output_loss(shuffled, teacher, *args, points=points)
    assert float(exact) < float(blurred)
    assert torch.allclose(blurred, permuted, atol=1e-5)
    assert not torch.allclose(blurred, on_grid)  # on the grid the target is resized too: another loss
    with pytest.raises(ValueError, match="output_points must be"):
        DistillConfig(output_points=-1)
    with pytest.raises(ValueError, match="switch on the output loss"):
        DistillConfig(losses=("feature", "gt"), output_points=64)


def test_uncertain_points_gather_at_the_mask_edge():
    """Importance sampling: the picked share lands where the logits are near 0, the rest is uniform."""
    ramp = torch.linspace(-8, 8, 32)
    edge = ramp[None, None, :].expand(3, 32, 32)  # logit 0 on the vertical line x = 0.5
    gen = torch.Generator().manual_seed(0)
    picked = uncertain_points(edge, 400, 0.75, gen)
    assert picked.shape == (3, 400, 2) and bool(((picked >= 0) & (picked <= 1)).all())
    # the picked 300 are the 300 of 1200 uniform candidates nearest the edge: about |x - 0.5| < 0.125
    near = (picked[..., 0] - 0.5).abs() < 0.15  # 30 % of the square
    assert float(near[:, :300].float().mean()) > 0.95
    assert float(near[:, 300:].float().mean()) < 0.45  # the uniform quarter
    uniform = uncertain_points(edge, 400, 0.0, torch.Generator().manual_seed(0))
    assert float(((uniform[..., 0] - 0.5).abs() < 0.15).float().mean()) < 0.4
    again = uncertain_points(edge, 400, 0.75, torch.Generator().manual_seed(0))
    assert torch.equal(picked, again)  # a seed picks the same points


def test_output_loss_at_uncertain_points_matches_on_shared_points_and_reads_pairs_at_their_edges(
    same_forward,
):
    """``importance``: matching still uses the shared points; the matched masks are compared elsewhere."""
    _, _, out, _ = same_forward
    teacher = dataclasses.replace(out, levels=out.levels[-1:])
    cls, mask = out.levels[-1]
    points = torch.rand(256, 2, generator=torch.Generator().manual_seed(1))
    args = (2.0, DistillConfig().set_loss_config, False, 0.0, 4.0)
    coarse = dataclasses.replace(out, levels=[(cls, resize_maps(mask, (mask.shape[-1] // 2,) * 2))])

    def loss(student, importance, seed=3, **kw):
        gen = torch.Generator().manual_seed(seed)
        return output_loss(
            student, teacher, *args, points=points, importance=importance, generator=gen, **kw
        )[0]

    # each student is read where it is unsure, so losses of two students are at other points; an exact
    # student still sits clearly below one whose masks are noise around the teacher's
    noise = 4 * torch.randn(mask.shape, generator=torch.Generator().manual_seed(4))
    noisy = dataclasses.replace(out, levels=[(cls, mask + noise)])
    assert float(loss(teacher, 0.75)) + 0.1 < float(loss(noisy, 0.75))
    assert torch.equal(loss(coarse, 0.75), loss(coarse, 0.75))  # seeded
    assert not torch.allclose(loss(coarse, 0.75), loss(coarse, 0.0))  # other points, another loss
    assert torch.allclose(loss(coarse, 0.0), output_loss(coarse, teacher, *args, points=points)[0])
    # the surest teacher queries only: the pairs' targets come from the kept queries' own masks
    assert torch.isfinite(loss(coarse, 0.75, min_foreground=0.5))
    with pytest.raises(ValueError, match="give points too"):
        output_loss(coarse, teacher, *args, importance=0.75)
    with pytest.raises(ValueError, match="set output_points too"):
        DistillConfig(output_point_importance=0.75)
    with pytest.raises(ValueError, match=r"share in \[0, 1\]"):
        DistillConfig(output_points=64, output_point_importance=1.5)


def test_output_loss_with_fewer_student_queries_and_hard_prompt_weights(same_forward):
    _, _, out, _ = same_forward
    cls, mask = out.levels[-1]
    student = dataclasses.replace(out, levels=[(cls[:, :4] * 0.5, mask[:, :4] * 0.5)])
    loss, disagreement = output_loss(student, out, 2.0, DistillConfig().set_loss_config, True, 1.0, 4.0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert disagreement.shape == (cls.shape[0],) and bool((disagreement > 0).all())


def test_hard_teacher_masks_copy_the_thresholded_masks(same_forward):
    """``hard_masks`` is the loss against a teacher whose masks are already binary (EdgeSAM's targets)."""
    _, _, out, _ = same_forward
    cls, mask = out.levels[-1]
    gen = torch.Generator().manual_seed(1)
    noisy_cls = cls + 0.3 * torch.randn(cls.shape, generator=gen)
    student = dataclasses.replace(out, levels=[(noisy_cls, mask * 0.5)])
    args = (2.0, DistillConfig().set_loss_config, False, 0.0, 4.0)
    soft, _ = output_loss(student, out, *args)
    hard, _ = output_loss(student, out, *args, hard_masks=True)
    # logits pushed far from 0 keep their sign: the sigmoid of the teacher is then the thresholded mask
    saturated = dataclasses.replace(out, levels=[(cls, torch.where(mask > 0, 1e4, -1e4))])
    binary, _ = output_loss(student, saturated, *args)
    assert torch.allclose(hard, binary, atol=1e-5)
    assert not torch.allclose(hard, soft, atol=1e-3)
    with pytest.raises(ValueError, match="switch on the output loss"):
        DistillConfig(losses=("feature", "gt"), hard_teacher_masks=True)


def test_output_min_foreground_frees_the_queries_the_teacher_is_unsure_of(same_forward):
    """Student queries left to unsure teacher queries learn only "background": their masks are not copied."""
    _, _, out, _ = same_forward
    cls, mask = out.levels[-1]
    sure = torch.arange(cls.shape[1]) % 2 == 0  # even queries are sure of a class, odd ones 30 % sure
    unsure_row = torch.full_like(cls[0, 0], -20.0)
    unsure_row[0], unsure_row[-1] = 0.0, math.log(0.7 / 0.3)
    cls = torch.where(
        sure[None, :, None], cls.index_fill(-1, torch.tensor([cls.shape[-1] - 1]), -20.0), unsure_row
    )
    teacher = dataclasses.replace(out, levels=[(cls, mask)])
    gen = torch.Generator().manual_seed(2)
    redrawn = torch.where(sure[None, :, None, None], mask, 5 * torch.randn(mask.shape, generator=gen))
    student = dataclasses.replace(out, levels=[(cls, redrawn)])
    args = (2.0, DistillConfig().set_loss_config, False, 0.0, 4.0)
    freed, _ = output_loss(student, teacher, *args, min_foreground=0.5)
    exact, _ = output_loss(teacher, teacher, *args, min_foreground=0.5)
    assert torch.allclose(freed, exact, atol=1e-5)  # the redrawn masks belong to freed queries
    # copying every query weighs those masks too, by the teacher's foreground probability
    assert (
        float(output_loss(student, teacher, *args)[0]) > float(output_loss(teacher, teacher, *args)[0]) + 0.1
    )
    # a teacher sure of nothing: every student query learns "background"
    nothing, _ = output_loss(student, teacher, *args, min_foreground=0.999)
    assert torch.isfinite(nothing) and float(nothing) > 0
    with pytest.raises(ValueError, match="switch on the output loss"):
        DistillConfig(losses=("feature", "gt"), output_min_foreground=0.5)
    with pytest.raises(ValueError, match=r"output_min_foreground must be in \[0, 1\)"):
        DistillConfig(output_min_foreground=1.0)
    with pytest.raises(ValueError, match="output_temperature must be > 0"):
        DistillConfig(output_temperature=0.0)
    with pytest.raises(ValueError, match="switch on the output loss"):
        DistillConfig(losses=("feature", "gt"), output_temperature=1.0)


def test_label_trust_is_class_probability_times_mask_iou():
    gt = torch.zeros(2, 8, 8)
    gt[0, :4, :4] = 1
    gt[1, 4:, 4:] = 1
    big = 20.0
    t_cls = torch.full((3, 4), -big)
    t_cls[0, 1] = big  # query 0: class 1, mask = ground truth 0 (class 1): right
    t_cls[1, 2] = big  # query 1: class 2, mask = ground truth 0 (class 1): wrong class
    t_cls[2, 3] = big  # query 2: background
    t_mask = torch.full((3, 4, 4), -big)
    t_mask[0, :2, :2] = big
    t_mask[1, :2, :2] = big
    trust = label_trust(t_cls, t_mask, torch.tensor([1, 0]), gt)
    assert trust[0] == pytest.approx(1.0, abs=1e-4)
    assert float(trust[1]) < 1e-4 and float(trust[2]) < 1e-4
    assert torch.equal(label_trust(t_cls, t_mask, torch.zeros(0, dtype=torch.long), gt[:0]), torch.zeros(3))


def test_label_gated_output_loss_copies_no_mask_the_labels_reject(same_forward):
    _, batch, out, _ = same_forward
    cls, mask = out.levels[-1]
    mask = mask.clone().requires_grad_(True)
    student = dataclasses.replace(out, levels=[(cls * 0.5, mask)])
    args = (2.0, DistillConfig().set_loss_config, False, 0.0, 4.0)
    n = cls.shape[0]
    side = batch.seg_pixels.shape[-1]
    no_labels = [(torch.zeros(0, dtype=torch.long), torch.zeros(0, side, side))] * n
    loss, _ = output_loss(student, out, *args, labels=no_labels)
    (grad,) = torch.autograd.grad(loss, mask)
    assert float(grad.abs().max()) == 0.0  # labels say nothing is there: no teacher mask is copied
    labels = [(batch.gt_labels[i], batch.gt_masks[i]) for i in out.segmented]
    gated, _ = output_loss(student, out, *args, labels=labels)
    (grad,) = torch.autograd.grad(gated, mask)
    ungated, _ = output_loss(student, out, *args)
    assert float(grad.abs().max()) > 0 and float(gated.detach()) <= float(ungated.detach())
    # an example whose labels the run does not use is copied ungated, whatever its labels would say
    unused = output_loss(student, out, *args, labels=[None] * n)[0]
    assert float(unused.detach()) == pytest.approx(float(ungated.detach()), rel=1e-6)
    with pytest.raises(ValueError, match="were decoded"):
        output_loss(student, out, *args, labels=labels[:-1])
    with pytest.raises(ValueError, match="output loss"):
        DistillConfig(losses=("feature", "gt"), gate_output_by_labels=True)


def test_label_fraction_picks_one_fixed_share_of_the_images():
    ids = [f"train/{i:06d}" for i in range(4000)]
    quarter = [DistillConfig(label_fraction=0.25).labelled(i) for i in ids]
    assert 0.22 < sum(quarter) / len(ids) < 0.28
    assert quarter == [DistillConfig(label_fraction=0.25, seed=3).labelled(i) for i in ids]  # any seed
    tenth = [DistillConfig(label_fraction=0.1).labelled(i) for i in ids]
    # nested: a smaller share labels a subset of the images a larger one labels
    assert 0 < sum(tenth) < sum(quarter) and all(q for q, t in zip(quarter, tenth, strict=True) if t)
    assert all(DistillConfig().labelled(i) for i in ids)
    with pytest.raises(ValueError, match=r"label_fraction must be in \(0, 1\]"):
        DistillConfig(label_fraction=0)
    with pytest.raises(ValueError, match="switch on the gt loss"):
        DistillConfig(losses=("feature", "output"), label_fraction=0.5)


def test_ground_truth_losses_see_only_the_labelledshapes_examples(same_forward):
    model, batch, out, _ = same_forward
    hidden = out.hidden.clone().requires_grad_(True)
    levels = [(c.clone().requires_grad_(True), m.clone().requires_grad_(True)) for c, m in out.levels]
    leaf = dataclasses.replace(out, hidden=hidden, levels=levels)
    labelled = [i % 2 == 0 for i in range(len(batch))]
    decoded = [labelled[i] for i in out.segmented]
    assert any(decoded) and not all(decoded)
    cut, cut_batch, share, decoded_share = labelled_part(leaf, batch, labelled)
    assert share == 0.5 and decoded_share == pytest.approx(sum(decoded) / len(decoded))
    parts = gt_losses(model, cut, cut_batch, share, decoded_share, SetLossConfig(), torch.Generator())
    hidden_grad, class_grad = torch.autograd.grad(sum(parts.values()), [hidden, levels[-1][0]])
    assert (hidden_grad.abs().flatten(1).sum(1) > 0).tolist() == labelled
    assert (class_grad.abs().flatten(1).sum(1) > 0).tolist() == decoded
    assert labelled_part(out, batch, [True] * len(batch))[2:] == (1.0, 1.0)


def test_hard_prompt_weights():
    d = torch.tensor([1.0, 2.0, 3.0, 10.0])
    w = hard_prompt_weights(d, gamma=1.0, cap=2.0)
    assert torch.allclose(w.mean(), torch.tensor(1.0))
    assert bool((w[1:] >= w[:-1]).all())  # harder requests weigh more
    # d / mean = [0.25, 0.5, 0.75, 2.5]: the last is capped at 2 before renormalising
    assert float(w[3] / w[2]) == pytest.approx(2.0 / 0.75)
    assert torch.equal(hard_prompt_weights(d, gamma=0.0, cap=2.0), torch.ones(4))


# -- pruning -------------------------------------------------------------------------------------------------
def _decoder_outputs(model, batch):
    with torch.no_grad():
        out = xsam_forward(model, batch, torch.Generator().manual_seed(0), all_layers=False)
    return out.levels[-1]


def test_pruning_nothing_reproduces_the_model(same_forward):
    model, batch, _, _ = same_forward
    pruned = prune_decoder(model, model.config.decoder, usage=torch.arange(10).flip(0))
    assert pruned.config.name == "tiny-pruned"
    for a, b in zip(_decoder_outputs(model, batch), _decoder_outputs(pruned, batch), strict=True):
        assert torch.equal(a, b)


def test_pruning_dead_ffn_channels_and_layers_is_exact_for_the_kept_layers():
    model = make_tiny_model(2)
    decoder = model.segmentor.decoder.decoder
    with torch.no_grad():  # channels 40..63 of every FFN contribute nothing: pruning them is lossless
        for layer in [*decoder.layers, *model.segmentor.pixel_decoder.encoder.layers]:
            layer.fc1.weight[40:] = 0
            layer.fc1.bias[40:] = 0
    smaller = dataclasses.replace(model.config.decoder, decoder_ffn_dim=40, encoder_ffn_dim=40)
    batch = Collator(model.config, tiny_tokenizer())(shapes_examples(4, (Task.PANOPTIC, Task.REFERRING)))
    pruned = prune_decoder(model, smaller)
    for a, b in zip(_decoder_outputs(model, batch), _decoder_outputs(pruned, batch), strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    fewer = dataclasses.replace(smaller, num_queries=4, decoder_layers=2)
    usage = torch.tensor([0, 9, 0, 5, 0, 0, 7, 0, 8, 0])
    pruned = prune_decoder(model, fewer, usage)
    kept = model.segmentor.decoder.queries_features.weight[[1, 3, 6, 8]]
    assert torch.equal(pruned.segmentor.decoder.queries_features.weight, kept)
    assert len(pruned.segmentor.decoder.decoder.layers) == 1
    with pytest.raises(ValueError, match="exceeds the teacher's"):
        prune_decoder(model, dataclasses.replace(fewer, num_queries=11))


def test_query_usage_counts_hungarian_matches(same_forward):
    model, _, _, _ = same_forward
    examples = shapes_examples(6, (Task.PANOPTIC, Task.REFERRING))
    usage = query_usage(model, tiny_tokenizer(), examples, batch_size=4)
    assert usage.shape == (10,)
    assert int(usage.sum()) == sum(min(10, len(e.target.masks)) for e in examples)


def test_transplant_copies_the_decoder_side_only():
    teacher, student = make_tiny_model(3), rerandomize(build_model(STUDENT), seed=4)
    pruned = prune_decoder(teacher, student.config.decoder)
    copied = transplant(pruned, student)
    assert copied and all(
        k.startswith(("segmentor.decoder.", "segmentor.pixel_decoder.", "bg_embeds", "segmentor.logit"))
        for k in copied
    )
    assert torch.equal(
        student.segmentor.decoder.queries_features.weight, pruned.segmentor.decoder.queries_features.weight
    )
