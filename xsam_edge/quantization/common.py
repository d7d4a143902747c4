"""What the file-based quantizers (ONNX Runtime, OpenVINO) share: checks, keep-float matching, PSNR.

Kept small on purpose: each backend module owns its quantizer calls; only backend-neutral plumbing lives here.
"""

from __future__ import annotations

import fnmatch
import inspect
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .recipes import supported_schemes
from .report import GraphQuantReport, LayerScore
from .schemes import Scheme

__all__ = [
    "add_note",
    "check_request",
    "file_layer_sensitivity",
    "held_out_note",
    "io_names",
    "keep_float_pattern",
    "layer_names",
    "mean_gain",
    "model_file",
    "output_psnr",
    "standard_strides",
    "threads",
    "unique_pattern",
]


def check_request(
    backend: str,
    graph: str,
    bundle_graphs: Sequence[str],
    scheme: Scheme,
    fp32_files: Mapping[str, Sequence[Path]],
    calibration: Mapping[str, Sequence[Any]],
    needs_data: bool,
) -> None:
    """Fail before any work: unsupported scheme, missing float files, or no data where the scheme needs it.

    Args:
        backend (str): a registered backend.
        graph (str): the recipe graph (for messages).
        bundle_graphs (Sequence[str]): the bundle graphs it covers.
        scheme (Scheme): the scheme asked for.
        fp32_files (Mapping[str, Sequence[Path]]): bundle graph → float32 files.
        calibration (Mapping[str, Sequence[Any]]): bundle graph → calibration samples.
        needs_data (bool): this backend's handler of ``scheme`` uses calibration samples.

    Raises:
        ValueError: naming the scheme, graph or file that is wrong and what is allowed.
    """
    supported = supported_schemes(backend)
    if scheme.name not in supported:
        raise ValueError(
            f"{graph}: scheme {scheme.name!r} is not supported by {backend!r}; "
            f"supported: {', '.join(supported)}"
        )
    for name in bundle_graphs:
        if not fp32_files.get(name):
            given = ", ".join(fp32_files) or "none"
            raise ValueError(f"{graph}: no float32 files for {name!r}; given: {given}")
        if needs_data and not calibration.get(name):
            raise ValueError(
                f"empty calibration set for {name}: {scheme.label()} needs recorded inputs of {name!r} "
                "(record calibration data, or pick a scheme without calibration)"
            )


def keep_float_pattern(names: Iterable[str], patterns: Sequence[str]) -> str | None:
    """The first keep-float pattern naming any of ``names`` (module paths, node or tensor names).

    A plain pattern matches whole name components (``sampling_offsets`` matches
    ``…self_attn.sampling_offsets`` and the tensor ``…_self_attn_sampling_offsets_weight``, not
    ``my_sampling_offsets2``); a pattern with ``*?[`` is a glob on the whole name. Separators (``.``, ``/``,
    ``_``, …) are treated alike, because converters flatten module paths differently (OpenVINO tensor names
    join them with ``_``).
    """
    flat_names = [(n, f"_{_flatten(n)}_") for n in names if n]
    for pattern in patterns:
        glob = any(c in pattern for c in "*?[")
        flat = f"_{_flatten(pattern)}_"
        for name, flat_name in flat_names:
            if fnmatch.fnmatchcase(name, pattern) if glob else flat in flat_name:
                return pattern
    return None


def file_layer_sensitivity(
    handler: Any,
    graph: str,
    fp32_files: dict[str, list[Path]],
    scheme: Scheme,
    keep_float: tuple[str, ...],
    calibration: dict[str, list[list[np.ndarray]]],
    holdout: dict[str, list[list[np.ndarray]]],
    work: Path,
    progress: bool = False,
) -> tuple[dict[str, float], list[LayerScore]]:
    """The per-layer pass for a file-based handler (``onnx``, ``openvino``): one quantization per layer.

    The float file is quantized as a whole, then once per op the whole run quantized with that op alone
    kept float (its ``quantized_layers`` name appended to ``keep_float``), each with the scheme itself and
    scored by the handler's own PSNR on ``holdout`` in its runtime. The trials live in a temporary folder
    under ``work``.

    Returns:
        tuple[dict[str, float], list[LayerScore]]: the whole graph's PSNR per output, and one score per
        quantized op, most sensitive (largest mean gain) first.

    Raises:
        ValueError: no held-out samples (nothing to compare on), or what ``quantize_graph`` raises.
    """
    import shutil
    import tempfile

    from tqdm import tqdm

    if not any(holdout.get(name) for name in fp32_files):
        raise ValueError(f"{graph}: per-layer sensitivity needs held-out samples; record calibration data")
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work, prefix=f"layers-{graph}-") as tmp:
        files, whole = handler.quantize_graph(
            graph, fp32_files, scheme, keep_float, calibration, holdout, Path(tmp) / "whole"
        )
        scores = []
        for layer in tqdm(
            handler.quantized_layers(fp32_files, files), desc=f"layers of {graph}", disable=not progress
        ):
            trial = Path(tmp) / f"trial-{len(scores)}"
            _, report = handler.quantize_graph(
                graph, fp32_files, scheme, (*keep_float, layer), calibration, holdout, trial
            )
            gain = round(mean_gain(whole.psnr_db, report.psnr_db), 2)
            scores.append(LayerScore(layer, gain, report.psnr_db))
            shutil.rmtree(trial, ignore_errors=True)
    return whole.psnr_db, sorted(scores, key=lambda s: -s.gain_db)


