"""Distillation losses: image-side features, decoder-space embeddings, next-token logits, prompted outputs.

Every loss compares the student's forward with the teacher's forward on the *same* examples (the same
referring expressions, category lists and visual prompts, each model with its own pre-processing), so the
prompt is in the loop. Shapes are aligned here: token grids and maps are resized to the student's
resolution, widths go through the :class:`~xsam_edge.distill.pairing.Adapters`, queries are matched by the
Hungarian algorithm (the student may have fewer).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from xsam_edge.distill.pairing import Adapters, adapt
from xsam_edge.spec.config import XSamConfig
from xsam_edge.spec.tokenizer import IMAGE_TOKEN_ID
from xsam_edge.training.collate import IGNORE_INDEX, Batch
from xsam_edge.training.losses import SetLossConfig, _pairwise_bce, _pairwise_dice, point_sample
from xsam_edge.training.train import XSamForward

# (student rows, teacher query indices) of matched pairs → their student logits and targets, (K, P) each
PairMasks = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def nmse(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean squared error over the teacher's mean square: scale-free, so taps of any magnitude weigh alike."""
    teacher = teacher.float()
    return F.mse_loss(student.float(), teacher) / teacher.pow(2).mean().clamp_min(1e-6)


def resize_maps(x: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, C, h, w) → (B, C, *size): area average when shrinking (no aliasing), bilinear when growing."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _as_grid(tokens: Tensor, side: int) -> Tensor:
    """(B, side², C) row-major tokens → (B, C, side, side)."""
    b, n, c = tokens.shape
    assert n == side * side, f"{n} tokens are not a {side}² grid"
    return tokens.transpose(1, 2).reshape(b, c, side, side)


def _grid_nmse(student: Tensor, teacher: Tensor, adapter: torch.nn.Module) -> Tensor:
    """Student map (B, C_s, h, w) through the adapter vs the teacher's (B, C_t, H, W) resized to (h, w)."""
    return nmse(
        adapt(adapter, student, channels_first=True), resize_maps(teacher.float(), student.shape[-2:])
    )


