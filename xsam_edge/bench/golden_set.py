"""The golden reference at dataset scale: what the full reference model answered, stored once, read anywhere.

The full model cannot run on a phone or a Jetson, so ``xsam-edge reference`` runs it once (on a GPU or the
CPU) and a device bench compares against this folder. Layout::

    golden.json     format + version, the reference model (name, weight fingerprint, config), who made it,
                    per sample: the request, the ground truth (RLE masks), the reference result (RLE masks,
                    scores, labels, text) and, for a few samples, the index of its graph trace;
                    ``files``: sha256 of every other file
    images/         one PNG per distinct image; prompt masks as PNG
    traces.npz      for the traced samples, every graph call's inputs and outputs in call order (the LLM as
                    ``step(embeds, positions) -> (projected, logits)`` from a reset cache), so a device can
                    feed each graph the reference inputs and measure that graph's own error

Everything is written into a staging folder and renamed into place; ``load_golden_set`` checks the version and
every checksum and says which file is wrong. No torch here (the bench on a device reads it with numpy).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from xsam_edge.data.sample import Example, Target
from xsam_edge.files import staged_dir
from xsam_edge.spec.bundle import sha256_file
from xsam_edge.spec.golden import prompt_from_json, prompt_to_json
from xsam_edge.spec.image_io import load_image
from xsam_edge.spec.types import MaskPrompt, SegmentationRequest, SegmentationResult, Task

GOLDEN_FORMAT = "xsam_edge-golden"
GOLDEN_SET_VERSION = 1
GOLDEN_FILE = "golden.json"
TRACES_FILE = "traces.npz"


class GoldenError(ValueError):
    """A golden folder that cannot be used: the message names the file and the fix."""


# -- masks as COCO RLE -------------------------------------------------------------------------------
def encode_masks(masks: np.ndarray) -> list[dict]:
    """(N, H, W) bool → COCO RLE dicts with ``counts`` as text (JSON-ready)."""
    out = []
    for m in np.asarray(masks, bool):
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        out.append({"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")})
    return out


def decode_masks(rles: list[dict], hw: tuple[int, int]) -> np.ndarray:
    """COCO RLE dicts → (N, H, W) bool (an empty list gives (0, H, W))."""
    if not rles:
        return np.zeros((0, *hw), bool)
    coded = [{"size": r["size"], "counts": r["counts"].encode("ascii")} for r in rles]
    return np.moveaxis(mask_utils.decode(coded), -1, 0).astype(bool)


def _meta_to_json(meta: dict) -> dict:
    """Keep what JSON can hold; (H, W) bool arrays (void, ignore masks) as RLE."""
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if isinstance(value, np.ndarray) and value.dtype == bool and value.ndim == 2:
            out[key] = {"__rle__": encode_masks(value[None])[0]}
        elif isinstance(value, np.ndarray):
            out[key] = value.tolist()
        elif isinstance(value, np.generic):
            out[key] = value.item()
        else:
            json.dumps(value)  # anything else must already be JSON (raises TypeError otherwise)
            out[key] = value
    return out


def _meta_from_json(meta: dict) -> dict:
    out = {}
    for key, value in meta.items():
        if isinstance(value, dict) and "__rle__" in value:
            rle = value["__rle__"]
            out[key] = decode_masks([rle], tuple(rle["size"]))[0]
        else:
            out[key] = value
    return out


# -- the in-memory form ----------------------------------------------------------------------------
@dataclass
class GoldenCall:
    """One graph call of a trace: ``graph`` is a runner name (``encode_image`` … ``segment``, ``llm``)."""

    graph: str
    inputs: list[np.ndarray]
    outputs: list[np.ndarray]


@dataclass
class GoldenSample:
    """One request with its ground truth and the reference model's answer."""

    example: Example
    result: SegmentationResult
    trace: list[GoldenCall] = field(default_factory=list)


