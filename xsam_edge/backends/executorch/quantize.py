"""ExecuTorch handler: quantize an edge graph before lowering, then lower it to ``.pte`` with XNNPACK.

ExecuTorch quantizes the PyTorch module, not a file, so this handler re-exports from the model through
``export_executorch``'s ``prepare`` hook:

=============  ==========================================================================================
scheme         what the wrapper module becomes before ``torch.export`` (TOOLCHAIN.md §6a, §9)
=============  ==========================================================================================
``w8a8``       pt2e: ``prepare_pt2e(XNNPACKQuantizer(symmetric, per channel))`` → calibration samples →
               ``convert_pt2e``; XNNPACK takes the Q/DQ pairs as INT8 kernels
``w8a8-dyn``   torchao ``Int8DynamicActivationIntxWeightConfig(int8, PerAxis(0))`` on Linear: INT8
               per-channel weights, INT8 per-token activations quantized at run time (XNNPACK qd8-qc8w);
               embedding tables as under ``w8``
``8da4w``      the same config with INT4 weights in groups of ``group_size``; tables as under ``w8``;
               ``head_bits`` 8 puts the output layers (Linears whose results are returned) at ``w8a8-dyn``,
               whose INT8 weights are a tied lookup's bytes: stored once, in the ``.ptd`` (``pack.py``)
``w8``         torchao ``IntxWeightOnlyConfig(int8, PerAxis(0))`` on ``nn.Embedding``; ExecuTorch's quant
               fusion turns it into ``quantized_decomposed::embedding_byte`` (a portable kernel)
=============  ==========================================================================================

Why torchao rather than pt2e for ``w8a8-dyn``: pt2e's dynamic config shares one ``choose_qparams`` between
the K and V projections of cross-attention, and the plain XNNPACK partitioner then fails with "dependency
cycles" (TOOLCHAIN.md §8 #4); torchao's per-Linear quantization has no shared nodes, lowers with the same
partitioner as every other graph, and, being a module swap, applies to the stateful LLM as well.

The LLM is one program whose methods are all traced around one ``LLMGraph``; module swaps (``w8a8-dyn``,
``8da4w``) quantize that one instance, so its cache buffers stay shared. Static ``w8a8`` would need one
pt2e graph per method (different activation ranges, duplicated weights), so for the LLM it falls back to
``w8a8-dyn`` and says so. ``w8`` has no weight-only INT8 linear here: torchao's weight-only pattern is taken
by the XNNPACK delegate of ExecuTorch 1.5.1 but computes wrong results, so Linear layers stay float and the
report lists them.

Evidence (``integer_ops``): the quantized ops inside the XNNPACK delegates (``delegate:<op>``, from the
delegation report) and the quantized kernels the final ``.pte`` calls outside them (``portable:<op>``).
PSNR: every output of the program in the ExecuTorch runtime against the eager float32 wrapper on the held-out
samples; for the LLM the held-out prefill chunks in order through one loaded program (the cache carries over,
as in a session), then one decode.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import nn

from xsam_edge.backends.executorch.export import (
    EXECUTORCH_DECOMPOSITIONS,
    LLM_METHODS,
    delegation_report,
    export_executorch,
    load_program,
    run_method,
    xnnpack_trace_form,
)
from xsam_edge.backends.executorch.pack import (
    data_file,
    has_tied_parameters,
    large_constants,
    tag_delegate_constants,
)
from xsam_edge.backends.executorch.quant_plan import QUANT_OPS, QuantPlan, check_scheme
from xsam_edge.export.graphs import SlotConfig, build_graph, example_inputs, graph_specs
from xsam_edge.export.placement import ExportedGraph
from xsam_edge.files import atomic_write_bytes, write_atomically
from xsam_edge.model.xsam import XSam
from xsam_edge.quantization.common import held_out_note, mean_gain, output_psnr, standard_strides
from xsam_edge.quantization.fidelity import Fidelity, measure_outputs
from xsam_edge.quantization.handler import GraphSource, QuantizedGraph, QuantizeHandler, Samples
from xsam_edge.quantization.report import GraphQuantReport, LayerScore, files_bytes
from xsam_edge.quantization.schemes import Scheme

__all__ = ["EXPORT_GRAPHS", "ExecuTorchQuantizer", "integer_evidence", "layer_sensitivity", "quantize_graph"]

BACKEND = "executorch"
# recipe graph → the export graph (also the calibration key: the LLM's samples come as "llm_prefill")
EXPORT_GRAPHS = {
    "encode_image": "encode_image",
    "embed": "embed",
    "region": "region",
    "llm": "llm_prefill",
    "segment": "segment",
}


# -- evidence -----------------------------------------------------------------------------------------------
def _pte_kernel_calls(path: Path) -> Counter[str]:
    """Kernel calls of every method in a ``.pte`` (delegate calls excluded), by operator name."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary(path.read_bytes()).program
    calls: Counter[str] = Counter()
    for plan in program.execution_plan:
        for chain in plan.chains:
            for instruction in chain.instructions:
                op_index = getattr(instruction.instr_args, "op_index", None)
                if op_index is not None:
                    operator = plan.operators[op_index]
                    calls[f"{operator.name}.{operator.overload}".rstrip(".")] += 1
    return calls


