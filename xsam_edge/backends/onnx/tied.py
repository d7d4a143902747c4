"""A tied embedding table stored once in a weight-only ONNX file: the lookup reads the head's packed blocks.

A tied LLM (``tie_word_embeddings``) uses one table twice: ``Gather`` for the input embedding and, transposed,
``MatMul`` for the output head. The exporter writes the head as ``MatMul(x, Transpose(table))`` (or as a
second, transposed copy of the table), which ORT's ``MatMulNBitsQuantizer`` cannot take (its weight is not
a constant) or quantizes into a second table beside the lookup's. Either way the file held the float table
(an INT4 Qwen2.5-0.5B came out larger than its INT8 twin).

Here the head gets a constant transposed table before quantization, so ``MatMulNBits`` packs it, and after
quantization the lookup becomes ``GatherBlockQuantized`` over the same ``[N, blocks, blob]`` bytes
(``quantize_axis=2``, one block per row of the last axis): the table is stored once, at the head's precision.
The head's scales feed the lookup through a ``Reshape`` (ORT folds it at load: the scales, 1/16 of the
packed table, are the only thing held twice in memory, and only there).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import numpy as np

__all__ = ["TiedTable", "set_nodes", "share_tied_tables", "untie_heads"]


@dataclasses.dataclass(frozen=True)
class TiedTable:
    """One table used by a lookup and, transposed, by a head (``scratch``: a head added to pack the table)."""

    table: str  # the lookup's initializer, [vocab, width]
    lookup: str  # the Gather node
    head: str  # the MatMul node, whose weight is now the constant ``table``ᵀ
    head_output: str  # the head's output name (quantized nodes keep it)
    scratch: bool = False


SCRATCH_INPUT = "__rows_of_a_lookup_table__"  # what a scratch head reads: nothing (it is removed unrun)


def untie_heads(
    model: Any, excluded: set[str], blocks: tuple[int, ...], lone: bool = True
) -> list[TiedTable]:
    """Give each tied head a constant transposed weight; the pairs to share after quantization.

    A pair is a ``Gather`` (axis 0) on a 2-D float table and a ``MatMul`` whose weight is ``Transpose`` of
    that table, or a constant equal to it transposed. With ``lone``, a lookup whose table nothing else reads
    gets a scratch head, so that its table is packed exactly as a head over it would be: the ``embed``
    graph's table then has the bytes of the LLM graph's tied head, and the bundle's pack stores the two
    once. Pairs with either node in ``excluded``, and tables whose width the quantizer's ``blocks`` do not
    divide, are left alone.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    constants = {t.name: t for t in graph.initializer}
    lookups: dict[str, str] = {}
    for node in graph.node:
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 0)
        table = constants.get(node.input[0]) if node.op_type == "Gather" else None
        if (
            table is not None
            and axis == 0
            and len(table.dims) == 2
            and table.data_type == TensorProto.FLOAT
            and node.name not in excluded
            and all(table.dims[1] % b == 0 for b in blocks)
        ):
            lookups[table.name] = node.name
    if not lookups:
        return []
    transposes = {n.output[0]: n for n in graph.node if n.op_type == "Transpose" and n.input[0] in lookups}
    arrays: dict[str, np.ndarray] = {}

    def array(name: str) -> np.ndarray:
        if name not in arrays:
            arrays[name] = numpy_helper.to_array(constants[name])
        return arrays[name]

    def transposed(table: str) -> str:
        name = f"{table}_head"
        if name not in constants:
            constants[name] = numpy_helper.from_array(array(table).T.copy(), name)
            graph.initializer.append(constants[name])
        return name

    pairs: dict[str, TiedTable] = {}
    for node in graph.node:
        if node.op_type != "MatMul" or node.name in excluded:
            continue
        weight = node.input[1]
        transpose = transposes.get(weight)
        if transpose is not None and _perm(transpose) in (None, [1, 0]):
            table = transpose.input[0]
            node.input[1] = transposed(table)
        elif weight in constants and len(constants[weight].dims) == 2:
            table = _transposed_twin(constants[weight], lookups, constants, array)
            if table is None:
                continue
        else:
            continue
        if table not in pairs:
            pairs[table] = TiedTable(table, lookups[table], node.name, node.output[0])
    readers = Counter(i for n in graph.node for i in n.input)  # a table a float head reads stays float
    for table in [t for t in lookups if t not in pairs and readers[t] == 1] if lone else []:
        name = f"{lookups[table]}_scratch_head"
        head = helper.make_node("MatMul", [SCRATCH_INPUT, transposed(table)], [f"{table}_rows"], name=name)
        graph.node.append(head)
        pairs[table] = TiedTable(table, lookups[table], head.name, head.output[0], scratch=True)
    used = {i for n in graph.node for i in n.input}
    set_nodes(graph, [n for n in graph.node if n.op_type != "Transpose" or n.output[0] in used])
    return list(pairs.values())