def _token_grids(config: XSamConfig, tokens: Tensor) -> list[Tensor | None]:
    """Split image tokens into [global grid or None, seg grid], each (B, H_llm, g, g)."""
    n_glob = config.num_global_tokens
    glob = None
    if n_glob:
        glob = _as_grid(tokens[:, :n_glob], config.global_encoder.grid_size // config.visual_pool)
    return [glob, _as_grid(tokens[:, n_glob:], config.seg_token_grid // config.seg_pool)]


def feature_loss(
    student: XSamForward,
    teacher: XSamForward,
    student_config: XSamConfig,
    teacher_config: XSamConfig,
    adapters: Adapters,
) -> dict[str, Tensor]:
    """Image-side feature distillation, one normalised MSE per tap.

    Taps: the projected image tokens (LLM input; global and seg parts compared as grids, so token pooling
    is allowed), the region grid (what visual prompts are pooled from), the connector pyramid level by level,
    and, for examples that were decoded, the pixel decoder's mask features and memory.

    Returns:
        dict[str, Tensor]: ``tokens``, ``region``, ``pyramid`` and (when decoded) ``pixel``.
    """
    parts: dict[str, Tensor] = {}
    s_grids = _token_grids(student_config, student.features.image_tokens)
    t_grids = _token_grids(teacher_config, teacher.features.image_tokens)
    terms = [
        _grid_nmse(s, t, adapters.tokens)
        for s, t in zip(s_grids, t_grids, strict=True)
        if s is not None and t is not None
    ]
    parts["tokens"] = torch.stack(terms).mean()
    parts["region"] = _grid_nmse(student.features.region_grid, teacher.features.region_grid, adapters.tokens)
    parts["pyramid"] = torch.stack(
        [
            _grid_nmse(s, t, a)
            for s, t, a in zip(
                student.features.pyramid, teacher.features.pyramid, adapters.pyramid, strict=True
            )
        ]
    ).mean()
    if student.decoder_inputs is not None and teacher.decoder_inputs is not None:
        s_in, t_in = student.decoder_inputs, teacher.decoder_inputs
        terms = [_grid_nmse(s_in.mask_features, t_in.mask_features, adapters.mask_features)]
        terms += [_grid_nmse(s, t, adapters.decoder) for s, t in zip(s_in.memory, t_in.memory, strict=True)]
        parts["pixel"] = torch.stack(terms).mean()
    return parts


def embed_loss(student: XSamForward, teacher: XSamForward, adapters: Adapters) -> Tensor:
    """The decoder-space (256-d upstream) ``<p>…</p>`` condition embeddings and ``<SEG>`` embedding.

    Both models decode the same examples, so the condition slots correspond one to one.
    """
    assert student.cond is not None and teacher.cond is not None and student.seg is not None
    valid = student.cond_valid
    cond = nmse(adapt(adapters.decoder, student.cond[valid]), teacher.cond[valid])
    seg = nmse(adapt(adapters.decoder, student.seg), teacher.seg)
    return cond + seg


def logit_kd_loss(
    student_logits_fn,
    teacher_logits_fn,
    student: XSamForward,
    teacher: XSamForward,
    student_batch: Batch,
    teacher_batch: Batch,
    temperature: float,
) -> Tensor:
    """KL(teacher ‖ student) of the next-token distributions at the answer tokens, times temperature².

    The two sequences differ only in their number of image tokens; text positions are paired in order.

    Args:
        student_logits_fn (Callable[[Tensor], Tensor]): the student's LM head, (N, H_s) → (N, V).
        teacher_logits_fn (Callable[[Tensor], Tensor]): the teacher's LM head, (N, H_t) → (N, V).
        student (XSamForward): the student's forward.
        teacher (XSamForward): the teacher's forward.
        student_batch (Batch): the student's batch (its ``lm_labels`` say where the answer is).
        teacher_batch (Batch): the teacher's batch.
        temperature (float): softmax temperature.
    """
    s_rows, t_rows = [], []
    for i in range(len(student_batch)):
        s_ids, t_ids = student_batch.input_ids[i], teacher_batch.input_ids[i]
        s_pos = torch.nonzero((s_ids != IMAGE_TOKEN_ID) & (student_batch.attention_mask[i] > 0))[:, 0]
        t_pos = torch.nonzero((t_ids != IMAGE_TOKEN_ID) & (teacher_batch.attention_mask[i] > 0))[:, 0]
        assert torch.equal(s_ids[s_pos], t_ids[t_pos]), "paired text differs: tokenizers must match"
        # position p predicts token p + 1: keep p where p + 1 is an answer token
        nxt = (s_pos + 1).clamp(max=s_ids.shape[0] - 1)
        predicts = (student_batch.lm_labels[i, nxt] != IGNORE_INDEX) & (s_pos + 1 < s_ids.shape[0])
        s_rows.append(student.hidden[i, s_pos[predicts]])
        t_rows.append(teacher.hidden[i, t_pos[predicts]])
    s_logits = student_logits_fn(torch.cat(s_rows)).float() / temperature
    t_logits = teacher_logits_fn(torch.cat(t_rows)).float() / temperature
    if s_logits.shape[0] == 0:
        return s_logits.sum() * 0
    kl = F.kl_div(s_logits.log_softmax(-1), t_logits.log_softmax(-1), log_target=True, reduction="batchmean")
    return kl * temperature**2


def label_trust(t_cls: Tensor, t_mask: Tensor, gt_labels: Tensor, gt_masks: Tensor) -> Tensor:
    """How right each teacher query is by the labels, in [0, 1] (no gradient).

    The best, over the example's ground-truth masks, of the teacher's probability for that mask's class
    times its soft mask IoU with that mask; 0 for every query of an example without labels.

    Args:
        t_cls (Tensor): (Q_t, C+1) teacher class logits.
        t_mask (Tensor): (Q_t, m, m) teacher mask logits.
        gt_labels (Tensor): (N,) class (condition) index of each ground-truth mask.
        gt_masks (Tensor): (N, S, S) ground-truth masks in the letterboxed input frame.
    """
    with torch.no_grad():
        if gt_labels.numel() == 0:
            return t_cls.new_zeros(t_cls.shape[0], dtype=torch.float32)
        gt = resize_maps(gt_masks[None].float(), t_mask.shape[-2:])[0].flatten(1)  # (N, m²) area fractions
        probs = t_cls.float().softmax(-1)[:, gt_labels.to(t_cls.device)]  # (Q_t, N)
        pred = t_mask.float().flatten(1).sigmoid()
        inter = pred @ gt.T
        union = pred.sum(-1, keepdim=True) + gt.sum(-1) - inter
        return (probs * inter / union.clamp_min(1e-6)).max(-1).values


def _output_one(
    s_cls: Tensor,
    s_mask: Tensor,
    t_cls: Tensor,
    target: Tensor,
    temperature: float,
    cfg: SetLossConfig,
    trust: Tensor | None = None,
    min_foreground: float = 0.0,
    pair_masks: PairMasks | None = None,
) -> Tensor:
    """One example, one student level: match student queries to teacher queries, then class KL + mask losses.

    Args:
        s_cls (Tensor): (Q_s, C+1) student class logits.
        s_mask (Tensor): (Q_s, P) student mask logits, flattened.
        t_cls (Tensor): (Q_t, C+1) teacher class logits (padded classes hold a large negative logit in both).
        target (Tensor): (Q_t, P) the teacher's masks to copy at the student's resolution, in [0, 1].
        temperature (float): class softmax temperature.
        cfg (SetLossConfig): class / mask / dice weights (as the ground-truth set loss).
        trust (Tensor | None): (Q_t,) :func:`label_trust` of each teacher query: a foreground answer is
            copied in proportion to it (its class and its mask); ``None`` trusts the teacher everywhere.
        min_foreground (float): copy only the teacher queries whose foreground probability is at least this;
            the student queries left over learn "background" as in the ground-truth set loss (0: copy all).
        pair_masks (PairMasks | None): after matching (on ``s_mask`` and ``target``), where the matched
            pairs' mask losses are read: given (student rows, teacher query indices), the student's logits and
            the targets at the pairs' own points; ``None`` reads them from ``s_mask`` and ``target``.
    """
    t_fg = 1 - t_cls.float().softmax(-1)[:, -1]  # (Q_t,) the teacher's foreground probability per query
    t_index = torch.arange(t_cls.shape[0], device=t_cls.device)  # each kept query's index in the teacher's
    if min_foreground > 0:
        keep = t_fg >= min_foreground
        t_cls, target, t_fg, t_index = t_cls[keep], target[keep], t_fg[keep], t_index[keep]
        trust = None if trust is None else trust[keep]
    if t_cls.shape[0] == 0:  # nothing the teacher is sure of: every student query learns "background"
        return _background_loss(s_cls, cfg)
    log_ps = (s_cls.float() / temperature).log_softmax(-1)
    log_pt = (t_cls.float() / temperature).log_softmax(-1)
    s_mask = s_mask.float()
    with torch.no_grad():
        cost = (
            -cfg.class_weight * log_ps @ log_pt.exp().T
            + cfg.mask_weight * _pairwise_bce(s_mask, target)
            + cfg.dice_weight * _pairwise_dice(s_mask, target)
        )  # (Q_s, Q_t)
        rows, cols = linear_sum_assignment(cost.float().cpu().numpy())  # numpy has no bf16 (autocast)
    rows = torch.as_tensor(rows, device=s_cls.device)
    cols = torch.as_tensor(cols, device=s_cls.device)
    kl = F.kl_div(log_ps[rows], log_pt[cols], log_target=True, reduction="none").sum(-1)  # (K,)
    # a teacher query that predicts background has no mask worth copying: weight masks by its foreground prob
    fg = t_fg[cols]  # (K,)
    copied = fg if trust is None else fg * trust[cols]
    # its class is copied fully when it says "background", in proportion to the trust when it names a class
    class_w = torch.ones_like(fg) if trust is None else (1 - fg) + copied
    loss = cfg.class_weight * (kl * class_w).mean() * temperature**2
    s_pair, t_pair = (s_mask[rows], target[cols]) if pair_masks is None else pair_masks(rows, t_index[cols])
    bce = F.binary_cross_entropy_with_logits(s_pair, t_pair, reduction="none").mean(-1)
    probs = s_pair.sigmoid()
    dice = 1 - (2 * (probs * t_pair).sum(-1) + 1) / (probs.sum(-1) + t_pair.sum(-1) + 1)
    loss = loss + ((cfg.mask_weight * bce + cfg.dice_weight * dice) * copied).sum() / fg.sum().clamp_min(1.0)
    unmatched = torch.ones(s_cls.shape[0], dtype=torch.bool, device=s_cls.device)
    unmatched[rows] = False
    if unmatched.any():  # student queries left without a teacher query learn "background"
        loss = loss + _background_loss(s_cls[unmatched], cfg)
    return loss


def _background_loss(s_cls: Tensor, cfg: SetLossConfig) -> Tensor:
    """Cross-entropy of (N, C+1) class logits against "background", at the set loss's no-object weight."""
    bg = torch.full((s_cls.shape[0],), s_cls.shape[1] - 1, device=s_cls.device)
    return cfg.class_weight * cfg.no_object_weight * F.cross_entropy(s_cls.float(), bg)


def hard_prompt_weights(disagreement: Tensor, gamma: float, cap: float) -> Tensor:
    """Per-example weights ∝ (disagreement / mean)^gamma, capped, renormalised to mean 1 (no gradient)."""
    d = disagreement.detach().clamp_min(0)
    if gamma == 0 or d.numel() < 2 or float(d.mean()) <= 0:
        return torch.ones_like(d)
    w = (d / d.mean()).pow(gamma).clamp(max=cap)
    return w / w.mean()


def output_loss(
    student: XSamForward,
    teacher: XSamForward,
    temperature: float,
    cfg: SetLossConfig,
    deep_supervision: bool,
    hard_gamma: float,
    hard_cap: float,
    labels: list[tuple[Tensor, Tensor] | None] | None = None,
    hard_masks: bool = False,
    min_foreground: float = 0.0,
    points: Tensor | None = None,
    importance: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Output distillation with prompts in the loop, hard requests upweighted.

    The teacher's final class and mask logits of each decoded request are the targets of the student's
    final prediction (and of every earlier level with ``deep_supervision``). With ``labels`` each teacher
    answer is copied in proportion to its :func:`label_trust`, so a teacher weaker than the labels does not
    teach its mistakes.

    Args:
        student (XSamForward): the student's forward (its ``levels``).
        teacher (XSamForward): the teacher's forward on the same requests.
        temperature (float): class softmax temperature.
        cfg (SetLossConfig): class / mask / dice weights.
        deep_supervision (bool): distil into every student level, not only the last.
        hard_gamma (float): see :func:`hard_prompt_weights`.
        hard_cap (float): see :func:`hard_prompt_weights`.
        labels (list[tuple[Tensor, Tensor] | None] | None): ground-truth class indices (N_i,) and masks
            (N_i, S, S) of each decoded example, in the order of ``student.levels``; ``None`` for an
            example whose labels the run does not use (its teacher answer is copied ungated).
        hard_masks (bool): copy the teacher's masks thresholded at logit 0 (the binary masks it would
            answer with) rather than its probabilities.
        min_foreground (float): copy only teacher queries at least this sure of a foreground class
            (:func:`_output_one`); 0 copies every query.
        points (Tensor | None): (P, 2) points in [0, 1]² where the masks are compared, each model's logits
            read bilinearly from its own grid (as the ground-truth set loss reads its masks); ``None``
            compares them on the student's grid, the teacher's masks resized to it.
        importance (float): with ``points``, the matched pairs' mask losses are read at points of their own:
            this share of them where the student is least sure (:func:`uncertain_points`), the rest uniform;
            matching still uses ``points``. 0 reads the losses at ``points`` too.
        generator (torch.Generator | None): draws the pairs' points (on the CPU, so a seed picks the same
            points on any device).

    Returns:
        tuple[Tensor, Tensor]: the weighted loss and the per-example disagreement (B_s,) behind the weights.
    """
    if importance > 0 and points is None:
        raise ValueError("importance sampling picks among sampled points: give points too")
    t_cls, t_fine = teacher.levels[-1]
    levels = student.levels if deep_supervision else student.levels[-1:]
    # the teacher's masks on the student's grid: compared there without points, and read by the label gate
    t_mask = None
    if points is None or labels is not None:
        t_mask = resize_maps(t_fine.float(), tuple(levels[-1][1].shape[-2:]))  # (B_s, Q_t, m, m)
    trust: list[Tensor | None] = [None] * t_cls.shape[0]
    if labels is not None:
        if len(labels) != t_cls.shape[0]:
            raise ValueError(f"labels for {len(labels)} examples, but {t_cls.shape[0]} were decoded")
        trust = [None if p is None else label_trust(t_cls[i], t_mask[i], *p) for i, p in enumerate(labels)]
    # (B_s, Q_t, P) the target logits at the compared places, made once for every student level
    t_logits = t_mask.flatten(2) if points is None else _at_points(t_fine.float(), points)
    to_target = (lambda logits: (logits > 0).float()) if hard_masks else torch.sigmoid
    target = to_target(t_logits)
    per_level = []
    for s_cls, s_mask in levels:
        flat = s_mask.flatten(2) if points is None else _at_points(s_mask.float(), points)
        per_level.append(
            torch.stack(
                [
                    _output_one(
                        s_cls[i],
                        flat[i],
                        t_cls[i],
                        target[i],
                        temperature,
                        cfg,
                        trust[i],
                        min_foreground,
                        _pairs_at_uncertain_points(
                            s_mask[i], t_fine[i], points.shape[0], importance, to_target, generator
                        )
                        if importance > 0
                        else None,
                    )
                    for i in range(s_cls.shape[0])
                ]
            )
        )  # (B_s,)
    disagreement = per_level[-1].detach()
    weights = hard_prompt_weights(disagreement, hard_gamma, hard_cap)
    loss = sum((weights * losses).mean() for losses in per_level)
    return loss, disagreement


def uncertain_points(
    logits: Tensor, count: int, importance: float, generator: torch.Generator | None = None
) -> Tensor:
    """(K, h, w) mask logits → (K, count, 2) points in [0, 1]², PointRend / Mask2Former style (no gradient).

    Of 3 × ``count`` uniform candidates, the ``importance`` share with the logits nearest 0 (where the mask
    is least sure: its edges), topped up with fresh uniform points. Mask2Former's loss and EdgeSAM's
    ``POINT_REND_SAMPLING`` use these defaults (oversample 3, importance 0.75), read on the student's masks.
    """
    k = logits.shape[0]
    n_unsure = int(round(importance * count))
    candidates = torch.rand(k, 3 * count, 2, generator=generator).to(logits.device)
    with torch.no_grad():
        values = point_sample(logits.float(), candidates)  # (K, 3·count)
        picked = (-values.abs()).topk(n_unsure, dim=1).indices
    chosen = torch.gather(candidates, 1, picked[..., None].expand(-1, -1, 2))
    uniform = torch.rand(k, count - n_unsure, 2, generator=generator).to(logits.device)
    return torch.cat([chosen, uniform], dim=1)


def _pairs_at_uncertain_points(
    s_grid: Tensor,
    t_grid: Tensor,
    count: int,
    importance: float,
    to_target: Callable[[Tensor], Tensor],
    generator: torch.Generator | None,
) -> PairMasks:
    """One example's matched (student row, teacher query) pairs, read where the student is least sure."""

    def read(rows: Tensor, cols: Tensor) -> tuple[Tensor, Tensor]:
        s_pair = s_grid[rows].float()
        pts = uncertain_points(s_pair, count, importance, generator)
        return point_sample(s_pair, pts), to_target(point_sample(t_grid[cols].float(), pts))

    return read


def _at_points(maps: Tensor, points: Tensor) -> Tensor:
    """(B, Q, h, w) logit maps read bilinearly at (P, 2) points in [0, 1]² → (B, Q, P)."""
    b, q = maps.shape[:2]
    flat = maps.reshape(b * q, *maps.shape[2:])
    return point_sample(flat, points[None].expand(b * q, -1, -1)).reshape(b, q, -1)


def labelled_part(
    out: XSamForward, batch: Batch, labelled: list[bool]
) -> tuple[XSamForward, Batch, float, float]:
    """The forward and batch cut down to the labelled examples, for the ground-truth losses.

    Returns the cut forward (decoded levels of labelled examples only), the batch with the unlabelled
    answers ignored by the LM loss, and the labelled share of the batch and of its decoded examples. Why the
    shares: both losses average over what they see, so scaling by the share makes a labelled example weigh
    what it would in a fully labelled batch, and an unlabelled one nothing.
    """
    if all(labelled):
        return out, batch, 1.0, 1.0
    unused = torch.tensor([not flag for flag in labelled], device=batch.lm_labels.device)
    lm_labels = batch.lm_labels.masked_fill(unused[:, None], IGNORE_INDEX)
    keep = [j for j, i in enumerate(out.segmented) if labelled[i]]
    levels = [(cls[keep], mask[keep]) for cls, mask in out.levels] if keep else []
    cut = dataclasses.replace(out, levels=levels, segmented=[out.segmented[j] for j in keep])
    decoded_share = len(keep) / max(1, len(out.segmented))
    return cut, dataclasses.replace(batch, lm_labels=lm_labels), sum(labelled) / len(labelled), decoded_share
