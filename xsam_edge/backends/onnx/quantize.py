"""ONNX Runtime handler: quantize a graph's float32 ``.onnx`` file(s) with ``onnxruntime.quantization``.

=============  ==========================================================================================
scheme         what the file becomes (TOOLCHAIN.md §6c, §8 #15)
=============  ==========================================================================================
``fp32``       the float files, copied
``fp16``       ``onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)``; ORT's CPU
               provider runs it (its InsertCastTransformer computes any op that lacks an fp16 kernel in fp32)
``w8a8``       ``quantize_static``: QDQ, per-channel symmetric INT8 weights, symmetric INT8 activations from
               a ``CalibrationDataReader``, MinMax or Percentile; only compute ops (MatMul, Gemm, Conv,
               ConvTranspose, or the scheme's ``op_types``) are quantized, so LayerNorm, Softmax and GELU
               inputs stay float; ``symmetric_activations`` and ``smooth_quant`` (Intel Neural
               Compressor's, when installed) pass through
``w8a8-dyn``   ``quantize_dynamic``: INT8 per-channel weights, activations quantized at run time
``w8``         ``MatMulNBitsQuantizer(bits=8)`` on the raw export: INT8 MatMul weights in blocks of
               ``W8_BLOCK`` along K (MatMulNBits has no per-channel mode; a scale per 128 adds 3 %)
``w4``         ``MatMulNBitsQuantizer(bits=4, block_size=group_size, is_symmetric)`` on the raw export
               (pre-processing fuses MatMul+Add into Gemm, which it skips); embedding tables become
               ``GatherBlockQuantized``; ``ratio < 1`` first packs the MatMuls with the largest INT4 weight
               error at 8 bits (``1 - ratio`` of the weights)
=============  ==========================================================================================

A tied table (the lookup's ``Gather`` and the head's ``MatMul`` over its transpose) is stored once under
``w8`` and ``w4``: the head is packed, and the lookup reads its blocks (``tied.py``).

Weight-only schemes first rewrite ``Gemm`` nodes with a constant weight as ``MatMul`` (+ ``Add``): the dynamo
exporter emits Gemm for a Linear on 2-D input (the LLM head on the last token), and MatMulNBits takes only
MatMul. ``data_aware`` w4 is data-free here: ORT's GPTQ path ignores ``nodes_to_exclude`` (keep-float).

Keep-float: the dynamo exporter stores each node's torch module path in its ``pkg.torch.onnx.name_scopes``
metadata (the legacy exporter puts it in the node name); a node whose module path, name or constant input
names match a pattern is excluded. ``quant_pre_process`` runs only for files without intermediate shapes
(the legacy export; the dynamo one writes them all), and then as shape inference alone: ORT's graph
optimiser would drop that metadata. A file with external data (``<name>.onnx.data``, weights over 2 GB) gives
a result in the same layout.

Importing ``matmul_nbits_quantizer`` (w8, w4) calls ``logging.basicConfig(level=INFO)`` inside ORT, so later
ORT quantization calls log at INFO when the application configured no logging of its own.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from xsam_edge.backends.onnx.export import EXTERNAL_DATA_BYTES, export_file
from xsam_edge.backends.onnx.ranking import rank_quantized_nodes
from xsam_edge.backends.onnx.weight_only import save_model, weight_only
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
from xsam_edge.quantization.fidelity import Fidelity, host_int8_saturates, measure_outputs
from xsam_edge.quantization.handler import FileQuantizer
from xsam_edge.quantization.report import GraphQuantReport, files_bytes
from xsam_edge.quantization.schemes import Int4WeightOnly, Int8Static, Scheme

__all__ = ["OnnxQuantizer", "quantized_layers"]

log = logging.getLogger(__name__)
BACKEND = "onnx"
COMPUTE_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose")
# op types that prove integer storage or compute in a result file
EVIDENCE_OPS = (
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "ConvInteger",
    "DynamicQuantizeMatMul",
    "QLinearMatMul",
    "QLinearConv",
    "MatMulNBits",
    "GatherBlockQuantized",
)
_NAME_SCOPES = "pkg.torch.onnx.name_scopes"
# the integer ops that replace a float node (named after it): weight-only and dynamic schemes
_INTEGER_OPS = ("MatMulNBits", "GatherBlockQuantized", "MatMulInteger", "ConvInteger")
# w8 / w4: weights that MatMulNBits / GatherBlockQuantized do not take, and why
_WEIGHT_ONLY_GAPS = {
    "Conv": "Conv weights stay float: ORT's weight-only quantizer packs MatMul and Gather only",
    "ConvTranspose": "ConvTranspose weights stay float: ORT's weight-only quantizer packs MatMul only",
    "Gather": "embedding table stays float: ORT packs Gather tables only to 4 bits",
    "MatMul": "weights stay float (not a 2-D constant)",
    "Gemm": "weights stay float (Gemm with transA or alpha ≠ 1)",
}


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
    check_request(BACKEND, graph, names, scheme, fp32_files, calibration, isinstance(scheme, Int8Static))
    start = time.perf_counter()
    report = GraphQuantReport(graph, BACKEND, scheme.label())
    if isinstance(scheme, Int4WeightOnly) and scheme.data_aware:
        add_note(report, "data_aware ignored: ORT's GPTQ skips nodes_to_exclude (keep_float); RTN used")
    new_files: dict[str, list[Path]] = {}
    for name in names:
        src = model_file(fp32_files[name], ".onnx")
        if out_dir.resolve() == src.parent.resolve():
            raise ValueError(f"{graph}: out_dir {out_dir} holds the float32 files; give another folder")
        tag = name if len(names) > 1 else ""
        files, _ = write_atomically(
            out_dir,
            lambda tmp, src=src, name=name, tag=tag: _quantize_file(
                src, fp32_files[name], tmp, scheme, keep_float, calibration.get(name, []), report, tag
            ),
        )
        new_files[name] = files
        if holdout.get(name):
            measured = _fidelity(src, files[0], holdout[name], tag, report)
            report.record(measured, held_out_note(holdout[name]))
        else:
            _run(files[0], [])  # it must still load on the CPU provider
            add_note(report, f"no held-out samples for {name}: PSNR not measured")
    report.files = [str(f) for fs in new_files.values() for f in fs]
    report.bytes_fp32 = files_bytes([f for n in names for f in fp32_files[n]])
    report.bytes_quant = files_bytes([f for fs in new_files.values() for f in fs])
    report.seconds = time.perf_counter() - start
    return new_files, report


def _quantize_file(
    src: Path,
    src_files: list[Path],
    tmp: Path,
    scheme: Scheme,
    keep_float: tuple[str, ...],
    samples: list[list[np.ndarray]],
    report: GraphQuantReport,
    tag: str,
) -> None:
    """Write the quantized ``tmp/<src.name>`` (and its external data) and add the evidence to ``report``.

    ``tag`` (the bundle graph name, for a graph of several files) prefixes the ``kept_float`` entries.
    """
    import onnx

    dst = tmp / src.name
    if scheme.name == "fp32":
        for f in src_files:
            shutil.copy2(f, tmp / Path(f).name)
        return
    model = onnx.load(str(src), load_external_data=False)
    external = any(onnx.external_data_helper.uses_external_data(t) for t in model.graph.initializer)
    if external:  # weights over 2 GB: the result keeps them in <name>.onnx.data
        onnx.load_external_data_for_model(model, str(src.parent))
    with _at_least_opset(model, src, external, report) as (model, src):
        _quantize_model(model, src, dst, scheme, keep_float, samples, external, report, tag)


def _quantize_model(
    model: Any,
    src: Path,
    dst: Path,
    scheme: Scheme,
    keep_float: tuple[str, ...],
    samples: list[list[np.ndarray]],
    external: bool,
    report: GraphQuantReport,
    tag: str,
) -> None:
    """Quantize the loaded ``model`` (read from ``src``) into ``dst``; add the evidence to ``report``."""
    import onnx

    excluded = _keep_float_nodes(model, keep_float)
    targets = {"w4": ("MatMul", "Gather"), "w8": ("MatMul",)}.get(scheme.name, COMPUTE_OPS)
    if isinstance(scheme, Int8Static) and scheme.op_types:
        targets = scheme.op_types
    if scheme.name == "fp16":
        _to_fp16(model, dst, excluded, external)
    elif not any(n.op_type in targets and n.name not in excluded for n in model.graph.node):
        add_note(report, f"{tag or report.graph}: no {'/'.join(targets)} op to quantize: stays float")
        save_model(model, dst, external)
    elif isinstance(scheme, Int8Static):
        _static(model, src, dst, scheme, excluded, samples, external, report)
    elif scheme.name == "w8a8-dyn":
        _dynamic(src, dst, excluded, external)
    else:  # w8, w4
        weight_only(model, dst, scheme, excluded, external, report)
    result = onnx.load(str(dst), load_external_data=False)
    evidence = Counter(n.op_type for n in result.graph.node if n.op_type in EVIDENCE_OPS)
    fp16 = sum(t.data_type == onnx.TensorProto.FLOAT16 for t in result.graph.initializer)
    if fp16:
        evidence["float16 initializers"] = fp16
    report.integer_ops = dict(Counter(report.integer_ops) + evidence)
    quantized, left = _outcome(result, scheme, set(excluded))
    report.quantized += quantized
    prefix = f"{tag}/" if tag else ""
    for node, (label, why) in left.items():
        why = f"keep_float {excluded[node]!r}" if node in excluded else why
        report.kept_float.append(f"{prefix}{label}: {why}")


MIN_OPSET = 13
"""Per-channel ``DequantizeLinear`` (its ``axis``) needs opset 13; older files are converted first."""


@contextlib.contextmanager
def _at_least_opset(
    model: Any, src: Path, external: bool, report: GraphQuantReport
) -> Iterator[tuple[Any, Path]]:
    """``(model, src)``, converted to opset ``MIN_OPSET`` in a scratch file when the file is older.

    ORT's quantizers write per-channel QDQ nodes with an ``axis`` that an opset-11 graph cannot hold: the
    result failed to load (``DequantizeLinear`` axis). ``onnx.version_converter`` upgrades the graph first.
    """
    import onnx
    from onnx import version_converter

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), MIN_OPSET)
    if opset >= MIN_OPSET:
        yield model, src
        return
    try:
        upgraded = version_converter.convert_version(model, MIN_OPSET)
    except Exception as err:  # the converter raises plain RuntimeErrors for ops it cannot map
        raise ValueError(f"{src.name}: opset {opset} could not be converted to {MIN_OPSET} ({err})") from None
    add_note(report, f"{src.name}: opset {opset} converted to {MIN_OPSET} before quantization")
    with tempfile.TemporaryDirectory(prefix=".opset-") as scratch:
        path = Path(scratch) / src.name
        save_model(upgraded, path, external)
        yield onnx.load(str(path)), path


def quantized_layers(fp32_files: dict[str, list[Path]], quant_files: dict[str, list[Path]]) -> list[str]:
    """The nodes ``OnnxQuantizer.quantize_graph`` quantized, each as a keep-float pattern that names it alone.

    A QDQ compute node keeps its float name; ``MatMulNBits`` / ``GatherBlockQuantized`` add ``_Q<bits>``
    and ``quantize_dynamic``'s integer ops ``_quant``. The readable name is the node's torch module path from
    the float file's metadata (``model.segmentor.encoder.layers.0.attn.qkv``).
    """
    return layer_names(
        _quantized_nodes(model_file(fp32_files[name], ".onnx"), model_file(files, ".onnx"))
        for name, files in quant_files.items()
    )


def _quantized_nodes(float_onnx: Path, quant_onnx: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Float node → (patterns to try, names keep-float sees) for every node quantized in ``quant_onnx``."""
    import onnx

    float_model = onnx.load(str(float_onnx), load_external_data=False)
    constants = {t.name for t in float_model.graph.initializer}
    float_nodes = {n.name: n for n in float_model.graph.node}
    quant_model = onnx.load(str(quant_onnx), load_external_data=False)
    producer = {out: n.op_type for n in quant_model.graph.node for out in n.output}
    ops = {}
    for node in quant_model.graph.node:
        dq_fed = any(producer.get(i) == "DequantizeLinear" for i in node.input)
        if not (node.op_type in COMPUTE_OPS and dq_fed) and node.op_type not in _INTEGER_OPS:
            continue
        original = float_nodes.get(re.sub(r"(_Q\d+|_quant)$", "", node.name))
        if original is None:  # a Gemm the weight-only path rewrote: no float node keeps its name
            log.debug("quantized node %s has no float counterpart; not a candidate layer", node.name)
            continue
        meta = {p.key: p.value for p in original.metadata_props}
        seen = [original.name, meta.get(_NAME_SCOPES, ""), *(i for i in original.input if i in constants)]
        ops[original.name] = ([_scope(original), original.name], seen)
    return ops


