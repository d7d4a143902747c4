"""Checkpoints: the released X-SAM state dict (archive or main-branch keys) and our own folder format.

The released file is a pickle (``torch.save`` of a flat state dict). It is read with
``torch.load(weights_only=True)``, so a file carrying code is refused, never executed.
Our format is a folder with ``config.json`` + ``model.safetensors`` (+ ``tokenizer.json``),
written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_model

from xsam_edge.files import atomic_write_text, staged_dir
from xsam_edge.model.build import build_model
from xsam_edge.model.xsam import XSam
from xsam_edge.spec.config import XSamConfig
from xsam_edge.spec.tokenizer import XSamTokenizer

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"

# upstream main-branch names → archive names (tools/model_tools/convert_xsam_s3_checkpoint.py, reversed)
MAIN_TO_ARCHIVE = (
    ("vision_encoder.", "visual_encoder."),
    ("segmentor.class_predictor.logit_scale", "segmentor.logit_scale"),
)
# in the checkpoint, never used by X-SAM: dropped without complaint
IGNORED_PREFIXES = ("segmentor.shared_image_embedding.",)
# wrappers that trainers put around a state dict
_WRAPPER_KEYS = ("state_dict", "module", "model")


@dataclass
class LoadReport:
    """What a load did, key by key, grouped for a person to read."""

    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    renamed: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 8) -> str:
        lines = [f"loaded {self.loaded} tensors ({self.renamed} renamed from main-branch names)"]
        if self.ignored:
            lines.append(f"ignored {len(self.ignored)} unused upstream tensors ({_groups(self.ignored)})")
        for title, keys in (("missing", self.missing), ("unexpected", self.unexpected)):
            if keys:
                shown = ", ".join(keys[:limit]) + (" …" if len(keys) > limit else "")
                lines.append(f"{len(keys)} {title} ({_groups(keys)}): {shown}")
        for key, ckpt, model in self.mismatched[:limit]:
            lines.append(f"mis-shaped {key}: checkpoint {list(ckpt)} vs model {list(model)}")
        if len(self.mismatched) > limit:
            lines.append(f"… and {len(self.mismatched) - limit} more mis-shaped tensors")
        return "\n".join(lines)


def _groups(keys: list[str]) -> str:
    """Count keys per top-level component: 'llm: 3, segmentor: 2'."""
    counts = Counter(k.split(".")[0] for k in keys)
    return ", ".join(f"{name}: {n}" for name, n in counts.most_common())


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a flat state dict from a ``.bin``/``.pth``/``.pt`` pickle or a ``.safetensors`` file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is truncated, not a checkpoint, carries code, or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(path)
        except (SafetensorError, OSError) as err:
            raise ValueError(
                f"{path} is not a readable safetensors file (truncated or corrupt?): {err}"
            ) from err
    with open(path, "rb") as f:
        magic = f.read(4)
    if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):
        raise ValueError(
            f"{path} is not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle); "
            "give the released pytorch_model.bin or a .safetensors file"
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"refusing to load {path}: it holds pickled objects other than tensors, which could run code "
            "(torch.load weights_only=True blocked it). Re-save it as a plain state dict of tensors, or as "
            f"safetensors. Detail: {str(err).splitlines()[0]}"
        ) from err
    except (RuntimeError, EOFError, KeyError, zipfile.BadZipFile, OSError) as err:  # KeyError: text files
        raise ValueError(f"{path} is truncated or not a PyTorch checkpoint: {err}") from err
    for _ in range(2):  # unwrap {"state_dict": ...} / {"module": ...} once or twice
        if isinstance(data, dict) and len(data) == 1 and next(iter(data)) in _WRAPPER_KEYS:
            data = next(iter(data.values()))
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"{path} does not hold a flat state dict of tensors (got {type(data).__name__})")
    return data


def map_upstream_keys(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], int]:
    """Rename main-branch keys to archive keys and drop the tensors X-SAM never uses.

    Returns:
        tuple: (mapped state dict, ignored keys, number of renamed keys).
    """
    mapped: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    renamed = 0
    for key, value in state.items():
        if key.startswith(IGNORED_PREFIXES):
            ignored.append(key)
            continue
        new = key
        for old_prefix, new_prefix in MAIN_TO_ARCHIVE:
            if new.startswith(old_prefix):
                new = new_prefix + new[len(old_prefix) :]
        renamed += new != key
        if new in mapped:
            raise ValueError(f"checkpoint has both {key!r} and its archive name {new!r}")
        mapped[new] = value
    return mapped, ignored, renamed


def load_upstream_checkpoint(model: XSam, path: str | os.PathLike, allow_partial: bool = False) -> LoadReport:
    """Load the released X-SAM state dict (archive or main-branch layout) into ``model``.

    Refuses, and changes nothing, when a tensor is mis-shaped or unexpected (a checkpoint of another
    architecture or preset), or when tensors are missing (unless ``allow_partial``: stage-1/2 checkpoints
    hold only their trained parts).

    Args:
        model (XSam): built for the checkpoint's preset.
        path (str | os.PathLike): the ``pytorch_model.bin`` (or a safetensors file).
        allow_partial (bool): accept missing tensors (they keep their current values).

    Returns:
        LoadReport: what was loaded, ignored, renamed.

    Raises:
        ValueError: the report has problems; the message is the report plus what to do.
    """
    state, ignored, renamed = map_upstream_keys(read_state_dict(path))
    own = model.state_dict()
    report = LoadReport(ignored=ignored, renamed=renamed)
    report.unexpected = sorted(k for k in state if k not in own)
    report.missing = sorted(k for k in own if k not in state)
    report.mismatched = [
        (k, tuple(state[k].shape), tuple(own[k].shape))
        for k in sorted(state)
        if k in own and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = report.unexpected or report.mismatched or (report.missing and not allow_partial)
    if problems:
        raise ValueError(
            f"checkpoint {path} does not fit preset {model.config.name!r}; nothing was loaded.\n"
            f"{report.summary()}\n"
            "Pick the preset the checkpoint was trained with (xsam-edge info lists them)"
            + ("" if not report.missing else ", or pass allow_partial for a stage-1/2 checkpoint")
            + "."
        )
    with torch.no_grad():
        for key, value in state.items():
            own[key].copy_(value.to(own[key].dtype))
    report.loaded = len(state)
    log.info("loaded %s: %s", path, report.summary())
    return report


def save_pretrained(
    model: XSam, directory: str | os.PathLike, tokenizer: XSamTokenizer | None = None
) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (+ the tokenizer files) atomically.

    The folder is written under a temporary name beside the target and renamed into place, so a crash
    leaves either the old folder or the new one, never half of one.

    Args:
        model (XSam): the model to save.
        directory (str | os.PathLike): target folder (replaced if it exists).
        tokenizer (XSamTokenizer | None): stored beside the weights (``tokenizer.json``).

    Returns:
        Path: the folder.
    """
    target = Path(directory).resolve()
    with staged_dir(target) as tmp:
        (tmp / CONFIG_FILE).write_text(model.config.to_json())
        save_model(model, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "xsam_edge": "1"})
        if tokenizer is not None:
            tokenizer.save(tmp)
    return target


