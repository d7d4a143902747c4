"""Core ML backend: one edge graph → ``<name>.mlpackage`` (ML program), validated as far as Linux allows.

Route (TOOLCHAIN.md §6b): ``export_graph(...).run_decompositions({})`` → ``ct.convert(ep,
convert_to="mlprogram", minimum_deployment_target=iOS18, compute_precision=FLOAT16 | FLOAT32)`` with the
inputs and outputs named as the ``GraphSpec`` says; integer inputs are int32 (``input_ids`` already is;
``cache_position`` is declared int32 to Core ML, which has no int64 inputs).

The stateful LLM (``llm_prefill`` / ``llm_decode``): the K/V cache buffers the program mutates become Core
ML states (``spec.description.state``, iOS18+), named ``k_cache_{i}`` / ``v_cache_{i}``. Prefill and decode
are converted as two packages with the same state names; a bundle ships them as one multifunction package
``llm.mlpackage`` (functions ``prefill`` and ``decode``, ``pack.merge_llm_functions``), whose weights are
stored once: two packages would ship the LLM twice. The host loads each function with
``MLModelConfiguration.functionName``, allocates one state with ``make_state()`` and passes it to both.
The cache-as-I/O variant for older targets is the ``llm_kvio_*`` graph, converted for iOS17 (no states;
past K/V in, present K/V out).

Linux has no Core ML runtime (the coremltools wheel lacks ``libcoremlpython``), so validation here is: the
package loads with ``skip_model_load=True``, its spec's input/output/state names and shapes equal the
``GraphSpec``, and the MIL op histogram (the placement report) contains only ops of coremltools' op registry.
The numeric check (``MLModel.predict`` against eager) runs only where ``coreml_predict_available()``.
"""

from __future__ import annotations

import platform
import re
import shutil
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xsam_edge.export.graphs import (
    GRAPH_NAMES,
    GraphSpec,
    SlotConfig,
    build_graph,
    example_inputs,
    export_graph,
    graph_specs,
)
from xsam_edge.export.placement import ExportedGraph, OutputParity, output_parity
from xsam_edge.files import write_atomically
from xsam_edge.model.xsam import XSam

__all__ = [
    "COREML_GRAPHS",
    "PREDICT_SKIP_REASON",
    "coreml_predict_available",
    "discard_temp_package",
    "export_coreml",
    "mil_op_histogram",
    "predict_parity",
    "spec_signature",
]

COREML_GRAPHS = GRAPH_NAMES
STATEFUL_GRAPHS = ("llm_prefill", "llm_decode")
KVIO_GRAPHS = ("llm_kvio_prefill", "llm_kvio_decode")
PREDICT_SKIP_REASON = "Core ML prediction needs macOS"
PRECISIONS = ("fp16", "fp32")
# ops that mark a slow or risky path inside a Core ML program (shown in the placement report)
_RISKY_OPS = {
    "resample": "grid_sample: runs on GPU/CPU, not the Neural Engine",
    "scatter": "scatter: CPU fallback",
    "scatter_nd": "scatter: CPU fallback",
    "scatter_along_axis": "scatter: CPU fallback",
    "non_zero": "data-dependent output shape",
    "while_loop": "control flow",
    "cond": "control flow",
}


def coreml_predict_available() -> bool:
    """True where ``MLModel.predict`` can run: macOS with coremltools' native ``libcoremlpython``."""
    if platform.system() != "Darwin":
        return False
    try:
        import coremltools as ct
    except ImportError:
        return False
    return bool(getattr(ct.models.model, "_MLModelProxy", None))


def _ct_dtype(dtype: str) -> type:
    return {"float32": np.float32, "float16": np.float16, "int32": np.int32, "int64": np.int32}[dtype]


