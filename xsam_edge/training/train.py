"""Train an X-SAM model with the upstream three-stage recipe, on CPU or CUDA, resumable after a kill.

Stages (XSAM.md §6):
1. ``segmentor``: SAM encoder (lr×0.1), connector, pixel decoder and decoder with a closed-set class head on
   panoptic data; Mask2Former loss. No LLM.
2. ``align``: projectors with the LM loss on captions. Upstream freezes a pretrained LLM here; the
   embedded teacher's LLM starts from random weights, so its stage-2 recipe also trains the LLM (a
   documented deviation).
3. ``mixed``: everything on every task, LM loss + Mask2Former loss (open-vocabulary cosine head).

A step's data and randomness depend only on (seed, stage, step), so a resumed run reproduces an
uninterrupted one exactly. Checkpoints (model, optimizer, progress) are written atomically every
``checkpoint_every`` steps and at each stage end.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from xsam_edge.data.sample import Example
from xsam_edge.files import atomic_write_text, atomic_write_with
from xsam_edge.model.checkpoint import save_pretrained
from xsam_edge.model.xsam import DecoderInputs, ImageFeatures, XSam
from xsam_edge.spec.tokenizer import XSamTokenizer
from xsam_edge.spec.types import Task
from xsam_edge.training.collate import Batch, Collator
from xsam_edge.training.losses import SetLossConfig, lm_loss, set_loss

log = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"
LOG_FILE = "log.jsonl"
MODEL_DIR = "model"
ENCODERS = ("segmentor.encoder.", "visual_encoder.")


@dataclass(frozen=True)
class StageConfig:
    """One training stage.

    Args:
        name (str): ``segmentor``, ``align`` or ``mixed``.
        steps (int): optimizer steps.
        batch_size (int): examples per step.
        lr (float): peak learning rate; encoders get ``lr * encoder_lr_scale``.
        trainable (tuple[str, ...]): parameter-name prefixes that train; everything else is frozen.
        tasks (tuple[Task, ...]): tasks the stage samples.
        lm_weight (float): weight of the LM loss.
        mask_weight (float): weight of the Mask2Former loss.
        schedule (str): ``cosine`` or ``multistep`` (×0.1 at 2/3 and 5/6 of the steps, as upstream stage 1).
    """

    name: str
    steps: int
    batch_size: int
    lr: float
    trainable: tuple[str, ...]
    tasks: tuple[Task, ...]
    lm_weight: float = 1.0
    mask_weight: float = 1.0
    encoder_lr_scale: float = 0.1
    weight_decay: float = 0.05
    warmup_frac: float = 0.03
    schedule: str = "cosine"
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in ("segmentor", "align", "mixed"):
            raise ValueError(f"stage name must be segmentor, align or mixed, got {self.name!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"stage {self.name}: steps and batch_size must be positive")
        if self.schedule not in ("cosine", "multistep"):
            raise ValueError(f"stage {self.name}: schedule must be cosine or multistep")


@dataclass(frozen=True)
class TrainConfig:
    """A whole run: the stages in order, the data, and bookkeeping."""

    stages: tuple[StageConfig, ...]
    seed: int = 0
    checkpoint_every: int = 50
    log_every: int = 10
    set_loss: SetLossConfig = field(default_factory=SetLossConfig)
    device: str = "cpu"


def recipe(
    steps: tuple[int, int, int], batch_size: int = 8, lr: float = 3e-4, encoder_lr_scale: float = 0.1
) -> tuple[StageConfig, ...]:
    """The three-stage recipe with the given step counts.

    ``encoder_lr_scale`` multiplies the image encoders' learning rate: upstream's 0.1 protects pretrained
    encoders; encoders trained from scratch (the embedded teacher) learn at the full rate (1.0).
    """
    everything = ("",)
    return (
        StageConfig(
            "segmentor",
            steps[0],
            batch_size,
            lr,
            trainable=("segmentor.", "seg_connector."),
            tasks=(Task.PANOPTIC,),
            lm_weight=0.0,
            encoder_lr_scale=encoder_lr_scale,
            schedule="multistep",
        ),
        StageConfig(
            "align",
            steps[1],
            batch_size,
            lr,
            trainable=("visual_projector.", "seg_projector.", "llm."),
            tasks=(Task.GCG, Task.CHAT),
            mask_weight=0.0,
            encoder_lr_scale=encoder_lr_scale,
        ),
        StageConfig(
            "mixed",
            steps[2],
            batch_size,
            lr,
            trainable=everything,
            tasks=tuple(Task),
            encoder_lr_scale=encoder_lr_scale,
        ),
    )


# -- data ------------------------------------------------------------------------------------
ExampleSource = Callable[[int], Iterator[Example]]
"""Gives an endless example iterator for a seed (e.g. the shapes train split); must be deterministic."""


def balanced_stream(source: ExampleSource, tasks: tuple[Task, ...], seed: int) -> Iterator[Example]:
    """Examples of ``tasks``, balanced by upstream's repeat factor r = max(1, sqrt(t / f)) with t = 0.1.

    Task frequencies f are measured on the first 200 matching examples; each later example is repeated
    ``floor(r)`` times plus once more with probability ``r - floor(r)`` (seeded).
    """
    wanted = set(tasks)
    stream = (e for e in source(seed) if e.task in wanted)
    head = list(itertools.islice(stream, 200))
    counts = {t: sum(e.task is t for e in head) for t in wanted}
    total = max(1, len(head))
    repeat = {t: max(1.0, math.sqrt(0.1 / (counts[t] / total))) if counts[t] else 1.0 for t in wanted}
    rng = torch.Generator().manual_seed(seed)
    for example in itertools.chain(head, stream):
        r = repeat[example.task]
        copies = int(r) + int(torch.rand((), generator=rng).item() < r - int(r))
        for _ in range(copies):
            yield example


def _batches(stream: Iterator[Example], batch_size: int) -> Iterator[list[Example]]:
    while True:
        batch = list(itertools.islice(stream, batch_size))
        if len(batch) < batch_size:
            raise RuntimeError("the training data ran out; give an endless source")
        yield batch


# -- model plumbing ----------------------------------------------------------------------------
def _configure(model: XSam, stage: StageConfig) -> list[dict]:
    """Freeze what the stage does not train; return optimizer parameter groups."""
    encoder, other = [], []
    for name, param in model.named_parameters():
        train = any(name.startswith(p) for p in stage.trainable)
        param.requires_grad_(train)
        if train:
            (encoder if name.startswith(ENCODERS) else other).append(param)
    groups = [{"params": other, "lr": stage.lr, "base_lr": stage.lr}]
    if encoder:
        lr = stage.lr * stage.encoder_lr_scale
        groups.append({"params": encoder, "lr": lr, "base_lr": lr})
    return groups


def _lr_factor(stage: StageConfig, step: int) -> float:
    warmup = max(1, int(stage.warmup_frac * stage.steps))
    if step < warmup:
        return (step + 1) / warmup
    if stage.schedule == "multistep":
        return 0.01 if step >= stage.steps * 5 / 6 else 0.1 if step >= stage.steps * 2 / 3 else 1.0
    progress = (step - warmup) / max(1, stage.steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


class ClosedSetHead(nn.Module):
    """Stage-1 classifier over a fixed category list (+ no-object), dropped after stage 1 as upstream."""

    def __init__(self, dim: int, categories: tuple[str, ...]) -> None:
        super().__init__()
        self.categories = categories
        self.index = {c: i for i, c in enumerate(categories)}
        self.linear = nn.Linear(dim, len(categories) + 1)

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        return self.linear(queries)


def _step_generator(seed: int, stage_index: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(hash((seed, stage_index, step)) % (2**63))


def segmentor_loss(
    model: XSam,
    head: ClosedSetHead,
    batch: Batch,
    examples: list[Example],
    cfg: SetLossConfig,
    gen: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Stage 1: no LLM; the decoder's queries are classified by the closed-set head."""
    taps = model.segmentor.encoder.forward_taps(batch.seg_pixels)
    pyramid = model.seg_connector([taps[i] for i in model.config.seg_encoder.connector_layers])
    inputs = model.decoder_inputs(pyramid)
    out = model.segmentor.decoder(inputs.memory, inputs.mask_features, None, all_layers=True)
    labels = [
        torch.tensor(
            [head.index[e.request.categories[j]] for j in e.target.label_ids.tolist()], dtype=torch.long
        )
        for e in examples
    ]
    levels = [(head(q), m) for q, m in zip(out.aux_queries, out.aux_mask_logits, strict=True)]
    return _set_losses(levels, labels, batch.gt_masks, len(head.categories), cfg, gen)


