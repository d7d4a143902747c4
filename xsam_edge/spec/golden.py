"""Golden vectors: requests with the reference model's outputs, stored for later comparison on a device.

Format (a folder): ``requests.json`` (one entry per request: task, text, categories, prompts, image file),
the images as PNG, and ``outputs.npz`` (per request ``class_logits_{i}``, ``mask_logits_{i}``, ``masks_{i}``;
loaded with ``allow_pickle=False``). No torch here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from xsam_edge.spec.image_io import load_image
from xsam_edge.spec.types import Box, MaskPrompt, Point, Prompt, Scribble, SegmentationRequest, Task

GOLDEN_VERSION = 1
Resolver = Callable[[str], Path]


def prompt_to_json(prompt: Prompt, mask_file: str | None = None) -> dict:
    if isinstance(prompt, Point):
        return {"type": "point", "x": prompt.x, "y": prompt.y}
    if isinstance(prompt, Box):
        return {"type": "box", "xyxy": [prompt.x0, prompt.y0, prompt.x1, prompt.y1]}
    if isinstance(prompt, Scribble):
        return {"type": "scribble", "points": [list(p) for p in prompt.points]}
    return {"type": "mask", "file": mask_file}


def prompt_from_json(data: dict, root: Path | Resolver) -> Prompt:
    resolve = root if callable(root) else (lambda name: Path(root) / name)
    kind = data.get("type")
    if kind == "point":
        return Point(float(data["x"]), float(data["y"]))
    if kind == "box":
        return Box(*(float(v) for v in data["xyxy"]))
    if kind == "scribble":
        return Scribble(tuple((float(x), float(y)) for x, y in data["points"]))
    if kind == "mask":
        return MaskPrompt(np.asarray(Image.open(resolve(data["file"]))) > 127)
    raise ValueError(f"unknown prompt type {kind!r} in golden requests")


def save_golden(
    directory: str | os.PathLike,
    requests: list[SegmentationRequest],
    outputs: list[dict[str, np.ndarray]],
) -> Path:
    """Write requests and their outputs (``class_logits``, ``mask_logits``, ``masks``) to ``directory``."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    entries, arrays = [], {}
    for i, (request, output) in enumerate(zip(requests, outputs, strict=True)):
        image_file = f"image_{i}.png"
        Image.fromarray(request.image).save(root / image_file)
        prompts = []
        for j, prompt in enumerate(request.prompts):
            mask_file = None
            if isinstance(prompt, MaskPrompt):
                mask_file = f"prompt_{i}_{j}.png"
                Image.fromarray(np.asarray(prompt.mask, np.uint8) * 255).save(root / mask_file)
            prompts.append(prompt_to_json(prompt, mask_file))
        entries.append(
            {
                "task": request.task.value,
                "text": request.text,
                "categories": request.categories,
                "prompts": prompts,
                "image": image_file,
            }
        )
        for key, value in output.items():
            arrays[f"{key}_{i}"] = np.asarray(value)
    (root / "requests.json").write_text(
        json.dumps({"version": GOLDEN_VERSION, "requests": entries}, indent=2)
    )
    np.savez_compressed(root / "outputs.npz", **arrays)
    return root


def load_golden(
    directory: str | os.PathLike, resolve: Resolver | None = None
) -> tuple[list[SegmentationRequest], list[dict[str, np.ndarray]]]:
    """Read what ``save_golden`` wrote.

    Args:
        directory (str | os.PathLike): the golden folder.
        resolve (Resolver | None): name in the folder → path; a bundle passes one that refuses any name its
            manifest does not list, so ``requests.json`` cannot send a reader outside the bundle.

    Raises:
        ValueError: unreadable or of a newer version.
    """
    root = Path(directory)
    resolve = resolve or (lambda name: root / name)
    try:
        data = json.loads(resolve("requests.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"golden requests in {root} are unreadable: {err}") from err
    if data.get("version", 0) > GOLDEN_VERSION:
        raise ValueError(f"golden vectors version {data['version']} are newer than this xsam_edge reads")
    requests = [
        SegmentationRequest(
            load_image(resolve(e["image"])),
            Task(e["task"]),
            text=e["text"],
            categories=e["categories"],
            prompts=[prompt_from_json(p, resolve) for p in e["prompts"]],
        )
        for e in data["requests"]
    ]
    with np.load(resolve("outputs.npz"), allow_pickle=False) as npz:
        arrays = dict(npz)
    outputs = [
        {k.rsplit("_", 1)[0]: v for k, v in arrays.items() if k.rsplit("_", 1)[1] == str(i)}
        for i in range(len(requests))
    ]
    return requests, outputs
