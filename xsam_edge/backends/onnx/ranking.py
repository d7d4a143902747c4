"""Quantized ONNX graphs for the one-run layer ranking (``quantization/ranking.py``): which tensors, how.

ONNX Runtime's quantizers keep the float tensor names at a quantized node's edges: a QDQ node reads its
activation through ``QuantizeLinear → DequantizeLinear`` from the tensor of the float name, and
``quantize_dynamic``'s ``DynamicQuantizeLinear → MatMulInteger → Mul`` chain reads the float input and
writes the float output name. So each quantized node's activation inputs and output are read by their
float names in both files, through copies of the graphs that list those tensors as outputs (graph
optimisation off, so ORT keeps the nodes as written).
"""

from __future__ import annotations

import tempfile
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xsam_edge.quantization.ranking import Reader, rank_by_added_error

__all__ = ["rank_quantized_nodes"]

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


def rank_quantized_nodes(
    float_onnx: Path,
    quant_onnx: Path,
    samples: Sequence[Sequence[np.ndarray]],
    candidates: dict[str, tuple[Sequence[str], Sequence[str]]],
) -> list[str]:
    """Keep-float patterns of the quantized nodes of ``quant_onnx``, the node that adds the most error first.

    Args:
        float_onnx (Path): the float file ``quant_onnx`` was quantized from (same tensor names).
        quant_onnx (Path): ``quantize_static``'s QDQ file or ``quantize_dynamic``'s.
        samples (Sequence[Sequence[np.ndarray]]): positional inputs to measure on.
        candidates (dict[str, tuple[Sequence[str], Sequence[str]]]): float node name → (patterns to try,
            names keep-float sees), as ``quantize._quantized_nodes`` gives them.
    """
    import onnx

    float_graph = onnx.load(str(float_onnx), load_external_data=False).graph
    quant_graph = onnx.load(str(quant_onnx), load_external_data=False).graph
    constants = {t.name for t in float_graph.initializer}
    constants |= {o for n in float_graph.node if n.op_type == "Constant" for o in n.output}
    in_quant = {t for n in quant_graph.node for t in (*n.input, *n.output)}
    io: dict[str, tuple[list[Hashable], Hashable]] = {}
    for node in float_graph.node:
        if node.op_type not in COMPUTE_OPS or node.name not in candidates:
            continue
        pre: list[Hashable] = [t for t in node.input if t and t not in constants]
        if pre and all(t in in_quant for t in (*pre, node.output[0])):
            io[node.name] = (pre, node.output[0])
    return rank_by_added_error(io, _reader(float_onnx), _reader(quant_onnx), samples, candidates)
