"""Mask2Former's set loss (Hungarian matching; CE + sigmoid-BCE + dice on sampled points) and the LM loss.

Upstream costs and weights: class 2, mask 5, dice 5; no-object class weight 0.1; deep supervision on every
prediction level. Points are sampled uniformly (upstream uses importance sampling with oversample 3 and
ratio 0.75; uniform points are its ``importance_ratio=0`` limit and are cheaper on CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from xsam_edge.training.collate import IGNORE_INDEX


@dataclass(frozen=True)
class SetLossConfig:
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    num_points: int = 1024


def point_sample(maps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear values of (N, h, w) maps at (N, P, 2) points in [0, 1]² (x, y) → (N, P)."""
    grid = points * 2 - 1  # grid_sample's [-1, 1] frame
    return F.grid_sample(maps[:, None], grid[:, :, None], align_corners=False)[:, 0, :, 0]


def _pairwise_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(Q, P) logits × (N, P) targets → (Q, N) mean BCE."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / logits.shape[1]


def _pairwise_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(Q, P) × (N, P) → (Q, N) dice loss."""
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.T
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


@torch.no_grad()
def hungarian_match(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    gt_labels: torch.Tensor,
    gt_masks: torch.Tensor,
    points: torch.Tensor,
    config: SetLossConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimal one-to-one assignment of queries to ground-truth masks.

    Args:
        class_logits (torch.Tensor): (Q, C+1).
        mask_logits (torch.Tensor): (Q, m, m).
        gt_labels (torch.Tensor): (N,) class index of each ground-truth mask.
        gt_masks (torch.Tensor): (N, S, S) ground truth in the same frame as the predictions.
        points (torch.Tensor): (P, 2) sample points in [0, 1]².
        config (SetLossConfig): cost weights.

    Returns:
        tuple[torch.Tensor, torch.Tensor]: matched query indices and ground-truth indices, (min(Q, N),) each.
    """
    q, n = class_logits.shape[0], gt_labels.shape[0]
    pred = point_sample(mask_logits.float(), points[None].expand(q, -1, -1))  # (Q, P)
    gt = point_sample(gt_masks.float(), points[None].expand(n, -1, -1))  # (N, P)
    cost = (
        -config.class_weight * class_logits.float().softmax(-1)[:, gt_labels]
        + config.mask_weight * _pairwise_bce(pred, gt)
        + config.dice_weight * _pairwise_dice(pred, gt)
    )
    rows, cols = linear_sum_assignment(cost.float().cpu().numpy())  # numpy has no bf16 (autocast)
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)


def set_loss(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    gt_labels: torch.Tensor,
    gt_masks: torch.Tensor,
    num_classes: int,
    config: SetLossConfig,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Loss of one prediction level for one example (sums; the caller normalises by the mask count).

    Args:
        class_logits (torch.Tensor): (Q, C+1); the last column is no-object. Padded classes may hold a
            large negative logit; they then take no probability.
        mask_logits (torch.Tensor): (Q, m, m).
        gt_labels (torch.Tensor): (N,) in [0, C).
        gt_masks (torch.Tensor): (N, S, S).
        num_classes (int): C (the no-object index).
        config (SetLossConfig): weights.
        generator (torch.Generator | None): point sampling randomness.

    Returns:
        dict[str, torch.Tensor]: ``class`` (mean CE over queries), ``mask`` and ``dice`` (sums over matched).
    """
    points = torch.rand(config.num_points, 2, generator=generator).to(mask_logits.device)
    target_classes = torch.full(
        (class_logits.shape[0],), num_classes, dtype=torch.long, device=class_logits.device
    )
    weight = torch.ones(class_logits.shape[1], device=class_logits.device)
    weight[num_classes] = config.no_object_weight
    losses = {"mask": mask_logits.sum() * 0, "dice": mask_logits.sum() * 0}
    if gt_labels.numel():
        rows, cols = hungarian_match(class_logits, mask_logits, gt_labels, gt_masks, points, config)
        target_classes[rows] = gt_labels[cols].to(target_classes.device)
        k = rows.shape[0]
        pred = point_sample(mask_logits[rows].float(), points[None].expand(k, -1, -1))  # (K, P)
        gt = point_sample(gt_masks[cols].float().to(pred.device), points[None].expand(k, -1, -1))
        losses["mask"] = F.binary_cross_entropy_with_logits(pred, gt, reduction="none").mean(-1).sum()
        probs = pred.sigmoid()
        losses["dice"] = (1 - (2 * (probs * gt).sum(-1) + 1) / (probs.sum(-1) + gt.sum(-1) + 1)).sum()
    losses["class"] = F.cross_entropy(class_logits.float(), target_classes, weight=weight)
    return losses


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy on the answer tokens (labels aligned with inputs; shifted here)."""
    shifted = logits[:, :-1].float()
    targets = labels[:, 1:]
    if not (targets != IGNORE_INDEX).any():
        return logits.sum() * 0
    return F.cross_entropy(
        shifted.reshape(-1, shifted.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX
    )