def integer_evidence(methods: dict[str, dict[str, Any]], path: Path) -> dict[str, int]:
    """Quantized ops inside the XNNPACK delegates and quantized kernels the program calls outside them.

    Args:
        methods (dict[str, dict[str, Any]]): method → ``delegation_report`` (``placement["methods"]``).
        path (Path): the ``.pte``.

    Returns:
        dict[str, int]: ``delegate:<edge op>`` and ``portable:<operator>`` → count, sorted.
    """
    evidence: Counter[str] = Counter()
    for report in methods.values():
        for op, n in report["delegated_ops"].items():
            if any(k in op for k in QUANT_OPS):
                evidence[f"delegate:{op}"] += n
    for op, n in _pte_kernel_calls(path).items():
        if any(k in op for k in QUANT_OPS):
            evidence[f"portable:{op}"] += n
    return dict(sorted(evidence.items()))


# -- accuracy -----------------------------------------------------------------------------------------------
def _tensors(sample: Sequence[np.ndarray], dtypes: Sequence[str]) -> tuple[torch.Tensor, ...]:
    """A recorded sample as torch inputs with the graph's dtypes (recordings may widen int32 ids)."""
    return tuple(
        torch.from_numpy(np.asarray(x)).to(getattr(torch, d)) for x, d in zip(sample, dtypes, strict=True)
    )


def _stateless_fidelity(
    files: Sequence[Path], reference: nn.Module, names: Sequence[str], samples: list[tuple[torch.Tensor, ...]]
) -> dict[str, Fidelity]:
    method = load_program(files[0], data_file(files)).load_method("forward")
    want, got = [], []
    for sample in samples:
        with torch.no_grad():
            out = reference(*sample)
        out = out if isinstance(out, tuple | list) else (out,)
        want.append([o.float().numpy() for o in out])
        got.append(run_method(method, sample))
    return measure_outputs(names, want, got)


def _llm_fidelity(
    files: Sequence[Path], reference: nn.Module, samples: list[tuple[torch.Tensor, ...]], max_seq: int
) -> dict[str, Fidelity]:
    """Prefill chunks in order through one loaded program and the eager graph, then one decode."""
    program = load_program(files[0], data_file(files))
    methods = {m: program.load_method(m) for m in LLM_METHODS}
    last_embeds, last_positions = samples[-1]
    position = min(int(last_positions.max()) + 1, max_seq - 1)
    decode = (last_embeds[:, -1:].clone(), torch.tensor([position], dtype=torch.int64))
    result = {}
    for method, chunks in (("prefill", samples), ("decode", [decode])):
        want, got = [], []
        for chunk in chunks:
            with torch.no_grad():
                want.append([o.float().numpy() for o in reference(*chunk)])
            got.append(run_method(methods[method], chunk))
        result |= measure_outputs([f"{method}.projected", f"{method}.logits"], want, got)
    return result