def _keep_float_nodes(model: Any, patterns: Sequence[str]) -> dict[str, str]:
    """Node name → matching pattern, for nodes whose module path, name or constant inputs match."""
    if not patterns:
        return {}
    constants = {t.name for t in model.graph.initializer}
    matched = {}
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        names = [node.name, meta.get(_NAME_SCOPES, ""), *(i for i in node.input if i in constants)]
        pattern = keep_float_pattern(names, patterns)
        if pattern:
            matched[node.name] = pattern
    return matched


def _scope(node: Any) -> str:
    """The torch module path of a node (its name when the exporter left no scope metadata)."""
    for prop in node.metadata_props:
        if prop.key == _NAME_SCOPES:
            scopes = [s.strip(" '\"") for s in prop.value.strip("[]").split(",")]
            return scopes[-2] if len(scopes) > 1 else node.name
    return node.name


def _outcome(model: Any, scheme: Scheme, excluded: set[str]) -> tuple[int, dict[str, tuple[str, str]]]:
    """(ops or weights converted, node name → (``name (module)``, why) for candidates left float)."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    constants = {t.name: t for t in model.graph.initializer}
    producer = {out: node.op_type for node in model.graph.node for out in node.output}

    def float_weight(node: Any) -> bool:
        index = 0 if node.op_type == "Gather" else 1
        t = constants.get(node.input[index]) if len(node.input) > index else None
        return t is not None and t.data_type == onnx.TensorProto.FLOAT and len(t.dims) >= 2

    def dq_fed(node: Any) -> bool:
        return any(producer.get(i) == "DequantizeLinear" for i in node.input)

    def why_float(node: Any) -> str | None:
        if scheme.name == "fp16":
            if node.op_type in DEFAULT_OP_BLOCK_LIST:
                return "computed in fp32 (onnxruntime.transformers' fp16 block list)"
            return "computed in fp32" if node.name in excluded and float_weight(node) else None
        if scheme.name == "w8a8":
            return "no QDQ inputs" if node.op_type in COMPUTE_OPS and not dq_fed(node) else None
        if not float_weight(node):
            return None
        if scheme.name == "w8a8-dyn":
            return "float weights (quantize_dynamic left it)" if node.op_type in COMPUTE_OPS else None
        return _WEIGHT_ONLY_GAPS.get(node.op_type)

    left = {}
    for node in model.graph.node:
        why = why_float(node)
        if why:
            left[node.name] = (f"{node.name} ({_scope(node)})", why)
    if scheme.name == "fp16":
        quantized = sum(t.data_type == onnx.TensorProto.FLOAT16 for t in constants.values())
    elif scheme.name == "w8a8":
        quantized = sum(n.op_type in COMPUTE_OPS and dq_fed(n) for n in model.graph.node)
    else:
        dynamic = scheme.name == "w8a8-dyn"
        kinds = ("MatMulInteger", "ConvInteger") if dynamic else ("MatMulNBits", "GatherBlockQuantized")
        quantized = sum(n.op_type in kinds for n in model.graph.node)
    return quantized, left


def _to_fp16(model: Any, dst: Path, excluded: dict[str, str], external: bool) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    half = convert_float_to_float16(model, keep_io_types=True, node_block_list=list(excluded))
    save_model(half, dst, external)


class _Reader:
    """ORT's ``CalibrationDataReader`` over positional samples (fed by input name)."""

    def __init__(self, names: Sequence[str], samples: Sequence[Sequence[np.ndarray]]) -> None:
        self.names, self.samples = list(names), samples
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        sample = next(self.items, None)
        return None if sample is None else dict(zip(self.names, sample, strict=True))

    def rewind(self) -> None:
        self.items = iter(self.samples)


