"""NNCF-quantized IRs for the one-run layer ranking (``quantization/ranking.py``): which tensors, how to read.

NNCF keeps op friendly names, so the float IR and the quantized IR share them: every candidate op whose
activation input passes a ``FakeQuantize`` (a weighted op, or a weightless attention whose Q and K NNCF
quantizes) has its input (the FakeQuantize's source) and its output read from both IRs, as
``(friendly name, port)`` outputs added to a copy of the model compiled at f32.

NNCF puts a quantizer as far up as the value stays the same under quantization: before a ``Concat``, a
``MaxPool``, an ``Interpolate`` or a reshape, not at the convolution that reads their result. So an op's
quantized input is found by walking up through those ops to every ``FakeQuantize`` that feeds it
(``_PASS_THROUGH``). Ignoring the op in NNCF removes those quantizers where nothing else needs them, so the
ranking reaches the quantizers in front of non-weight ops through the weighted op they feed. On a
U²-Net-style segmenter (ISNet) 83 of its 114 convolutions read their input that way and were not ranked.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xsam_edge.quantization.ranking import Reader, rank_by_added_error

__all__ = ["quantized_sources", "rank_fake_quantized_ops"]

_SMOOTHING = ("Multiply", "Convert")  # what NNCF's SmoothQuant inserts before an activation FakeQuantize
# ops NNCF moves an activation quantizer above (the value is the same quantized before or after them): the
# inputs whose quantizers count, None for all of them
_PASS_THROUGH: dict[str, tuple[int, ...] | None] = {
    "Concat": None,
    "MaxPool": (0,),
    "Interpolate": (0,),
    "Reshape": (0,),
    "Transpose": (0,),
    "Squeeze": (0,),
    "Unsqueeze": (0,),
    "Split": (0,),
    "VariadicSplit": (0,),
    "StridedSlice": (0,),
    "Slice": (0,),
    "DepthToSpace": (0,),
    "SpaceToDepth": (0,),
    "ShuffleChannels": (0,),
    "Pad": (0,),
}
_DEPTH = 16


def _reader(xml: Path) -> Reader:
    """Reads ``(friendly name, port)`` tensors of ``xml``: one compiled copy per group of names."""
    import openvino as ov

    core = ov.Core()
    compiled: dict[tuple[Hashable, ...], Any] = {}

    def model_for(names: tuple[Hashable, ...]) -> Any:
        if names not in compiled:
            compiled.clear()
            model = core.read_model(str(xml))
            ops = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
            model.add_outputs([ops[name].output(port) for name, port in names])
            compiled[names] = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return compiled[names]

    def read(names: list[Hashable], sample: Sequence[np.ndarray]) -> list[np.ndarray]:
        model = model_for(tuple(names))
        request = model.create_infer_request()
        result = request.infer(dict(zip([i.get_any_name() for i in model.inputs], sample, strict=True)))
        return [np.asarray(result[port]) for port in model.outputs[-len(names) :]]

    return read


def quantized_sources(value: Any, known: set[str], depth: int = 0) -> list[tuple[str, int]]:
    """The float tensors quantized on their way to ``value``, as ``(friendly name, port)``.

    Each ``FakeQuantize``'s source, found through ``_PASS_THROUGH`` ops; empty for a weight or a float input.
    """
    node = value.get_node()
    kind = node.get_type_name()
    if kind == "FakeQuantize":
        source = node.input_value(0)
        # SmoothQuant puts a scaling Multiply before the FakeQuantize that the float IR lacks: read the
        # tensor it scales (the error before smoothing, by the same names on both sides)
        for _ in range(4):
            upstream = source.get_node()
            if upstream.get_friendly_name() in known or upstream.get_type_name() not in _SMOOTHING:
                break
            source = upstream.input_value(0)
        return [(source.get_node().get_friendly_name(), source.get_index())]
    if kind not in _PASS_THROUGH or depth >= _DEPTH:
        return []
    ports = _PASS_THROUGH[kind]
    ports = range(node.get_input_size()) if ports is None else ports
    found = [s for i in ports for s in quantized_sources(node.input_value(i), known, depth + 1)]
    return list(dict.fromkeys(found))


def rank_fake_quantized_ops(
    float_xml: Path,
    quant_xml: Path,
    samples: Sequence[Sequence[np.ndarray]],
    candidates: dict[str, tuple[Sequence[str], Sequence[str]]],
) -> list[str]:
    """Keep-float patterns of the quantized ops of ``quant_xml``, the op that adds the most error first.

    Args:
        float_xml (Path): the float IR the quantized one came from.
        quant_xml (Path): NNCF's result (FakeQuantize on activations).
        samples (Sequence[Sequence[np.ndarray]]): positional inputs to measure on.
        candidates (dict[str, tuple[Sequence[str], Sequence[str]]]): friendly name → (patterns to try, names
            keep-float sees), as ``quantize._integer_ops`` gives them.
    """
    import openvino as ov

    core = ov.Core()
    known = {op.get_friendly_name() for op in core.read_model(str(float_xml)).get_ordered_ops()}
    io: dict[str, tuple[list[Hashable], Hashable]] = {}
    for op in core.read_model(str(quant_xml)).get_ordered_ops():
        name = op.get_friendly_name()
        if name not in candidates or name not in known:
            continue
        pre = [source for value in op.input_values() for source in quantized_sources(value, known)]
        if pre and all(p in known for p, _ in pre):
            io[name] = (pre, (name, 0))
    return rank_by_added_error(io, _reader(float_xml), _reader(quant_xml), samples, candidates)
