"""The embedded default's teacher: ``shapes-teacher`` trained on the shapes suite.

The package ships one trained teacher (``assets/teacher``: weights, config, tokenizer and ``recipe.json`` with
its training recipe, command, checksum and scores), so every machine starts from the same weights and the main
job needs no training. ``ensure_teacher()`` returns it, checksum verified. Another recipe (or
``retrain=True``) trains a teacher instead, cached in ``$XSAM_EDGE_CACHE`` (default ``~/.cache/xsam_edge``;
``xsam-edge cache --path`` prints it, ``--clear`` removes it); a cached teacher is reused only when its recipe
fingerprint matches, so changing the recipe retrains instead of silently reusing stale weights.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import torch

from xsam_edge.data.sample import Example
from xsam_edge.files import atomic_write_text, staged_dir
from xsam_edge.model.build import build_model
from xsam_edge.model.checkpoint import CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE
from xsam_edge.model.presets import get_preset
from xsam_edge.model.xsam import XSam
from xsam_edge.spec.bundle import sha256_file
from xsam_edge.spec.tokenizer import TOKENIZER_CONFIG_FILE, XSamTokenizer, tiny_tokenizer
from xsam_edge.training.recipe import TEACHER_PRESET, TeacherRecipe
from xsam_edge.training.train import MODEL_DIR, ExampleSource, TrainConfig, recipe, train

log = logging.getLogger(__name__)

FINGERPRINT_FILE = "fingerprint.json"
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "assets" / "teacher"
SHIPPED_RECIPE_FILE = "recipe.json"


def cache_root() -> Path:
    """Where trained teachers are cached: ``$XSAM_EDGE_CACHE`` or ``~/.cache/xsam_edge``."""
    return Path(os.environ.get("XSAM_EDGE_CACHE", Path.home() / ".cache" / "xsam_edge"))


def clear_cache() -> Path:
    """Remove every cached teacher; returns the folder that was removed."""
    root = cache_root()
    shutil.rmtree(root, ignore_errors=True)
    return root


def tokenizer_for(preset: str) -> XSamTokenizer:
    """The tokenizer a preset trains with (the project's word-level tokenizer for the embedded presets)."""
    config = get_preset(preset)
    if config.tokens.builtin_tokenizer != "tiny":
        raise ValueError(f"preset {preset!r} has no built-in tokenizer; train it with a tokenizer folder")
    return tiny_tokenizer(config.tokens)


def shapes_source(split: str = "train") -> ExampleSource:
    """An endless, deterministic example source over a shapes split (cycles with a new seed per pass)."""
    from xsam_edge.data.shapes import iter_shapes

    def source(seed: int) -> Iterator[Example]:
        for cycle in itertools.count():
            yield from iter_shapes(split, seed=seed + 7919 * cycle)

    return source


def train_model(
    out_dir: str | os.PathLike,
    preset: str = TEACHER_PRESET,
    steps: tuple[int, int, int] = TeacherRecipe.steps,
    batch_size: int = TeacherRecipe.batch_size,
    lr: float = TeacherRecipe.lr,
    seed: int = 0,
    device: str = "cpu",
    data: str = "shapes:train",
    encoder_lr_scale: float = TeacherRecipe.encoder_lr_scale,
    val_data: str | None = "shapes:val-fast",
    stop_after: int | None = None,
) -> Path:
    """Train ``preset`` with the three-stage recipe on ``data`` (resumes if ``out_dir`` has a checkpoint).

    Args:
        out_dir (str | os.PathLike): run folder (checkpoint, ``log.jsonl``, final ``model/``).
        preset (str): the model preset.
        steps (tuple[int, int, int]): optimizer steps of the segmentor, align and mixed stages.
        batch_size (int): examples per step.
        lr (float): peak learning rate.
        seed (int): model init, data order and sampling.
        device (str): ``cpu`` or ``cuda``.
        data (str): ``shapes:train`` (other sources: use ``xsam_edge.training.train.train`` directly).
        val_data (str | None): evaluated at each stage end (logged), ``None`` to skip.
        stop_after (int | None): stop after this many steps (resume later).
        encoder_lr_scale (float): the image encoders' learning rate as a fraction of ``lr`` (1.0: they
            train from scratch here, unlike upstream's pretrained encoders at 0.1).

    Returns:
        Path: the model folder.
    """
    if not data.startswith("shapes:"):
        raise ValueError(f"train_model trains on the shapes suite (shapes:<split>); got {data!r}")
    from xsam_edge.data.shapes import CATEGORIES

    torch.manual_seed(seed)
    model = build_model(preset)
    tokenizer = tokenizer_for(preset)
    stages = recipe(steps, batch_size=batch_size, lr=lr, encoder_lr_scale=encoder_lr_scale)
    config = TrainConfig(stages=stages, seed=seed, device=device)
    evaluate = _stage_evaluator(tokenizer, val_data) if val_data else None
    return train(
        model,
        tokenizer,
        shapes_source(data.split(":", 1)[1]),
        config,
        out_dir,
        categories=CATEGORIES,
        stop_after=stop_after,
        evaluate=evaluate,
    )


def _stage_evaluator(tokenizer: XSamTokenizer, val_data: str):
    from xsam_edge.data.registry import load_dataset
    from xsam_edge.metrics.evaluate import evaluate_model
    from xsam_edge.model.predictor import XSamPredictor

    examples = load_dataset(val_data)

    def evaluate(model: XSam, stage: str) -> dict:
        if stage == "segmentor":
            return {}  # no LLM yet: the open-vocabulary head is untrained until stage 3
        report = evaluate_model(XSamPredictor(model, tokenizer), examples, progress=False)
        return report["tasks"]

    return evaluate


def shipped_teacher() -> tuple[Path, dict]:
    """The teacher folder the package ships and its ``recipe.json``, the weights' sha256 checked.

    Raises:
        RuntimeError: the folder is missing or its weights do not match the recorded checksum (a broken
            install: reinstall the package, or train one with ``xsam-edge train``).
    """
    record_path = SHIPPED_DIR / SHIPPED_RECIPE_FILE
    if not record_path.is_file():
        raise RuntimeError(
            f"the shipped teacher is missing ({SHIPPED_DIR}); reinstall xsam-edge, or train one: "
            "xsam-edge pipeline --retrain-teacher"
        )
    record = json.loads(record_path.read_text())
    for name, digest in record["sha256"].items():
        if sha256_file(SHIPPED_DIR / name) != digest:
            raise RuntimeError(
                f"the shipped teacher's {name} does not match its recorded sha256 (a damaged install); "
                "reinstall xsam-edge, or train one: xsam-edge pipeline --retrain-teacher"
            )
    return SHIPPED_DIR, record


def shipped_recipe() -> TeacherRecipe | None:
    """The recipe the shipped teacher was trained with (``None`` when the package ships none)."""
    path = SHIPPED_DIR / SHIPPED_RECIPE_FILE
    if not path.is_file():
        return None
    return TeacherRecipe(**_recipe_values(json.loads(path.read_text())["recipe"]))


def ship_teacher(model_dir: str | os.PathLike, record: dict, target: Path = SHIPPED_DIR) -> Path:
    """Copy a trained teacher folder into the package's assets with its ``recipe.json`` (a maintainer step).

    Args:
        model_dir (str | os.PathLike): the trained model folder (``save_pretrained`` output).
        record (dict): at least ``recipe`` (``TeacherRecipe`` as a dict); also what the README cites: the
            training command, machine and minutes, and the evaluation it scored.
        target (Path): the assets folder (replaced whole).

    Returns:
        Path: ``target``.
    """
    source = Path(model_dir)
    files = [CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE, TOKENIZER_CONFIG_FILE]
    with staged_dir(target) as staging:
        for name in files:
            shutil.copy2(source / name, staging / name)
        record = {**record, "fingerprint": TeacherRecipe(**record["recipe"]).fingerprint()}
        record["sha256"] = {name: sha256_file(staging / name) for name in files}
        atomic_write_text(staging / SHIPPED_RECIPE_FILE, json.dumps(record, indent=2) + "\n")
    return target


def ensure_teacher(
    teacher_recipe: TeacherRecipe | None = None, device: str = "cpu", retrain: bool = False
) -> Path:
    """The teacher's model folder: the shipped one, or one trained (and cached) for another recipe.

    Args:
        teacher_recipe (TeacherRecipe | None): how the teacher is trained; ``None``: the shipped recipe.
        device (str): where a teacher that must be trained trains.
        retrain (bool): train the recipe afresh (cached) even when it is the one the package ships.

    Returns:
        Path: the model folder.
    """
    if not retrain and (teacher_recipe is None or teacher_recipe == shipped_recipe()):
        return shipped_teacher()[0]
    teacher_recipe = teacher_recipe or TeacherRecipe()
    run = cache_root() / f"{teacher_recipe.preset}-{teacher_recipe.fingerprint()}"
    model_dir = run / MODEL_DIR
    if (model_dir / CONFIG_FILE).is_file():
        return model_dir
    log.info("training the %s teacher into %s (first use; resumable)", teacher_recipe.preset, run)
    run.mkdir(parents=True, exist_ok=True)
    (run / FINGERPRINT_FILE).write_text(json.dumps(asdict(teacher_recipe), indent=2))
    return train_model(
        run,
        preset=teacher_recipe.preset,
        steps=teacher_recipe.steps,
        batch_size=teacher_recipe.batch_size,
        lr=teacher_recipe.lr,
        seed=teacher_recipe.seed,
        device=device,
        data=teacher_recipe.data,
        encoder_lr_scale=teacher_recipe.encoder_lr_scale,
    )


def _recipe_values(values: dict) -> dict:
    """A recipe read from JSON (lists back to tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
