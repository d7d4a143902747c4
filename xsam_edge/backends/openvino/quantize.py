"""OpenVINO handler: quantize a graph's float32 IR (``.xml`` + ``.bin``) with NNCF 3.4.

=============  ==========================================================================================
scheme         what the IR becomes (TOOLCHAIN.md §6d, §8 #16)
=============  ==========================================================================================
``fp32``       the float IR, copied
``fp16``       ``ov.save_model(compress_to_fp16=True)``: fp16 weights (the CPU plugin decompresses them to
               its inference precision, so on CPU this is storage only)
``w8a8``       ``nncf.quantize(model_type=TRANSFORMER, subset_size=len(samples))``: INT8 weights and
               FakeQuantize on activations; ``minmax`` → NNCF's MINMAX range estimator, ``percentile`` →
               MEAN_QUANTILE (NNCF has no histogram-percentile estimator); ``per_channel`` → weight params;
               ``smooth_quant`` → SmoothQuant alphas (off: −1); ``symmetric_activations`` → preset
               PERFORMANCE (else MIXED); ``op_types`` → the other weighted op types ignored
``w8``         ``nncf.compress_weights(model.clone(), INT8_ASYM)`` (it mutates its input); the CPU plugin's
               default still quantizes the activations of such layers at run time (groups of 32)
``w8a8-dyn``   ``compress_weights(INT8_SYM)`` + ``runtime_options.DYNAMIC_QUANTIZATION_GROUP_SIZE`` in the
               IR's rt_info (``DYNAMIC_GROUP``): INT8 weights, activations quantized at run time per group of
               input channels of each token, so an outlier channel costs only its group (no calibration)
``w4``         ``compress_weights(INT4_SYM | INT4_ASYM, group_size, ratio)`` (NNCF ranks the layers and keeps
               ``1 - ratio`` of the weights INT8); ``data_aware`` adds the
               calibration dataset with ``scale_estimation=True, awq=True`` (AWQ applies where NNCF finds its
               MatMul patterns); with ``head_bits`` 8, NNCF keeps embeddings and the last layer at INT8,
               and every output layer (``output_layers``: the LLM's head, not only the last MatMul in
               order) is compressed apart at INT8, so a tied head's bytes equal the ``embed`` table's
               (``pack.py``); ``head_bits`` 4 is NNCF's ``all_layers``: heads and lookups at INT4 too
=============  ==========================================================================================

The stateful LLM IR (``llm.xml``: ReadValue/Assign KV state, inputs ``inputs_embeds, cache_position``) takes
every scheme: NNCF resets the state before each calibration sample, and so does the PSNR check here, so a
sample is one chunk on an empty cache in both the float and the quantized IR.

Keep-float: the IR is converted from a ``torch.export`` program, so op friendly names are FX node names
(``linear_27/aten.linear.default/MatMul``) without the module path; the weight Constants keep it in their
tensor names (``model_…_self_attn_sampling_offsets_weight``). An op whose friendly name or weight tensor
names match a pattern goes into ``nncf.IgnoredScope(names=…, validate=False)``. fp16 compression has no
per-op exclusion reachable from Python, so it does not honour keep-float (the report says so).

``w8`` and ``w4`` leave convolution weights float: OpenVINO 2026.4.1's CPU plugin computes a weight-compressed
1x1 convolution of the pixel decoder wrong (``CONV_OPS`` says how it was measured).

Evidence: FakeQuantize / FakeConvert ops and Constant precisions (``const:i8`` …) in the IR, and the
precisions the CPU plugin runs after compiling (``exec:FullyConnected[u8]`` … from the runtime model's
``runtimePrecision``), compiled with ``INFERENCE_PRECISION_HINT=f32``.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from xsam_edge.backends.openvino.export import F32_CONFIG, compile_model, name_ports
from xsam_edge.backends.openvino.ranking import quantized_sources, rank_fake_quantized_ops
from xsam_edge.files import write_atomically
from xsam_edge.quantization.common import (
    add_note,
    check_request,
    held_out_note,
    io_names,
    keep_float_pattern,
    layer_names,
    model_file,
    threads,
)
from xsam_edge.quantization.fidelity import host_int8_saturates, measure_outputs
from xsam_edge.quantization.handler import FileQuantizer
from xsam_edge.quantization.report import GraphQuantReport, files_bytes
from xsam_edge.quantization.schemes import Int4WeightOnly, Int8Dynamic, Int8Static, Scheme

__all__ = ["OpenVinoQuantizer", "quantized_layers"]

BACKEND = "openvino"
# ops with a weight, and which input holds it
WEIGHTED_OPS = {
    "MatMul": 1,
    "Convolution": 1,
    "GroupConvolution": 1,
    "ConvolutionBackpropData": 1,
    "Gather": 0,
}
_OUTPUT_PATH = ("Add", "Convert", "Reshape", "Squeeze", "Transpose", "Unsqueeze")  # output layer → Result
# ops between a weight Constant and its consumer (decompression and layout), followed through input 0
_WEIGHT_PATH = (
    "Convert",
    "Reshape",
    "Transpose",
    "Unsqueeze",
    "Squeeze",
    "Multiply",
    "Subtract",
    "FakeQuantize",
)
_INTEGER = ("i8", "u8", "i4", "u4")
# weightless ops whose activation inputs ``w8a8`` quantizes (attention's Q and K, a MatMul of two
# activations): layers of their own for keep-float and the fallback
_ACTIVATION_OPS = ("MatMul", "ScaledDotProductAttention")
# weight-only schemes leave these float: OpenVINO 2026.4.1's CPU plugin computes a weight-compressed 1x1
# convolution wrong in the pixel decoder (it rewrites it as a FullyConnected; memory_0 PSNR 6 dB, the same
# weights dequantized in numpy give 53 dB), and convolutions hold few of the weights anyway
CONV_OPS = ("Convolution", "GroupConvolution", "ConvolutionBackpropData")
_CONV_WHY = "float weights: OpenVINO 2026.4.1's CPU plugin miscomputes weight-compressed convolutions"
# CPU plugin layer types whose runtime precision shows integer compute (not masks or index tensors)
_COMPUTE_LAYERS = ("FullyConnected", "Convolution", "Deconvolution", "MatMul")
DYNAMIC_GROUP = 32
"""Input channels per run-time activation scale for ``w8a8-dyn`` (the CPU plugin's own default group).

Written into the IR (``rt_info["runtime_options"]``), which the plugin reads when it compiles, so the bundle
asks for it whatever the runtime's config says."""


def _needs_data(scheme: Scheme) -> bool:
    return isinstance(scheme, Int8Static) or (isinstance(scheme, Int4WeightOnly) and scheme.data_aware)


def _quantize(
    graph: str,
    names: Sequence[str],
    fp32_files: dict[str, list[Path]],
    scheme: Scheme,
    keep_float: tuple[str, ...],
    calibration: dict[str, list[list[np.ndarray]]],
    holdout: dict[str, list[list[np.ndarray]]],
    out_dir: Path,
) -> tuple[dict[str, list[Path]], GraphQuantReport]:
    """Quantize each bundle graph of ``names`` into ``out_dir`` and merge what happened into one report."""
    check_request(BACKEND, graph, names, scheme, fp32_files, calibration, _needs_data(scheme))
    start = time.perf_counter()
    report = GraphQuantReport(graph, BACKEND, scheme.label())
    new_files: dict[str, list[Path]] = {}
    for name in names:
        xml = model_file(fp32_files[name], ".xml")
        if out_dir.resolve() == xml.parent.resolve():
            raise ValueError(f"{graph}: out_dir {out_dir} holds the float32 files; give another folder")
        files, _ = write_atomically(
            out_dir,
            lambda tmp, xml=xml, name=name: _quantize_ir(
                xml, fp32_files[name], tmp, scheme, keep_float, calibration.get(name, []), report
            ),
        )
        new_files[name] = files
        compiled = compile_model(files[0], F32_CONFIG, threads=threads())
        if scheme.name != "fp32":
            _runtime_evidence(compiled, report)
        if holdout.get(name):
            reference = compile_model(xml, F32_CONFIG, threads=threads())
            names_out, want = _run(reference, holdout[name])
            measured = measure_outputs(names_out, want, _run(compiled, holdout[name])[1])
            report.record(measured, held_out_note(holdout[name]))
            if isinstance(scheme, Int8Static) and host_int8_saturates():
                add_note(report, SATURATION_NOTE)
        else:
            add_note(report, f"no held-out samples for {name}: PSNR not measured")
    report.files = [str(f) for fs in new_files.values() for f in fs]
    report.bytes_fp32 = files_bytes([f for n in names for f in fp32_files[n]])
    report.bytes_quant = files_bytes([f for fs in new_files.values() for f in fs])
    report.seconds = time.perf_counter() - start
    return new_files, report


SATURATION_NOTE = (
    "measured on an x86 CPU without VNNI: OpenVINO's U8xS8 kernels saturate 16-bit pair sums here (NNCF's "
    "overflow_fix covers the first layer only); a VNNI or AMX CPU scores this file higher"
)


def _quantize_ir(
    xml: Path,
    src_files: list[Path],
    tmp: Path,
    scheme: Scheme,
    keep_float: tuple[str, ...],
    samples: list[list[np.ndarray]],
    report: GraphQuantReport,
) -> None:
    """Write the quantized ``tmp/<xml.name>`` + ``.bin`` and add the evidence to ``report``."""
    import openvino as ov

    if scheme.name == "fp32":
        for f in src_files:
            shutil.copy2(f, tmp / Path(f).name)
        return
    model = ov.Core().read_model(str(xml))
    ignored = _keep_float_ops(model, keep_float, activations=isinstance(scheme, Int8Static))
    if scheme.name == "fp16":
        if ignored:
            add_note(report, "fp16: keep_float not honoured (OpenVINO compresses every weight to fp16)")
        result = model
    elif isinstance(scheme, Int8Static):
        result = _static(model, scheme, ignored, samples)
    else:
        result = _compress(model, scheme, ignored, samples, report)
    ov.save_model(result, str(tmp / xml.name), compress_to_fp16=scheme.name == "fp16")
    _evidence(ov.Core().read_model(str(tmp / xml.name)), scheme, ignored, report)


def quantized_layers(fp32_files: dict[str, list[Path]], quant_files: dict[str, list[Path]]) -> list[str]:
    """The ops ``quantize_graph`` made integer, each as a keep-float pattern that names it alone.

    NNCF keeps op friendly names (``linear_3/aten.linear.default/MatMul``) but the integer weights lose their
    tensor names, so the readable name (the module path in the float weight's name, ``lm_blocks_0_o_proj``)
    comes from the float IR's op of the same name.
    """
    return layer_names(
        _integer_ops(model_file(fp32_files[name], ".xml"), model_file(files, ".xml"))
        for name, files in quant_files.items()
    )


def _integer_ops(float_xml: Path, quant_xml: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Op → (patterns to try, names keep-float sees) for every op ``quant_xml`` made integer.

    An op with integer weights, or a weightless MatMul or attention whose activations are quantized (found
    through the ops NNCF puts a quantizer above, ``ranking.quantized_sources``): NNCF leaves its inputs float
    when it is ignored.
    """
    import openvino as ov

    core = ov.Core()
    weights = {}
    known = set()
    for op in core.read_model(str(float_xml)).get_ordered_ops():
        known.add(op.get_friendly_name())
        weight = _weight(op)
        if weight is not None:
            weights[op.get_friendly_name()] = sorted(weight.output(0).get_names())
    ops = {}
    for op in core.read_model(str(quant_xml)).get_ordered_ops():
        friendly = op.get_friendly_name()
        weight = _weight(op)
        if weight is None:
            if op.get_type_name() in _ACTIVATION_OPS and friendly in known:
                if any(quantized_sources(value, known) for value in op.input_values()):
                    ops[friendly] = ([friendly], [friendly])
            continue
        if weight.get_element_type().get_type_name() not in _INTEGER:
            continue
        tensor_names = weights.get(friendly, [])
        readable = [_module_path(n) for n in tensor_names if not n.isdigit()]
        ops[friendly] = ([*readable, friendly], [friendly, *tensor_names])
    return ops


def _module_path(tensor_name: str) -> str:
    """``lm_blocks_0_o_proj_weight:0`` → ``lm_blocks_0_o_proj`` (still matches the weight, by components)."""
    stem = tensor_name.split(":")[0]
    return stem.removesuffix("_weight") or stem


def _weight(op: Any) -> Any | None:
    """The Constant holding ``op``'s weight (through decompression and layout ops), or None."""
    index = WEIGHTED_OPS.get(op.get_type_name())
    if index is None or op.get_input_size() <= index:
        return None
    node = op.input_value(index).get_node()
    for _ in range(8):
        if node.get_type_name() == "Constant":
            return node if len(node.get_output_partial_shape(0)) >= 2 else None
        if node.get_type_name() not in _WEIGHT_PATH:
            return None
        node = node.input_value(0).get_node()
    return None


def _keep_float_ops(model: Any, patterns: Sequence[str], activations: bool = False) -> dict[str, str]:
    """Friendly name → matching pattern, for weighted ops whose name or weight tensor names match.

    With ``activations`` (static INT8) also weightless MatMuls and attentions (``_ACTIVATION_OPS``) whose
    friendly name matches: NNCF then leaves their activation inputs float.
    """
    matched = {}
    for op in model.get_ordered_ops():
        weight = _weight(op)
        if weight is not None:
            names = [op.get_friendly_name(), *weight.output(0).get_names()]
        elif activations and op.get_type_name() in _ACTIVATION_OPS:
            names = [op.get_friendly_name()]
        else:
            continue
        pattern = keep_float_pattern(names, patterns)
        if pattern:
            matched[op.get_friendly_name()] = pattern
    return matched


def _dataset(model: Any, samples: list[list[np.ndarray]]) -> Any:
    """Positional samples as an ``nncf.Dataset`` of input-name dicts (NNCF feeds the IR by name)."""
    import nncf

    names = [i.get_any_name() for i in model.inputs]
    return nncf.Dataset(samples, lambda s: dict(zip(names, s, strict=True)))


def _static(model: Any, scheme: Int8Static, ignored: dict[str, str], samples: list[list[np.ndarray]]) -> Any:
    """``nncf.quantize`` (it returns a new model) with every setting of the scheme.

    ``smooth_quant`` ``on``/``off`` sets NNCF's SmoothQuant alphas (a negative alpha turns it off; ``auto`` is
    resolved by the caller, which quantizes both ways); ``symmetric_activations`` picks the preset
    (PERFORMANCE: symmetric, MIXED: asymmetric, NNCF's default for transformers); ``op_types`` ignores every
    other weighted op type.
    """
    import nncf
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
        QuantizationParameters,
    )
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    ranges = {
        "minmax": RangeEstimatorParametersSet.MINMAX,
        "percentile": RangeEstimatorParametersSet.MEAN_QUANTILE,
    }
    alpha = scheme.smooth_quant_alpha if scheme.smooth_quant_alpha is not None else 0.95
    alphas = (
        AdvancedSmoothQuantParameters(convolution=-1, matmul=alpha)
        if scheme.smooth_quant == "on"
        else AdvancedSmoothQuantParameters(convolution=-1, matmul=-1)
    )
    advanced = AdvancedQuantizationParameters(
        activations_range_estimator_params=ranges[scheme.calibration_method],
        weights_quantization_params=QuantizationParameters(per_channel=scheme.per_channel),
        smooth_quant_alphas=alphas,
    )
    symmetric = scheme.symmetric_activations
    preset = nncf.QuantizationPreset.PERFORMANCE if symmetric else nncf.QuantizationPreset.MIXED
    skipped = sorted(set(WEIGHTED_OPS) - {"Gather"} - set(scheme.op_types)) if scheme.op_types else []
    return nncf.quantize(
        model,
        _dataset(model, samples),
        model_type=nncf.ModelType.TRANSFORMER,
        preset=preset,
        subset_size=len(samples),
        ignored_scope=nncf.IgnoredScope(names=list(ignored), types=skipped, validate=False),
        advanced_parameters=advanced,
    )


def _compress(
    model: Any,
    scheme: Scheme,
    ignored: dict[str, str],
    samples: list[list[np.ndarray]],
    report: GraphQuantReport,
) -> Any:
    """``compress_weights`` on a clone (it mutates its input); data-aware w4 falls back to data-free."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedCompressionParameters, GroupSizeFallbackMode

    scope = nncf.IgnoredScope(names=list(ignored), types=list(CONV_OPS), validate=False)
    if isinstance(scheme, Int8Dynamic):
        result = nncf.compress_weights(
            model.clone(), mode=nncf.CompressWeightsMode.INT8_SYM, ignored_scope=scope
        )
        result.set_rt_info(str(DYNAMIC_GROUP), ["runtime_options", "DYNAMIC_QUANTIZATION_GROUP_SIZE"])
        return result
    if not isinstance(scheme, Int4WeightOnly):  # w8
        return nncf.compress_weights(
            model.clone(), mode=nncf.CompressWeightsMode.INT8_ASYM, ignored_scope=scope
        )
    mode = nncf.CompressWeightsMode.INT4_SYM if scheme.symmetric else nncf.CompressWeightsMode.INT4_ASYM
    # a layer whose input size is no multiple of group_size gets the largest group (≥ 32) dividing it, or
    # NNCF's INT8 backup precision, instead of failing the whole graph
    advanced = AdvancedCompressionParameters(group_size_fallback_mode=GroupSizeFallbackMode.ADJUST)
    options = {
        "mode": mode,
        "group_size": scheme.group_size,
        "ratio": scheme.ratio,
        "ignored_scope": scope,
        "advanced_parameters": advanced,
    }
    # NNCF keeps "the last layer" at INT8, meaning the output layer: in a graph with several outputs (the
    # LLM's logits and projected states) the last MatMul in order is another one. With head_bits 8 every
    # output layer stays INT8, compressed apart, data-free: a tied head's bytes then equal its lookup table's
    # (pack.py stores it once). With head_bits 4, NNCF's all_layers puts heads and lookups at INT4 too
    if scheme.head_bits == 8:
        heads = [name for name in output_layers(model) if name not in ignored]
    else:
        heads, options["all_layers"] = [], True
    options["ignored_scope"] = nncf.IgnoredScope(
        names=[*ignored, *heads], types=list(CONV_OPS), validate=False
    )
    result = None
    if scheme.data_aware:
        data = {"dataset": _dataset(model, samples), "subset_size": len(samples)}
        try:
            result = nncf.compress_weights(model.clone(), **options, **data, scale_estimation=True, awq=True)
        except Exception as err:  # NNCF raises its own and plain errors alike: fall back, and say so
            add_note(report, f"data-aware INT4 failed ({err!r}); compressed data-free instead")
    if result is None:
        result = nncf.compress_weights(model.clone(), **options)
    ops = {op.get_friendly_name(): op for op in result.get_ordered_ops()}
    floats = [name for name in heads if name in ops and _float_weight(ops[name])]
    if not floats:
        return result
    # every other weighted op ignored by name (naming its Constants too would leave the heads float)
    others = [name for name, op in ops.items() if op.get_type_name() in WEIGHTED_OPS and name not in floats]
    scope = nncf.IgnoredScope(names=others, validate=False)
    add_note(report, f"output layer(s) kept at INT8 as NNCF keeps the last layer: {', '.join(floats)}")
    return nncf.compress_weights(result, mode=nncf.CompressWeightsMode.INT8_ASYM, ignored_scope=scope)


def output_layers(model: Any) -> list[str]:
    """The weighted MatMuls whose results are the graph's outputs (through bias adds and layout ops)."""
    found = []
    for result in model.get_results():
        node = result.input_value(0).get_node()
        for _ in range(8):
            if node.get_type_name() == "MatMul":
                found += [node.get_friendly_name()] if _weight(node) is not None else []
                break
            if node.get_type_name() not in _OUTPUT_PATH:
                break
            node = node.input_value(0).get_node()
    return list(dict.fromkeys(found))


def _float_weight(op: Any) -> bool:
    weight = _weight(op)
    return weight is not None and weight.get_element_type().is_real()


def _evidence(model: Any, scheme: Scheme, ignored: dict[str, str], report: GraphQuantReport) -> None:
    """Count quantized weights, FakeQuantize ops and integer Constants in the saved IR; list float weights."""
    evidence: Counter[str] = Counter()
    int8_in_w4 = 0
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind in ("FakeQuantize", "FakeConvert"):
            evidence[kind] += 1
        elif kind == "Constant" and op.get_element_type().get_type_name() in (*_INTEGER, "f16"):
            evidence[f"const:{op.get_element_type().get_type_name()}"] += 1
        weight = _weight(op)
        name = op.get_friendly_name()
        if weight is None:
            if name in ignored:  # a weightless op kept float: its activation inputs
                report.kept_float.append(f"{name} ({kind}, activations): keep_float {ignored[name]!r}")
            continue
        precision = weight.get_element_type().get_type_name()
        if precision in _INTEGER or (scheme.name == "fp16" and precision == "f16"):
            report.quantized += 1
            int8_in_w4 += scheme.name == "w4" and precision in ("i8", "u8")
        elif name in ignored:
            report.kept_float.append(f"{name}: keep_float {ignored[name]!r}")
        elif scheme.name in ("w8", "w8a8-dyn", "w4") and kind in CONV_OPS:
            report.kept_float.append(f"{name}: {_CONV_WHY}")
        elif scheme.name != "fp16" and kind != "Gather":  # a float Gather table is a buffer (RoPE), no weight
            report.kept_float.append(f"{name} ({kind}): float weights (NNCF left it: {scheme.label()})")
    if int8_in_w4:
        why = "NNCF's backup precision for embeddings, output layers and sizes the group does not divide"
        add_note(report, f"{int8_in_w4} layer(s) kept at INT8: {why}")
    report.integer_ops = dict(Counter(report.integer_ops) + evidence)


def _runtime_evidence(compiled: Any, report: GraphQuantReport) -> None:
    """Count the compute layers the CPU plugin runs at an integer precision (``exec:FullyConnected[u8]``)."""
    evidence: Counter[str] = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        precision = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else ""
        layer = info["layerType"].astype(str) if "layerType" in info else ""
        if precision in _INTEGER and layer in _COMPUTE_LAYERS:
            evidence[f"exec:{layer}[{precision}]"] += 1
    report.integer_ops = dict(Counter(report.integer_ops) + evidence)


def _run(compiled: Any, samples: Sequence[Sequence[np.ndarray]]) -> tuple[list[str], list[list[np.ndarray]]]:
    """Outputs by position per sample; a stateful IR starts each sample on an empty state."""
    request = compiled.create_infer_request()
    names = [i.get_any_name() for i in compiled.inputs]
    results = []
    for sample in samples:
        request.reset_state()
        out = request.infer(dict(zip(names, sample, strict=True)))
        results.append([np.array(out[port]) for port in compiled.outputs])
    return [o.get_any_name() for o in compiled.outputs], results


class OpenVinoQuantizer(FileQuantizer):
    """OpenVINO IR quantized with NNCF (the recipe graph ``llm``: the one stateful IR)."""

    backend = BACKEND
    # the parts are quantized one at a time: a tied embed graph keeps its own table (pack.py)
    float_export_options = MappingProxyType({"tied_embed": False})

    def smooth_quant_unavailable(self, fp32_files: Mapping[str, Sequence[Path]]) -> str | None:
        """None where the graph has a MatMul with weights: NNCF's SmoothQuant smooths only those here.

        Its alpha for convolutions is off (``_static``), so a graph without one quantizes the same both ways:
        ``auto`` would quantize a conv segmenter twice for nothing.
        """
        import openvino as ov

        core = ov.Core()
        for files in fp32_files.values():
            for op in core.read_model(str(model_file(files, ".xml"))).get_ordered_ops():
                if op.get_type_name() == "MatMul" and _weight(op) is not None:
                    return None
        return "no MatMul with weights to smooth; SmoothQuant is off for convolutions"

    model_suffix = ".xml"

    def rank_one_run(
        self, float_file: Path, quant_file: Path, scheme: Scheme, samples: list[list[np.ndarray]]
    ) -> list[str] | None:
        """``w8a8``'s FakeQuantized ops by the error each adds (``ranking.rank_fake_quantized_ops``)."""
        if not isinstance(scheme, Int8Static):
            return None
        return rank_fake_quantized_ops(float_file, quant_file, samples, _integer_ops(float_file, quant_file))

    def export_float(
        self, module: torch.nn.Module, example_inputs: tuple, out_dir: Path, name: str, scheme: Scheme
    ) -> list[Path]:
        """Any module to an FP32 IR (the ``export/openvino.py`` route): ``<name>.xml`` and ``.bin``."""
        import openvino as ov

        inputs, outputs = io_names(module, example_inputs)
        with torch.no_grad():
            program = torch.export.export(module, tuple(example_inputs), strict=False)
        ov_model = ov.convert_model(program)
        name_ports(ov_model, inputs, outputs)
        xml = Path(out_dir) / f"{name}.xml"
        ov.save_model(ov_model, str(xml), compress_to_fp16=False)
        return [xml, xml.with_suffix(".bin")]

    # the module functions above already have the protocol's signatures
    quantize_files = staticmethod(_quantize)
    quantized_layers = staticmethod(quantized_layers)