def _static(
    model: Any,
    src: Path,
    dst: Path,
    scheme: Int8Static,
    excluded: dict[str, str],
    samples: list[list[np.ndarray]],
    external: bool,
    report: GraphQuantReport,
) -> None:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    typed = {v.name for v in (*model.graph.value_info, *model.graph.input, *model.graph.output)}
    untyped = any(out not in typed for node in model.graph.node for out in node.output)
    reader = _Reader([i.name for i in model.graph.input], samples)  # ORT duck-types CalibrationDataReader
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
    with tempfile.TemporaryDirectory(prefix=".prepared-", dir=dst.parent.parent) as scratch:
        prepared = src
        if untyped:
            # the legacy exporter leaves intermediate shapes out (the dynamo one writes them all); shape
            # inference only, because ORT's optimiser would drop the module paths keep_float relies on
            prepared = Path(scratch) / src.name
            try:
                quant_pre_process(
                    str(src), str(prepared), skip_optimization=True, save_as_external_data=external
                )
            except Exception as err:  # symbolic shape inference does not know every op: quantize as exported
                add_note(report, f"{src.name}: quant_pre_process failed ({err!r}); quantized without it")
                prepared = src
        with _without_preprocess_hint():
            quantize_static(
                str(prepared),
                str(dst),
                reader,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(scheme.op_types or COMPUTE_OPS),
                per_channel=scheme.per_channel,
                # asymmetric activations as uint8: the U8S8 kernels x86 MLAS is fastest with (S8S8 is slow)
                activation_type=QuantType.QInt8 if _symmetric(scheme) else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=list(excluded),
                use_external_data_format=external,
                calibrate_method=method[scheme.calibration_method],
                extra_options=_static_options(scheme),
            )