def read_config(directory: str | os.PathLike) -> XSamConfig:
    """The config stored in a model folder.

    Raises:
        FileNotFoundError: not a model folder.
        ValueError: the config is unreadable or of a newer schema.
    """
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{directory} is not an xsam_edge model folder (no {CONFIG_FILE}); make one with "
            "save_pretrained or `xsam-edge import-checkpoint`"
        )
    try:
        return XSamConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"{path} is not a valid xsam_edge config: {err}") from err


def from_pretrained(directory: str | os.PathLike) -> XSam:
    """Build the model stored in ``directory`` and load its weights (every tensor must match).

    The weights' names and shapes are read from the safetensors header and compared with the config's model
    built on the meta device first, so a folder whose config and weights disagree is refused before any
    memory is allocated.

    Raises:
        FileNotFoundError: the folder or its weights are missing.
        ValueError: the config is invalid, or the weights do not fit it.
    """
    config = read_config(directory)
    weights = Path(directory) / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{directory} has no {WEIGHTS_FILE}")
    try:
        with safe_open(weights, "pt") as handle:
            shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{weights} is truncated or corrupt: {err}") from err
    with torch.device("meta"):
        skeleton = build_model(config)
    report = _compare(skeleton, shapes)
    if report is not None:
        raise ValueError(f"{weights} does not match {directory}/{CONFIG_FILE}:\n{report.summary()}")
    try:
        state = load_file(weights)
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{weights} is truncated or corrupt: {err}") from err
    floating = [v.dtype for v in state.values() if v.is_floating_point()]
    model = _build_in_dtype(config, floating[0] if floating else torch.float32)
    model.load_state_dict(state, strict=False)
    return model.eval()


