"""How a graph is quantized for ExecuTorch, before lowering: torchao module swaps or a pt2e XNNPACK pass.

``QuantPlan`` decides per weight module (only those the graph's forward uses) whether it is quantized, by
which route, or left float and why; ``ExecuTorchQuantizer`` (``quantize.py``) applies it and lowers.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from xsam_edge.export.graphs import LLMGraph
from xsam_edge.quantization.common import keep_float_pattern
from xsam_edge.quantization.ranking import int4_weight_error, int8_share
from xsam_edge.quantization.schemes import Int8DynActInt4Weight, Int8Static, Scheme

BACKEND = "executorch"
# op-name fragments of quantized kernels, in delegation reports and in the .pte's operator table
QUANT_OPS = ("quantize", "choose_qparams", "embedding_byte", "embedding_4bit", "torchao")
_WEIGHT_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)
_LINEAR_W8 = (
    "ExecuTorch 1.5.1's XNNPACK delegate takes torchao's weight-only INT8 linear but computes it wrong"
)


def check_scheme(where: str, scheme: Scheme, samples: Sequence[Any] | None, key: str) -> None:
    from xsam_edge.backends import get_backend

    supported = get_backend(BACKEND).schemes
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


def _used_weight_modules(
    module: nn.Module, inputs: Sequence[torch.Tensor]
) -> tuple[dict[str, nn.Module], set[str]]:
    """The weight-bearing modules one forward of ``module`` calls, and its output layers.

    A wrapper holds the whole model, so only what the forward calls counts. The output layers are the
    Linears whose results the forward returns as they are (an LLM's head, a projector's last layer).
    """
    names = {m: n for n, m in module.named_modules() if isinstance(m, _WEIGHT_MODULES)}
    used: dict[str, nn.Module] = {}

    def record(mod: nn.Module, _: Any) -> None:  # a pre-hook returning a value would replace the inputs
        used[names[mod]] = mod

    def tag(mod: nn.Module, _: Any, out: Any) -> None:  # the result object itself carries its maker
        if isinstance(mod, nn.Linear) and isinstance(out, torch.Tensor):
            out._made_by_linear = names[mod]

    hooks = [m.register_forward_pre_hook(record) for m in names]
    hooks += [m.register_forward_hook(tag) for m in names]
    try:
        with torch.no_grad():
            outputs = module(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    if isinstance(module, LLMGraph):
        module.reset_cache()  # the probe run wrote the caches; the exported module starts empty, as built
    flat = outputs if isinstance(outputs, tuple | list) else (outputs,)
    heads = {getattr(o, "_made_by_linear", None) for o in flat}
    return dict(sorted(used.items())), {h for h in heads if h}


def _light_copy(module: nn.Module) -> nn.Module:
    """A copy of the module tree sharing every tensor: torchao swaps weights on the copy, the model stays."""
    memo = {id(t): t for t in (*module.parameters(), *module.buffers())}
    return copy.deepcopy(module, memo)


def _unapplied_settings(scheme: Scheme) -> list[str]:
    """The w8a8 settings XNNPACK's pt2e quantizer has no knob for, said in the report instead of dropped."""
    if scheme.name != "w8a8":
        return []
    notes = []
    if scheme.smooth_quant != "off":
        notes.append(
            f"smooth_quant {scheme.smooth_quant!r}: off (XNNPACK's pt2e quantizer has no SmoothQuant)"
        )
    if scheme.symmetric_activations:
        notes.append("symmetric_activations true: not applied (XNNPACK's static activations are asymmetric)")
    if scheme.op_types:
        notes.append(
            f"op_types {list(scheme.op_types)} not applied: XNNPACK's quantizer picks its own patterns"
        )
    return notes