# -- entry points -------------------------------------------------------------------------------------------
def quantize_graph(
    model: XSam,
    graph: str,
    slots: SlotConfig,
    scheme: Scheme,
    keep_float: tuple[str, ...],
    calibration: dict[str, list[list[np.ndarray]]],
    holdout: dict[str, list[list[np.ndarray]]],
    out_dir: Path,
) -> tuple[ExportedGraph, GraphQuantReport]:
    """Quantize one recipe graph of ``model`` and lower it to ``out_dir/<name>.pte``.

    Args:
        model (XSam): the float model (left unchanged: quantization works on copies).
        graph (str): ``encode_image``, ``embed``, ``region``, ``llm`` or ``segment``.
        slots (SlotConfig): the fixed slot sizes of the bundle.
        scheme (Scheme): one of ``SUPPORTED["executorch"]``.
        keep_float (tuple[str, ...]): module-name patterns left in float (whole dotted components or globs
            of the wrapper's qualified names, e.g. ``sampling_offsets``).
        calibration (dict[str, list[list[np.ndarray]]]): bundle graph name → samples (positional inputs);
            the LLM's under ``llm_prefill``.
        holdout (dict[str, list[list[np.ndarray]]]): the same layout, for PSNR (example inputs when empty).
        out_dir (Path): destination folder.

    Returns:
        tuple[ExportedGraph, GraphQuantReport]: the program as ``export_executorch`` reports it (its parity
        checks the lowering: against the quantized eager module, or the float ``LLMGraph`` for the LLM), and
        the quantization report (PSNR against float32, evidence, what stayed float; ``bytes_fp32`` is left
        to the caller, who has the float file).

    Raises:
        ValueError: an unsupported scheme, an unknown graph, or ``w8a8`` without calibration samples.
    """
    import executorch.kernels.quantized  # noqa: F401  (registers embedding_byte & co. for export and runtime)

    start = time.perf_counter()
    key, spec, inputs, samples, held = _graph_data(model, graph, slots, scheme, calibration, holdout)
    plan = QuantPlan(scheme, keep_float, inputs, samples, stateful=graph == "llm")
    prepare = None if scheme.name == "fp32" else plan.prepare  # fp32: exactly the float export
    exported = export_executorch(model, key, slots, out_dir, prepare=prepare)

    reference = build_graph(model, key, slots)  # eager float32, fresh caches
    if graph == "llm":
        measured = _llm_fidelity(exported.files, reference, held, slots.seq_len(model.config))
    else:
        measured = _stateless_fidelity(exported.files, reference, [s.name for s in spec.outputs], held)
    on = held_out_note(holdout[key]) if holdout.get(key) else "the example inputs only: no held-out samples"
    report = GraphQuantReport(
        graph=graph,
        backend=BACKEND,
        scheme=scheme.label(),
        files=[str(f) for f in exported.files],
        bytes_quant=files_bytes(exported.files),
        seconds=time.perf_counter() - start,
        quantized=plan.quantized,
        kept_float=plan.kept_float,
        integer_ops=integer_evidence(exported.placement["methods"], exported.file),
        notes=plan.notes,
    )
    report.record(measured, on)
    return exported, report


