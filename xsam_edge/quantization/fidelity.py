"""How close a quantized graph's outputs stay to float32, sample by sample: the worst sample, not the mean.

A pooled PSNR over many samples hides the one input that collapses (a ViT held 40 dB pooled while one photo
fell to cosine 0.73), so every output is scored per held-out sample and the report keeps the worst: its
PSNR, and its cosine similarity. For an output with a feature axis (``(…, tokens, channels)``) a sample's
cosine is the mean over its tokens of the per-token cosine, the usual measure for an encoder's features;
otherwise the cosine of the whole flattened output.
"""

from __future__ import annotations

import functools
import math
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xsam_edge.export.placement import psnr

__all__ = [
    "FEATURE_AXIS_MIN",
    "Fidelity",
    "host_int8_saturates",
    "int8_saturates",
    "measure_outputs",
    "sample_cosine",
]

FEATURE_AXIS_MIN = 8
"""An output whose last axis has at least this many channels (and ≥ 2 axes) is scored per token."""


@dataclass(frozen=True)
class Fidelity:
    """One output of a graph against float32 over the held-out samples.

    Args:
        psnr_db (float): PSNR of all samples pooled (``inf`` when identical).
        worst_psnr_db (float): the lowest per-sample PSNR.
        worst_cosine (float): the lowest per-sample cosine (per-token mean where the output has features).
        worst_sample (int): index of the sample with the lowest cosine.
        samples (int): how many samples were compared.
    """

    psnr_db: float
    worst_psnr_db: float
    worst_cosine: float
    worst_sample: int
    samples: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: infinite PSNRs become ``None``."""
        return {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fidelity:
        data = dict(data)
        for key in ("psnr_db", "worst_psnr_db"):
            data[key] = math.inf if data.get(key) is None else data[key]
        return cls(**data)


def sample_cosine(reference: np.ndarray, test: np.ndarray) -> float:
    """Cosine of one sample's output: the mean per-token cosine over a feature axis, else of the whole.

    Two all-zero vectors count as identical (1.0); one zero against a non-zero vector as 0.0.
    """
    ref = np.asarray(reference, np.float64)
    out = np.asarray(test, np.float64)
    if ref.ndim >= 2 and ref.shape[-1] >= FEATURE_AXIS_MIN:
        ref, out = ref.reshape(-1, ref.shape[-1]), out.reshape(-1, out.shape[-1])
    else:
        ref, out = ref.reshape(1, -1), out.reshape(1, -1)
    dot = (ref * out).sum(axis=1)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    both_zero = (np.linalg.norm(ref, axis=1) == 0) & (np.linalg.norm(out, axis=1) == 0)
    cos = np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), np.where(both_zero, 1.0, 0.0))
    return float(np.mean(cos))


def measure_outputs(
    names: Sequence[str], reference: Sequence[Sequence[np.ndarray]], test: Sequence[Sequence[np.ndarray]]
) -> dict[str, Fidelity]:
    """Per output: pooled PSNR and the worst sample's PSNR and cosine.

    Args:
        names (Sequence[str]): output names, in output order.
        reference (Sequence[Sequence[np.ndarray]]): per sample, the float32 graph's outputs.
        test (Sequence[Sequence[np.ndarray]]): per sample, the quantized graph's outputs.

    Raises:
        ValueError: no samples, or the two runs disagree on the number of samples.
    """
    if not reference or len(reference) != len(test):
        raise ValueError(f"fidelity needs the same samples on both sides: {len(reference)} vs {len(test)}")
    result = {}
    for i, name in enumerate(names):
        refs = [np.asarray(r[i], np.float64) for r in reference]
        outs = [np.asarray(t[i], np.float64) for t in test]
        cosines = [sample_cosine(r, t) for r, t in zip(refs, outs, strict=True)]
        result[name] = Fidelity(
            psnr_db=psnr(
                np.concatenate([r.ravel() for r in refs]), np.concatenate([t.ravel() for t in outs])
            ),
            worst_psnr_db=min(psnr(r, t) for r, t in zip(refs, outs, strict=True)),
            worst_cosine=round(min(cosines), 6),
            worst_sample=int(np.argmin(cosines)),
            samples=len(refs),
        )
    return result


_INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def int8_saturates(machine: str, flags: set[str] | None) -> bool:
    """Whether a CPU of this ``platform.machine()`` and these ``/proc/cpuinfo`` flags may saturate INT8 GEMMs.

    x86 without VNNI or AMX: ONNX Runtime (and oneDNN) multiply U8×S8 with ``VPMADDUBSW``, whose 16-bit pair
    sums clamp (ORT's quantization guide). ARM widens before it adds. ``flags=None`` (no cpuinfo) is taken
    for a modern CPU.
    """
    if machine.lower() not in ("x86_64", "amd64", "i386", "i686") or flags is None:
        return False
    return not (_INT8_DOT_FLAGS & flags)


@functools.cache
def host_int8_saturates() -> bool:
    """``int8_saturates`` of this machine.

    Where true, a file measured here may read worse than it runs on an ARM phone or a VNNI CPU, by an amount
    that depends on the host (0.9987 against 0.99994 worst cosine on an AVX2 EPYC, ``docs/results``).
    """
    cpuinfo, flags = Path("/proc/cpuinfo"), None
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return int8_saturates(platform.machine(), flags)