def share_tied_tables(model: Any, pairs: list[TiedTable]) -> list[str]:
    """Point each pair's lookup at its quantized head's blocks; a note per pair shared.

    A pair whose head was not packed by ``MatMulNBits`` (kept float by the quantizer) keeps its float lookup.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    constants = {t.name: t for t in graph.initializer}
    by_output = {n.output[0]: n for n in graph.node}
    by_name = {n.name: n for n in graph.node}
    notes, replaced = [], {}
    for pair in pairs:
        head = by_output.get(pair.head_output)
        if head is None or head.op_type != "MatMulNBits":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in head.attribute}
        bits, block, width, vocab = attrs["bits"], attrs["block_size"], attrs["K"], attrs["N"]
        blocks = -(-width // block)
        packed, scales = head.input[1], head.input[2]
        lookup = by_name[pair.lookup]
        ids, out, tag = lookup.input[1], lookup.output[0], f"{pair.lookup}_tied"
        inputs = [packed, ids, f"{tag}_scales"]
        nodes = [
            helper.make_node("Reshape", [scales, f"{tag}_scales_shape"], [inputs[2]], name=f"{tag}_scales")
        ]
        extra = [numpy_helper.from_array(np.array([vocab, blocks, 1], np.int64), f"{tag}_scales_shape")]
        zero_points = head.input[3] if len(head.input) > 3 and head.input[3] else None
        # the head's zero points are packed along blocks, the lookup's along a block (of size 1)
        if zero_points is not None:
            zp = numpy_helper.to_array(constants[zero_points]).reshape(vocab, -1)
            if bits == 4:
                zp = np.stack([zp & 0x0F, zp >> 4], axis=-1).reshape(vocab, -1)[:, :blocks]
            extra.append(numpy_helper.from_array(zp.reshape(vocab, blocks, 1).astype(np.uint8), f"{tag}_zp"))
            inputs.append(f"{tag}_zp")
        extra.append(numpy_helper.from_array(np.array([width], np.int64), f"{tag}_width"))
        nodes += [
            helper.make_node(
                "GatherBlockQuantized",
                inputs,
                [f"{tag}_blocks"],
                name=f"{pair.lookup}_Q{bits}",
                domain="com.microsoft",
                bits=bits,
                block_size=block,
                gather_axis=0,
                quantize_axis=2,
            ),
            helper.make_node("Shape", [ids], [f"{tag}_ids_shape"], name=f"{tag}_ids_shape"),
            helper.make_node("Concat", [f"{tag}_ids_shape", f"{tag}_width"], [f"{tag}_shape"], axis=0),
            helper.make_node("Reshape", [f"{tag}_blocks", f"{tag}_shape"], [out], name=f"{tag}_rows"),
        ]
        replaced[pair.lookup] = nodes
        graph.initializer.extend(extra)
        if pair.scratch:
            replaced[head.name] = []
            notes.append(
                f"lookup {pair.lookup}: INT{bits} blocks laid out as a head's (GatherBlockQuantized): a tied "
                "head elsewhere in the bundle holds the same bytes"
            )
        else:
            notes.append(
                f"tied table {pair.table!r} stored once: lookup {pair.lookup} reads head {pair.head}'s "
                f"INT{bits} blocks (GatherBlockQuantized)"
            )
    scratch = {p.head_output for p in pairs if p.scratch}
    left = [n.name for n in graph.node if n.output[0] in scratch and n.name not in replaced]
    if replaced or left:  # a scratch head the quantizer left float goes too: its lookup stays a float Gather
        set_nodes(graph, [m for n in graph.node if n.name not in left for m in replaced.get(n.name, [n])])
    return notes


def set_nodes(graph: Any, nodes: list[Any]) -> None:
    """Replace the graph's nodes, and drop the initializers no node reads any longer."""
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _perm(node: Any) -> list[int] | None:
    from onnx import helper

    return next((list(helper.get_attribute_value(a)) for a in node.attribute if a.name == "perm"), None)


def _transposed_twin(
    weight: Any, lookups: dict[str, str], constants: dict[str, Any], array: Any
) -> str | None:
    """The lookup table whose transpose ``weight`` equals (an exporter that folded the transpose), or None."""
    for table in lookups:
        if list(constants[table].dims) == list(reversed(weight.dims)) and constants[table].data_type == (
            weight.data_type
        ):
            if np.array_equal(array(table).T, array(weight.name)):
                return table
    return None