def _graph_data(
    model: XSam,
    graph: str,
    slots: SlotConfig,
    scheme: Scheme,
    calibration: dict[str, list[list[np.ndarray]]],
    holdout: dict[str, list[list[np.ndarray]]],
) -> tuple[
    str, Any, tuple[torch.Tensor, ...], list[tuple[torch.Tensor, ...]], list[tuple[torch.Tensor, ...]]
]:
    """Check the request, then (export key, spec, example inputs, calibration samples, held-out samples).

    The held-out samples fall back to the example inputs when there are none.
    """
    if graph not in EXPORT_GRAPHS:
        raise ValueError(f"unknown graph {graph!r}; ExecuTorch quantizes: {', '.join(EXPORT_GRAPHS)}")
    key = EXPORT_GRAPHS[graph]
    check_scheme(graph, scheme, calibration.get(key), key)
    spec = graph_specs(model.config, slots)[key]
    dtypes = [s.dtype for s in spec.inputs]
    inputs = example_inputs(model.config, key, slots)
    samples = [_tensors(s, dtypes) for s in calibration.get(key, [])]
    held = [_tensors(s, dtypes) for s in holdout.get(key, [])] or [inputs]
    return key, spec, inputs, samples, held


def _eager_outputs(
    module: nn.Module, samples: list[tuple[torch.Tensor, ...]], stateful: bool
) -> list[list[np.ndarray]]:
    """``module``'s outputs on ``samples`` in PyTorch (the LLM: the chunks in order from empty caches)."""
    if stateful:
        module.reset_cache()
    outputs = []
    with torch.no_grad():
        for sample in samples:
            out = module(*sample)
            out = out if isinstance(out, tuple | list) else (out,)
            outputs.append([o.float().numpy().copy() for o in out])
    if stateful:
        module.reset_cache()  # a quantized light copy shares the float module's cache buffers
    return outputs


def layer_sensitivity(
    model: XSam,
    graph: str,
    slots: SlotConfig,
    scheme: Scheme,
    keep_float: tuple[str, ...],
    calibration: dict[str, list[list[np.ndarray]]],
    holdout: dict[str, list[list[np.ndarray]]],
    progress: bool = False,
) -> tuple[dict[str, float], list[LayerScore]]:
    """How much of one graph's quantization error each quantized module causes: the per-layer pass.

    The graph is quantized as ``quantize_graph`` would (same plan, same calibration), once as a whole and
    once per quantized module with that module alone left float; each variant runs in PyTorch on the
    held-out samples (pt2e's converted graph and torchao's swapped modules compute the integer numerics
    there, so no lowering is needed). A module whose float copy recovers many dB is where the error comes
    from: in LLMs typically one early ``down_proj`` whose input carries the massive activations that
    per-token INT8 cannot resolve. Static ``w8a8`` ranges are set by min/max here whatever the scheme's
    method: the histogram search takes ~13 s per teacher graph and variant, min/max a fraction of a second,
    and the ranking is what matters (``fit_max_drop`` then measures each choice with the real scheme).

    Returns:
        tuple[dict[str, float], list[LayerScore]]: the whole graph's PSNR per output, and one score per
        quantized module, most sensitive (largest mean gain) first.

    Raises:
        ValueError: an unknown graph, an unsupported scheme, or ``w8a8`` without calibration samples.
    """
    key, spec, inputs, samples, held = _graph_data(model, graph, slots, scheme, calibration, holdout)
    stateful = graph == "llm"
    reference = build_graph(model, key, slots).eval()
    names = [s.name for s in spec.outputs]
    want = _eager_outputs(reference, held, stateful)

    def measure(extra: tuple[str, ...]) -> tuple[dict[str, float], QuantPlan]:
        plan = QuantPlan(scheme, keep_float + extra, inputs, samples, stateful, observer="minmax")
        module = plan.prepare(reference)
        return output_psnr(names, want, _eager_outputs(module, held, stateful)), plan

    return _keep_each_float(measure, f"layers of {graph}", progress)


