"""ExecuTorch handler: quantize an edge graph before lowering, then lower it to ``.pte`` with XNNPACK.

ExecuTorch quantizes the PyTorch module, not a file, so this handler re-exports from the model through
``export_executorch``'s ``prepare`` hook:

=============  ==========================================================================================
scheme         what the wrapper module becomes before ``torch.export`` (TOOLCHAIN.md §6a, §9)
=============  ==========================================================================================
``w8a8``       pt2e: ``prepare_pt2e(XNNPACKQuantizer(symmetric, per channel))`` → calibration samples →
               ``convert_pt2e``; XNNPACK takes the Q/DQ pairs as INT8 kernels
``w8a8-dyn``   torchao ``Int8DynamicActivationIntxWeightConfig(int8, PerAxis(0))`` on Linear: INT8
               per-channel weights, INT8 per-token activations quantized at run time (XNNPACK qd8-qc8w)
``8da4w``      the same config with INT4 weights in groups of ``group_size``
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

import copy
import dataclasses
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from xsam_edge.export.executorch import (
    LLM_METHODS,
    _write_atomic,
    delegation_report,
    export_executorch,
    load_program,
    run_method,
)
from xsam_edge.export.graphs import LLMGraph, SlotConfig, build_graph, example_inputs, graph_specs
from xsam_edge.export.placement import ExportedGraph
from xsam_edge.model.xsam import XSam

from .common import keep_float_pattern, mean_gain, output_psnr
from .recipes import SUPPORTED
from .report import GraphQuantReport, LayerScore, files_bytes
from .schemes import Int8DynActInt4Weight, Int8Static, Scheme

__all__ = ["EXPORT_GRAPHS", "integer_evidence", "layer_sensitivity", "quantize_graph", "quantize_module"]

BACKEND = "executorch"
# recipe graph → the export graph (also the calibration key: the LLM's samples come as "llm_prefill")
EXPORT_GRAPHS = {
    "encode_image": "encode_image",
    "embed": "embed",
    "region": "region",
    "llm": "llm_prefill",
    "segment": "segment",
}
# op-name fragments of quantized kernels, in delegation reports and in the .pte's operator table
_QUANT_OPS = ("quantize", "choose_qparams", "embedding_byte", "embedding_4bit", "torchao")
_WEIGHT_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)
_LINEAR_W8 = (
    "ExecuTorch 1.5.1's XNNPACK delegate takes torchao's weight-only INT8 linear but computes it wrong"
)


def _check(where: str, scheme: Scheme, samples: Sequence[Any] | None, key: str) -> None:
    supported = SUPPORTED[BACKEND]
    if scheme.name not in supported:
        raise ValueError(
            f"{where}: scheme {scheme.name!r} is not supported by ExecuTorch; "
            f"supported: {', '.join(supported)}"
        )
    if scheme.calibrated and not samples:
        raise ValueError(
            f"empty calibration set for {where}: {scheme.label()} needs recorded inputs of {key!r} (record "
            "calibration data, or pick a scheme without calibration: w8a8-dyn)"
        )


def _used_weight_modules(module: nn.Module, inputs: Sequence[torch.Tensor]) -> dict[str, nn.Module]:
    """Weight-bearing modules one forward of ``module`` calls (a wrapper holds the whole model)."""
    names = {m: n for n, m in module.named_modules() if isinstance(m, _WEIGHT_MODULES)}
    used: dict[str, nn.Module] = {}

    def record(mod: nn.Module, _: Any) -> None:  # a pre-hook returning a value would replace the inputs
        used[names[mod]] = mod

    hooks = [m.register_forward_pre_hook(record) for m in names]
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    if isinstance(module, LLMGraph):
        module.reset_cache()  # the probe run wrote the caches; the exported module starts empty, as built
    return dict(sorted(used.items()))


def _light_copy(module: nn.Module) -> nn.Module:
    """A copy of the module tree sharing every tensor: torchao swaps weights on the copy, the model stays."""
    memo = {id(t): t for t in (*module.parameters(), *module.buffers())}
    return copy.deepcopy(module, memo)


class _Plan:
    """What one scheme does to one wrapper module; ``prepare`` is ``export_executorch``'s hook.

    Args:
        scheme (Scheme): the scheme.
        keep_float (Sequence[str]): module-name patterns left in float.
        inputs (tuple[torch.Tensor, ...]): example inputs (the forward that finds the used modules).
        samples (list[tuple[torch.Tensor, ...]]): calibration inputs (``w8a8``).
        stateful (bool): the wrapper is the LLM (its methods share one module: no pt2e).
        observer (str | None): ``w8a8`` activation observer in place of the scheme's calibration method
            (the per-layer pass ranks with ``minmax``: the histogram search costs ~13 s per teacher graph).
    """

    def __init__(
        self,
        scheme: Scheme,
        keep_float: Sequence[str],
        inputs: tuple[torch.Tensor, ...],
        samples: list[tuple[torch.Tensor, ...]],
        stateful: bool,
        observer: str | None = None,
    ) -> None:
        self.scheme, self.keep_float, self.inputs, self.samples = scheme, tuple(keep_float), inputs, samples
        self.stateful, self.observer = stateful, observer
        self.quantized = 0
        self.quantized_modules: list[str] = []
        self.kept_float: list[str] = []
        self.notes: list[str] = []

    def prepare(self, module: nn.Module) -> nn.Module:
        """The module to export: a quantized light copy, a pt2e-converted graph, or ``module`` (fp32)."""
        name = self.scheme.name
        if name == "fp32":
            return module
        used = _used_weight_modules(module, self.inputs)
        if name == "w8a8" and not self.stateful:
            return self._pt2e(module, used)
        if name == "w8a8":
            self.notes.append(
                "w8a8 on the stateful LLM is INT8 weights with dynamic per-token INT8 activations "
                "(w8a8-dyn): static ranges would need one pt2e graph per method, which breaks the methods' "
                "shared weights"
            )
        return self._torchao(module, used)

    def _torchao(self, module: nn.Module, used: dict[str, nn.Module]) -> nn.Module:
        from torchao.quantization import (
            Int8DynamicActivationIntxWeightConfig,
            IntxWeightOnlyConfig,
            quantize_,
        )
        from torchao.quantization.granularity import PerAxis, PerGroup

        if self.scheme.name == "w8":
            config: Any = IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0))
            kinds: tuple[type, ...] = (nn.Embedding,)
        elif isinstance(self.scheme, Int8DynActInt4Weight):
            group = self.scheme.group_size
            config = Int8DynamicActivationIntxWeightConfig(
                weight_dtype=torch.int4, weight_granularity=PerGroup(group)
            )
            kinds = (nn.Linear,)
        else:  # w8a8-dyn, and w8a8 on the LLM
            config = Int8DynamicActivationIntxWeightConfig(
                weight_dtype=torch.int8, weight_granularity=PerAxis(0)
            )
            kinds = (nn.Linear,)
        targets = set()
        for fqn, mod in used.items():
            why = self._why_float(fqn, mod, kinds)
            if why:
                self.kept_float.append(f"{fqn}: {why}")
            else:
                targets.add(fqn)
        if not targets:
            self.notes.append(f"nothing in this graph takes {self.scheme.label()}: the program stays float")
            return module
        copied = _light_copy(module)
        for fqn, mod in copied.named_modules():
            if fqn in targets and isinstance(mod, nn.Embedding):
                # padding_idx only masks a gradient, but it adds an argument that ExecuTorch's
                # embedding_byte fusion pattern does not match
                mod.padding_idx = None
        quantize_(copied, config, filter_fn=lambda _, fqn: fqn in targets)
        self.quantized_modules = sorted(targets)
        self.quantized = len(targets)
        return copied

    def _why_float(self, fqn: str, module: nn.Module, kinds: tuple[type, ...]) -> str | None:
        pattern = keep_float_pattern([fqn], self.keep_float)
        if pattern:
            return f"keep_float pattern {pattern!r}"
        if not isinstance(module, kinds):
            if self.scheme.name == "w8" and isinstance(module, nn.Linear):
                return f"no weight-only INT8 linear ({_LINEAR_W8})"
            return f"{type(module).__name__}: {self.scheme.label()} covers {kinds[0].__name__} only"
        if isinstance(self.scheme, Int8DynActInt4Weight) and module.in_features % self.scheme.group_size:
            return (
                f"in_features {module.in_features} is not a multiple of group_size {self.scheme.group_size}"
            )
        return None

    def _pt2e(self, module: nn.Module, used: dict[str, nn.Module]) -> nn.Module:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import QuantizationAnnotation
        from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

        scheme = self.scheme
        assert isinstance(scheme, Int8Static)
        method = self.observer or scheme.calibration_method
        if method == "percentile":
            self.notes.append(
                "calibration_method 'percentile' on XNNPACK: torchao's HistogramObserver, a range search "
                "that minimises the quantization error and so clips rare outliers (pt2e has no percentile "
                "observer)"
            )
        kept = {fqn: p for fqn in used if (p := keep_float_pattern([fqn], self.keep_float))}
        self.kept_float += [f"{fqn}: keep_float pattern {p!r}" for fqn, p in kept.items()]
        quantizer = XNNPACKQuantizer().set_global(_xnnpack_config(scheme.per_channel, method))
        patterns = self.keep_float
        quantizer.set_filter_function(lambda node: not _inside_matching_module(node, patterns))
        with torch.no_grad():
            graph = torch.export.export(module, self.inputs, strict=False).module()
            for node in graph.graph.nodes:
                if not _float_output(node):  # annotated as "nothing": XNNPACKQuantizer's cat ignores filters
                    node.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(_annotated=True)
            prepared = prepare_pt2e(graph, quantizer)
            for sample in self.samples:
                prepared(*sample)
            converted = convert_pt2e(prepared)
        integer = _modules_with_integer_weights(converted)
        self.quantized_modules = sorted(integer)
        self.quantized = len(integer)
        self.kept_float += [
            f"{fqn}: {type(mod).__name__}: XNNPACKQuantizer does not quantize it"
            for fqn, mod in used.items()
            if fqn not in integer and fqn not in kept
        ]
        return converted


def _xnnpack_config(per_channel: bool, method: str) -> Any:
    """XNNPACK's symmetric static config with the activation observer ``method`` asks for.

    ``get_symmetric_quantization_config`` always observes activations with a histogram search; ``minmax``
    swaps in ``MinMaxObserver`` so that the scheme means the same here as on ONNX Runtime and OpenVINO.
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config
    from torchao.quantization.pt2e.observer import HistogramObserver, MinMaxObserver

    config = get_symmetric_quantization_config(is_per_channel=per_channel)
    observer = (MinMaxObserver if method == "minmax" else HistogramObserver).with_args(eps=2**-12)
    activation = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=observer)
    return dataclasses.replace(config, input_activation=activation, output_activation=activation)