@dataclass
class GoldenSet:
    """A loaded golden folder.

    Attributes:
        model (dict): ``name``, ``fingerprint`` (sha256 of the weights, 16 hex), ``config``.
        producer (dict): device, runtime versions, date, machine.
        data (str): the dataset spec the samples came from.
        samples (list[GoldenSample]): in the order they were made.
        root (Path | None): the folder it was read from.
    """

    model: dict
    producer: dict
    data: str
    samples: list[GoldenSample]
    root: Path | None = None

    @property
    def traced(self) -> list[GoldenSample]:
        return [s for s in self.samples if s.trace]


# -- writing ---------------------------------------------------------------------------------------
def sample_to_json(sample: GoldenSample, index: int, images: dict[str, str], root: Path) -> dict:
    """The JSON entry of one sample; writes its image (once per image id) and prompt masks under ``root``."""
    ex, result = sample.example, sample.result
    request = ex.request
    key = hashlib.sha1(f"{ex.source}/{ex.image_id}".encode()).hexdigest()[:12]
    if key not in images:
        images[key] = f"images/{key}.png"
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(request.image).save(root / images[key])
    prompts = []
    for j, prompt in enumerate(request.prompts):
        mask_file = None
        if isinstance(prompt, MaskPrompt):
            mask_file = f"images/prompt_{index}_{j}.png"
            (root / "images").mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.asarray(prompt.mask, np.uint8) * 255).save(root / mask_file)
        prompts.append(prompt_to_json(prompt, mask_file))
    target = ex.target
    return {
        "id": index,
        "image_id": ex.image_id,
        "source": ex.source,
        "image": images[key],
        "request": {
            "task": request.task.value,
            "text": request.text,
            "categories": request.categories,
            "prompts": prompts,
        },
        "target": {
            "masks": encode_masks(target.masks),
            "label_ids": [int(v) for v in target.label_ids],
            "is_thing": None if target.is_thing is None else [bool(v) for v in target.is_thing],
            "answer": target.answer,
        },
        "meta": _meta_to_json(ex.meta),
        "result": {
            "masks": encode_masks(result.masks),
            "scores": [float(v) for v in result.scores],
            "labels": list(result.labels),
            "label_ids": [int(v) for v in result.label_ids],
            "text": result.text,
        },
        "trace": [
            {"graph": c.graph, "inputs": len(c.inputs), "outputs": len(c.outputs)} for c in sample.trace
        ],
    }


def trace_arrays(sample_id: int, trace: list[GoldenCall]) -> dict[str, np.ndarray]:
    """The ``traces.npz`` entries of one sample's trace."""
    arrays = {}
    for k, call in enumerate(trace):
        for j, x in enumerate(call.inputs):
            arrays[f"{sample_id}/{k}/in{j}"] = np.asarray(x)
        for j, x in enumerate(call.outputs):
            arrays[f"{sample_id}/{k}/out{j}"] = np.asarray(x)
    return arrays


def write_golden_set(
    out: str | os.PathLike,
    model: dict,
    producer: dict,
    data: str,
    entries: list[dict],
    traces: dict[str, np.ndarray],
    files_from: Path | None = None,
) -> Path:
    """Write ``golden.json`` (+ ``traces.npz``) with checksums into a staging folder, renamed to ``out``.

    Args:
        out (str | os.PathLike): the golden folder (an existing one is replaced).
        model (dict): ``name``, ``fingerprint``, ``config``.
        producer (dict): device, versions, date.
        data (str): dataset spec.
        entries (list[dict]): ``sample_to_json`` entries, in order.
        traces (dict[str, np.ndarray]): ``trace_arrays`` of the traced samples.
        files_from (Path | None): a folder whose ``images/`` the entries refer to (copied in).

    Returns:
        Path: the golden folder.
    """
    target = Path(out).resolve()
    with staged_dir(target) as staging:
        if files_from is not None and (files_from / "images").is_dir():
            shutil.copytree(files_from / "images", staging / "images")
        if traces:
            np.savez_compressed(staging / TRACES_FILE, **traces)
        files = {
            str(p.relative_to(staging)): sha256_file(p) for p in sorted(staging.rglob("*")) if p.is_file()
        }
        document = {
            "format": GOLDEN_FORMAT,
            "version": GOLDEN_SET_VERSION,
            "model": model,
            "producer": producer,
            "data": data,
            "samples": entries,
            "files": files,
        }
        (staging / GOLDEN_FILE).write_text(json.dumps(document, indent=1) + "\n")
    return target


