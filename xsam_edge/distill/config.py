"""What a distillation run does, as frozen values: which losses, their weights, the schedule, the data.

No torch import: the CLI reads these defaults while building its parser.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

from xsam_edge.spec.types import Task

if TYPE_CHECKING:
    from xsam_edge.training.losses import SetLossConfig

# feature: image-side features (projected image tokens, region grid, connector pyramid, pixel decoder);
# embed: the decoder-space <p>…</p> and <SEG> embeddings; logit: next-token KD on the answer (same tokenizer);
# output: class and mask logits of the same prompted request; gt: the training losses against the labels.
LOSS_NAMES = ("feature", "embed", "logit", "output", "gt")
SHARDINGS = ("ddp", "fsdp2")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class LossWeights:
    """Weight of each loss term (a switched-off loss ignores its weight).

    Args:
        feature (float): image-side feature distillation (normalised MSE, summed over taps).
        embed (float): decoder-space condition and ``<SEG>`` embeddings (normalised MSE).
        logit (float): KL of the next-token distributions on answer tokens, times temperature².
        output (float): class KL + soft mask BCE + dice against the teacher's matched queries.
        gt_lm (float): next-token cross-entropy on the labelled answer.
        gt_mask (float): Mask2Former set loss on the ground-truth masks.
    """

    feature: float = 1.0
    embed: float = 1.0
    logit: float = 1.0
    output: float = 1.0
    gt_lm: float = 1.0
    gt_mask: float = 1.0

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 0:
                raise ValueError(f"loss weight {f.name} must be ≥ 0, got {getattr(self, f.name)}")

    @classmethod
    def parse(cls, text: str) -> LossWeights:
        """``"feature=2,output=0.5"`` → weights (the others keep their defaults).

        Raises:
            ValueError: an unknown name or a value that is not a number.
        """
        known = {f.name for f in fields(cls)}
        values: dict[str, float] = {}
        for item in filter(None, (p.strip() for p in text.split(","))):
            name, sep, value = item.partition("=")
            if not sep or name.strip() not in known:
                raise ValueError(f"bad loss weight {item!r}: use NAME=VALUE with NAME in {sorted(known)}")
            try:
                values[name.strip()] = float(value)
            except ValueError:
                raise ValueError(f"loss weight {name.strip()!r} needs a number, got {value!r}") from None
        return cls(**values)


@dataclass(frozen=True)
class DistillConfig:
    """One distillation run.

    Args:
        losses (tuple[str, ...]): the losses switched on, from :data:`LOSS_NAMES`.
        weights (LossWeights): their weights.
        steps (int): optimizer steps.
        batch_size (int): examples per step over all ranks (each rank takes ``batch_size / world_size``).
        lr (float): peak learning rate (AdamW, warmup then cosine).
        temperature (float): softmax temperature of the logit and class KD.
        output_temperature (float | None): the class KD's own temperature (``None``: ``temperature``). The
            scored tasks rank answers by class probability; a softer copy of the teacher's classes may blur
            that ranking while the text KD still wants a soft target.
        hard_prompt_gamma (float): per-example output-loss weight ∝ (disagreement / batch mean)^gamma, so the
            requests where student and teacher disagree most count more; 0 weighs every request alike.
        hard_prompt_max (float): cap of that weight (before renormalising to mean 1).
        gate_output_by_labels (bool): copy each teacher answer in proportion to how right the labels say it
            is (class probability × mask IoU with the best ground-truth mask), for a teacher weaker than the
            labels; needs the ``output`` loss and labelled data (an example with no masks copies only
            "background").
        hard_teacher_masks (bool): the output loss copies the teacher's masks thresholded (logit > 0), not
            its soft probabilities: EdgeSAM's default (``USE_TEACHER_LOGITS = False``). Why: students copying
            soft masks drew worse masks on the visual-prompt and instance tasks than students taught by a
            tenth of the labels, and a binary target has the labels' sharp edges. Measured there (README,
            three seeds): no better, instance and visual-grounded AP half a point lower.
        output_min_foreground (float): the output loss copies only the teacher queries whose foreground
            probability is at least this; the student's other queries learn "background" with the set loss's
            no-object weight, as unmatched queries do against labels (0: copy every query). Why: copying
            every query ties each student query to a teacher mask, the unsure ones included, where labels
            leave unmatched queries free; semi-supervised detectors keep only confident pseudo-labels
            (Unbiased Teacher: score ≥ 0.7). Measured at 0.5 (README, three seeds): within about a point
            of copying every query on most tasks; it does not win back the visual prompts.
        label_fraction (float): share of the training images whose labels are used (by the ``gt`` losses
            and the label gate); the rest are distilled from the teacher only, its answers copied ungated.
            Which images is fixed by a hash of the image id (:meth:`labelled`), so every seed, rank and
            resumed run sees the same labelled set. Why: few labelled images among many unlabelled ones is
            the setting where EdgeSAM-style output distillation is meant to pay off. A labelled example
            weighs in the ground-truth losses as it would in a fully labelled run.
        deep_supervision (bool): distil the teacher's final output into every student prediction level.
        decoder_adapter (bool): allow a student decoder width other than the teacher's by learning linear
            adapters into the teacher's decoder space (off: such a pair is refused).
        init_from_teacher (bool): start the student's decoder from the teacher's, pruned to the student's
            decoder config (queries ranked by Hungarian usage), and copy every other tensor whose shape fits.
        tasks (tuple[Task, ...]): tasks sampled (balanced as in training).
        seed (int): model init, data order, sampling.
        checkpoint_every (int): steps between checkpoints (and one at the end).
        log_every (int): steps between JSONL log lines.
        weight_decay (float): AdamW weight decay.
        warmup_frac (float): warmup share of the steps.
        grad_clip (float): gradient-norm clip.
        set_loss (SetLossConfig | None): Mask2Former loss weights, also used by the output loss; ``None``
            means the training defaults.
        device (str): ``cpu``, ``cuda`` or ``auto`` (CUDA when available; ranks use their local GPU).
        sharding (str): how ranks hold the student under ``torchrun``: ``ddp`` (a full replica each,
            gradients all-reduced) or ``fsdp2`` (torch's ``fully_shard``: parameters, gradients and optimizer
            state split across ranks, for students too large to replicate).
        output_points (int): compare the output loss's masks at this many random points a step, each
            model's logits read bilinearly from its own grid, as the ground-truth set loss reads its masks
            (0: on the student's mask grid, the teacher's masks resized to it, which blurs their edges).
        output_point_importance (float): with ``output_points``, the matched pairs' mask losses are read at
            points of their own, this share of them where the student's mask is least sure (of 3× as many
            uniform candidates; Mask2Former and EdgeSAM use 0.75), the rest uniform; matching stays on the
            shared uniform points (0: the losses are read there too).
        precision (str): ``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``fp32``, or ``bf16`` (autocast on
            either device; on CPU it is how the bf16 path is checked without a GPU).
    """

    losses: tuple[str, ...] = LOSS_NAMES
    weights: LossWeights = field(default_factory=LossWeights)
    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-3
    temperature: float = 2.0
    output_temperature: float | None = None
    hard_prompt_gamma: float = 1.0
    hard_prompt_max: float = 4.0
    gate_output_by_labels: bool = False
    hard_teacher_masks: bool = False
    output_min_foreground: float = 0.0
    output_points: int = 0
    output_point_importance: float = 0.0
    label_fraction: float = 1.0
    deep_supervision: bool = True
    decoder_adapter: bool = False
    init_from_teacher: bool = True
    tasks: tuple[Task, ...] = tuple(Task)
    seed: int = 0
    checkpoint_every: int = 100
    log_every: int = 10
    weight_decay: float = 0.05
    warmup_frac: float = 0.03
    grad_clip: float = 1.0
    set_loss: SetLossConfig | None = None
    device: str = "auto"
    sharding: str = "ddp"
    precision: str = "auto"

    def __post_init__(self) -> None:
        unknown = [n for n in self.losses if n not in LOSS_NAMES]
        if unknown or not self.losses:
            raise ValueError(f"unknown or no losses {list(self.losses)}; choose from {', '.join(LOSS_NAMES)}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be positive, got {self.steps}, {self.batch_size}")
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("checkpoint_every and log_every must be positive")
        if self.temperature <= 0 or self.hard_prompt_gamma < 0 or self.hard_prompt_max < 1:
            raise ValueError("temperature must be > 0, hard_prompt_gamma ≥ 0 and hard_prompt_max ≥ 1")
        if self.output_temperature is not None and self.output_temperature <= 0:
            raise ValueError(f"output_temperature must be > 0, got {self.output_temperature}")
        if self.output_temperature is not None and not self.on("output"):
            raise ValueError(
                "output_temperature softens the output loss's classes: switch on the output loss"
            )
        if self.output_points < 0:
            raise ValueError(f"output_points must be ≥ 0, got {self.output_points}")
        if self.output_points and not self.on("output"):
            raise ValueError(
                "output_points sets where the output loss compares masks: switch on the output loss"
            )
        if not 0 <= self.output_point_importance <= 1:
            raise ValueError(
                f"output_point_importance is a share in [0, 1], got {self.output_point_importance}"
            )
        if self.output_point_importance and not self.output_points:
            raise ValueError(
                "output_point_importance picks some of the output loss's points where the student is unsure: "
                "set output_points too (e.g. 1024)"
            )
        if self.gate_output_by_labels and not self.on("output"):
            raise ValueError("gate_output_by_labels weighs the output loss: switch on the output loss too")
        if self.hard_teacher_masks and not self.on("output"):
            raise ValueError(
                "hard_teacher_masks changes the output loss's targets: switch on the output loss too"
            )
        if not 0 <= self.output_min_foreground < 1:
            raise ValueError(f"output_min_foreground must be in [0, 1), got {self.output_min_foreground}")
        if self.output_min_foreground > 0 and not self.on("output"):
            raise ValueError(
                "output_min_foreground picks the output loss's targets: switch on the output loss too"
            )
        if not 0 < self.label_fraction <= 1:
            raise ValueError(
                f"label_fraction must be in (0, 1], got {self.label_fraction}; "
                "for no labels at all, drop the gt loss and the label gate"
            )
        if self.label_fraction < 1 and not (self.on("gt") or self.gate_output_by_labels):
            raise ValueError(
                "label_fraction < 1 changes only the gt loss and the label gate: switch on the gt loss "
                "or gate_output_by_labels"
            )
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.sharding not in SHARDINGS:
            raise ValueError(f"sharding must be one of {', '.join(SHARDINGS)}, got {self.sharding!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    @property
    def class_temperature(self) -> float:
        """The output loss's class KD temperature."""
        return self.temperature if self.output_temperature is None else self.output_temperature

    @property
    def set_loss_config(self) -> SetLossConfig:
        """``set_loss`` with the training defaults filled in."""
        from xsam_edge.training.losses import SetLossConfig

        return self.set_loss or SetLossConfig()

    def on(self, name: str) -> bool:
        """Whether loss ``name`` is switched on."""
        return name in self.losses

    def labelled(self, image_id: str) -> bool:
        """Whether the run uses image ``image_id``'s labels (a hash of the id against ``label_fraction``)."""
        if self.label_fraction >= 1:
            return True
        digest = hashlib.sha256(image_id.encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.label_fraction

    @staticmethod
    def parse_losses(text: str) -> tuple[str, ...]:
        """``"feature,output,gt"`` → the tuple (order as in :data:`LOSS_NAMES`); ``all`` means every loss.

        Raises:
            ValueError: an unknown loss name.
        """
        names = [n.strip() for n in text.split(",") if n.strip()]
        if names == ["all"]:
            return LOSS_NAMES
        unknown = [n for n in names if n not in LOSS_NAMES]
        if unknown or not names:
            raise ValueError(f"unknown losses {unknown or names}; choose from {', '.join(LOSS_NAMES)} or all")
        return tuple(n for n in LOSS_NAMES if n in names)


@dataclass(frozen=True)
class StudentRecipe:
    """A named student of the embedded teacher: which preset, how long, which losses.

    Why: the pipeline's short default and the recipe measured against the >= 95 % goal are values a user
    picks by name (``xsam-edge pipeline --student NAME``), not flags to get right one by one.

    Args:
        name (str): the recipe's name; the pipeline's folders and bench rows are named after it.
        preset (str): the student preset.
        steps (int): distillation steps.
        losses (tuple[str, ...]): the losses switched on.
        gate_output_by_labels (bool): see :class:`DistillConfig`.
    """

    name: str
    preset: str
    steps: int
    losses: tuple[str, ...] = LOSS_NAMES
    gate_output_by_labels: bool = False

    def distill_config(self) -> DistillConfig:
        """The run's config (a checkpoint every quarter of the run, so a kill loses at most a quarter)."""
        return DistillConfig(
            steps=self.steps,
            losses=self.losses,
            gate_output_by_labels=self.gate_output_by_labels,
            checkpoint_every=max(self.steps // 4, 1),
        )


STUDENT_RECIPES: dict[str, StudentRecipe] = {
    # the main job's student: minutes on a laptop CPU, far from the teacher (README)
    "quick": StudentRecipe("quick", "shapes-student", 600),
    # the student measured against the >= 95 %-on-every-task goal (README, `student_variants` benchmark):
    # the teacher's decoder size, label-gated prompt-in-the-loop output distillation, 5600 steps
    "gated-5600": StudentRecipe(
        "gated-5600",
        "shapes-student-q16l4",
        5600,
        losses=("feature", "output", "gt"),
        gate_output_by_labels=True,
    ),
}


def get_student_recipe(name: str) -> StudentRecipe:
    """The student recipe registered under ``name`` (ValueError listing the known names otherwise)."""
    if name not in STUDENT_RECIPES:
        raise ValueError(f"unknown student recipe {name!r}; known recipes: {', '.join(STUDENT_RECIPES)}")
    return STUDENT_RECIPES[name]