def layer_names(files: Iterable[Mapping[str, tuple[Sequence[str], Sequence[str]]]]) -> list[str]:
    """A keep-float pattern per quantized op that leaves that op, and no other op of its file, float.

    Args:
        files (Iterable[Mapping[str, tuple[Sequence[str], Sequence[str]]]]): per file of the graph, op →
            (patterns to try, most readable first (module path, weight name) and its unique op name last;
            the names keep-float matching sees for it (``keep_float_pattern``'s ``names``)).

    Returns:
        list[str]: per op, its first pattern that names no other op of its file (the op name when none of
        the readable ones is unique: a parent module's path also names its children). An op that the same
        pattern names in two files of one graph (prefill and decode) is one layer.
    """
    picked: list[str] = []
    for ops in files:
        for op in ops:
            name = unique_pattern(op, ops)
            if name not in picked:
                picked.append(name)
    return picked


def unique_pattern(op: str, ops: Mapping[str, tuple[Sequence[str], Sequence[str]]]) -> str:
    """``op``'s first pattern to try that names no other op of ``ops`` (its last, the op name, if none)."""
    tries, _ = ops[op]
    others = [n for o, (_, seen) in ops.items() if o != op for n in seen]
    return next((t for t in tries if t and keep_float_pattern(others, [t]) is None), tries[-1])


def model_file(files: Sequence[str | Path], suffix: str) -> Path:
    """The model file (``.onnx``, ``.xml``) among a graph's files (weights and external data beside it)."""
    return next(Path(f) for f in files if str(f).endswith(suffix))


def mean_gain(base: Mapping[str, float], trial: Mapping[str, float], cap: float = 150.0) -> float:
    """Mean PSNR gain over the outputs (identical outputs count as ``cap`` dB, not infinity)."""
    gains = [min(trial[k], cap) - min(base[k], cap) for k in base]
    return float(np.mean(gains)) if gains else 0.0


def _flatten(name: str) -> str:
    """Every run of non-alphanumerics (``.``, ``/``, ``:``, quotes of a metadata list) becomes one ``_``."""
    return re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_")


def output_psnr(
    names: Sequence[str], reference: Sequence[Sequence[np.ndarray]], test: Sequence[Sequence[np.ndarray]]
) -> dict[str, float]:
    """PSNR per output over all samples together (``measure_outputs``'s pooled PSNR; ``inf`` when equal)."""
    from .fidelity import measure_outputs

    return {name: f.psnr_db for name, f in measure_outputs(names, reference, test).items()}


def standard_strides(x: Any) -> Any:
    """A tensor copied into one dim order with ordinary strides (other values as they are).

    A channels-last example made ExecuTorch read contiguous inputs in the wrong order (cosine 0.70), and a
    numpy ``a[None]`` view becomes a tensor with a 0 stride, which ExecuTorch refuses ("0 in strides");
    ``contiguous()`` keeps both (a size-1 axis never counts against contiguity), a clone does not.
    """
    return x.clone(memory_format=torch.contiguous_format) if isinstance(x, torch.Tensor) else x


def held_out_note(samples: Sequence[Any]) -> str:
    """What a report's fidelity was measured on, when it was measured on held-out samples."""
    return f"{len(samples)} held-out sample(s), not used for calibration"


def add_note(report: GraphQuantReport, note: str) -> None:
    """Append ``note`` once (the files of one graph often report the same thing)."""
    if note not in report.notes:
        report.notes.append(note)


def io_names(module: torch.nn.Module, example_inputs: Sequence[torch.Tensor]) -> tuple[list[str], list[str]]:
    """Input names from ``forward``'s signature (``input_i`` for ``*args``) and ``output_i`` output names."""
    params = [
        p.name
        for p in inspect.signature(module.forward).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    inputs = params[: len(example_inputs)]
    if len(inputs) != len(example_inputs):
        inputs = [f"input_{i}" for i in range(len(example_inputs))]
    with torch.no_grad():
        out = module(*example_inputs)
    count = len(out) if isinstance(out, tuple | list) else 1
    return inputs, [f"output_{i}" for i in range(count)]


def threads() -> int:
    """Runtime threads for the PSNR and evidence runs: ``XSAM_EDGE_THREADS`` (0: the runtime decides)."""
    return int(os.environ.get("XSAM_EDGE_THREADS", "0"))
