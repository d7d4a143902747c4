"""ONNX QDQ graphs for the one-run layer ranking (``quantization/ranking.py``): which tensors to read, how.

Every quantized compute node reads its activation through ``QuantizeLinear → DequantizeLinear``; the tensor
before the pair and the node's output keep their float names, so both files are read by the same names,
through copies of the graphs that list those tensors as outputs (graph optimisation off, so ORT keeps the
QDQ pairs as written).
"""

from __future__ import annotations

import tempfile
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xsam_edge.quantization.ranking import Reader, rank_by_added_error

__all__ = ["rank_qdq_nodes"]

COMPUTE_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose")


def _reader(path: Path) -> Reader:
    """Reads named tensors of ``path``: one session per group of names (only those become outputs)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    sessions: dict[tuple[Hashable, ...], Any] = {}

    def session(names: tuple[Hashable, ...]) -> Any:
        if names not in sessions:
            sessions.clear()  # one group at a time: its activations are what memory holds
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            del copy.graph.output[:]
            copy.graph.output.extend(onnx.helper.make_empty_tensor_value_info(str(n)) for n in names)
            with tempfile.TemporaryDirectory(prefix=".rank-") as tmp:
                augmented = Path(tmp) / "augmented.onnx"
                onnx.save(copy, str(augmented))
                options = ort.SessionOptions()
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
                sessions[names] = ort.InferenceSession(
                    str(augmented), options, providers=["CPUExecutionProvider"]
                )
        return sessions[names]

    def read(names: list[Hashable], sample: Sequence[np.ndarray]) -> list[np.ndarray]:
        s = session(tuple(names))
        feed = dict(zip([i.name for i in s.get_inputs()], sample, strict=True))
        return s.run([str(n) for n in names], feed)

    return read


def rank_qdq_nodes(
    float_onnx: Path,
    quant_onnx: Path,
    samples: Sequence[Sequence[np.ndarray]],
    candidates: dict[str, tuple[Sequence[str], Sequence[str]]],
) -> list[str]:
    """Keep-float patterns of the quantized nodes of ``quant_onnx``, the node that adds the most error first.

    Args:
        float_onnx (Path): the float file the QDQ file was quantized from (same tensor names).
        quant_onnx (Path): the QDQ file (``quantize_static``'s result).
        samples (Sequence[Sequence[np.ndarray]]): positional inputs to measure on.
        candidates (dict[str, tuple[Sequence[str], Sequence[str]]]): float node name → (patterns to try,
            names keep-float sees), as ``quantize._quantized_nodes`` gives them.
    """
    import onnx

    model = onnx.load(str(quant_onnx), load_external_data=False)
    producer = {out: node for node in model.graph.node for out in node.output}
    constants = {t.name for t in model.graph.initializer}
    float_graph = onnx.load(str(float_onnx), load_external_data=False).graph
    known = {o for n in float_graph.node for o in n.output} | {i.name for i in float_graph.input}
    io: dict[str, tuple[list[Hashable], Hashable]] = {}
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OPS or node.name not in candidates or node.output[0] not in known:
            continue
        pre: list[Hashable] = []
        for name in node.input:
            dq = producer.get(name)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear" and q.input[0] not in constants:
                pre.append(q.input[0])
        if pre and all(p in known for p in pre):
            io[node.name] = (pre, node.output[0])
    return rank_by_added_error(io, _reader(float_onnx), _reader(quant_onnx), samples, candidates)