def _float_output(node: torch.fx.Node) -> bool:
    """Whether ``node`` makes a float tensor (or no tensor): only those may carry INT8 observers."""
    value = node.meta.get("val")
    return not isinstance(value, torch.Tensor) or value.is_floating_point()


def _inside_matching_module(node: torch.fx.Node, patterns: Sequence[str]) -> bool:
    """Whether ``node`` was traced inside a module a keep-float pattern names (``nn_module_stack`` paths).

    Any module counts, not only weight-bearing ones: ``nn.MultiheadAttention`` computes its input
    projection functionally, so only its own path covers those linears.
    """
    stack = node.meta.get("nn_module_stack") or {}
    return any(keep_float_pattern([path], patterns) for path, _ in stack.values())


def _modules_with_integer_weights(graph: torch.fx.GraphModule) -> set[str]:
    """Modules whose linear / conv / embedding reads a dequantized weight in a converted pt2e graph."""
    aten = torch.ops.aten
    weight_arg = {
        aten.linear.default: 1,
        aten.conv1d.default: 1,
        aten.conv2d.default: 1,
        aten.embedding.default: 0,
    }
    found = set()
    for node in graph.graph.nodes:
        index = weight_arg.get(node.target)
        stack = node.meta.get("nn_module_stack")
        if index is None or not stack:
            continue
        weight = node.args[index]
        if isinstance(weight, torch.fx.Node) and "dequantize" in str(weight.target):
            found.add(list(stack.values())[-1][0])
    return found


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
            if any(k in op for k in _QUANT_OPS):
                evidence[f"delegate:{op}"] += n
    for op, n in _pte_kernel_calls(path).items():
        if any(k in op for k in _QUANT_OPS):
            evidence[f"portable:{op}"] += n
    return dict(sorted(evidence.items()))


