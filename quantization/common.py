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

from xsam_edge.export.placement import psnr

from .recipes import SUPPORTED
from .report import GraphQuantReport
from .schemes import Scheme

__all__ = [
    "add_note",
    "check_request",
    "io_names",
    "keep_float_pattern",
    "output_psnr",
    "threads",
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
        backend (str): a key of ``SUPPORTED``.
        graph (str): the recipe graph (for messages).
        bundle_graphs (Sequence[str]): the bundle graphs it covers.
        scheme (Scheme): the scheme asked for.
        fp32_files (Mapping[str, Sequence[Path]]): bundle graph → float32 files.
        calibration (Mapping[str, Sequence[Any]]): bundle graph → calibration samples.
        needs_data (bool): this backend's handler of ``scheme`` uses calibration samples.

    Raises:
        ValueError: naming the scheme, graph or file that is wrong and what is allowed.
    """
    supported = SUPPORTED[backend]
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


def _flatten(name: str) -> str:
    """Every run of non-alphanumerics (``.``, ``/``, ``:``, quotes of a metadata list) becomes one ``_``."""
    return re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_")


def output_psnr(
    names: Sequence[str], reference: Sequence[Sequence[np.ndarray]], test: Sequence[Sequence[np.ndarray]]
) -> dict[str, float]:
    """PSNR per output over all held-out samples together (peak and error of the concatenated values).

    Args:
        names (Sequence[str]): output names, in output order.
        reference (Sequence[Sequence[np.ndarray]]): per sample, the float32 file's outputs.
        test (Sequence[Sequence[np.ndarray]]): per sample, the quantized file's outputs.

    Returns:
        dict[str, float]: output name → dB (``inf`` when identical).
    """
    return {
        name: psnr(
            np.concatenate([np.asarray(r[i], np.float64).ravel() for r in reference]),
            np.concatenate([np.asarray(t[i], np.float64).ravel() for t in test]),
        )
        for i, name in enumerate(names)
    }


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