def mil_op_histogram(spec: Any) -> dict[str, int]:
    """MIL op-type counts of an ML program spec, nested blocks included, ``const`` left out.

    Args:
        spec (Any): a ``Model_pb2.Model`` (``MLModel.get_spec()``) of an ML program.

    Returns:
        dict[str, int]: op type → count, most frequent first (every function of the program).
    """
    counts: Counter[str] = Counter()

    def visit(block: Any) -> None:
        for op in block.operations:
            if op.type != "const":
                counts[op.type] += 1
            for inner in op.blocks:
                visit(inner)

    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            visit(block)
    return dict(counts.most_common())


def max_tensor_rank(spec: Any) -> int:
    """The highest rank of any tensor an ML program's ops produce (Core ML rejects rank > 5 on device).

    coremltools rewrites some rank-6 patterns itself (SAM's window partition: reshape → transpose →
    reshape becomes rank-5 steps), so this checks the converted program, not the PyTorch graph.

    Args:
        spec (Any): a ``Model_pb2.Model`` of an ML program.
    """
    highest = 0

    def visit(block: Any) -> None:
        nonlocal highest
        for op in block.operations:
            for output in op.outputs:
                if output.type.WhichOneof("type") == "tensorType":
                    highest = max(highest, output.type.tensorType.rank)
            for inner in op.blocks:
                visit(inner)

    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            visit(block)
    return highest


def _known_ops(target: Any) -> set[str]:
    """The MIL op types coremltools' registry defines for ``target`` (a ``ct.target``)."""
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    return {op for op, versions in SSAOpRegistry.core_ops.items() if target in versions} | _BACKEND_OPS


def _where_scalar_other(condition: torch.Tensor, this: torch.Tensor, other: float) -> torch.Tensor:
    """``where(cond, tensor, scalar)`` as ``where.self`` with a 0-d tensor.

    coremltools 9.0 has no ``where.ScalarOther`` translation; the LLM's attention mask uses it.
    """
    fill = torch.ops.aten.scalar_tensor.default(other, dtype=this.dtype)
    return torch.ops.aten.where.self(condition, this, fill)


def _alias(x: torch.Tensor) -> torch.Tensor:
    """``alias`` as a same-shape ``view`` (coremltools 9.0 has no ``alias`` translation)."""
    return torch.ops.aten.view.default(x, list(x.shape))


def _cubic_matrix(size_in: int, size_out: int, align_corners: bool, scale: float | None) -> torch.Tensor:
    """(size_out, size_in) weights of torch's bicubic resampling along one axis (A = −0.75, edges clamped)."""
    if align_corners:
        step = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
        src = torch.arange(size_out, dtype=torch.float64) * step
    else:
        step = 1.0 / scale if scale else size_in / size_out
        src = (torch.arange(size_out, dtype=torch.float64) + 0.5) * step - 0.5  # not clamped for cubic
    base = torch.floor(src)
    t = src - base
    a = -0.75

    def near(x: torch.Tensor) -> torch.Tensor:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: torch.Tensor) -> torch.Tensor:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    matrix = torch.zeros(size_out, size_in, dtype=torch.float64)
    rows = torch.arange(size_out)
    for tap, weight in zip((-1, 0, 1, 2), (far(t + 1), near(t), near(1 - t), far(2 - t)), strict=True):
        index = (base.long() + tap).clamp(0, size_in - 1)
        matrix.index_put_((rows, index), weight, accumulate=True)
    return matrix


def _upsample_bicubic2d(
    x: torch.Tensor,
    output_size: list[int],
    align_corners: bool,
    scales_h: float | None = None,
    scales_w: float | None = None,
) -> torch.Tensor:
    """``upsample_bicubic2d`` as two matmuls with constant weight matrices (no MIL op resamples bicubic).

    Static shapes only, as Core ML converts them: the matrices are built at export time.
    """
    height, width = int(x.shape[-2]), int(x.shape[-1])
    rows = _cubic_matrix(height, int(output_size[0]), align_corners, scales_h).to(x.dtype)
    cols = _cubic_matrix(width, int(output_size[1]), align_corners, scales_w).to(x.dtype)
    return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))


