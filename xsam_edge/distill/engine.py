"""The distillation loop: one process or many under ``torchrun`` (DDP or FSDP2; gloo on CPU, NCCL on CUDA).

- Data: a step's global batch depends only on (seed, step); rank r takes examples r, r+W, ... of it, so a
  resumed run sees exactly the batches an uninterrupted one would.
- Checkpoints: ``checkpoint/`` holds the student (``save_pretrained``: safetensors + config + tokenizer), the
  adapters (safetensors), the optimizer and ``state.json``; rank 0 writes it under a temporary name and
  renames it into place, so a kill leaves the previous checkpoint whole. A checkpoint written for another
  student config, teacher or sharding is refused before any step.
- Sharding: ``ddp`` keeps a full student per rank; ``fsdp2`` (``fully_shard``, one unit) splits parameters,
  gradients and AdamW state across ranks, and gathers full tensors for checkpoints and the final model.
  Under FSDP2 every parameter gets a gradient each step (an explicit zero where unused), so AdamW also
  decays parameters a step leaves unused, which DDP skips: the two agree on losses, not bit for bit.
- Rank agreement: at every checkpoint the ranks compare a checksum of the full parameters and stop if they
  differ (a mismatch means a bug, not noise). The checksums and each rank's held parameter count go into
  the log.
- Logging: ``log.jsonl`` (losses averaged over ranks) and a tqdm bar on rank 0. bf16 autocast on CUDA
  (``precision``; ``bf16`` also on CPU).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from xsam_edge.distill.checkpoints import (
    checkpoint_view,
    load_checkpoint,
    read_checkpoint_state,
    run_recipe,
    save_checkpoint,
    tensors_checksum,
)
from xsam_edge.distill.config import DistillConfig
from xsam_edge.distill.losses import embed_loss, feature_loss, labelled_part, logit_kd_loss, output_loss
from xsam_edge.distill.pairing import Adapters, check_pair
from xsam_edge.files import atomic_write_text
from xsam_edge.model.checkpoint import save_pretrained
from xsam_edge.model.xsam import XSam
from xsam_edge.spec.tokenizer import XSamTokenizer
from xsam_edge.training.collate import Batch, Collator
from xsam_edge.training.train import (
    ExampleSource,
    _batches,
    _to_device,
    balanced_stream,
    gt_losses,
    xsam_forward,
)

log = logging.getLogger(__name__)

LOG_FILE = "log.jsonl"
MODEL_DIR = "model"


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: its rank among ``world`` processes, its device, its process group.

    ``distributed``: a process group was joined, always under ``torchrun`` (even with one rank, so DDP and
    FSDP2 run as asked).
    """

    rank: int
    world: int
    device: torch.device
    distributed: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_runtime(device: str) -> Runtime:
    """Join the process group when launched by ``torchrun`` (any number of ranks); pick the device.

    Raises:
        RuntimeError: CUDA was asked for but is not available, or this node runs more ranks than it has GPUs.
    """
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' asked for, but torch sees no CUDA device; use --device cpu")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        check_gpu_per_rank(local, int(os.environ.get("LOCAL_WORLD_SIZE", "1")), torch.cuda.device_count())
        torch.cuda.set_device(local)
    under_torchrun = "LOCAL_WORLD_SIZE" in os.environ  # torchrun sets it; a plain process does not
    if (world > 1 or under_torchrun) and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    device_used = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    return Runtime(rank, world, device_used, distributed=dist.is_initialized())


def check_gpu_per_rank(local_rank: int, local_ranks: int, gpus: int) -> None:
    """Refuse more ranks on this node than GPUs, before ``set_device`` or NCCL fail less clearly.

    NCCL needs one GPU per rank: a rank past the last GPU gets an invalid ordinal, two on one GPU a
    "duplicate GPU" error from NCCL.

    Raises:
        RuntimeError: this node runs more ranks than it has GPUs.
    """
    if local_rank >= gpus or local_ranks > gpus:
        raise RuntimeError(
            f"torchrun started {max(local_ranks, local_rank + 1)} ranks on this node, but torch sees {gpus} "
            f"GPU(s), and NCCL needs one GPU per rank; run torchrun --nproc_per_node {gpus} (or fewer), "
            "or use --device cpu (gloo) for more ranks"
        )


