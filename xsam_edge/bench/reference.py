"""``xsam-edge reference``: run the full reference model once over a dataset and store its answers.

Per sample the request, its ground truth and the model's final result (RLE masks, scores, labels, text); for
the first ``traced`` samples also every edge-graph call's inputs and outputs, made by ``EdgeSession`` over the
eager graph wrappers on the same device, so a device bench can compare graph by graph. The region sampler is
the grid one, the sampler the exported ``region`` graph implements.

Resumable: each finished sample is written (atomically) to ``.<out>.partial/`` beside the target; a rerun with
the same model and data skips them. The golden folder itself appears only when every sample is done.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from xsam_edge.bench.golden_set import (
    GoldenCall,
    GoldenSample,
    sample_to_json,
    trace_arrays,
    write_golden_set,
)
from xsam_edge.data.registry import load_dataset
from xsam_edge.data.sample import Example
from xsam_edge.export.eager import EAGER, EagerBackend, eager_manifest
from xsam_edge.export.graphs import SlotConfig
from xsam_edge.export.to_bundle import model_source
from xsam_edge.files import atomic_write_text
from xsam_edge.model.checkpoint import read_lineage
from xsam_edge.model.predictor import XSamPredictor
from xsam_edge.runtime.observe import observe
from xsam_edge.runtime.session import EdgeSession

log = logging.getLogger(__name__)

RUN_FILE = "run.json"


def trace_request(session: EdgeSession, request) -> list[GoldenCall]:
    """Every graph call ``session`` makes for ``request`` on a fresh image state (LLM from a reset cache)."""
    trace: list[GoldenCall] = []

    def keep(name: str, inputs: list[np.ndarray], outputs: list[np.ndarray], seconds: float) -> None:
        trace.append(GoldenCall(name, [np.array(x) for x in inputs], [np.array(y) for y in outputs]))

    stop = observe(session, keep)
    try:
        session.clear_image()
        session.run(request)
    finally:
        stop()
        session.clear_image()
    return trace


def _producer(device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {
        "device": str(device),
        "device_name": name or platform.machine(),
        "torch": torch.__version__,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def traced_samples(examples: Sequence[Example], count: int) -> list[int]:
    """Which samples store every graph call: ``count`` of them, chosen so the traces cover every graph.

    The first request with visual prompts comes first (only it calls the ``region`` graph), then the first
    request of each task not yet traced, then the rest in order.
    """
    order: list[int] = []
    prompted = next((i for i, e in enumerate(examples) if e.request.prompts), None)
    if prompted is not None:
        order.append(prompted)
    tasks = {examples[i].task for i in order}
    for i, example in enumerate(examples):
        if example.task not in tasks:
            order.append(i)
            tasks.add(example.task)
    order += [i for i in range(len(examples)) if i not in order]
    return sorted(order[: max(count, 0)])


def make_reference(
    model_dir: str | os.PathLike,
    data: str,
    out: str | os.PathLike,
    limit: int | None = None,
    device: str = "cpu",
    traced: int = 2,
    slots: SlotConfig | None = None,
    progress: bool = True,
) -> Path:
    """Write the golden folder ``out`` for the model in ``model_dir`` on ``data``.

    Args:
        model_dir (str | os.PathLike): the reference model folder (``config.json``, weights, tokenizer).
        data (str): dataset spec (``shapes:val``, ``refcoco:…`` …).
        out (str | os.PathLike): golden folder (replaced when complete).
        limit (int | None): at most this many images of ``data``.
        device (str): ``cpu`` or ``cuda`` (``cuda:N``).
        traced (int): how many samples also store every graph call (``traced_samples`` picks them so that
            every graph is traced, ``region`` included).
        slots (SlotConfig | None): slot sizes of the traced graphs, the bundle's (default ``SlotConfig()``).
        progress (bool): a progress bar.

    Returns:
        Path: the golden folder.

    Raises:
        RuntimeError: ``cuda`` asked for but torch sees no CUDA device.
        ValueError: the dataset gives no samples.
    """
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device}: this torch sees no CUDA device; use --device cpu")
    target = Path(out).resolve()
    predictor = XSamPredictor.from_pretrained(model_dir, region_sampler="grid")
    model = predictor.model.to(torch.device(device))
    examples = load_dataset(data, limit=limit)
    if not examples:
        raise ValueError(f"{data} gave no samples; check the dataset spec and --limit")
    slots = slots or SlotConfig()
    traced_slots = slots.manifest_entry(model.config)  # as manifests have them
    origin = model_source(model, read_lineage(model_dir))  # hashes every weight: once
    source = {**origin, "config": model.config.to_dict(), "slots": traced_slots}
    to_trace = set(traced_samples(examples, traced))
    run = {
        "model": source["fingerprint"],
        "data": data,
        "limit": limit,
        "traced": sorted(to_trace),
        "slots": str(slots),
    }

    work = target.with_name(f".{target.name}.partial")
    run_path = work / RUN_FILE
    if work.is_dir() and (not run_path.is_file() or json.loads(run_path.read_text()) != run):
        log.info("reference: %s was made for another run; starting over", work)
        shutil.rmtree(work)
    (work / "samples").mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_path, json.dumps(run) + "\n")

    session = None
    images: dict[str, str] = {
        p.stem: f"images/{p.name}" for p in (work / "images").glob("*.png") if not p.stem.startswith("prompt")
    }
    for i, example in enumerate(tqdm(examples, desc="reference", disable=not progress)):
        path = work / "samples" / f"{i:06d}.json"
        if path.is_file():
            continue
        with torch.no_grad():
            result = predictor.segment(example.request)
        trace: list[GoldenCall] = []
        if i in to_trace:
            if session is None:
                session = EdgeSession(
                    eager_manifest(model, predictor.tokenizer, slots, origin),
                    EAGER,
                    runtime=EagerBackend(model, slots),
                )
            trace = trace_request(session, example.request)
            np.savez_compressed(work / "samples" / f"{i:06d}.npz", **trace_arrays(i, trace))
        entry = sample_to_json(GoldenSample(example, result, trace), i, images, work)
        atomic_write_text(path, json.dumps(entry) + "\n")

    entries, traces = [], {}
    for i in range(len(examples)):
        entries.append(json.loads((work / "samples" / f"{i:06d}.json").read_text()))
        npz = work / "samples" / f"{i:06d}.npz"
        if npz.is_file():
            with np.load(npz, allow_pickle=False) as arrays:
                traces.update(dict(arrays))
    golden = write_golden_set(
        target, source, _producer(next(model.parameters()).device), data, entries, traces, files_from=work
    )
    shutil.rmtree(work, ignore_errors=True)
    return golden
