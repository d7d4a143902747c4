"""``xsam-edge distill`` and ``xsam-edge prune``: a student from a teacher."""

from __future__ import annotations

import argparse
import os


def add_parsers(sub: argparse._SubParsersAction) -> None:
    _distill_parser(sub)
    _prune_parser(sub)


def _teacher_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--teacher", help="teacher model folder")
    src.add_argument(
        "--teacher-preset", help="teacher preset: shapes-teacher is the cached trained one; others are random"
    )


def _distill_parser(sub: argparse._SubParsersAction) -> None:
    from xsam_edge.distill.config import LOSS_NAMES, DistillConfig

    default = DistillConfig()
    p = sub.add_parser(
        "distill", help="distil a teacher into a student preset (resumable; run under torchrun for DDP)"
    )
    _teacher_arguments(p)
    p.add_argument("--student-preset", required=True, help="student preset (e.g. shapes-student)")
    p.add_argument("--student-init", help="start from this model folder (must be of the student preset)")
    p.add_argument("--student-tokenizer", help="local HF tokenizer folder when the student's differs")
    p.add_argument("--data", default="shapes:train", help="training data spec (see xsam-edge eval --data)")
    p.add_argument("--out", required=True, help="run folder: checkpoint/, log.jsonl, model/")
    p.add_argument("--steps", type=int, default=default.steps)
    p.add_argument("--batch-size", type=int, default=default.batch_size, help="global batch over all ranks")
    p.add_argument("--lr", type=float, default=default.lr)
    p.add_argument("--losses", default="all", help=f"comma-separated, from {','.join(LOSS_NAMES)} (or all)")
    p.add_argument("--weights", default="", help="loss weights, e.g. feature=2,output=0.5,gt_mask=1")
    p.add_argument("--temperature", type=float, default=default.temperature)
    p.add_argument(
        "--hard-prompt-gamma",
        type=float,
        default=default.hard_prompt_gamma,
        help="0: no hard-prompt upweighting",
    )
    p.add_argument(
        "--gate-output-by-labels",
        action="store_true",
        help="copy teacher answers in proportion to how right the labels say they are (a weak teacher)",
    )
    p.add_argument(
        "--hard-teacher-masks",
        action="store_true",
        help="the output loss copies the teacher's masks thresholded, not its soft probabilities (EdgeSAM)",
    )
    p.add_argument(
        "--output-min-foreground",
        type=float,
        default=default.output_min_foreground,
        help="the output loss copies only teacher queries at least this sure of a foreground class (0: all)",
    )
    p.add_argument(
        "--output-temperature",
        type=float,
        default=None,
        help="class KD temperature of the output loss (default: --temperature)",
    )
    p.add_argument(
        "--output-points",
        type=int,
        default=default.output_points,
        help="compare the output loss's masks at this many random points, each model's own grid read "
        "bilinearly (0: on the student's grid)",
    )
    p.add_argument(
        "--output-point-importance",
        type=float,
        default=default.output_point_importance,
        help="with --output-points: read matched masks' losses at points of their own, this share where the "
        "student is least sure (Mask2Former/EdgeSAM: 0.75), the rest uniform (0: at the shared points)",
    )
    p.add_argument(
        "--label-fraction",
        type=float,
        default=default.label_fraction,
        help="share of the training images whose labels are used (the rest: teacher only), e.g. 0.1",
    )
    p.add_argument("--decoder-adapter", action="store_true", help="allow another decoder width via adapters")
    p.add_argument(
        "--no-init-from-teacher", action="store_true", help="do not copy the pruned teacher decoder"
    )
    p.add_argument("--checkpoint-every", type=int, default=default.checkpoint_every)
    p.add_argument("--log-every", type=int, default=default.log_every, help="steps between log.jsonl lines")
    p.add_argument("--val-data", help="evaluate the final student on this data (logged)")
    p.add_argument("--seed", type=int, default=default.seed)
    p.add_argument("--device", default=default.device, choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--precision",
        default=default.precision,
        choices=["auto", "fp32", "bf16"],
        help="autocast: auto is bf16 on CUDA and fp32 on CPU",
    )
    p.add_argument(
        "--sharding",
        default=default.sharding,
        choices=["ddp", "fsdp2"],
        help="under torchrun: ddp (a replica per rank) or fsdp2 (parameters and optimizer state sharded)",
    )
    p.add_argument("--stop-after", type=int, help="stop after this many steps (resume later)")
    p.set_defaults(run=_distill)


def _distill(args: argparse.Namespace) -> None:
    from xsam_edge.distill.config import DistillConfig, LossWeights
    from xsam_edge.distill.run import distill_run

    config = DistillConfig(
        losses=DistillConfig.parse_losses(args.losses),
        weights=LossWeights.parse(args.weights),
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        temperature=args.temperature,
        hard_prompt_gamma=args.hard_prompt_gamma,
        gate_output_by_labels=args.gate_output_by_labels,
        hard_teacher_masks=args.hard_teacher_masks,
        output_min_foreground=args.output_min_foreground,
        output_temperature=args.output_temperature,
        output_points=args.output_points,
        output_point_importance=args.output_point_importance,
        label_fraction=args.label_fraction,
        decoder_adapter=args.decoder_adapter,
        init_from_teacher=not args.no_init_from_teacher,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
        seed=args.seed,
        device=args.device,
        sharding=args.sharding,
        precision=args.precision,
    )
    try:
        model_dir = distill_run(
            out=args.out,
            student_preset=args.student_preset,
            config=config,
            data=args.data,
            teacher_dir=args.teacher,
            teacher_preset=args.teacher_preset,
            student_init=args.student_init,
            student_tokenizer_dir=args.student_tokenizer,
            val_data=args.val_data,
            stop_after=args.stop_after,
        )
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():  # under torchrun: leave NCCL/gloo cleanly
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        done = (model_dir / "config.json").is_file()
        print(f"wrote {model_dir}" if done else f"stopped; resume with the same command ({args.out})")


def _prune_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="prune a teacher's decoder (queries, layers, FFN) into a model folder")
    _teacher_arguments(p)
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--like", help="take the decoder sizes of this preset (e.g. shapes-student)")
    p.add_argument("--queries", type=int, help="decoder queries to keep (most matched by the teacher)")
    p.add_argument("--decoder-layers", type=int, help="prediction levels (1 + masked-attention layers)")
    p.add_argument("--decoder-ffn", type=int, help="FFN channels per masked-attention layer")
    p.add_argument("--encoder-layers", type=int, help="pixel-decoder deformable encoder layers")
    p.add_argument("--encoder-ffn", type=int, help="FFN channels per pixel-decoder encoder layer")
    p.add_argument("--data", default="shapes:train", help="labelled data that ranks the queries")
    p.add_argument("--rank-examples", type=int, default=64, help="examples used to rank the queries")
    p.set_defaults(run=_prune)


def _prune(args: argparse.Namespace) -> None:
    from xsam_edge.distill.run import prune_run

    folder, usage = prune_run(
        out=args.out,
        teacher_dir=args.teacher,
        teacher_preset=args.teacher_preset,
        like=args.like,
        num_queries=args.queries,
        decoder_layers=args.decoder_layers,
        decoder_ffn_dim=args.decoder_ffn,
        encoder_layers=args.encoder_layers,
        encoder_ffn_dim=args.encoder_ffn,
        data=args.data,
        rank_examples=args.rank_examples,
    )
    print(f"query usage (Hungarian matches per query): {usage.tolist()}")
    print(f"wrote {folder}")