# -- accuracy -----------------------------------------------------------------------------------------------
def _tensors(sample: Sequence[np.ndarray], dtypes: Sequence[str]) -> tuple[torch.Tensor, ...]:
    """A recorded sample as torch inputs with the graph's dtypes (recordings may widen int32 ids)."""
    return tuple(
        torch.from_numpy(np.asarray(x)).to(getattr(torch, d)) for x, d in zip(sample, dtypes, strict=True)
    )


def _stateless_psnr(
    path: Path, reference: nn.Module, names: Sequence[str], samples: list[tuple[torch.Tensor, ...]]
) -> dict[str, float]:
    method = load_program(path).load_method("forward")
    want, got = [], []
    for sample in samples:
        with torch.no_grad():
            out = reference(*sample)
        out = out if isinstance(out, tuple | list) else (out,)
        want.append([o.float().numpy() for o in out])
        got.append(run_method(method, sample))
    return output_psnr(names, want, got)


def _llm_psnr(
    path: Path, reference: nn.Module, samples: list[tuple[torch.Tensor, ...]], max_seq: int
) -> dict[str, float]:
    """Prefill chunks in order through one loaded program and the eager graph, then one decode."""
    program = load_program(path)
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
        result |= output_psnr([f"{method}.projected", f"{method}.logits"], want, got)
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
    plan = _Plan(scheme, keep_float, inputs, samples, stateful=graph == "llm")
    prepare = None if scheme.name == "fp32" else plan.prepare  # fp32: exactly the float export
    exported = export_executorch(model, key, slots, out_dir, prepare=prepare)

    reference = build_graph(model, key, slots)  # eager float32, fresh caches
    if graph == "llm":
        psnr_db = _llm_psnr(exported.file, reference, held, slots.seq_len(model.config))
    else:
        psnr_db = _stateless_psnr(exported.file, reference, [s.name for s in spec.outputs], held)
    notes = plan.notes + ([] if holdout.get(key) else ["PSNR on the example inputs: no held-out samples"])
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
        notes=notes,
        psnr_db=psnr_db,
    )
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
    _check(graph, scheme, calibration.get(key), key)
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
    from tqdm import tqdm

    key, spec, inputs, samples, held = _graph_data(model, graph, slots, scheme, calibration, holdout)
    stateful = graph == "llm"
    reference = build_graph(model, key, slots).eval()
    names = [s.name for s in spec.outputs]
    want = _eager_outputs(reference, held, stateful)

    def measure(extra: tuple[str, ...]) -> tuple[dict[str, float], _Plan]:
        plan = _Plan(scheme, keep_float + extra, inputs, samples, stateful, observer="minmax")
        module = plan.prepare(reference)
        return output_psnr(names, want, _eager_outputs(module, held, stateful)), plan

    base, plan = measure(())
    scores = []
    for module_name in tqdm(plan.quantized_modules, desc=f"layers of {graph}", disable=not progress):
        psnr_db, _ = measure((module_name,))
        scores.append(LayerScore(module_name, round(mean_gain(base, psnr_db), 2), psnr_db))
    return base, sorted(scores, key=lambda s: -s.gain_db)