def _compare(model: XSam, shapes: dict[str, tuple[int, ...]]) -> LoadReport | None:
    """Missing, unexpected and mis-shaped tensors of ``shapes`` against ``model`` (``None``: they fit)."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(own) - set(shapes))
    unexpected = sorted(set(shapes) - set(own))
    # save_model drops tied duplicates; those reappear through the tie, so they are not missing
    missing = [k for k in missing if not _is_tied(model, k)]
    bad_shape = [k for k in shapes if k in own and shapes[k] != own[k]]
    if not (missing or unexpected or bad_shape):
        return None
    return LoadReport(
        missing=missing,
        unexpected=unexpected,
        mismatched=[(k, shapes[k], own[k]) for k in bad_shape],
    )


def _build_in_dtype(config: XSamConfig, dtype: torch.dtype) -> XSam:
    """Build directly in ``dtype``: a bf16 model never holds an fp32 copy of its weights."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return build_model(config)
    finally:
        torch.set_default_dtype(previous)


TIED_PAIR = ("llm.lm_head.weight", "llm.model.embed_tokens.weight")


def _is_tied(model: XSam, key: str) -> bool:
    """A tied LLM stores its output head and input embedding once: either name may be the one dropped."""
    return key in TIED_PAIR and model.config.llm.tie_word_embeddings


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def import_checkpoint(
    checkpoint: str | os.PathLike,
    preset: str,
    tokenizer_dir: str | os.PathLike,
    out: str | os.PathLike,
    dtype: str = "float32",
    allow_partial: bool = False,
) -> LoadReport:
    """Convert the released state dict + its tokenizer into a model folder (``from_pretrained`` reads it).

    The tokenizer is checked first (cheap) and must give exactly as many ids as the checkpoint's embedding
    rows, so a mismatched tokenizer is refused before the model is built.

    Args:
        checkpoint (str | os.PathLike): ``pytorch_model.bin`` of the released model.
        preset (str): the preset it was trained with (``x-sam-phi3``).
        tokenizer_dir (str | os.PathLike): the LLM's local HF tokenizer folder.
        out (str | os.PathLike): model folder to write.
        dtype (str): weight dtype of the folder: float32, bfloat16 or float16.
        allow_partial (bool): see ``load_upstream_checkpoint``.

    Returns:
        LoadReport: what was loaded.
    """
    from xsam_edge.model.presets import get_preset

    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r} not supported; use one of {sorted(_DTYPES)}")
    config = get_preset(preset)
    tokenizer = XSamTokenizer.from_pretrained_dir(tokenizer_dir, config.tokens)
    # upstream resizes the embeddings to len(tokenizer); the project's own presets keep a fixed, larger table
    vocab = config.llm.vocab_size
    fits = len(tokenizer) <= vocab if config.tokens.builtin_tokenizer else len(tokenizer) == vocab
    if not fits:
        raise ValueError(
            f"tokenizer in {tokenizer_dir} has {len(tokenizer)} tokens with <SEG>, <p>, </p>, but preset "
            f"{preset!r} embeds {config.llm.vocab_size}; use the tokenizer the checkpoint was trained with"
        )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(
        _DTYPES[dtype]
    )  # build directly in the target dtype: no fp32 copy of 4.6 B weights
    try:
        model = build_model(config)
    finally:
        torch.set_default_dtype(previous)
    report = load_upstream_checkpoint(model, checkpoint, allow_partial=allow_partial)
    save_pretrained(model, out, tokenizer)
    return report


def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer (names, dtypes, bytes): two models share work only if equal."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


LINEAGE_FILE = "lineage.json"


def write_lineage(directory: str | os.PathLike, teacher_fingerprint: str, teacher: str) -> Path:
    """Record which teacher a model folder was distilled from (the bench accepts the teacher's golden set)."""
    path = Path(directory) / LINEAGE_FILE
    atomic_write_text(
        path, json.dumps({"teacher_fingerprint": teacher_fingerprint, "teacher": teacher}, indent=2)
    )
    return path


def read_lineage(directory: str | os.PathLike) -> dict:
    """``{"teacher_fingerprint", "teacher"}`` of a distilled model folder, ``{}`` for any other."""
    path = Path(directory) / LINEAGE_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); distil again or delete the file") from err
    return data if isinstance(data, dict) else {}
