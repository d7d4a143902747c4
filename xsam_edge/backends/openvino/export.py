"""OpenVINO backend: one edge graph → ``<name>.xml`` / ``<name>.bin``, checked once on CPU against eager.

Route: ``ov.convert_model(torch.export ExportedProgram)`` (the same non-strict program every backend starts
from, ``graphs.export_graph``), names set from the graph spec, then ``ov.save_model`` (FP32 weights:
``compress_to_fp16=False``). The check compiles on CPU with ``INFERENCE_PRECISION_HINT=f32``: this CPU would
otherwise pick bf16 by itself (TOOLCHAIN.md §6d).

The LLM (``llm_prefill`` / ``llm_decode``): ``convert_model`` silently drops buffer mutations (EXPORT-RISKS
C2), so the stateful IR is built from the KV-I/O wrapper: ``LLMGraphKVIO`` is exported with a dynamic token
axis T ∈ [1, prefill_len], converted, and ``apply_make_stateful_transformation`` turns ``past_keys`` ↔
``present_keys`` and ``past_values`` ↔ ``present_values`` into ReadValue/Assign state. One IR, ``llm.xml``,
serves both graph names: prefill with T = prefill_len, decode with T = 1, state kept in the ``InferRequest``
(``reset_state()`` starts a new sequence). The stateless ``llm_kvio_*`` graphs are also exported as they are.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xsam_edge.export.graphs import (
    GRAPH_NAMES,
    SlotConfig,
    build_graph,
    example_inputs,
    export_graph,
    graph_specs,
)
from xsam_edge.export.placement import ExportedGraph, output_parity, placement_report
from xsam_edge.files import write_atomically
from xsam_edge.model.xsam import XSam

__all__ = [
    "F32_CONFIG",
    "STATEFUL_LLM_FILE",
    "compile_model",
    "export_openvino",
    "name_ports",
    "run_stateful_llm",
]

F32_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}
STATEFUL_GRAPHS = ("llm_prefill", "llm_decode")
STATEFUL_LLM_FILE = "llm"  # the one stateful IR both LLM graph names write
STATE_PAIRS = (("past_keys", "present_keys"), ("past_values", "present_values"))


def compile_model(model: Any, config: dict[str, str] | None = None, threads: int = 1) -> Any:
    """Compile an ``ov.Model`` or IR path on CPU (FP32 inference precision unless ``config`` says otherwise).

    Args:
        model (Any): an ``openvino.Model`` or a path to an ``.xml``.
        config (dict[str, str] | None): CPU plugin properties; ``None`` means ``F32_CONFIG``.
        threads (int): ``INFERENCE_NUM_THREADS``.

    Returns:
        Any: the ``openvino.CompiledModel``.
    """
    import openvino as ov

    core = ov.Core()
    if not isinstance(model, ov.Model):
        model = core.read_model(str(model))
    properties = dict(F32_CONFIG if config is None else config)
    properties.setdefault("INFERENCE_NUM_THREADS", str(threads))
    return core.compile_model(model, "CPU", properties)


def _to_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def name_ports(model: Any, input_names: Sequence[str], output_names: Sequence[str]) -> None:
    """Give the converted model's inputs and outputs the spec's names (by position)."""
    if len(model.inputs) != len(input_names) or len(model.outputs) != len(output_names):
        raise RuntimeError(
            f"converted model has {len(model.inputs)} inputs / {len(model.outputs)} outputs, "
            f"the spec {len(input_names)} / {len(output_names)}"
        )
    for port, name in zip(model.inputs, input_names, strict=True):
        port.get_tensor().set_names({name})
        port.get_node().set_friendly_name(name)
    for port, name in zip(model.outputs, output_names, strict=True):
        port.get_tensor().set_names({name})


def _stateful_llm(model: XSam, slots: SlotConfig) -> Any:
    """The KV-I/O LLM with a dynamic T ∈ [1, prefill_len], converted and made stateful."""
    import openvino as ov
    from openvino._offline_transformations import apply_make_stateful_transformation

    name = "llm_kvio_prefill"
    spec = graph_specs(model.config, slots)[name]
    module = build_graph(model, name, slots)
    program = export_graph(module, name, model.config, slots, dynamic_tokens=True)
    ov_model = ov.convert_model(program)
    name_ports(ov_model, [s.name for s in spec.inputs], [s.name for s in spec.outputs])
    # the converted program leaves every axis dynamic; pin all but T, so the state variables get static
    # shapes (a dynamic-shape ReadValue would start as an empty tensor)
    t = ov.Dimension(1, slots.prefill_len)
    shapes = {}
    for s in spec.inputs:
        dims = [ov.Dimension(d) for d in s.shape]
        if s.name == "inputs_embeds":
            dims[1] = t
        elif s.name == "cache_position":
            dims[0] = t
        shapes[s.name] = ov.PartialShape(dims)
    ov_model.reshape(shapes)
    params = {p.get_friendly_name(): p for p in ov_model.get_parameters()}
    results = {next(iter(r.output(0).get_names())): r for r in ov_model.get_results()}
    pairs = [(params[past], results[present]) for past, present in STATE_PAIRS]
    apply_make_stateful_transformation(ov_model, pairs)
    return ov_model


def run_stateful_llm(
    request: Any, inputs_embeds: torch.Tensor, cache_position: torch.Tensor
) -> list[np.ndarray]:
    """One call of the stateful LLM IR: (1, T, H) embeds and (T,) positions → [projected, logits].

    Args:
        request (Any): an ``InferRequest`` of the compiled stateful IR (holds the caches).
        inputs_embeds (torch.Tensor): (1, T, H), T ≤ prefill_len.
        cache_position (torch.Tensor): (T,) int64.

    Returns:
        list[np.ndarray]: projected (1, T, D) and logits (1, V).
    """
    result = request.infer(
        {"inputs_embeds": _to_numpy(inputs_embeds), "cache_position": _to_numpy(cache_position)}
    )
    by_name = {port.get_any_name(): value for port, value in result.items()}
    return [np.array(by_name["projected"]), np.array(by_name["logits"])]


def _stateful_parity(model: XSam, slots: SlotConfig, compiled: Any) -> list[Any]:
    """Prefill + 2 decode steps through one ``InferRequest`` against the eager stateful ``LLMGraph``."""
    eager = build_graph(model, "llm_prefill", slots)
    eager.reset_cache()
    dtype = next(eager.parameters()).dtype
    x, pos = example_inputs(model.config, "llm_prefill", slots, dtype=dtype)
    gen = torch.Generator().manual_seed(1)
    steps = [torch.randn(1, 1, x.shape[-1], generator=gen).to(dtype) for _ in range(2)]
    request = compiled.create_infer_request()
    request.reset_state()
    names, want, got = [], [], []
    with torch.no_grad():
        calls = [("prefill", x, pos)] + [
            (f"decode{i}", s, torch.tensor([pos.shape[0] + i])) for i, s in enumerate(steps)
        ]
        for label, emb, position in calls:
            ref = eager(emb, position)
            out = run_stateful_llm(request, emb, position)
            names += [f"{label}.projected", f"{label}.logits"]
            want += [_to_numpy(r) for r in ref]
            got += out
    return output_parity(names, want, got)


def export_openvino(model: XSam, name: str, slots: SlotConfig, out_dir: str | Path) -> ExportedGraph:
    """Export one edge graph to an OpenVINO IR in ``out_dir`` and check it on CPU (f32) against eager.

    Args:
        model (XSam): the model.
        name (str): one of ``GRAPH_NAMES``; ``llm_prefill`` and ``llm_decode`` both write the stateful
            ``llm.xml`` (dynamic T), checked with a prefill and two decode steps in one ``InferRequest``.
        slots (SlotConfig): the fixed slot sizes.
        out_dir (str | Path): destination folder (created).

    Returns:
        ExportedGraph: names, shapes and dtypes of the IR, export time, route, parity per output and the
        placement report; ``states`` lists the state variables of the stateful LLM.

    Raises:
        ValueError: unknown graph.
    """
    import openvino as ov

    if name not in GRAPH_NAMES:
        raise ValueError(f"unknown graph {name!r}; known graphs: {', '.join(GRAPH_NAMES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = graph_specs(model.config, slots)[name]

    start = time.perf_counter()
    if name in STATEFUL_GRAPHS:
        ov_model = _stateful_llm(model, slots)
        stem, route = STATEFUL_LLM_FILE, "exported_program(kvio, dynamic T)+make_stateful"
    else:
        module = build_graph(model, name, slots)
        ov_model = ov.convert_model(export_graph(module, name, model.config, slots))
        name_ports(ov_model, [s.name for s in spec.inputs], [s.name for s in spec.outputs])
        ov_model.reshape({s.name: ov.PartialShape(list(s.shape)) for s in spec.inputs})  # the static contract
        stem, route = name, "exported_program"
    files, _ = write_atomically(  # .xml, then .bin
        out_dir, lambda tmp: ov.save_model(ov_model, str(tmp / f"{stem}.xml"), compress_to_fp16=False)
    )
    seconds = time.perf_counter() - start

    compiled = compile_model(files[0])
    if name in STATEFUL_GRAPHS:
        parity = _stateful_parity(model, slots, compiled)
    else:
        inputs = example_inputs(model.config, name, slots, dtype=next(module.parameters()).dtype)
        with torch.no_grad():
            want = module(*inputs)
        want = want if isinstance(want, tuple | list) else (want,)
        request = compiled.create_infer_request()
        result = request.infer([_to_numpy(x) for x in inputs])
        got = [result[port] for port in compiled.outputs]
        parity = output_parity([s.name for s in spec.outputs], [_to_numpy(w) for w in want], got)

    def describe(ports: Sequence[Any]) -> tuple[list[str], list[tuple[int, ...]], list[str]]:
        names = [p.get_any_name() for p in ports]
        shapes = [tuple(d.get_length() if d.is_static else -1 for d in p.get_partial_shape()) for p in ports]
        dtypes = [p.get_element_type().to_dtype().name for p in ports]
        return names, shapes, dtypes

    in_names, in_shapes, in_dtypes = describe(ov_model.inputs)
    out_names, out_shapes, out_dtypes = describe(ov_model.outputs)
    return ExportedGraph(
        name=name,
        backend="openvino",
        files=files,
        inputs=in_names,
        outputs=out_names,
        input_shapes=in_shapes,
        output_shapes=out_shapes,
        input_dtypes=in_dtypes,
        output_dtypes=out_dtypes,
        export_seconds=seconds,
        route=route,
        parity=parity,
        placement=placement_report({name: files[0]})[name],
        states=_variables(ov_model),
    )


def _variables(ov_model: Any) -> list[str]:
    """State variable ids of a model (empty for a stateless one)."""
    return [op.get_variable_id() for op in ov_model.get_ordered_ops() if op.get_type_name() == "ReadValue"]