def _symmetric(scheme: Int8Static) -> bool:
    """Symmetric INT8 activations unless the scheme asks otherwise (ONNX Runtime's TensorRT-style default)."""
    return True if scheme.symmetric_activations is None else scheme.symmetric_activations


def _static_options(scheme: Int8Static) -> dict[str, Any]:
    """``quantize_static``'s extra options for the scheme's activation symmetry and SmoothQuant."""
    options: dict[str, Any] = {"ActivationSymmetric": _symmetric(scheme), "WeightSymmetric": True}
    if scheme.smooth_quant == "on":
        why_not = smooth_quant_unavailable()
        if why_not:
            raise ValueError(f"w8a8 smooth_quant='on': {why_not}")
        alpha = 0.5 if scheme.smooth_quant_alpha is None else scheme.smooth_quant_alpha
        options |= {"SmoothQuant": True, "SmoothQuantAlpha": alpha}
    return options


def smooth_quant_unavailable() -> str | None:
    """ORT's SmoothQuant runs Intel Neural Compressor's implementation: absent, it cannot run."""
    import importlib.util

    if importlib.util.find_spec("neural_compressor") is None:
        return "ONNX Runtime's SmoothQuant needs neural-compressor, which is not installed"
    return None


def _dynamic(src: Path, dst: Path, excluded: dict[str, str], external: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(dst),
        op_types_to_quantize=list(COMPUTE_OPS),
        per_channel=True,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=list(excluded),
        use_external_data_format=external,
    )