# -- reading ---------------------------------------------------------------------------------------
def _example(entry: dict, root: Path) -> Example:
    request = entry["request"]
    image = load_image(root / entry["image"])
    hw = image.shape[:2]
    target = entry["target"]
    return Example(
        SegmentationRequest(
            image,
            Task(request["task"]),
            text=request["text"],
            categories=request["categories"],
            prompts=[prompt_from_json(p, root) for p in request["prompts"]],
        ),
        Target(
            decode_masks(target["masks"], hw),
            np.asarray(target["label_ids"], np.int64).reshape(-1),
            None if target["is_thing"] is None else np.asarray(target["is_thing"], bool),
            target["answer"],
        ),
        entry["image_id"],
        entry["source"],
        _meta_from_json(entry["meta"]),
    )


def _result(entry: dict, hw: tuple[int, int]) -> SegmentationResult:
    result = entry["result"]
    return SegmentationResult(
        decode_masks(result["masks"], hw),
        list(result["labels"]),
        np.asarray(result["scores"], np.float32).reshape(-1),
        np.asarray(result["label_ids"], np.int64).reshape(-1),
        result["text"],
    )


def load_golden_set(directory: str | os.PathLike, verify: bool = True) -> GoldenSet:
    """Read and check a golden folder.

    Raises:
        GoldenError: not a golden folder, a newer version, a missing or changed file, a malformed entry.
    """
    root = Path(directory)
    path = root / GOLDEN_FILE
    remake = "make it again with xsam-edge reference"
    if not path.is_file():
        raise GoldenError(f"{root} is not a golden reference: no {GOLDEN_FILE} ({remake})")
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GoldenError(f"{path} is not readable JSON ({err}); the file is corrupted: {remake}") from err
    if not isinstance(document, dict) or document.get("format") != GOLDEN_FORMAT:
        raise GoldenError(f"{path} is not an xsam_edge golden reference (format field missing or different)")
    version = document.get("version")
    if not isinstance(version, int) or version > GOLDEN_SET_VERSION:
        raise GoldenError(
            f"golden reference version {version!r} is not one this xsam_edge reads (≤ {GOLDEN_SET_VERSION}); "
            "upgrade xsam_edge or make the golden folder with this version"
        )
    for relative, expected in document.get("files", {}).items():
        file = root / relative
        if not file.is_file():
            raise GoldenError(
                f"golden file {relative} is missing from {root}; copy the folder again or {remake}"
            )
        if verify and sha256_file(file) != expected:
            raise GoldenError(
                f"golden file {relative} does not match its checksum (corrupted or edited); copy the folder "
                f"again or {remake}"
            )
    try:
        traces: dict[str, np.ndarray] = {}
        if (root / TRACES_FILE).is_file():
            with np.load(root / TRACES_FILE, allow_pickle=False) as npz:
                traces = dict(npz)
        samples = []
        for entry in document["samples"]:
            example = _example(entry, root)
            trace = [
                GoldenCall(
                    call["graph"],
                    [traces[f"{entry['id']}/{k}/in{j}"] for j in range(call["inputs"])],
                    [traces[f"{entry['id']}/{k}/out{j}"] for j in range(call["outputs"])],
                )
                for k, call in enumerate(entry.get("trace", []))
            ]
            samples.append(GoldenSample(example, _result(entry, example.request.image_size), trace))
    except (KeyError, TypeError, ValueError) as err:
        raise GoldenError(f"{path} is malformed ({type(err).__name__}: {err}); {remake}") from err
    return GoldenSet(document["model"], document["producer"], document["data"], samples, root)
