"""ONNX weight-only schemes (``w8``, ``w4``, mixed INT4/INT8) with ORT's ``MatMulNBitsQuantizer``.

Weight-only schemes first rewrite ``Gemm`` nodes with a constant weight as ``MatMul`` (+ ``Add``): the dynamo
exporter emits Gemm for a Linear on 2-D input (the LLM head on the last token), and MatMulNBits takes only
MatMul. ``w4`` packs the output layers (``output_matmuls``: an LLM's head, and a table tied to it) at 8 bits
unless ``head_bits`` is 4. A mixed ``w4`` (``ratio < 1``) also ranks the other MatMuls by their relative INT4
rounding error and packs the worst ``1 - ratio`` of their weights at 8 bits first, then the rest at 4 bits.

Importing ``matmul_nbits_quantizer`` calls ``logging.basicConfig(level=INFO)`` inside ORT, so later ORT
quantization calls log at INFO when the application configured no logging of its own.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from xsam_edge.backends.onnx.tied import set_nodes, share_tied_tables, untie_heads
from xsam_edge.quantization.common import add_note
from xsam_edge.quantization.ranking import int4_weight_error, int8_share
from xsam_edge.quantization.report import GraphQuantReport
from xsam_edge.quantization.schemes import Int4WeightOnly, Scheme

__all__ = ["W8_BLOCK", "output_matmuls", "quiet", "save_model", "weight_only"]

W8_BLOCK = 128
"""``w8`` packs INT8 weights in blocks of 128 along K (MatMulNBits has no per-channel mode; 3 % overhead)."""


def weight_only(
    model: Any,
    dst: Path,
    scheme: Scheme,
    excluded: dict[str, str],
    external: bool,
    report: GraphQuantReport,
) -> None:
    """MatMulNBits (and GatherBlockQuantized for w4) on the raw model, after the Gemm → MatMul rewrite.

    A tied table (lookup and transposed head) is packed once, with the head, and a lookup table alone is
    packed as a head over it would be (``tied.py``): at 4 and 8 bits alike.
    """
    if _gemm_to_matmul(model):
        add_note(report, "Gemm nodes with constant weights were rewritten as MatMul (+ Add) for MatMulNBits")
    w4 = isinstance(scheme, Int4WeightOnly)
    mixed = w4 and scheme.ratio < 1
    head8 = w4 and scheme.head_bits == 8
    outputs = output_matmuls(model) if mixed or head8 else []
    block8 = _int8_block(model, scheme.group_size, outputs) if mixed or head8 else W8_BLOCK
    blocks = (scheme.group_size, block8) if mixed or head8 else (scheme.group_size,) if w4 else (W8_BLOCK,)
    tied = untie_heads(model, set(excluded), blocks)
    skipped = [*excluded, *(t.lookup for t in tied)]  # a tied lookup reads its head's blocks afterwards
    scratch = {t.head: "a lookup table's scratch head" for t in tied if t.scratch}
    heads = {*outputs, *(t.head for t in tied)} - set(excluded) if head8 else set()
    ranked = _int8_share(model, scheme, {**excluded, **scratch, **dict.fromkeys(heads)}) if mixed else set()
    int8 = ranked | heads
    if int8:  # the output layers and the most sensitive MatMuls at INT8 first, the rest at INT4 after
        others = [
            n.name for n in model.graph.node if n.op_type in ("MatMul", "Gather") and n.name not in int8
        ]
        model = _matmul_nbits(model, 8, block8, True, [*skipped, *others], ("MatMul",))
    if ranked:
        add_note(
            report, f"{len(ranked)} MatMul(s) kept at INT8 (ratio {scheme.ratio}): largest INT4 weight error"
        )
    if heads:
        add_note(report, f"output layer(s) at INT8 (head_bits 8): {', '.join(sorted(heads))}")
    if w4:
        model = _matmul_nbits(model, 4, scheme.group_size, scheme.symmetric, skipped, ("MatMul", "Gather"))
    else:
        model = _matmul_nbits(model, 8, W8_BLOCK, True, skipped, ("MatMul",))
    for note in share_tied_tables(model, tied):
        add_note(report, note)
    save_model(model, dst, external)


def _matmul_nbits(
    model: Any, bits: int, block: int, symmetric: bool, excluded: list[str], ops: tuple[str, ...]
) -> Any:
    """One ``MatMulNBitsQuantizer`` pass; the quantized ``ModelProto``."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    with quiet("onnxruntime.quantization.matmul_nbits_quantizer"):
        quantizer = MatMulNBitsQuantizer(
            model,
            bits=bits,
            block_size=block,
            is_symmetric=symmetric,
            nodes_to_exclude=excluded,
            op_types_to_quantize=ops,
        )
        quantizer.process()
    return quantizer.model.model