class QuantPlan:
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
        self.notes += _unapplied_settings(scheme)

    def prepare(self, module: nn.Module) -> nn.Module:
        """The module to export: a quantized light copy, a pt2e-converted graph, or ``module`` (fp32)."""
        name = self.scheme.name
        if name == "fp32":
            return module
        used, output_layers = _used_weight_modules(module, self.inputs)
        if name == "w8a8" and not self.stateful:
            return self._pt2e(module, used)
        if name == "w8a8":
            self.notes.append(
                "w8a8 on the stateful LLM is INT8 weights with dynamic per-token INT8 activations "
                "(w8a8-dyn): static ranges would need one pt2e graph per method, which breaks the methods' "
                "shared weights"
            )
        return self._torchao(module, used, output_layers)

    def _torchao(self, module: nn.Module, used: dict[str, nn.Module], output_layers: set[str]) -> nn.Module:
        from torchao.quantization import (
            Int8DynamicActivationIntxWeightConfig,
            IntxWeightOnlyConfig,
            quantize_,
        )
        from torchao.quantization.granularity import PerAxis, PerGroup

        # embedding tables: INT8 per row (ExecuTorch's embedding_byte), under every scheme; the LLM export
        # of ExecuTorch's own examples does the same (``-E 8,0``): a tied table otherwise stays float
        embedding = IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0))
        int8_dynamic = Int8DynamicActivationIntxWeightConfig(
            weight_dtype=torch.int8, weight_granularity=PerAxis(0)
        )
        linear: Any = None  # w8: no weight-only INT8 linear (see _LINEAR_W8)
        if isinstance(self.scheme, Int8DynActInt4Weight):
            group = self.scheme.group_size
            linear = Int8DynamicActivationIntxWeightConfig(
                weight_dtype=torch.int4, weight_granularity=PerGroup(group)
            )
        elif self.scheme.name != "w8":  # w8a8-dyn, and w8a8 on the LLM
            linear = int8_dynamic
        kinds: tuple[type, ...] = (nn.Embedding,) if linear is None else (nn.Linear, nn.Embedding)
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
        tables = {
            fqn for fqn, mod in copied.named_modules() if fqn in targets and isinstance(mod, nn.Embedding)
        }
        heads, mixed = set(), set()
        if isinstance(self.scheme, Int8DynActInt4Weight) and self.scheme.head_bits == 8:
            heads = (targets - tables) & output_layers
            if heads:
                quantize_(copied, int8_dynamic, filter_fn=lambda _, fqn: fqn in heads)
                self.notes.append(f"output layer(s) at INT8 (head_bits 8): {', '.join(sorted(heads))}")
        if isinstance(self.scheme, Int8DynActInt4Weight) and self.scheme.ratio < 1:
            mixed = self._int8_share(used, targets - tables - heads - output_layers)
            quantize_(copied, int8_dynamic, filter_fn=lambda _, fqn: fqn in mixed)
            self.notes.append(
                f"{len(mixed)} Linear(s) at INT8 (ratio {self.scheme.ratio}): largest INT4 weight error: "
                + ", ".join(sorted(mixed))
            )
        if linear is not None:
            quantize_(copied, linear, filter_fn=lambda _, fqn: fqn in targets - tables - heads - mixed)
            if tables:
                self.notes.append(f"{len(tables)} embedding table(s) at INT8 per row (embedding_byte)")
        quantize_(copied, embedding, filter_fn=lambda _, fqn: fqn in tables)
        self.quantized_modules = sorted(targets)
        self.quantized = len(targets)
        return copied

    def _int8_share(self, used: dict[str, nn.Module], candidates: set[str]) -> set[str]:
        """The Linears a mixed 8da4w keeps at INT8: ``1 - ratio`` of their weights, worst INT4 error first.

        The output layers are ``head_bits``'s, not ranked here.
        """
        errors, sizes = {}, {}
        for fqn in candidates:
            weight = used[fqn].weight.detach().float().numpy()  # (out, in): groups run along ``in``
            error = int4_weight_error(weight.T, self.scheme.group_size)
            if error is not None:
                errors[fqn], sizes[fqn] = error, weight.size
        return int8_share(errors, sizes, self.scheme.ratio)

    def _why_float(self, fqn: str, module: nn.Module, kinds: tuple[type, ...]) -> str | None:
        pattern = keep_float_pattern([fqn], self.keep_float)
        if pattern:
            return f"keep_float pattern {pattern!r}"
        if not isinstance(module, kinds):
            if self.scheme.name == "w8" and isinstance(module, nn.Linear):
                return f"no weight-only INT8 linear ({_LINEAR_W8})"
            return f"{type(module).__name__}: {self.scheme.label()} covers {kinds[0].__name__} only"
        if (
            isinstance(self.scheme, Int8DynActInt4Weight)
            and isinstance(module, nn.Linear)
            and module.in_features % self.scheme.group_size
        ):
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