def quantize_module(
    module: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    calibration: list[tuple[np.ndarray, ...]],
    scheme: Scheme,
    out_dir: Path,
    name: str,
    keep_float: tuple[str, ...] = (),
) -> GraphQuantReport:
    """Quantize any module and lower it with XNNPACK to ``out_dir/<name>.pte`` (a user's own graph).

    Args:
        module (nn.Module): the float module (not modified).
        example_inputs (tuple[torch.Tensor, ...]): positional inputs fixing the static shapes.
        calibration (list[tuple[np.ndarray, ...]]): samples (positional inputs); ``w8a8`` sets its ranges from
            them, and PSNR is measured on them (on ``example_inputs`` when empty).
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

    _check(name, scheme, calibration, name)
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    inputs = tuple(example_inputs)
    samples = [
        tuple(torch.from_numpy(np.asarray(x)).to(e.dtype) for x, e in zip(s, inputs, strict=True))
        for s in calibration
    ]
    plan = _Plan(scheme, keep_float, inputs, samples, stateful=False)
    prepared = plan.prepare(module)
    with torch.no_grad():
        program = torch.export.export(prepared, inputs, strict=False)
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    methods = {"forward": delegation_report(edge)}
    path = out_dir / f"{name}.pte"
    _write_atomic(
        edge.to_executorch(ExecutorchBackendConfig(do_quant_fusion_and_const_prop=True)).buffer, path
    )
    held = samples or [inputs]
    with torch.no_grad():
        outputs = module(*inputs)
    count = len(outputs) if isinstance(outputs, tuple | list) else 1
    return GraphQuantReport(
        graph=name,
        backend=BACKEND,
        scheme=scheme.label(),
        files=[str(path)],
        bytes_fp32=sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers())),
        bytes_quant=files_bytes([path]),
        seconds=time.perf_counter() - start,
        quantized=plan.quantized,
        kept_float=plan.kept_float,
        integer_ops=integer_evidence(methods, path),
        notes=plan.notes + ([] if samples else ["PSNR on the example inputs: no samples given"]),
        psnr_db=_stateless_psnr(path, module, [f"output_{i}" for i in range(count)], held),
    )