def _keep_each_float(
    measure: Callable[[tuple[str, ...]], tuple[dict[str, float], QuantPlan]], desc: str, progress: bool
) -> tuple[dict[str, float], list[LayerScore]]:
    """``measure`` the whole plan, then with each quantized module alone float: most sensitive first."""
    from tqdm import tqdm

    base, plan = measure(())
    scores = []
    for name in tqdm(plan.quantized_modules, desc=desc, disable=not progress):
        psnr_db, _ = measure((name,))
        scores.append(LayerScore(name, round(mean_gain(base, psnr_db), 2), psnr_db))
    return base, sorted(scores, key=lambda s: -s.gain_db)


def _quantize_module(
    module: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    calibration: list[tuple[np.ndarray, ...]],
    scheme: Scheme,
    out_dir: Path,
    name: str,
    keep_float: tuple[str, ...] = (),
    holdout: list[tuple[np.ndarray, ...]] | None = None,
) -> GraphQuantReport:
    """Quantize any module and lower it with XNNPACK to ``out_dir/<name>.pte`` (a user's own graph).

    Args:
        module (nn.Module): the float module (not modified).
        example_inputs (tuple[torch.Tensor, ...]): positional inputs fixing the static shapes.
        calibration (list[tuple[np.ndarray, ...]]): samples (positional inputs); ``w8a8`` sets its ranges from
            them.
        holdout (list[tuple[np.ndarray, ...]] | None): samples the fidelity is measured on (the example
            inputs when none: the report says so).
        scheme (Scheme): one of ``SUPPORTED["executorch"]``.
        out_dir (Path): destination folder.
        name (str): the program's file stem.
        keep_float (tuple[str, ...]): module-name patterns left in float.

    Returns:
        GraphQuantReport: ``bytes_fp32`` is the module's float parameter and buffer bytes (no float program
        is lowered); PSNR per output ``output_<i>`` against the float module in the ExecuTorch runtime.

    Raises:
        ValueError: an unsupported scheme, or ``w8a8`` without calibration samples.
    """
    import executorch.kernels.quantized  # noqa: F401  (registers embedding_byte & co. for export and runtime)
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower

    check_scheme(name, scheme, calibration, name)
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    # one dim order: a channels-last example made ExecuTorch read contiguous inputs in the wrong order
    inputs = tuple(standard_strides(x) for x in example_inputs)
    samples = _like(calibration, inputs)
    plan = QuantPlan(scheme, keep_float, inputs, samples, stateful=False)
    with xnnpack_trace_form(module):
        prepared = plan.prepare(module)
        with torch.no_grad():
            program = torch.export.export(prepared, inputs, strict=False)
    program = program.run_decompositions(EXECUTORCH_DECOMPOSITIONS)  # as export_executorch lowers
    # a tied table is read by a portable lookup and by a head XNNPACK packs: with every weight in one
    # <name>.ptd (the program's constants and the delegate's alike), equal bytes are stored once (pack.py)
    tied = has_tied_parameters(module)
    if tied:
        tag_delegate_constants(program, name)
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    methods = {"forward": delegation_report(edge)}
    path = out_dir / f"{name}.pte"
    config = ExecutorchBackendConfig(
        do_quant_fusion_and_const_prop=True, external_constants=large_constants(name) if tied else False
    )
    program = edge.to_executorch(config)
    atomic_write_bytes(path, program.buffer)
    data = write_atomically(out_dir, program.write_tensor_data_to_file)[0] if tied else []
    files = [path, *data]
    held = _like(holdout or [], inputs)
    on = held_out_note(held) if held else "the example input only: no held-out samples given"
    with torch.no_grad():
        outputs = module(*inputs)
    count = len(outputs) if isinstance(outputs, tuple | list) else 1
    report = GraphQuantReport(
        graph=name,
        backend=BACKEND,
        scheme=scheme.label(),
        files=[str(f) for f in files],
        bytes_fp32=sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers())),
        bytes_quant=files_bytes(files),
        seconds=time.perf_counter() - start,
        quantized=plan.quantized,
        kept_float=plan.kept_float,
        integer_ops=integer_evidence(methods, path),
        notes=plan.notes,
    )
    report.record(
        _stateless_fidelity(files, module, [f"output_{i}" for i in range(count)], held or [inputs]), on
    )
    return report