class _PreprocessHint(logging.Filter):
    """Drops ORT's "Please consider (to run) pre-processing before quantization" hint.

    ``_static`` runs shape inference itself where a file needs it and skips ORT's optimiser on purpose (it
    drops the module paths keep-float matches), so the hint, logged on the root logger twice per call, is
    noise (120 lines for a per-layer pass over 60 layers).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextlib.contextmanager
def _without_preprocess_hint() -> Iterator[None]:
    root, hint = logging.getLogger(), _PreprocessHint()
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)


def _run(
    path: Path, samples: Sequence[Sequence[np.ndarray]], graph_arithmetic: bool = False
) -> tuple[list[str], list[list[np.ndarray]]]:
    """Output names, and the outputs per sample, of ``path`` on ORT's CPU provider.

    ``graph_arithmetic`` stops ORT at its basic optimizations, before it fuses QDQ pairs into integer
    kernels: each DequantizeLinear then runs as written, the arithmetic the file specifies.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads()
    if graph_arithmetic:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    return outputs, [session.run(None, dict(zip(names, s, strict=True))) for s in samples]


def _fidelity(
    fp32: Path, quant: Path, samples: list[list[np.ndarray]], tag: str, report: GraphQuantReport
) -> dict[str, Fidelity]:
    """Each output of ``quant`` against ``fp32`` on ``samples`` (keys ``tag.output`` when tagged).

    On a host whose INT8 kernels saturate (``host_int8_saturates``) the file is scored at its own
    arithmetic, which ARM and VNNI kernels compute, and the host kernels' score goes in a note: a target
    met on a phone is not missed because the CI machine is an older x86.
    """
    names, reference = _run(fp32, samples)
    saturates = host_int8_saturates()
    _, test = _run(quant, samples, graph_arithmetic=saturates)
    measured = measure_outputs(names, reference, test)
    if saturates:
        host = measure_outputs(names, reference, _run(quant, samples)[1])
        worst_file = min(f.worst_cosine for f in measured.values())
        worst_host = min(f.worst_cosine for f in host.values())
        if worst_file - worst_host > 1e-4:
            add_note(
                report,
                f"{tag or report.graph}: worst cosine {worst_file:.4f} is the file's QDQ arithmetic; this "
                f"x86 CPU has no VNNI and ORT's U8S8 kernels saturate here: {worst_host:.4f} on them",
            )
    return {(f"{tag}.{k}" if tag else k): v for k, v in measured.items()}


