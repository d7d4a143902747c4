"""Distillation and pruning from names: a teacher folder or preset, a student preset, a dataset spec.

This is what the ``distill`` and ``prune`` verbs call; Python users with models in hand call
:func:`xsam_edge.distill.engine.distill` and :mod:`xsam_edge.distill.prune` directly.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from xsam_edge.data.sample import Example
from xsam_edge.distill.checkpoints import CHECKPOINT_DIR, STATE_FILE
from xsam_edge.distill.config import DistillConfig
from xsam_edge.distill.engine import distill
from xsam_edge.distill.prune import prune_decoder, query_usage, transplant
from xsam_edge.model.build import build_model
from xsam_edge.model.checkpoint import TOKENIZER_FILE, from_pretrained, save_pretrained
from xsam_edge.model.presets import get_preset
from xsam_edge.model.xsam import XSam
from xsam_edge.spec.config import DecoderConfig, XSamConfig
from xsam_edge.spec.tokenizer import XSamTokenizer, tiny_tokenizer
from xsam_edge.training.recipe import TEACHER_PRESET
from xsam_edge.training.train import ExampleSource

log = logging.getLogger(__name__)


def load_teacher(
    teacher_dir: str | os.PathLike | None, teacher_preset: str | None, seed: int = 0
) -> tuple[XSam, XSamTokenizer, str]:
    """The teacher, its tokenizer and an id naming it (what a checkpoint remembers).

    ``teacher_preset`` ``shapes-teacher`` is the cached trained teacher (trained on first use); any other
    preset has random weights (smoke runs only).

    Raises:
        ValueError: neither or both given, or the folder has no tokenizer.
    """
    if (teacher_dir is None) == (teacher_preset is None):
        raise ValueError(
            "give exactly one of a teacher folder (--teacher) or a teacher preset (--teacher-preset)"
        )
    if teacher_preset == TEACHER_PRESET:
        from xsam_edge.training.teacher import ensure_teacher

        teacher_dir = ensure_teacher()
    if teacher_dir is not None:
        path = Path(teacher_dir)
        model = from_pretrained(path)
        if not (path / TOKENIZER_FILE).is_file():
            raise FileNotFoundError(f"teacher folder {path} has no {TOKENIZER_FILE}")
        tokenizer = XSamTokenizer.from_file(path / TOKENIZER_FILE, model.config.tokens)
        return model.eval(), tokenizer, str(path.resolve())
    config = get_preset(teacher_preset)
    log.warning("teacher preset %r has random weights: a smoke run, not a distillation", teacher_preset)
    torch.manual_seed(seed)
    return build_model(config).eval(), _builtin_tokenizer(config, teacher_preset), f"preset:{teacher_preset}"


def _builtin_tokenizer(config: XSamConfig, name: str) -> XSamTokenizer:
    if config.tokens.builtin_tokenizer != "tiny":
        raise ValueError(f"preset {name!r} has no built-in tokenizer; pass a tokenizer folder")
    return tiny_tokenizer(config.tokens)


def student_tokenizer(
    config: XSamConfig, teacher_tokenizer: XSamTokenizer, tokenizer_dir: str | os.PathLike | None
) -> XSamTokenizer:
    """The student's tokenizer: a given folder, the built-in one, or the teacher's when the tokens agree."""
    if tokenizer_dir is not None:
        return XSamTokenizer.from_pretrained_dir(tokenizer_dir, config.tokens)
    if config.tokens.builtin_tokenizer == "tiny":
        return tiny_tokenizer(config.tokens)
    if config.tokens == teacher_tokenizer.tokens:
        return teacher_tokenizer
    raise ValueError(
        f"student {config.name!r} uses other tokens/template than the teacher; give its tokenizer folder "
        "(--student-tokenizer DIR)"
    )


def _same_model(a: XSamConfig, b: XSamConfig) -> bool:
    return dataclasses.replace(a, name="") == dataclasses.replace(b, name="")


def build_student(preset: str, init_dir: str | os.PathLike | None, seed: int = 0) -> XSam:
    """The student preset with random weights, or with the weights of ``init_dir`` (same config required).

    Raises:
        ValueError: ``init_dir`` holds a model of another preset.
    """
    config = get_preset(preset)
    if init_dir is None:
        torch.manual_seed(seed)
        return build_model(config)
    model = from_pretrained(init_dir)
    if not _same_model(model.config, config):
        raise ValueError(
            f"{init_dir} holds a model of preset {model.config.name!r}, not of student preset {preset!r}; "
            "start from a folder written for that preset (or drop --student-init)"
        )
    return model


def example_source(spec: str) -> ExampleSource:
    """An endless, deterministic source over a dataset spec; the spec is checked now, before any training.

    Raises:
        ValueError: unknown dataset or shapes split, or an empty dataset.
        FileNotFoundError: a path in the spec does not exist.
    """
    from xsam_edge.data.registry import iter_dataset, parse_spec

    scheme, fields = parse_spec(spec)
    if scheme == "shapes":
        from xsam_edge.data.shapes import SPLITS
        from xsam_edge.training.teacher import shapes_source

        if fields["split"] not in SPLITS:
            raise ValueError(f"unknown shapes split {fields['split']!r}; known splits: {', '.join(SPLITS)}")
        return shapes_source(fields["split"])

    def source(seed: int) -> Iterator[Example]:
        del seed  # a real dataset is read in its own order, pass after pass
        while True:
            count = 0
            for example in iter_dataset(spec):
                count += 1
                yield example
            if not count:
                raise ValueError(f"dataset {spec!r} is empty")

    next(source(0))  # read one example now: a broken dataset fails before the first step
    return source


def distill_run(
    *,
    out: str | os.PathLike,
    student_preset: str,
    config: DistillConfig,
    data: str = "shapes:train",
    teacher_dir: str | os.PathLike | None = None,
    teacher_preset: str | None = None,
    student_init: str | os.PathLike | None = None,
    student_tokenizer_dir: str | os.PathLike | None = None,
    val_data: str | None = None,
    rank_examples: int = 64,
    stop_after: int | None = None,
) -> Path:
    """Distil a teacher (folder or preset) into a student preset on ``data``; resumable.

    A fresh run (no checkpoint in ``out``) starts the student's decoder from the teacher's, pruned to the
    student's decoder config with queries ranked on ``rank_examples`` examples (``init_from_teacher``).

    Returns:
        Path: the final student folder ``out/model``.
    """
    source = example_source(data)
    teacher, tok_t, teacher_id = load_teacher(teacher_dir, teacher_preset, config.seed)
    student = build_student(student_preset, student_init, config.seed)
    tok_s = student_tokenizer(student.config, tok_t, student_tokenizer_dir)
    fresh = not (Path(out) / CHECKPOINT_DIR / STATE_FILE).is_file()
    if fresh and student_init is None and config.init_from_teacher:
        from xsam_edge.distill.pairing import check_pair
        from xsam_edge.distill.prune import decoder_problems

        check_pair(teacher.config, student.config, tok_t, tok_s, config)  # before the ranking pass
        problems = decoder_problems(teacher.config.decoder, student.config.decoder)
        if problems:
            raise ValueError(
                f"cannot start {student.config.name!r}'s decoder from the teacher's: " + "; ".join(problems)
            )
        examples = itertools.islice(source(config.seed), rank_examples)
        usage = query_usage(teacher, tok_t, examples, set_loss=config.set_loss_config, seed=config.seed)
        copied = transplant(prune_decoder(teacher, student.config.decoder, usage), student)
        log.info("student decoder initialised from the pruned teacher (%d tensors)", len(copied))
    evaluate = None
    if val_data:
        from xsam_edge.data.registry import load_dataset
        from xsam_edge.metrics.evaluate import evaluate_model
        from xsam_edge.model.predictor import XSamPredictor

        val = load_dataset(val_data)

        def evaluate(model: XSam) -> dict:
            return evaluate_model(XSamPredictor(model, tok_s), val, progress=False)["tasks"]

    final = distill(
        teacher,
        student,
        tok_t,
        tok_s,
        source,
        config,
        out,
        teacher_id=teacher_id,
        stop_after=stop_after,
        evaluate=evaluate,
    )
    if (final / "config.json").is_file():  # the run finished: record the teacher for the bench
        from xsam_edge.model.checkpoint import model_fingerprint, write_lineage

        write_lineage(final, model_fingerprint(teacher), teacher_id)
    return final


def prune_run(
    *,
    out: str | os.PathLike,
    teacher_dir: str | os.PathLike | None = None,
    teacher_preset: str | None = None,
    like: str | None = None,
    num_queries: int | None = None,
    decoder_layers: int | None = None,
    decoder_ffn_dim: int | None = None,
    encoder_layers: int | None = None,
    encoder_ffn_dim: int | None = None,
    data: str = "shapes:train",
    rank_examples: int = 64,
    seed: int = 0,
) -> tuple[Path, torch.Tensor]:
    """Prune the teacher's decoder and write the result as a model folder.

    Sizes come from the preset ``like`` (its decoder), then from the explicit arguments; unset sizes stay
    the teacher's.

    Returns:
        tuple[Path, torch.Tensor]: the folder and the (Q,) query usage counts that ranked the queries.
    """
    source = example_source(data)
    teacher, tokenizer, _ = load_teacher(teacher_dir, teacher_preset, seed)
    decoder: DecoderConfig = get_preset(like).decoder if like else teacher.config.decoder
    sizes = {
        "num_queries": num_queries,
        "decoder_layers": decoder_layers,
        "decoder_ffn_dim": decoder_ffn_dim,
        "encoder_layers": encoder_layers,
        "encoder_ffn_dim": encoder_ffn_dim,
    }
    decoder = dataclasses.replace(decoder, **{k: v for k, v in sizes.items() if v is not None})
    examples = itertools.islice(source(seed), rank_examples)
    usage = query_usage(teacher, tokenizer, examples, seed=seed)
    pruned = prune_decoder(teacher, decoder, usage)
    return save_pretrained(pruned, out, tokenizer), usage
