"""Calibration data from the real pipeline: every graph's inputs while a float session answers requests.

Activation ranges set on random tensors are wrong in the ways that matter (outliers, padding slots, the text
part of a prefill chunk); so the calibration requests run through an ``EdgeSession`` on the float ONNX bundle,
and each graph runner is wrapped to keep a copy of the inputs it was given. The LLM's KV-I/O pair is recorded
with its past caches, and the stateful LLM (OpenVINO, ExecuTorch) gets the same chunks without them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xsam_edge.data.sample import Example
from xsam_edge.files import atomic_write_with

__all__ = ["CalibrationSet", "record_calibration"]

log = logging.getLogger(__name__)

KVIO_PREFILL, KVIO_DECODE, STATEFUL_LLM = "llm_kvio_prefill", "llm_kvio_decode", "llm_prefill"


@dataclass
class CalibrationSet:
    """Per bundle graph name, a list of samples (positional inputs in the graph's manifest order).

    Args:
        samples (dict[str, list[list[np.ndarray]]]): the recorded inputs.
        requests (int): how many requests produced them.
    """

    samples: dict[str, list[list[np.ndarray]]] = field(default_factory=dict)
    requests: int = 0

    def split(self, holdout: int = 2) -> tuple[dict[str, list[list[np.ndarray]]], dict[str, list]]:
        """(calibration, holdout): the last ``holdout`` samples of each graph are kept for PSNR checks.

        A graph with a single sample gives it to both (its PSNR is then an in-sample number).
        """
        calib, held = {}, {}
        for name, items in self.samples.items():
            spare = min(holdout, max(len(items) - 1, 0))
            calib[name] = items[: len(items) - spare] if spare else list(items)
            held[name] = items[len(items) - spare :] if spare else items[-1:]
        return calib, held

    def counts(self) -> dict[str, int]:
        return {name: len(items) for name, items in self.samples.items()}

    def save(self, path: str | os.PathLike) -> Path:
        """One ``.npz`` (written to a temp file, then renamed)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {"__requests__": np.array(self.requests)}
        for name, items in self.samples.items():
            for i, sample in enumerate(items):
                for j, x in enumerate(sample):
                    arrays[f"{name}/{i}/{j}"] = x

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: on a bare path np.savez would append ".npz"
                np.savez(f, **arrays)

        return atomic_write_with(path, write)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CalibrationSet:
        """Read a set written by ``save``."""
        with np.load(path, allow_pickle=False) as data:
            samples: dict[str, dict[int, dict[int, np.ndarray]]] = {}
            for key in data.files:
                if key == "__requests__":
                    continue
                name, i, j = key.rsplit("/", 2)
                samples.setdefault(name, {}).setdefault(int(i), {})[int(j)] = data[key]
            requests = int(data["__requests__"])
        return cls(
            {
                name: [[items[i][j] for j in sorted(items[i])] for i in sorted(items)]
                for name, items in samples.items()
            },
            requests,
        )


class _Recorder:
    """A graph runner that keeps copies of its inputs: a uniform, seeded reservoir of ``limit`` calls."""

    def __init__(
        self, runner: Any, sink: list[list[np.ndarray]], limit: int, keep: int | None = None
    ) -> None:
        self.runner, self.sink, self.limit, self.keep = runner, sink, limit, keep
        self.seen = 0
        self.rng = np.random.default_rng(0)

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        self.seen += 1
        kept = inputs[: self.keep] if self.keep is not None else inputs
        if len(self.sink) < self.limit:
            self.sink.append([np.array(x, copy=True) for x in kept])
        else:  # reservoir sampling: late requests are as likely to be kept as early ones
            slot = int(self.rng.integers(0, self.seen))
            if slot < self.limit:
                self.sink[slot] = [np.array(x, copy=True) for x in kept]
        return self.runner.run(*inputs)


def _cache_sample_limit(manifest: Any, max_samples: int, max_bytes: int) -> int:
    """Samples per KV-I/O graph that keep the pair within ``max_bytes`` (at least one each)."""
    per_sample = max(
        sum(
            int(np.prod(i["shape"])) * np.dtype(i["dtype"]).itemsize for i in manifest.graph(n, "onnx").inputs
        )
        for n in (KVIO_PREFILL, KVIO_DECODE)
    )
    limit = max(1, min(max_samples, max_bytes // (2 * per_sample)))
    if limit < max_samples:
        log.info(
            "calibration: %d KV-I/O samples per LLM graph (%.0f MB each, bound %.1f GB)",
            limit,
            per_sample / 1e6,
            max_bytes / 1e9,
        )
    return limit


def record_calibration(
    fp32_bundle: str | os.PathLike,
    examples: Sequence[Example],
    max_samples: int = 32,
    progress: bool = True,
    kv_caches: bool = True,
    max_cache_bytes: int = 2 << 30,
) -> CalibrationSet:
    """Run ``examples`` through the float ONNX bundle and record every graph's inputs.

    Args:
        fp32_bundle (str | os.PathLike): a bundle with float ``onnx`` graphs.
        examples (Sequence[Example]): calibration requests (all tasks; images are encoded once each).
        max_samples (int): at most this many samples per graph.
        progress (bool): a progress bar.
        kv_caches (bool): record the KV-I/O pair with its past caches (only ONNX's LLM graphs take them);
            ``False`` keeps ``llm_prefill`` alone.
        max_cache_bytes (int): memory bound for the KV-I/O samples together (default 2 GiB): each one holds
            the whole past cache, so a full-size LLM keeps fewer samples than ``max_samples`` (logged).

    Returns:
        CalibrationSet: samples for ``encode_image``, ``embed``, ``region``, ``segment``, the KV-I/O LLM pair
        (with ``kv_caches``) and ``llm_prefill`` (the same prefill chunks without the caches, for stateful
        LLM graphs).

    Raises:
        ValueError: no examples (an empty calibration set cannot set activation ranges).
    """
    from tqdm import tqdm

    from xsam_edge.runtime.protocol import HostCacheLLM
    from xsam_edge.runtime.session import EdgeSession

    if not examples:
        raise ValueError("empty calibration set: the calibration data gave no requests; give more images")
    session = EdgeSession(fp32_bundle, "onnx")
    samples: dict[str, list[list[np.ndarray]]] = {
        n: [] for n in ("encode_image", "embed", "region", "segment", KVIO_PREFILL, KVIO_DECODE)
    }
    graphs = session.engine.graphs
    for name, runner in graphs.items():
        graphs[name] = _Recorder(runner, samples[name], max_samples)
    # recorded through the host-cache path, where the pair's graphs take the caches as inputs (ONNX Runtime's
    # own runner binds them as OrtValues, past any wrapper of its graphs)
    llm = session.engine.llm = HostCacheLLM(
        session.engine.llm.prefill, session.engine.llm.decode, session.manifest.graph(KVIO_PREFILL, "onnx")
    )
    # without kv_caches only the chunk inputs are kept (what a stateful LLM sees): at full size one sample's
    # past caches are 100 MB per layer, and 32 of them for prefill and decode do not fit a 24 GB machine
    keep = None if kv_caches else 2
    kv_limit = _cache_sample_limit(session.manifest, max_samples, max_cache_bytes) if kv_caches else 0
    llm.prefill = _Recorder(llm.prefill, samples[KVIO_PREFILL], kv_limit if kv_caches else max_samples, keep)
    llm.decode = _Recorder(llm.decode, samples[KVIO_DECODE], kv_limit)
    order = sorted(range(len(examples)), key=lambda i: examples[i].image_id)
    refused: list[str] = []
    for i in tqdm(order, desc="calibrate", disable=not progress, leave=False):
        try:
            session.segment(examples[i].request)
        except ValueError as err:  # beyond the bundle's slots or context: the device would refuse it too
            refused.append(str(err))
    if len(refused) == len(examples):
        raise ValueError(f"empty calibration set: the float session refused every request ({refused[0]})")
    if refused:
        log.warning("calibration: %d of %d requests refused: %s", len(refused), len(examples), refused[0])
    # the stateful LLM's samples are the prefill chunks without the caches (already cut without kv_caches)
    samples[STATEFUL_LLM] = [s[:2] for s in samples[KVIO_PREFILL]] if kv_caches else samples.pop(KVIO_PREFILL)
    return CalibrationSet({k: v for k, v in samples.items() if v}, len(examples) - len(refused))