def _upsample_bicubic2d_vec(
    x: torch.Tensor, output_size: list[int] | None, align_corners: bool, scale_factors: list[float] | None
) -> torch.Tensor:
    if output_size is None:
        assert scale_factors is not None, "upsample_bicubic2d needs a size or scale factors"
        output_size = [int(x.shape[-2] * scale_factors[0]), int(x.shape[-1] * scale_factors[1])]
        return _upsample_bicubic2d(x, output_size, align_corners, *scale_factors)
    return _upsample_bicubic2d(x, output_size, align_corners)


# aten overloads the torch.export frontend of coremltools 9.0 cannot translate, rewritten before conversion
COREML_DECOMPOSITIONS = {
    torch.ops.aten.where.ScalarOther: _where_scalar_other,
    torch.ops.aten.alias.default: _alias,
    torch.ops.aten.upsample_bicubic2d.default: _upsample_bicubic2d,
    torch.ops.aten.upsample_bicubic2d.vec: _upsample_bicubic2d_vec,
}
_UNSUPPORTED = re.compile(r"Unsupported fx node \S+, kind (\w+)")
MAX_DECOMPOSITION_ROUNDS = 16


def convert_decomposed(program: torch.export.ExportedProgram, convert: Callable[[Any], Any]) -> Any:
    """``convert`` the program decomposed just enough for coremltools to translate it.

    The table grows by PyTorch's core decomposition of each op coremltools names as unsupported, until
    the program converts.
    X-SAM's graphs convert with ``COREML_DECOMPOSITIONS`` alone; a user's module may carry ops coremltools
    has no translation for (a Hugging Face LLM's mask code: ``diff``, ``new_ones``). Only the ops it refuses
    are decomposed, so the rest keep the fused forms its translations expect.

    Raises:
        NotImplementedError: an op coremltools refuses that has no core decomposition (the original error).
    """
    core = torch._decomp.core_aten_decompositions()
    table = dict(COREML_DECOMPOSITIONS)
    for _ in range(MAX_DECOMPOSITION_ROUNDS):
        try:
            return convert(program.run_decompositions(table))
        except NotImplementedError as error:
            match = _UNSUPPORTED.search(str(error))
            added = {op: fn for op, fn in core.items() if match and str(op).split(".")[1] == match[1]}
            if not added or added.keys() <= table.keys():
                raise
            table.update(added)
    raise NotImplementedError(f"coremltools refused more than {MAX_DECOMPOSITION_ROUNDS} ops in turn")


# ops the ML-program backend emits under another name than the MIL registry's (coreml_update_state)
_BACKEND_OPS = {"write_state"}


def spec_signature(spec: Any) -> dict[str, list[tuple[str, tuple[int, ...], str]]]:
    """Names, shapes and dtypes of a Core ML spec's inputs, outputs and states.

    Args:
        spec (Any): a ``Model_pb2.Model``.

    Returns:
        dict[str, list[tuple[str, tuple[int, ...], str]]]: ``inputs``, ``outputs`` and ``states``, each a
        list of (name, shape, dtype name as in the proto, e.g. ``FLOAT32`` / ``INT32`` / ``FLOAT16``).
    """
    from coremltools.proto import FeatureTypes_pb2 as ft

    def describe(feature: Any) -> tuple[str, tuple[int, ...], str]:
        array = feature.type.multiArrayType
        if feature.type.WhichOneof("Type") == "stateType":
            array = feature.type.stateType.arrayType
        dtype = ft.ArrayFeatureType.ArrayDataType.Name(array.dataType)
        return feature.name, tuple(int(d) for d in array.shape), dtype

    desc = spec.description
    return {
        "inputs": [describe(f) for f in desc.input],
        "outputs": [describe(f) for f in desc.output],
        "states": [describe(f) for f in desc.state],
    }


