"""Rank the layers of an ONNX QDQ graph by the error each adds, from one run of the float and QDQ graphs.

The per-layer pass (one quantization per layer) is exact but costs a whole quantization per layer: an
hour on a ViT-B. One run of each graph shows where the error enters (ONNX Runtime's ``qdq_loss_debug``
idea: compare the QDQ graph's tensors with the float graph's, here only the inputs and outputs of the
quantized compute nodes, so memory stays small). A node's score is the relative error of its output
against float minus the largest relative error of its activation inputs: what quantizing this node added.
The signal-to-noise of the input alone misleads: a 1000× outlier channel dominates the norm, so the input
looks well resolved while every other channel is rounded away, which only the output shows.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from xsam_edge.quantization.common import keep_float_pattern

__all__ = ["rank_qdq_nodes"]

COMPUTE_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose")


def _relative_error(reference: list[np.ndarray], test: list[np.ndarray]) -> float:
    ref, got = np.concatenate(reference), np.concatenate(test)
    return float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-12))


def _fetch(
    path: Path, names: list[str], samples: Sequence[Sequence[np.ndarray]]
) -> dict[str, list[np.ndarray]]:
    """The named tensors of ``path`` per sample (added as graph outputs; graph optimisation off)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    with tempfile.TemporaryDirectory(prefix=".rank-") as tmp:
        augmented = Path(tmp) / "augmented.onnx"
        onnx.save(model, str(augmented))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep the QDQ pairs
        session = ort.InferenceSession(str(augmented), options, providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    values: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for sample in samples:
        for name, value in zip(
            names, session.run(names, dict(zip(inputs, sample, strict=True))), strict=True
        ):
            values[name].append(np.asarray(value, np.float64).ravel())
    return values


def rank_qdq_nodes(
    float_onnx: Path,
    quant_onnx: Path,
    samples: Sequence[Sequence[np.ndarray]],
    candidates: dict[str, tuple[Sequence[str], Sequence[str]]],
) -> list[str]:
    """Keep-float patterns of the quantized nodes, the node that adds the most error first.

    Args:
        float_onnx (Path): the float file the QDQ file was quantized from (same tensor names).
        quant_onnx (Path): the QDQ file (``quantize_static``'s result).
        samples (Sequence[Sequence[np.ndarray]]): positional inputs to measure on.
        candidates (dict[str, tuple[Sequence[str], Sequence[str]]]): float node name → (patterns to try,
            names keep-float sees), as ``quantize._quantized_nodes`` gives them.

    Returns:
        list[str]: one pattern per ranked node that names it alone among the candidates.
    """
    import onnx

    model = onnx.load(str(quant_onnx), load_external_data=False)
    producer = {out: node for node in model.graph.node for out in node.output}
    constants = {t.name for t in model.graph.initializer}
    float_names = {
        o for n in onnx.load(str(float_onnx), load_external_data=False).graph.node for o in n.output
    }
    float_names |= {i.name for i in onnx.load(str(float_onnx), load_external_data=False).graph.input}
    io: dict[str, tuple[list[str], str]] = {}  # node → (activation inputs before QDQ, output)
    for node in model.graph.node:
        if (
            node.op_type not in COMPUTE_OPS
            or node.name not in candidates
            or node.output[0] not in float_names
        ):
            continue
        pre = []
        for name in node.input:
            dq = producer.get(name)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear" and q.input[0] not in constants:
                pre.append(q.input[0])
        if pre and all(p in float_names for p in pre):
            io[node.name] = (pre, node.output[0])
    names = sorted({t for pre, out in io.values() for t in (*pre, out)})
    if not names or not samples:
        return []
    want, got = _fetch(float_onnx, names, samples), _fetch(quant_onnx, names, samples)
    error = {t: _relative_error(want[t], got[t]) for t in names}
    added = {node: error[out] - max(error[p] for p in pre) for node, (pre, out) in io.items()}
    patterns = []
    for node in sorted(added, key=lambda n: -added[n]):
        tries, _ = candidates[node]
        others = [n for o, (_, seen) in candidates.items() if o != node for n in seen]
        patterns.append(next((t for t in tries if t and keep_float_pattern(others, [t]) is None), tries[-1]))
    return list(dict.fromkeys(patterns))
