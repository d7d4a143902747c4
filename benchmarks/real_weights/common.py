"""What the real-weight benchmarks share: text windows, photos, timing, bootstrap, result and cache files."""

from __future__ import annotations

import datetime as dt
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import RESULTS_DIR
from xsam_edge.files import atomic_write_text

__all__ = [
    "Runner",
    "atomic_json",
    "bootstrap_ci",
    "calibration_text",
    "log",
    "median_seconds",
    "photos",
    "read_json",
    "text_windows",
    "write_results",
    "write_text",
]


def text_windows(text: str, tokenizer: Any, length: int, count: int, skip: int = 0) -> list[np.ndarray]:
    """``count`` disjoint windows of exactly ``length`` token ids from ``text`` (after ``skip`` windows)."""
    ids = np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], np.int64)
    windows = [ids[i : i + length] for i in range(0, len(ids) - length + 1, length)][skip : skip + count]
    if len(windows) < count:
        raise ValueError(f"the text gives {len(windows)} windows of {length} tokens, {count} asked for")
    return windows


def calibration_text() -> str:
    """Python's own documentation (stdlib ``pydoc_data``): calibration text, never evaluation text."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def photos(folder: Path, size: int, resample: str = "bilinear") -> list[tuple[str, np.ndarray]]:
    """The test bed's photos as RGB uint8 arrays resized to ``size``² (``bilinear`` or ``bicubic``)."""
    from PIL import Image

    method = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[resample]
    out = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in (".png", ".jpg"):
            image = Image.open(path).convert("RGB").resize((size, size), method)
            out.append((path.stem, np.asarray(image)))
    return out


def median_seconds(run: Callable[[], Any], repeats: int = 3) -> float:
    """Median wall time of ``run`` over ``repeats`` calls after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bootstrap_ci(values: Sequence[float], resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the mean of ``values`` (paired differences go in)."""
    data = np.asarray(values, np.float64)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), (resamples, len(data)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


class Runner:
    """One ONNX or OpenVINO file in its runtime at f32: ``run(x)`` → the first output."""

    def __init__(self, backend: str, files: list[Path], threads: int) -> None:
        self.backend = backend
        if backend == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            self.session = ort.InferenceSession(str(files[0]), options, providers=["CPUExecutionProvider"])
        else:
            import openvino as ov

            config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
            xml = next(f for f in files if f.suffix == ".xml")
            self.compiled = ov.Core().compile_model(str(xml), "CPU", config)

    def run(self, x: np.ndarray) -> np.ndarray:
        if self.backend == "onnx":
            return self.session.run(None, {self.session.get_inputs()[0].name: x})[0]
        return np.asarray(self.compiled(x)[0])


def write_results(name: str, payload: dict[str, Any], markdown: str) -> Path:
    """``docs/results/data/real-weights-<name>-<date>.json`` and ``.md`` beside it, written atomically."""
    stamp = dt.date.today().isoformat()
    path = RESULTS_DIR / f"real-weights-{name}-{stamp}.json"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")
    atomic_write_text(path.with_suffix(".md"), markdown + "\n")
    return path


_START = time.perf_counter()


def provenance(module: str, argv: Sequence[str] | None) -> dict[str, str]:
    """A result file's date (UTC), machine and the command that wrote it (``argv``: ``None`` = sys.argv)."""
    import platform

    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {platform.system()}",
        "command": f"python -m {module} " + " ".join(sys.argv[1:] if argv is None else argv),
    }


def log(message: str) -> None:
    print(f"[{time.perf_counter() - _START:7.1f}s] {message}", file=sys.stderr, flush=True)


def atomic_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=1, default=str) + "\n")


def write_text(path: Path, text: str) -> None:
    """``atomic_write_text`` into a folder made first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
