"""What the ONNX and OpenVINO backends share: the export record, parity numbers and the placement report.

The placement report answers "which ops does this file run, and which of them may leave the fast path":
per exported file, a histogram of op types (ONNX node ``op_type``s; OpenVINO ``get_type_name()`` of
``get_ordered_ops()``) and the ops known to be CPU-fallback or slow-path risks on edge runtimes (EXPORT-RISKS:
``GridSample`` is never delegated, scatters and data-dependent shapes break accelerators).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FALLBACK_RISKS",
    "ExportedGraph",
    "OutputParity",
    "format_placement",
    "onnx_op_histogram",
    "openvino_op_histogram",
    "output_parity",
    "placement_report",
    "psnr",
]

# op types (ONNX and OpenVINO spellings) that edge delegates commonly do not take, or that have data-dependent
# shapes; each is listed with the reason shown in the report
FALLBACK_RISKS: dict[str, str] = {
    "GridSample": "bilinear sampling: not delegated on mobile NPUs/XNNPACK, runs on the CPU kernel",
    "ScatterND": "scatter: CPU fallback on most accelerators",
    "ScatterNDUpdate": "scatter: CPU fallback on most accelerators",
    "ScatterElements": "scatter: CPU fallback on most accelerators",
    "ScatterElementsUpdate": "scatter: CPU fallback on most accelerators",
    "ScatterUpdate": "scatter: CPU fallback on most accelerators",
    "NonZero": "data-dependent output shape",
    "NonMaxSuppression": "data-dependent output shape",
    "Unique": "data-dependent output shape",
    "TopK": "sort: slow or unsupported on some delegates",
    "Loop": "control flow",
    "If": "control flow",
    "Einsum": "decomposed differently per runtime; may fall back",
}


def psnr(reference: np.ndarray | Any, test: np.ndarray | Any) -> float:
    """Peak signal-to-noise ratio of ``test`` against ``reference``, in dB.

    ``20·log10(peak / rmse)`` with ``peak = max |reference|``; ``inf`` when the two are equal.

    Args:
        reference (np.ndarray | Any): the reference values (array-like, e.g. a torch tensor).
        test (np.ndarray | Any): the values to grade, same shape.

    Returns:
        float: PSNR in dB (``inf`` for identical inputs, ``-inf`` when the reference is all zeros but the test
        is not).

    Raises:
        ValueError: the shapes differ.
    """
    ref = np.asarray(reference, dtype=np.float64)
    got = np.asarray(test, dtype=np.float64)
    if ref.shape != got.shape:
        raise ValueError(f"psnr of different shapes {ref.shape} and {got.shape}")
    rmse = math.sqrt(float(np.mean((ref - got) ** 2))) if ref.size else 0.0
    if rmse == 0.0:
        return math.inf
    peak = float(np.max(np.abs(ref))) if ref.size else 0.0
    if peak == 0.0:
        return -math.inf
    return 20.0 * math.log10(peak / rmse)


@dataclass(frozen=True)
class OutputParity:
    """How one exported output compares with the eager wrapper.

    Attributes:
        name (str): the output name.
        max_abs_diff (float): max |exported − eager|.
        psnr_db (float): ``psnr(eager, exported)``.
    """

    name: str
    max_abs_diff: float
    psnr_db: float


def output_parity(names: Iterable[str], eager: Iterable[Any], exported: Iterable[Any]) -> list[OutputParity]:
    """Per-output parity of ``exported`` against ``eager`` (array-likes, matched by position).

    Raises:
        ValueError: a shape differs.
    """
    out = []
    for name, want, got in zip(names, eager, exported, strict=True):
        want_np = np.asarray(want, dtype=np.float64)
        got_np = np.asarray(got, dtype=np.float64)
        if want_np.shape != got_np.shape:
            raise ValueError(f"output {name}: exported shape {got_np.shape}, eager {want_np.shape}")
        diff = float(np.max(np.abs(want_np - got_np))) if want_np.size else 0.0
        out.append(OutputParity(name, diff, psnr(want_np, got_np)))
    return out


@dataclass
class ExportedGraph:
    """The record one backend writes for one graph.

    Attributes:
        name (str): the graph name (``GRAPH_NAMES``).
        backend (str): ``onnx``, ``openvino``, ``executorch`` or ``coreml``.
        files (list[Path]): the files written (model first).
        inputs (list[str]): input names, in order.
        outputs (list[str]): output names, in order.
        input_shapes (list[tuple[int, ...]]): static input shapes (-1 for a dynamic axis).
        output_shapes (list[tuple[int, ...]]): output shapes.
        input_dtypes (list[str]): input dtype names (numpy spelling).
        output_dtypes (list[str]): output dtype names.
        export_seconds (float): wall time of the conversion and the write.
        route (str): how the file was made (e.g. ``dynamo``, ``torchscript``, ``exported_program``,
            ``exported_program+make_stateful``).
        parity (list[OutputParity]): the exported file run once on the example inputs against eager.
        placement (dict[str, Any]): ``placement_report`` entry of the model file.
        states (list[str]): state variable names (stateful OpenVINO LLM only).
        methods (list[dict[str, Any]]): ``{"name", "inputs", "outputs"}`` per method of a multi-method
            program (the ExecuTorch LLM); empty for a single-method graph.
    """

    name: str
    backend: str
    files: list[Path]
    inputs: list[str]
    outputs: list[str]
    input_shapes: list[tuple[int, ...]]
    output_shapes: list[tuple[int, ...]]
    input_dtypes: list[str]
    output_dtypes: list[str]
    export_seconds: float
    route: str
    parity: list[OutputParity] = field(default_factory=list)
    placement: dict[str, Any] = field(default_factory=dict)
    states: list[str] = field(default_factory=list)
    methods: list[dict[str, Any]] = field(default_factory=list)

    @property
    def file(self) -> Path:
        """The model file (``.onnx`` or ``.xml``)."""
        return self.files[0]

    @property
    def min_psnr_db(self) -> float:
        """The worst output's PSNR (``inf`` when there are no parity numbers)."""
        return min((p.psnr_db for p in self.parity), default=math.inf)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (paths as strings; ``inf`` PSNR stays a float)."""
        data = asdict(self)
        data["files"] = [str(f) for f in self.files]
        return data


# -- op histograms -----------------------------------------------------------------------------------------
def onnx_op_histogram(model: Any) -> dict[str, int]:
    """Op-type counts of an ONNX model, local functions inlined and subgraphs included.

    Args:
        model (Any): an ``onnx.ModelProto`` or a path to a ``.onnx`` file.

    Returns:
        dict[str, int]: op type → count, most frequent first.
    """
    import onnx
    import onnx.inliner

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    counts: Counter[str] = Counter()

    def visit(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            counts[node.op_type] += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)
                for sub in attr.graphs:
                    visit(sub)

    visit(model.graph)
    return dict(counts.most_common())


OV_BOOKKEEPING = ("Parameter", "Result", "Constant")


def openvino_op_histogram(model: Any, weights: str | Path | None = None) -> dict[str, int]:
    """Op-type counts of an OpenVINO model (``Parameter``, ``Result`` and ``Constant`` left out).

    Args:
        model (Any): an ``openvino.Model`` or a path to an IR ``.xml`` (or anything ``read_model`` reads).
        weights (str | Path | None): the IR's weights file when it is not the ``.bin`` beside the ``.xml``
            (a tied embed reads the LLM's, ``backends/openvino/pack.py``).

    Returns:
        dict[str, int]: op type name → count, most frequent first.
    """
    import openvino as ov

    if not isinstance(model, ov.Model):
        model = ov.Core().read_model(str(model), *([] if weights is None else [str(weights)]))
    counts = Counter(op.get_type_name() for op in model.get_ordered_ops())
    for name in OV_BOOKKEEPING:
        counts.pop(name, None)
    return dict(counts.most_common())


def _histogram(path: Path, weights: Path | None = None) -> tuple[str, dict[str, int]]:
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx", onnx_op_histogram(path)
    if suffix == ".xml":
        return "openvino", openvino_op_histogram(path, weights)
    raise ValueError(f"no op histogram for {path}: expected a .onnx or an OpenVINO .xml file")


def placement_report(
    files: Iterable[str | Path] | Mapping[str, str | Path | Sequence[str | Path]],
) -> dict[str, dict[str, Any]]:
    """The placement report of exported files.

    Args:
        files (Iterable[str | Path] | Mapping[str, str | Path | Sequence[str | Path]]): model files
            (``.onnx`` / ``.xml``), or a mapping label → file (labels key the report; otherwise the file name
            does) or → a graph's files (the model file first; an IR's ``.bin`` among the rest).

    Returns:
        dict[str, dict[str, Any]]: per file: ``file``, ``format``, ``total_ops``, ``histogram`` (op type →
        count) and ``risks`` (op type → {``count``, ``reason``}) for the ops in ``FALLBACK_RISKS``.
    """
    items = files.items() if isinstance(files, Mapping) else ((Path(f).name, f) for f in files)
    report = {}
    for label, file in items:
        paths = [Path(f) for f in file] if isinstance(file, list | tuple) else [Path(file)]
        path = paths[0]
        fmt, hist = _histogram(path, next((p for p in paths[1:] if p.suffix == ".bin"), None))
        risks = {
            op: {"count": n, "reason": FALLBACK_RISKS[op]} for op, n in hist.items() if op in FALLBACK_RISKS
        }
        report[label] = {
            "file": str(path),
            "format": fmt,
            "total_ops": sum(hist.values()),
            "histogram": hist,
            "risks": risks,
        }
    return report


def format_placement(report: Mapping[str, Mapping[str, Any]], top: int = 8) -> str:
    """A short text table of a ``placement_report``: one row per file, its commonest ops and its risks.

    Args:
        report (Mapping[str, Mapping[str, Any]]): ``placement_report`` output.
        top (int): op types shown per file.

    Returns:
        str: the table.
    """
    rows = [("file", "format", "ops", f"top {top} op types", "fallback risks")]
    for label, entry in report.items():
        hist = entry["histogram"]
        common = ", ".join(f"{op}×{n}" for op, n in list(hist.items())[:top])
        risks = ", ".join(f"{op}×{r['count']}" for op, r in entry["risks"].items()) or "-"
        rows.append((label, entry["format"], str(entry["total_ops"]), common, risks))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for i, row in enumerate(rows):
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * len(row[-1]))
    return "\n".join(lines)


def summarize_exports(graphs: Sequence[ExportedGraph]) -> str:
    """Where each exported graph's ops landed, as text.

    Files with an op histogram (ONNX, OpenVINO IR) get the op table; delegated programs (ExecuTorch) their
    delegated vs portable nodes per method; other converted programs (Core ML) their commonest ops.
    """
    files = {
        f"{g.backend}/{g.name}": list(g.files)
        for g in graphs
        if g.files and Path(g.files[0]).suffix in (".onnx", ".xml")
    }
    lines = [format_placement(placement_report(files))] if files else []
    for g in graphs:
        label = f"{g.backend}/{g.name}"
        for method, info in g.placement.get("methods", {}).items():
            lines.append(
                f"{label}.{method}: {info['delegated_nodes']} nodes in "
                f"{g.placement.get('partitioner', 'the delegate')}, "
                f"{info['portable_nodes']} portable ({', '.join(list(info['portable_ops'])[:6])})"
            )
        if label not in files and "methods" not in g.placement and "histogram" in g.placement:
            top = sorted(g.placement["histogram"].items(), key=lambda kv: -kv[1])[:6]
            lines.append(f"{label}: " + ", ".join(f"{op}×{n}" for op, n in top))
    return "\n".join(lines)