class DistillStep(nn.Module):
    """Student + adapters as one module (what DDP wraps); ``forward`` returns the weighted loss terms.

    The frozen teacher is held outside the module's parameters, so DDP neither broadcasts nor syncs it.
    """

    def __init__(self, student: XSam, adapters: Adapters, teacher: XSam, config: DistillConfig) -> None:
        super().__init__()
        self.student = student
        self.adapters = adapters
        self._teacher = (teacher,)  # a tuple: not registered as a submodule
        self.config = config
        self.stats: dict[str, float] = {}
        self.cover_every_parameter = False  # set when the module is sharded (FSDP2)

    def forward(
        self,
        batch: Batch,
        teacher_batch: Batch,
        teacher_out,
        gen: torch.Generator,
        labelled: list[bool] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Every switched-on loss on one local batch.

        Args:
            batch (Batch): the student's batch.
            teacher_batch (Batch): the same examples collated for the teacher.
            teacher_out (XSamForward): the teacher's forward on ``teacher_batch`` (no gradient).
            gen (torch.Generator): the student's region sampler and the set loss's point sampling.
            labelled (list[bool] | None): whether the run uses each example's labels
                (:meth:`DistillConfig.labelled`); ``None``: every example's.

        Returns:
            dict[str, torch.Tensor]: weighted loss terms; their sum is the training loss.
        """
        cfg, w = self.config, self.config.weights
        teacher = self._teacher[0]
        student = self.student
        labelled = [True] * len(batch) if labelled is None else labelled
        gt_mask = cfg.on("gt") and w.gt_mask > 0
        decode = cfg.on("embed") or cfg.on("output") or cfg.on("feature") or gt_mask
        # every prediction level is needed by deep supervision and by the ground-truth set loss
        all_layers = (cfg.on("output") and cfg.deep_supervision) or gt_mask
        out = xsam_forward(student, batch, gen, decode=decode, all_layers=all_layers)
        losses: dict[str, torch.Tensor] = {}
        self.stats = {}
        if cfg.on("feature"):
            parts = feature_loss(out, teacher_out, student.config, teacher.config, self.adapters)
            losses["feature"] = w.feature * sum(parts.values())
            self.stats.update({f"feature_{k}": float(v.detach()) for k, v in parts.items()})
        decoded = bool(out.levels) and bool(teacher_out.levels)
        if cfg.on("embed") and decoded:
            losses["embed"] = w.embed * embed_loss(out, teacher_out, self.adapters)
        if cfg.on("logit"):
            kd = logit_kd_loss(
                student.llm.lm_head,
                teacher.llm.lm_head,
                out,
                teacher_out,
                batch,
                teacher_batch,
                cfg.temperature,
            )
            losses["logit"] = w.logit * kd
        if cfg.on("output") and decoded:
            loss, disagreement = output_loss(
                out,
                teacher_out,
                cfg.class_temperature,
                cfg.set_loss_config,
                cfg.deep_supervision,
                cfg.hard_prompt_gamma,
                cfg.hard_prompt_max,
                labels=(
                    [(batch.gt_labels[i], batch.gt_masks[i]) if labelled[i] else None for i in out.segmented]
                    if cfg.gate_output_by_labels
                    else None
                ),
                hard_masks=cfg.hard_teacher_masks,
                min_foreground=cfg.output_min_foreground,
                points=(
                    torch.rand(cfg.output_points, 2, generator=gen).to(out.hidden.device)
                    if cfg.output_points
                    else None
                ),
                importance=cfg.output_point_importance,
                generator=gen,
            )
            losses["output"] = w.output * loss
            self.stats["output_max_disagreement"] = float(disagreement.max())
        if cfg.on("gt") and any(labelled):
            out_l, batch_l, share, decoded_share = labelled_part(out, batch, labelled)
            gt = gt_losses(
                student, out_l, batch_l, w.gt_lm * share, w.gt_mask * decoded_share, cfg.set_loss_config, gen
            )
            losses.update({f"gt_{k}": v for k, v in gt.items()})
        if not losses:  # nothing to compare in this local batch: a zero that still reaches the parameters
            losses["none"] = out.hidden.sum() * 0
        if self.cover_every_parameter:
            # FSDP2 reduce-scatters the gradients of one fixed set of parameters on every rank; a rank whose
            # batch leaves a part unused (no <SEG> answer: no decoder) would send a shorter message. A zero
            # through every parameter keeps the sets equal and adds nothing to any gradient.
            first = next(iter(losses))
            zero = sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
            losses[first] = losses[first] + zero
        return losses


# -- the loop ----------------------------------------------------------------------------------------------
def _lr_factor(config: DistillConfig, step: int) -> float:
    warmup = max(1, int(config.warmup_frac * config.steps))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, config.steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


def _step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 64 + rank)


def _append_log(out: Path, record: dict) -> None:
    with open(out / LOG_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")


def _trim_log(out: Path, step: int) -> None:
    """Drop log lines after the checkpoint we resume from (they will be written again)."""
    path = out / LOG_FILE
    if not path.is_file():
        return
    keep = [
        line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step
    ]
    atomic_write_text(path, "".join(line + "\n" for line in keep))


def _autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """bf16 autocast where asked (``auto``: on CUDA only); parameters and optimizer state stay fp32."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def _global_mean(values: dict[str, float], runtime: Runtime) -> dict[str, float]:
    """Average logged numbers over ranks (every rank must call this at the same steps)."""
    if runtime.world == 1:
        return values
    gathered: list[dict[str, float] | None] = [None] * runtime.world
    dist.all_gather_object(gathered, values)
    union = sorted({k for g in gathered if g for k in g})
    mean = {}
    for k in union:
        seen = [g[k] for g in gathered if g and k in g]
        mean[k] = sum(seen) / len(seen)
    return mean


def _average_gradients(params: list[nn.Parameter], runtime: Runtime) -> None:
    """Mean of each parameter's gradient over ranks (what DDP does; for parameters FSDP2 leaves alone).

    ``params`` must come in the same order on every rank (by name): each is one collective.
    """
    for param in params:
        if param.grad is not None:
            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
            param.grad /= runtime.world


def _local_elements(module: nn.Module, runtime: Runtime) -> list[int]:
    """Parameter elements each rank holds (its shards under FSDP2, the whole model under DDP)."""
    mine = sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in module.parameters())
    if runtime.world == 1:
        return [mine]
    held: list[int | None] = [None] * runtime.world
    dist.all_gather_object(held, mine)
    return [int(n or 0) for n in held]


