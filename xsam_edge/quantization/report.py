"""What a backend quantizer did to one graph: the report every handler returns and the bundle stores.

A handler never skips silently: whatever it left in float (fragile patterns, ops its quantizer does not take,
a data-aware option it could not honour) is listed with the reason, and ``integer_ops`` is the evidence that
integer kernels are really in the file (ONNX QDQ / MatMulNBits nodes, OpenVINO's quantized ops and executed
precisions, the ExecuTorch delegate's quantized ops, Core ML's constexpr decompression ops).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .fidelity import Fidelity

__all__ = ["GraphQuantReport", "LayerScore", "files_bytes", "format_reports"]


def files_bytes(files: list[Path] | list[str]) -> int:
    """Bytes on disk of ``files`` (folders such as ``.mlpackage`` are summed recursively)."""
    total = 0
    for f in map(Path, files):
        if f.is_dir():
            total += sum(p.stat().st_size for p in f.rglob("*") if p.is_file())
        elif f.exists():
            total += f.stat().st_size
    return total


@dataclass
class LayerScore:
    """One module of a quantized graph, left alone in float while the rest stays quantized.

    Args:
        module (str): the module's qualified name in the graph wrapper (a ``float_layers`` entry).
        gain_db (float): mean PSNR gain over the graph's outputs against the fully quantized graph.
        psnr_db (dict[str, float]): per output, PSNR against float32 with this module float.
    """

    module: str
    gain_db: float
    psnr_db: dict[str, float]


@dataclass
class GraphQuantReport:
    """One graph, one backend, one scheme.

    Args:
        graph (str): the recipe's graph name (``encode_image``, ``llm`` …).
        backend (str): the backend.
        scheme (str): the scheme's label (``w8a8``, ``w4-g32`` …).
        files (list[str]): the quantized files written (absolute while building, bundle-relative when stored).
        bytes_fp32 (int): bytes of the float32 files it replaced.
        bytes_quant (int): bytes of ``files``.
        seconds (float): time spent quantizing (calibration included).
        quantized (int): ops / layers the quantizer converted.
        kept_float (list[str]): what stayed float, each ``"name: why"``.
        integer_ops (dict[str, int]): op type → count of integer / compressed ops found in the result.
        notes (list[str]): anything else a user should know (a fallback taken, an option ignored).
        psnr_db (dict[str, float]): per output, PSNR of the quantized file against float32 on held-out
            calibration inputs, all samples pooled (``inf`` when identical).
        fidelity (dict[str, dict]): per output, ``Fidelity.to_dict()``: the worst sample's PSNR and cosine.
        measured_on (str): which data the PSNR and fidelity come from (held-out samples, or the example
            input when none were given): a number is only as good as its data.
    """

    graph: str
    backend: str
    scheme: str
    files: list[str] = field(default_factory=list)
    bytes_fp32: int = 0
    bytes_quant: int = 0
    seconds: float = 0.0
    quantized: int = 0
    kept_float: list[str] = field(default_factory=list)
    integer_ops: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    psnr_db: dict[str, float] = field(default_factory=dict)
    fidelity: dict[str, dict[str, Any]] = field(default_factory=dict)
    measured_on: str = ""

    def record(self, measured: Mapping[str, Fidelity], on: str) -> None:
        """Add measured outputs (``measure_outputs``): their pooled PSNR and worst-sample fidelity."""
        for name, f in measured.items():
            self.psnr_db[name] = f.psnr_db
            self.fidelity[name] = f.to_dict()
        if on and on not in self.measured_on.split("; "):
            self.measured_on = f"{self.measured_on}; {on}" if self.measured_on else on

    @property
    def worst_cosine(self) -> float:
        """The lowest per-sample cosine over every output (``nan`` when nothing was measured)."""
        values = [f["worst_cosine"] for f in self.fidelity.values()]
        return min(values) if values else math.nan

    @property
    def closeness(self) -> tuple[float, float]:
        """How close to float, for comparing runs: (worst cosine, −1 when unmeasured; worst PSNR)."""
        cosine = self.worst_cosine
        return (-1.0 if math.isnan(cosine) else cosine, self.min_psnr)

    @property
    def ratio(self) -> float:
        """How many times smaller than float32 (1.0 when unchanged)."""
        return self.bytes_fp32 / self.bytes_quant if self.bytes_quant else 1.0

    @property
    def min_psnr(self) -> float:
        """The worst output's PSNR (``inf`` when no output was compared)."""
        return min(self.psnr_db.values(), default=math.inf)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: infinite PSNRs become ``None``."""
        data = asdict(self)
        data["psnr_db"] = {k: (v if math.isfinite(v) else None) for k, v in self.psnr_db.items()}
        data["files"] = [str(f) for f in self.files]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GraphQuantReport:
        data = dict(data)
        data["psnr_db"] = {k: (math.inf if v is None else v) for k, v in data.get("psnr_db", {}).items()}
        return cls(**data)


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def _cos(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def format_reports(reports: list[GraphQuantReport]) -> str:
    """The per-graph summary table: scheme, size before → after, PSNR vs float32, integer-op evidence."""
    header = (
        f"{'graph':<14}{'scheme':<14}{'float32':>11}{'quantized':>12}{'ratio':>7}{'min PSNR':>10}"
        f"{'worst cos':>11}"
    )
    rows = [header + "  evidence"]
    for r in reports:
        psnr = r.min_psnr
        cell = "n/a" if not r.psnr_db else ("inf" if math.isinf(psnr) else f"{psnr:.1f} dB")
        top = sorted(r.integer_ops.items(), key=lambda kv: -kv[1])[:4]
        evidence = ", ".join(f"{op}×{n}" for op, n in top)
        rows.append(
            f"{r.graph:<14}{r.scheme:<14}{_mb(r.bytes_fp32):>11}{_mb(r.bytes_quant):>12}{r.ratio:>6.2f}×"
            f"{cell:>10}{_cos(r.worst_cosine):>11}  {evidence or '-'}"
        )
    total_fp32 = sum(r.bytes_fp32 for r in reports)
    total = sum(r.bytes_quant for r in reports)
    rows.append(
        f"{'total':<28}{_mb(total_fp32):>11}{_mb(total):>12}{(total_fp32 / total if total else 1):>6.2f}×"
    )
    notes = [f"  {r.graph}: {n}" for r in reports for n in r.notes]
    measured = [f"  {r.graph}: {r.measured_on}" for r in reports if r.measured_on]
    if measured:
        rows += ["measured on:", *measured]
    kept = [f"  {r.graph}: {k}" for r in reports for k in r.kept_float]
    if kept:
        rows += ["kept float:", *kept]
    if notes:
        rows += ["notes:", *notes]
    return "\n".join(rows)