def _int8_block(model: Any, group_size: int, outputs: list[str]) -> int:
    """The block of ``w4``'s INT8 pass: ``W8_BLOCK``, or the INT4 group where a table is narrower.

    A tied lookup reads its head's INT8 blocks, so they must tile its rows exactly: a lookup table whose
    width is no multiple of ``W8_BLOCK`` (the embedded teacher's 64) takes the group size instead, and so
    does an output layer (``outputs``, from ``output_matmuls``) whose input width is no multiple of it.
    """
    constants = {t.name: t for t in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    tables = [n.input[0] for n in nodes.values() if n.op_type == "Gather"]
    weights = [nodes[name].input[1] for name in outputs]  # (K, N): a tied head's K is the table's width
    widths = {constants[t].dims[1] for t in tables if t in constants and len(constants[t].dims) == 2}
    widths |= {constants[w].dims[0] for w in weights if len(constants[w].dims) == 2}
    return W8_BLOCK if all(w % W8_BLOCK == 0 for w in widths) else group_size


_OUTPUT_PATH = ("Add", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Cast", "Identity")


def output_matmuls(model: Any) -> list[str]:
    """The MatMuls with a constant weight whose results are graph outputs (through bias adds and reshapes).

    These are ``w4``'s output layers (an LLM's head, a projector's last layer), kept at ``head_bits``.
    """
    constants = {t.name for t in model.graph.initializer}
    by_output = {o: n for n in model.graph.node for o in n.output}
    found = []
    for output in model.graph.output:
        node = by_output.get(output.name)
        for _ in range(8):
            if node is None:
                break
            if node.op_type == "MatMul":
                found += [node.name] if len(node.input) > 1 and node.input[1] in constants else []
                break
            if node.op_type not in _OUTPUT_PATH:
                break
            inputs = [i for i in node.input[:2] if i in by_output and by_output[i].op_type != "Constant"]
            if node.op_type != "Add":  # the data is the first input; the rest are shapes and axes
                inputs = inputs[:1] if node.input[0] in inputs else []
            node = by_output[inputs[0]] if len(inputs) == 1 else None  # a bias add: the non-constant side
    return list(dict.fromkeys(found))


def _int8_share(model: Any, scheme: Int4WeightOnly, excluded: dict[str, str]) -> set[str]:
    """The MatMuls a mixed ``w4`` keeps at INT8: largest relative INT4 error first, ``1 - ratio`` of weights.

    The data-free ranking NNCF also offers (its weight quantization error metric): each 2-D constant weight
    is rounded to INT4 in groups of ``group_size`` along its input axis, and its relative error measured.
    """
    from onnx import numpy_helper

    constants = {t.name: t for t in model.graph.initializer}
    errors, sizes = {}, {}
    for node in model.graph.node:
        weight = constants.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) > 1 else None
        if weight is None or len(weight.dims) != 2 or node.name in excluded:
            continue
        w = numpy_helper.to_array(weight)  # (K, N): groups run along K
        error = int4_weight_error(w, scheme.group_size)
        if error is not None:
            errors[node.name], sizes[node.name] = error, w.size
    return int8_share(errors, sizes, scheme.ratio)


def _gemm_to_matmul(model: Any) -> int:
    """Rewrite ``Gemm(A, W[, C])`` with a constant W (alpha 1, no transA) as ``MatMul(A, Wᵀ?)`` [+ ``Add``].

    Returns:
        int: nodes rewritten.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    constants = {t.name: t for t in graph.initializer}
    nodes, rewritten, transposed = [], 0, {}
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        weight = node.input[1] if node.op_type == "Gemm" and len(node.input) > 1 else None
        if (
            weight not in constants
            or attrs.get("transA", 0)
            or attrs.get("alpha", 1.0) != 1.0
            or (len(node.input) > 2 and node.input[2] and attrs.get("beta", 1.0) != 1.0)
        ):
            nodes.append(node)
            continue
        if attrs.get("transB", 0):
            if weight not in transposed:
                array = numpy_helper.to_array(constants[weight]).T.copy()
                transposed[weight] = numpy_helper.from_array(array, f"{weight}_transposed")
                graph.initializer.append(transposed[weight])
            weight = transposed[weight].name
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        out = f"{node.output[0]}_matmul" if bias else node.output[0]
        matmul = helper.make_node("MatMul", [node.input[0], weight], [out], name=node.name)
        matmul.metadata_props.extend(node.metadata_props)
        nodes.append(matmul)
        if bias:
            add = helper.make_node("Add", [out, bias], [node.output[0]], name=f"{node.name}_bias")
            add.metadata_props.extend(node.metadata_props)
            nodes.append(add)
        rewritten += 1
    if rewritten:
        set_nodes(graph, nodes)
    return rewritten


@contextlib.contextmanager
def quiet(logger: str) -> Iterator[None]:
    """Hold one chatty ORT logger at WARNING for the duration (it logs every node at INFO)."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def save_model(model: Any, path: Path, external: bool) -> None:
    """``onnx.save`` with the weights in ``<name>.data`` beside it when the float file had external data."""
    import onnx

    if external:
        data = {
            "save_as_external_data": True,
            "all_tensors_to_one_file": True,
            "location": f"{path.name}.data",
        }
        onnx.save_model(model, str(path), **data)
    else:
        onnx.save_model(model, str(path))