def _check_ranks_agree(mine: str, runtime: Runtime) -> list[str]:
    """Every rank's parameter checksum; raises if they differ."""
    if runtime.world == 1:
        return [mine]
    sums: list[str | None] = [None] * runtime.world
    dist.all_gather_object(sums, mine)
    if len(set(sums)) != 1:
        raise RuntimeError(f"ranks diverged: parameter checksums {sums}")
    return [str(s) for s in sums]


def distill(
    teacher: XSam,
    student: XSam,
    teacher_tokenizer: XSamTokenizer,
    student_tokenizer: XSamTokenizer,
    source: ExampleSource,
    config: DistillConfig,
    out_dir: str | os.PathLike,
    teacher_id: str,
    stop_after: int | None = None,
    evaluate: Callable[[XSam], dict] | None = None,
) -> Path:
    """Distil ``teacher`` into ``student`` (resuming from ``out_dir/checkpoint`` if there is one).

    Launch with ``torchrun --nproc_per_node N`` to run on N processes; each builds the same models (DDP
    broadcasts rank 0's student at the start).

    Args:
        teacher (XSam): trained, frozen here.
        student (XSam): the student (random or initialised from the teacher); replaced by the checkpoint's
            weights when resuming.
        teacher_tokenizer (XSamTokenizer): the teacher's tokenizer.
        student_tokenizer (XSamTokenizer): the student's (saved with it).
        source (ExampleSource): endless, deterministic examples for a seed.
        config (DistillConfig): losses, schedule, data.
        out_dir (str | os.PathLike): checkpoint, ``log.jsonl`` and the final ``model/``.
        teacher_id (str): names the teacher (folder or preset); a checkpoint of another teacher is refused.
        stop_after (int | None): return after this many steps in this call (to test resume).
        evaluate (Callable | None): run on rank 0 with the final student; its dict is logged.

    Returns:
        Path: the final student folder ``out_dir/model`` (written when all steps are done).

    Raises:
        ValueError: the pair cannot be distilled, or ``out_dir`` holds a checkpoint of another run.
    """
    check_pair(teacher.config, student.config, teacher_tokenizer, student_tokenizer, config)
    if config.label_fraction < 1 and not config.on("logit"):
        # measured on shapes at 0.1 (README): without it, chat exact match and GCG mIoU fell to 0
        log.warning(
            "label_fraction %.2f without the logit loss: the student learns its answer text from the "
            "labelled images only; add logit to distil the teacher's text on the others",
            config.label_fraction,
        )
    runtime = setup_runtime(config.device)
    if config.batch_size % runtime.world:
        raise ValueError(f"batch_size {config.batch_size} must divide by the {runtime.world} ranks")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    adapters = Adapters(teacher.config, student.config)
    step_module = DistillStep(student, adapters, teacher, config)
    sharded = config.sharding == "fsdp2" and runtime.distributed
    # what the checkpoint's optimizer state looks like: a process outside torchrun runs fsdp2 as plain state
    sharding = "fsdp2" if sharded else "ddp"
    recipe = run_recipe(config)
    state = read_checkpoint_state(out, student, teacher_id, sharding, recipe)
    optim_state = load_checkpoint(out, step_module) if state is not None else None
    step = state["step"] if state is not None else 0
    if state is not None:
        log.info("resuming %s at step %d", out, step)
    if runtime.main:
        _trim_log(out, step)

    teacher.to(runtime.device).eval().requires_grad_(False)
    step_module.to(runtime.device).train()
    wrapped: nn.Module = step_module
    if sharded:
        from torch.distributed.fsdp import fully_shard

        # one FSDP unit (the loss covers every parameter): per-block units would each need every rank to
        # run every block in every step, which a batch without a <SEG> answer does not. fully_shard takes
        # no 0-d parameters (the class head's logit scale): they stay replicated, gradients all-reduced
        replicated = [p for _, p in sorted(step_module.named_parameters()) if p.dim() == 0]
        fully_shard(step_module, ignored_params=set(replicated) or None)
        step_module.cover_every_parameter = True
    elif runtime.distributed:
        # find_unused_parameters: a local batch without a <SEG> answer leaves the decoder out of the graph
        wrapped = nn.parallel.DistributedDataParallel(step_module, find_unused_parameters=True)
    params = [p for p in step_module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if optim_state is not None and sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(
            step_module, optimizer, optim_state, options=StateDictOptions(full_state_dict=True)
        )
    elif optim_state is not None:
        optimizer.load_state_dict(optim_state)

    collate_s = Collator(student.config, student_tokenizer)
    collate_t = Collator(teacher.config, teacher_tokenizer)
    stream = _batches(balanced_stream(source, config.tasks, config.seed), config.batch_size)
    for _ in range(step):  # skip consumed batches: data depends only on (seed, step)
        next(stream)
    autocast = _autocast(config.precision, runtime.device)
    # the teacher's decoder output feeds the embedding, output and pixel-feature losses (final level only)
    decode = config.on("embed") or config.on("output") or config.on("feature")
    bar = tqdm(total=config.steps, initial=step, desc="distill", disable=not runtime.main)
    done_this_call = 0
    while step < config.steps:
        if stop_after is not None and done_this_call >= stop_after:
            break
        examples = next(stream)[runtime.rank :: runtime.world]
        labelled = [config.labelled(e.image_id) for e in examples]
        batch = _to_device(collate_s(examples), runtime.device)
        teacher_batch = _to_device(collate_t(examples), runtime.device)
        gen = _step_generator(config.seed, runtime.rank, step)
        with torch.no_grad(), autocast:
            # same seed: teacher and student draw the same region-sampler points where their grids agree
            teacher_gen = _step_generator(config.seed, runtime.rank, step)
            teacher_out = xsam_forward(teacher, teacher_batch, teacher_gen, decode=decode, all_layers=False)
        for group in optimizer.param_groups:
            group["lr"] = config.lr * _lr_factor(config, step)
        with autocast:
            losses = wrapped(batch, teacher_batch, teacher_out, gen, labelled)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if sharded:
            _average_gradients(replicated, runtime)
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        step += 1
        done_this_call += 1
        bar.update(1)
        if step % config.log_every == 0 or step == config.steps:
            values = {
                "loss": float(loss.detach()),
                **{k: float(v.detach()) for k, v in losses.items()},
                **step_module.stats,
            }
            values = _global_mean(values, runtime)
            bar.set_postfix(loss=f"{values['loss']:.3f}")
            if runtime.main:
                _append_log(out, {"step": step, "lr": optimizer.param_groups[0]["lr"], **values})
        if step % config.checkpoint_every == 0 or step == config.steps:
            full_student, adapters, optimizer_state = checkpoint_view(step_module, optimizer, sharded)
            mine = tensors_checksum(
                {**dict(full_student.named_parameters()), **{f"adapters.{k}": v for k, v in adapters.items()}}
            )
            sums = _check_ranks_agree(mine, runtime)
            held = _local_elements(step_module, runtime)
            if runtime.main:
                save_checkpoint(
                    out,
                    full_student,
                    adapters,
                    optimizer_state,
                    step,
                    teacher_id,
                    student_tokenizer,
                    sharding,
                    recipe,
                )
                record = {"step": step, "checkpoint": True, "rank_checksums": sums, "rank_elements": held}
                _append_log(out, record)
            if runtime.world > 1:
                dist.barrier()
    bar.close()
    final = out / MODEL_DIR
    if step >= config.steps:
        student = checkpoint_view(step_module, optimizer, sharded)[0] if sharded else student.eval()
        if runtime.main:
            save_pretrained(student, final, student_tokenizer)
            if evaluate is not None:
                _append_log(out, {"step": step, "eval": evaluate(student)})
        if runtime.world > 1:
            dist.barrier()
    return final