def _convert(
    module: torch.nn.Module,
    name: str,
    spec: GraphSpec,
    model: XSam,
    slots: SlotConfig,
    precision: str,
    target: Any,
) -> Any:
    import coremltools as ct

    program = export_graph(module, name, model.config, slots, dtype=torch.float32)
    program = program.run_decompositions(COREML_DECOMPOSITIONS)
    inputs = [ct.TensorType(name=s.name, shape=s.shape, dtype=_ct_dtype(s.dtype)) for s in spec.inputs]
    outputs = [ct.TensorType(name=s.name) for s in spec.outputs]
    compute = ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ct.convert(
            program,
            inputs=inputs,
            outputs=outputs,
            convert_to="mlprogram",
            minimum_deployment_target=target,
            compute_precision=compute,
            skip_model_load=True,
        )


def predict_parity(
    path: str | Path, module: torch.nn.Module, spec: GraphSpec, inputs: tuple[torch.Tensor, ...]
) -> list[OutputParity]:
    """Run the package once with Core ML (macOS only) and compare every output with the eager wrapper.

    The stateful LLM gets a fresh state (``make_state``) and the eager wrapper fresh zero caches, so both
    start from an empty cache.

    Args:
        path (str | Path): the ``.mlpackage``.
        module (torch.nn.Module): the eager wrapper of the graph (fresh caches for the LLM).
        spec (GraphSpec): the graph's signature.
        inputs (tuple[torch.Tensor, ...]): the example inputs.

    Returns:
        list[OutputParity]: per output.

    Raises:
        RuntimeError: Core ML prediction is not available here (``PREDICT_SKIP_REASON``).
    """
    if not coreml_predict_available():
        raise RuntimeError(PREDICT_SKIP_REASON)
    import coremltools as ct

    mlmodel = ct.models.MLModel(str(path))
    feed = {}
    for s, x in zip(spec.inputs, inputs, strict=True):
        array = x.detach().cpu().numpy()
        feed[s.name] = array.astype(np.int32) if s.dtype.startswith("int") else array.astype(np.float32)
    if spec.states:
        got = mlmodel.predict(feed, state=mlmodel.make_state())
    else:
        got = mlmodel.predict(feed)
    with torch.no_grad():
        want = module(*inputs)
    want = want if isinstance(want, tuple | list) else (want,)
    names = [s.name for s in spec.outputs]
    return output_parity(names, [w.float().numpy() for w in want], [got[n] for n in names])


def discard_temp_package(mlmodel: Any) -> None:
    """Delete the temporary ``.mlpackage`` coremltools wrote for a converted or compressed model.

    coremltools removes it only at interpreter exit (``atexit``). So a long job keeps one copy of every
    graph it converted in the temp folder, and a process that ends without ``atexit`` (a killed worker)
    leaves them there. Call it once the model is saved where it belongs.
    """
    if getattr(mlmodel, "is_temp_package", False) and getattr(mlmodel, "package_path", None):
        shutil.rmtree(mlmodel.package_path, ignore_errors=True)