def _set_losses(
    levels: list[tuple[torch.Tensor, torch.Tensor]],
    labels: list[torch.Tensor],
    gt_masks: list[torch.Tensor],
    num_classes: int,
    cfg: SetLossConfig,
    gen: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Sum the set loss over prediction levels and examples, normalised like Mask2Former."""
    num_masks = max(1, sum(int(g.shape[0]) for g in gt_masks))
    total = {"class": 0.0, "mask": 0.0, "dice": 0.0}
    for class_logits, mask_logits in levels:
        for i in range(class_logits.shape[0]):
            parts = set_loss(class_logits[i], mask_logits[i], labels[i], gt_masks[i], num_classes, cfg, gen)
            total["class"] = total["class"] + parts["class"] / class_logits.shape[0]
            total["mask"] = total["mask"] + parts["mask"] / num_masks
            total["dice"] = total["dice"] + parts["dice"] / num_masks
    return {
        "class": cfg.class_weight * total["class"],
        "mask": cfg.mask_weight * total["mask"],
        "dice": cfg.dice_weight * total["dice"],
    }


@dataclass
class XSamForward:
    """What one training forward of the full model produced (the inputs of every loss on it).

    Attributes:
        features (ImageFeatures): image tokens, region grid and connector pyramid of the batch.
        hidden (torch.Tensor): (B, T, H_llm) last hidden states of the LLM.
        segmented (list[int]): batch indices of the examples whose answer has ``<SEG>`` (decoded).
        cond (torch.Tensor | None): (B_s, C, D) condition embeddings, zero-padded; ``None`` if not decoded.
        cond_valid (torch.Tensor | None): (B_s, C) bool, False for padded slots.
        seg (torch.Tensor | None): (B_s, D) ``<SEG>`` embeddings.
        decoder_inputs (DecoderInputs | None): the pixel decoder's outputs for the segmented examples.
        levels (list[tuple[torch.Tensor, torch.Tensor]]): per prediction level (deep supervision), class
            logits (B_s, Q, C+1) and mask logits (B_s, Q, m, m); the last entry is the final prediction.
    """

    features: ImageFeatures
    hidden: torch.Tensor
    segmented: list[int]
    cond: torch.Tensor | None = None
    cond_valid: torch.Tensor | None = None
    seg: torch.Tensor | None = None
    decoder_inputs: DecoderInputs | None = None
    levels: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)


def xsam_forward(
    model: XSam, batch: Batch, gen: torch.Generator, decode: bool = True, all_layers: bool = True
) -> XSamForward:
    """Encoders, LLM over the spliced prompt + answer, and (if ``decode``) the decoder for ``<SEG>`` answers.

    Args:
        model (XSam): the model.
        batch (Batch): collated examples.
        gen (torch.Generator): seeds the region sampler.
        decode (bool): run the decoder on the examples whose answer holds ``<SEG>``.
        all_layers (bool): keep every decoder prediction level (deep supervision) or only the final one.

    Returns:
        XSamForward: the outputs every loss reads.
    """
    features = model.encode_image(batch.seg_pixels, batch.global_pixels)
    embeds = []
    for i in range(len(batch)):
        region = None
        if batch.prompt_masks[i] is not None:
            region = model.region_tokens(
                features.region_grid[i : i + 1], batch.prompt_masks[i], generator=gen
            )
        embeds.append(model.splice(batch.input_ids[i], features.image_tokens[i], region))
    hidden = model.llm.model(
        inputs_embeds=torch.stack(embeds), attention_mask=batch.attention_mask
    ).last_hidden_state
    segmented = [i for i in range(len(batch)) if batch.seg_positions[i] is not None]
    out = XSamForward(features, hidden, segmented)
    if not (decode and segmented):
        return out
    conds, segs = [], []
    for i in segmented:
        cond, seg = model.condition_embeds(hidden[i], batch.spans[i], batch.seg_positions[i])
        conds.append(cond)
        segs.append(seg)
    width = max(c.shape[0] for c in conds)
    out.cond = torch.stack([nn.functional.pad(c, (0, 0, 0, width - c.shape[0])) for c in conds])
    out.cond_valid = torch.stack([torch.arange(width, device=hidden.device) < c.shape[0] for c in conds])
    out.seg = torch.stack(segs)
    out.decoder_inputs = model.decoder_inputs([p[segmented] for p in features.pyramid])
    final_logits, dec = model.decode(out.decoder_inputs, out.seg, out.cond, out.cond_valid, all_layers)
    if all_layers:
        out.levels = [
            (model.class_logits(q, out.cond, out.cond_valid), m)
            for q, m in zip(dec.aux_queries, dec.aux_mask_logits, strict=True)
        ]
    else:
        out.levels = [(final_logits, dec.mask_logits)]
    return out


def gt_losses(
    model: XSam,
    forward: XSamForward,
    batch: Batch,
    lm_weight: float,
    mask_weight: float,
    cfg: SetLossConfig,
    gen: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Ground-truth losses on a forward: LM loss on the answers, set loss where the answer has ``<SEG>``."""
    losses: dict[str, torch.Tensor] = {}
    if lm_weight > 0:
        losses["lm"] = lm_weight * lm_loss(model.llm.lm_head(forward.hidden), batch.lm_labels)
    if mask_weight > 0 and forward.levels:
        segmented = forward.segmented
        parts = _set_losses(
            forward.levels,
            [batch.gt_labels[i] for i in segmented],
            [batch.gt_masks[i] for i in segmented],
            forward.cond.shape[1],
            cfg,
            gen,
        )
        losses.update({k: mask_weight * v for k, v in parts.items()})
    return losses


def xsam_loss(
    model: XSam, batch: Batch, stage: StageConfig, cfg: SetLossConfig, gen: torch.Generator
) -> dict[str, torch.Tensor]:
    """Stages 2 and 3: the full model; LM loss on the answers, set loss where the answer has ``<SEG>``."""
    forward = xsam_forward(model, batch, gen, decode=stage.mask_weight > 0)
    return gt_losses(model, forward, batch, stage.lm_weight, stage.mask_weight, cfg, gen)


# -- the loop ----------------------------------------------------------------------------------
@dataclass
class Progress:
    stage_index: int = 0
    step: int = 0  # steps done in the current stage
    done: bool = False


def train(
    model: XSam,
    tokenizer: XSamTokenizer,
    source: ExampleSource,
    config: TrainConfig,
    out_dir: str | os.PathLike,
    categories: tuple[str, ...],
    stop_after: int | None = None,
    evaluate: Callable[[XSam, str], dict] | None = None,
) -> Path:
    """Run (or resume) every stage, then write the model folder ``out_dir/model``.

    Args:
        model (XSam): freshly built; replaced by the checkpoint's weights when resuming.
        tokenizer (XSamTokenizer): saved with the model.
        source (ExampleSource): endless deterministic training examples for a seed.
        config (TrainConfig): the stages.
        out_dir (str | os.PathLike): checkpoint, log and final model folder; resumes if a checkpoint exists.
        categories (tuple[str, ...]): the closed-set category list of stage 1.
        stop_after (int | None): stop after this many steps in this call (to test resume); ``None`` runs all.
        evaluate (Callable | None): called at each stage end with (model, stage name); its dict is logged.

    Returns:
        Path: the final model folder.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(config.device)
    model.to(device)
    collate = Collator(model.config, tokenizer)
    progress, head_state, optim_state = _resume(out, model)
    steps_this_call = 0
    for stage_index, stage in enumerate(config.stages):
        if progress.done or stage_index < progress.stage_index:
            continue
        head = (
            ClosedSetHead(model.config.decoder.hidden_dim, categories).to(device)
            if stage.name == "segmentor"
            else None
        )
        if head is not None and head_state is not None:
            head.load_state_dict(head_state)
        groups = _configure(model, stage)
        if head is not None:
            groups.append({"params": list(head.parameters()), "lr": stage.lr, "base_lr": stage.lr})
        optimizer = torch.optim.AdamW(groups, weight_decay=stage.weight_decay, betas=(0.9, 0.999))
        if optim_state is not None and progress.step > 0:
            optimizer.load_state_dict(optim_state)
        optim_state = head_state = None
        stream = _batches(
            balanced_stream(source, stage.tasks, config.seed + 1000 * stage_index), stage.batch_size
        )
        for _ in range(progress.step):  # skip consumed batches: data depends only on (seed, stage, step)
            next(stream)
        model.train()
        bar = tqdm(
            total=stage.steps, initial=progress.step, desc=f"stage {stage_index + 1} {stage.name}", leave=True
        )
        while progress.step < stage.steps:
            if stop_after is not None and steps_this_call >= stop_after:
                bar.close()
                return out / MODEL_DIR
            examples = next(stream)
            batch = _to_device(collate(examples), device)
            gen = _step_generator(config.seed, stage_index, progress.step)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * _lr_factor(stage, progress.step)
            if head is not None:
                losses = segmentor_loss(model, head, batch, examples, config.set_loss, gen)
            else:
                losses = xsam_loss(model, batch, stage, config.set_loss, gen)
            loss = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], stage.grad_clip)
            optimizer.step()
            progress.step += 1
            steps_this_call += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if progress.step % config.log_every == 0 or progress.step == stage.steps:
                _log(
                    out,
                    {
                        "stage": stage.name,
                        "step": progress.step,
                        "loss": loss.item(),
                        **{k: v.item() for k, v in losses.items()},
                    },
                )
            if progress.step % config.checkpoint_every == 0 and progress.step < stage.steps:
                _save_state(out, model, optimizer, progress, head)
        bar.close()
        model.eval()
        if evaluate is not None:
            _log(out, {"stage": stage.name, "step": progress.step, "eval": evaluate(model, stage.name)})
        progress = Progress(stage_index + 1, 0, stage_index + 1 == len(config.stages))
        _save_state(out, model, None, progress, None)
    model.eval()
    final = save_pretrained(model, out / MODEL_DIR, tokenizer)
    return final


def _to_device(batch: Batch, device: torch.device) -> Batch:
    if device.type == "cpu":
        return batch
    moved = {}
    for name, value in vars(batch).items():
        if isinstance(value, torch.Tensor):
            value = value.to(device)
        elif isinstance(value, list):  # per-example tensors, some None (prompt masks of text-only examples)
            value = [v.to(device) if isinstance(v, torch.Tensor) else v for v in value]
        moved[name] = value
    return Batch(**moved)


def _save_state(
    out: Path,
    model: XSam,
    optimizer: torch.optim.Optimizer | None,
    progress: Progress,
    head: nn.Module | None,
) -> None:
    """One file, written to a temp name and renamed: a kill never leaves half a checkpoint."""
    state = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "head": head.state_dict() if head is not None else None,
        "progress": asdict(progress),
    }
    atomic_write_with(out / STATE_FILE, lambda tmp: torch.save(state, tmp))


def _resume(out: Path, model: XSam) -> tuple[Progress, dict | None, dict | None]:
    path = out / STATE_FILE
    if not path.is_file():
        return Progress(), None, None
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    progress = Progress(**state["progress"])
    _trim_log(out, progress)
    log.info("resuming from %s at stage %d step %d", path, progress.stage_index, progress.step)
    return progress, state["head"], state["optimizer"]


def _log(out: Path, record: dict) -> None:
    with open(out / LOG_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")


def _trim_log(out: Path, progress: Progress) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be written again)."""
    path = out / LOG_FILE
    if not path.is_file():
        return
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    stage_names = []
    keep = []
    for record in records:
        if record["stage"] not in stage_names:
            stage_names.append(record["stage"])
        index = stage_names.index(record["stage"])
        if index < progress.stage_index or (
            index == progress.stage_index and record["step"] <= progress.step
        ):
            keep.append(record)
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))