def _like(
    samples: Sequence[Sequence[np.ndarray]], inputs: tuple[torch.Tensor, ...]
) -> list[tuple[torch.Tensor, ...]]:
    """Positional numpy samples as tensors of the example inputs' dtypes, in ordinary strides."""
    return [
        tuple(
            standard_strides(torch.from_numpy(np.asarray(x)).to(e.dtype))
            for x, e in zip(s, inputs, strict=True)
        )
        for s in samples
    ]


def module_sensitivity(
    module: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    scheme: Scheme,
    keep_float: tuple[str, ...],
    calibration: Sequence[Sequence[np.ndarray]],
    holdout: Sequence[Sequence[np.ndarray]],
    progress: bool = False,
) -> tuple[dict[str, float], list[LayerScore]]:
    """``layer_sensitivity``'s per-layer pass on a user's module: each quantized module left float in turn.

    Raises:
        ValueError: an unsupported scheme, ``w8a8`` without calibration samples, or no held-out samples.
    """
    check_scheme("module", scheme, calibration, "module")
    if not holdout:
        raise ValueError("per-layer sensitivity needs held-out samples to measure on")
    module = module.eval()
    inputs = tuple(standard_strides(x) for x in example_inputs)
    samples, held = _like(calibration, inputs), _like(holdout, inputs)
    want = _eager_outputs(module, held, stateful=False)
    names = [f"output_{i}" for i in range(len(want[0]))]

    def measure(extra: tuple[str, ...]) -> tuple[dict[str, float], QuantPlan]:
        plan = QuantPlan(scheme, keep_float + extra, inputs, samples, stateful=False, observer="minmax")
        with xnnpack_trace_form(module):
            prepared = plan.prepare(module)
        return output_psnr(names, want, _eager_outputs(prepared, held, stateful=False)), plan

    return _keep_each_float(measure, "layers", progress)


class ExecuTorchQuantizer(QuantizeHandler):
    """torchao / pt2e quantization in PyTorch, then XNNPACK lowering (one ``.pte`` per graph)."""

    backend = BACKEND
    # the parts are quantized one at a time: a tied embed program keeps its own data file (pack.py)
    float_export_options = MappingProxyType({"tied_embed": False})

    def quantize(
        self,
        source: GraphSource,
        scheme: Scheme,
        keep_float: tuple[str, ...],
        calibration: Samples,
        holdout: Samples,
        out_dir: Path,
    ) -> QuantizedGraph:
        if source.module is not None:
            report = _quantize_module(
                source.module,
                source.example_inputs,
                calibration.get(source.name, []),
                scheme,
                out_dir,
                source.name,
                keep_float,
                holdout.get(source.name),
            )
            return QuantizedGraph({source.name: [Path(f) for f in report.files]}, report)
        exported, report = quantize_graph(
            source.model, source.name, source.slots, scheme, keep_float, calibration, holdout, out_dir
        )
        return QuantizedGraph({exported.name: list(exported.files)}, report, exported=exported)

    def layer_sensitivity(
        self,
        source: GraphSource,
        scheme: Scheme,
        keep_float: tuple[str, ...],
        calibration: Samples,
        holdout: Samples,
        work: Path,
        progress: bool = False,
    ) -> tuple[dict[str, float], list[LayerScore]]:
        if source.module is not None:  # a user's module: the same pass on the module itself
            return module_sensitivity(
                source.module,
                source.example_inputs,
                scheme,
                keep_float,
                calibration.get(source.name, []),
                holdout.get(source.name, []),
                progress,
            )
        return layer_sensitivity(
            source.model, source.name, source.slots, scheme, keep_float, calibration, holdout, progress
        )