def export_coreml(
    model: XSam,
    name: str,
    slots: SlotConfig,
    out_dir: str | Path,
    precision: str = "fp16",
    stateful: bool = True,
) -> ExportedGraph:
    """Convert one edge graph to ``out_dir/<name>.mlpackage`` and validate its spec.

    Args:
        model (XSam): the model (FP32 weights; ``precision`` sets the Core ML compute precision).
        name (str): a graph of ``GRAPH_NAMES``. ``llm_kvio_*`` are converted for iOS17 (cache as I/O), every
            other graph for iOS18.
        slots (SlotConfig): the fixed slot sizes.
        out_dir (str | Path): destination folder (created).
        precision (str): ``"fp16"`` or ``"fp32"`` compute precision.
        stateful (bool): for ``llm_prefill`` / ``llm_decode``: ``True`` keeps the caches as Core ML states;
            ``False`` converts the matching ``llm_kvio_*`` graph instead (named after it).

    Returns:
        ExportedGraph: backend ``coreml``; names, shapes and dtypes read back from the saved package's spec;
        ``states`` the state names; ``placement`` with the MIL op ``histogram``, ``risks``, ``unknown_ops``
        (ops outside coremltools' registry: should be empty), ``file_bytes``, ``deployment_target``,
        ``precision``, ``max_rank`` (highest tensor rank in the program: ≤ 5 or the device refuses it) and
        ``spec_matches`` (spec equals the ``GraphSpec``); ``parity`` from
        ``predict_parity`` on macOS, empty elsewhere (``placement["parity_skipped"]`` gives the reason).

    Raises:
        ValueError: unknown graph or precision.
    """
    import coremltools as ct

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if name not in COREML_GRAPHS:
        raise ValueError(f"unknown graph {name!r}; Core ML graphs: {', '.join(COREML_GRAPHS)}")
    if name in STATEFUL_GRAPHS and not stateful:
        name = name.replace("llm_", "llm_kvio_")
    target = ct.target.iOS17 if name in KVIO_GRAPHS else ct.target.iOS18
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = graph_specs(model.config, slots)[name]
    module = build_graph(model, name, slots)

    start = time.perf_counter()
    mlmodel = _convert(module, name, spec, model, slots, precision, target)
    path = out_dir / f"{name}.mlpackage"
    write_atomically(path.parent, lambda tmp: mlmodel.save(str(tmp / path.name)))
    discard_temp_package(mlmodel)
    seconds = time.perf_counter() - start

    loaded = ct.models.MLModel(str(path), skip_model_load=True)
    proto = loaded.get_spec()
    signature = spec_signature(proto)
    hist = mil_op_histogram(proto)
    known = _known_ops(target)
    declared = {
        "inputs": [(s.name, s.shape) for s in spec.inputs],
        "outputs": [(s.name, s.shape) for s in spec.outputs],
        "states": [(s.name, s.shape) for s in spec.states],
    }
    found = {key: [(n, shape) for n, shape, _ in values] for key, values in signature.items()}
    placement: dict[str, Any] = {
        "file": str(path),
        "format": "coreml",
        "precision": precision,
        "deployment_target": target.name,
        "file_bytes": sum(f.stat().st_size for f in path.rglob("*") if f.is_file()),
        "total_ops": sum(hist.values()),
        "histogram": hist,
        "risks": {op: {"count": n, "reason": _RISKY_OPS[op]} for op, n in hist.items() if op in _RISKY_OPS},
        "unknown_ops": sorted(op for op in hist if op not in known),
        "max_rank": max_tensor_rank(proto),
        "spec_matches": _same_signature(declared, found),
    }
    parity: list[OutputParity] = []
    if coreml_predict_available():
        inputs = example_inputs(model.config, name, slots, dtype=torch.float32)
        parity = predict_parity(path, build_graph(model, name, slots), spec, inputs)
    else:
        placement["parity_skipped"] = PREDICT_SKIP_REASON
    return ExportedGraph(
        name=name,
        backend="coreml",
        files=[path],
        inputs=[n for n, _, _ in signature["inputs"]],
        outputs=[n for n, _, _ in signature["outputs"]],
        input_shapes=[shape for _, shape, _ in signature["inputs"]],
        output_shapes=[shape for _, shape, _ in signature["outputs"]],
        input_dtypes=[d.lower() for _, _, d in signature["inputs"]],
        output_dtypes=[d.lower() for _, _, d in signature["outputs"]],
        export_seconds=seconds,
        route=f"torch.export+run_decompositions+ct.convert({target.name},{precision})",
        parity=parity,
        placement=placement,
        states=[n for n, _, _ in signature["states"]],
    )


def _same_signature(declared: dict[str, list[Any]], found: dict[str, list[Any]]) -> bool:
    """Inputs and outputs equal in order; states equal as a set (Core ML orders them itself)."""
    same_io = all(declared[key] == found[key] for key in ("inputs", "outputs"))
    return same_io and sorted(declared["states"]) == sorted(found["states"])
