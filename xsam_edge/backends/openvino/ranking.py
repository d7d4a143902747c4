"""Rank the layers of an NNCF-quantized IR by the error each adds, from one run of the float and INT8 IRs.

The OpenVINO twin of ``backends/onnx/ranking.py`` (the per-layer pass would run NNCF once per layer: hours on
a 119-conv segmenter). NNCF keeps op friendly names, so the float IR and the quantized IR share them: every
weighted op whose activation input passes a ``FakeQuantize`` gets its input (before the FakeQuantize) and
its output read from both IRs, and its score is the relative error of its output against float minus the
largest relative error of its inputs: what quantizing this op added.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xsam_edge.quantization.common import keep_float_pattern

__all__ = ["rank_fake_quantized_ops"]


def _outputs(
    xml: Path, ports: list[tuple[str, int]], samples: Sequence[Sequence[np.ndarray]]
) -> list[list[Any]]:
    """Per sample, the named ops' output values (``(friendly name, port)``), from an f32-compiled IR."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(xml))
    ops = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    outputs = [ops[name].output(port) for name, port in ports]
    model.add_outputs(outputs)
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    names = [i.get_any_name() for i in compiled.inputs]
    extra = compiled.outputs[-len(outputs) :]
    values = []
    for sample in samples:
        request.reset_state()
        result = request.infer(dict(zip(names, sample, strict=True)))
        values.append([np.asarray(result[port], np.float64).ravel() for port in extra])
    return values


def _relative_error(reference: list[np.ndarray], test: list[np.ndarray]) -> float:
    ref, got = np.concatenate(reference), np.concatenate(test)
    return float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-12))


def rank_fake_quantized_ops(
    float_xml: Path,
    quant_xml: Path,
    samples: Sequence[Sequence[np.ndarray]],
    candidates: dict[str, tuple[Sequence[str], Sequence[str]]],
) -> list[str]:
    """Keep-float patterns of the quantized ops, the op that adds the most error first.

    Args:
        float_xml (Path): the float IR the quantized one came from.
        quant_xml (Path): NNCF's result (FakeQuantize on activations).
        samples (Sequence[Sequence[np.ndarray]]): positional inputs to measure on.
        candidates (dict[str, tuple[Sequence[str], Sequence[str]]]): friendly name → (patterns to try, names
            keep-float sees), as ``quantize._integer_ops`` gives them.

    Returns:
        list[str]: one pattern per ranked op that names it alone among the candidates.
    """
    import openvino as ov

    core = ov.Core()
    float_ops = {op.get_friendly_name() for op in core.read_model(str(float_xml)).get_ordered_ops()}
    io: dict[str, tuple[list[tuple[str, int]], tuple[str, int]]] = {}
    for op in core.read_model(str(quant_xml)).get_ordered_ops():
        name = op.get_friendly_name()
        if name not in candidates or name not in float_ops:
            continue
        pre = []
        for value in op.input_values():
            fq = value.get_node()
            if fq.get_type_name() == "FakeQuantize":
                source = fq.input_value(0)
                pre.append((source.get_node().get_friendly_name(), source.get_index()))
        if pre and all(p in float_ops for p, _ in pre):
            io[name] = (pre, (name, 0))
    ports = sorted({p for pre, out in io.values() for p in (*pre, out)})
    if not ports or not samples:
        return []
    want, got = _outputs(float_xml, ports, samples), _outputs(quant_xml, ports, samples)
    error = {port: _relative_error([s[i] for s in want], [s[i] for s in got]) for i, port in enumerate(ports)}
    added = {name: error[out] - max(error[p] for p in pre) for name, (pre, out) in io.items()}
    patterns = []
    for name in sorted(added, key=lambda n: -added[n]):
        tries, _ = candidates[name]
        others = [n for o, (_, seen) in candidates.items() if o != name for n in seen]
        patterns.append(next((t for t in tries if t and keep_float_pattern(others, [t]) is None), tries[-1]))
    return list(dict.fromkeys(patterns))