class OnnxQuantizer(FileQuantizer):
    """ONNX files quantized with ``onnxruntime.quantization`` (the recipe graph ``llm``: the KV-I/O pair)."""

    backend = BACKEND
    # the parts are quantized one at a time: a tied embed graph keeps its own table (pack.py)
    float_export_options = MappingProxyType({"tied_embed": False})

    def smooth_quant_unavailable(self, fp32_files: Mapping[str, Sequence[Path]]) -> str | None:
        return smooth_quant_unavailable()

    model_suffix = ".onnx"

    def rank_one_run(
        self, float_file: Path, quant_file: Path, scheme: Scheme, samples: list[list[np.ndarray]]
    ) -> list[str] | None:
        """Static or dynamic INT8 nodes by the error each adds (``ranking.rank_quantized_nodes``)."""
        if scheme.name not in ("w8a8", "w8a8-dyn"):
            return None
        return rank_quantized_nodes(float_file, quant_file, samples, _quantized_nodes(float_file, quant_file))

    def export_float(
        self, module: torch.nn.Module, example_inputs: tuple, out_dir: Path, name: str, scheme: Scheme
    ) -> list[Path]:
        """Any module to a float32 ``.onnx`` (the ``export/onnx.py`` route) in a folder of its own.

        The folder must hold nothing else: the exporter clears it when it falls back to the legacy route.
        """
        inputs, outputs = io_names(module, example_inputs)
        n_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
        path = Path(out_dir) / f"{name}.onnx"
        export_file(module, tuple(example_inputs), inputs, outputs, path, n_bytes > EXTERNAL_DATA_BYTES)
        return sorted(path.parent.iterdir())

    # the module functions above already have the protocol's signatures
    quantize_files = staticmethod(_quantize)
    quantized_layers = staticmethod(quantized_layers)
