"""ExecuTorch backend: one edge graph → ``<name>.pte`` with the XNNPACK delegate, checked in the ET runtime.

Route (TOOLCHAIN.md §6a): ``torch.export`` (``export_graph``) → ``to_edge_transform_and_lower(ep,
partitioner=[XnnpackPartitioner()])`` → ``to_executorch()`` → ``.pte``, written atomically. Each program is
then run once with ``executorch.runtime`` on the graph's example inputs and compared with the eager wrapper
(max |Δ| and PSNR per output).

The stateful LLM is ONE program, ``llm.pte``, with four methods exported around the same ``LLMGraph``
instance: ``prefill`` (T ∈ [1, ``prefill_len``] on XNNPACK and the portable kernels, whose memory plan takes
the upper bound; fixed at ``prefill_len`` for the Core ML delegate) and ``decode`` (T = 1), plus
``read_cache() -> (keys, values)`` and ``write_cache(keys, values) -> ()`` over the same cache buffers
(``LLMCacheRead`` / ``LLMCacheWrite``).
The K/V caches are mutable buffers; the memory planner is run with ``share_mutable_buffers=True`` so every
method reads and writes the same cache allocation (a prefill followed by decodes keeps its state inside the
program). No ExecuTorch runtime lets a caller touch a program's buffers, so the two cache methods are how a
runtime saves the cache after the image prefix and restores it per query (encode once, query many), or zeroes
it. Asking for ``llm_prefill`` or ``llm_decode`` exports that joint program; the KV-I/O graphs are not
exported here (ExecuTorch keeps state).

The pixel decoder's deformable attention is traced in its ``rows`` form (``deformable_sampler``): the same
values as ``grid_sample`` from ``F.embedding`` lookups, because XNNPACK takes no ``grid_sampler_2d`` and the
portable kernel took 61 % of a full-size student's image graph. The mask decoder's packed cross-attention
projections are traced as separate constants (``separate_projections``): a slice of a parameter is not a
constant, and XNNPACK delegates only constant-weight linears.

The placement report of each program comes from the lowered ``EdgeProgramManager`` (``get_delegation_info``):
how many nodes went into XNNPACK delegates and which ops stayed on the portable CPU kernels
(``grid_sampler_2d``, ``native_layer_norm`` … per EXPORT-RISKS).
"""

from __future__ import annotations

import dataclasses
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xsam_edge.backends.executorch.pack import DATA_SUFFIX, large_constants, tag_tied_head, tied_data_tag
from xsam_edge.export.graphs import (
    GRAPH_NAMES,
    GraphSpec,
    SlotConfig,
    TensorSpec,
    build_graph,
    example_inputs,
    export_graph,
    graph_specs,
)
from xsam_edge.export.graphs_llm import LLMCacheRead, LLMCacheWrite, LLMGraph
from xsam_edge.export.placement import ExportedGraph, output_parity
from xsam_edge.files import atomic_write_bytes, write_atomically
from xsam_edge.model.mask_decoder import separate_projections
from xsam_edge.model.pixel_decoder import deformable_sampler
from xsam_edge.model.xsam import XSam
from xsam_edge.spec.config import XSamConfig

__all__ = [
    "ET_GRAPHS",
    "CACHE_METHODS",
    "LLM_METHODS",
    "LLM_PROGRAM",
    "delegation_report",
    "export_executorch",
    "llm_method_specs",
    "llm_steps",
    "load_program",
    "run_method",
]

KVIO_GRAPHS = ("llm_kvio_prefill", "llm_kvio_decode")
STATEFUL_GRAPHS = ("llm_prefill", "llm_decode")
ET_GRAPHS = tuple(name for name in GRAPH_NAMES if name not in KVIO_GRAPHS)
LLM_PROGRAM = "llm"  # file stem of the joint prefill/decode program
LLM_METHODS = {"prefill": "llm_prefill", "decode": "llm_decode"}  # method → graph name
CACHE_METHODS = ("read_cache", "write_cache")  # the llm program's state I/O methods
# ops that are bookkeeping, not compute, in an ExecuTorch edge graph (left out of the portable-op list)
_BOOKKEEPING = ("getitem", "executorch_call_delegate", "alloc")


def _adaptive_max_pool2d(x: torch.Tensor, output_size: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``adaptive_max_pool2d`` as ``max_pool2d_with_indices`` when the output size divides the input size.

    ExecuTorch's portable library has no ``adaptive_max_pool2d`` kernel and the op is not core ATen (the
    ``region`` graph's mask-to-grid step uses it); an evenly dividing adaptive pool is a plain max pool with
    kernel = stride = input / output, with the same flat indices.
    """
    h, w = x.shape[-2:]
    oh, ow = output_size
    if h % oh or w % ow:
        return NotImplemented
    kernel = (h // oh, w // ow)
    return torch.ops.aten.max_pool2d_with_indices.default(x, kernel, kernel)


def _unmasked_sdpa(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """Unmasked ``scaled_dot_product_attention`` as 3-D ``bmm``, softmax, ``bmm`` (the others as before).

    The default decomposition wraps the softmax in a "safe softmax" (``eq(-inf)``, ``any``, ``where`` over
    every score) for rows that a mask blocks everywhere; without a mask no row is, and those ops ran as
    portable kernels (the students' image encoders: 11 calls, ``where`` 78 ms and ``eq`` 29 ms of 2.9 s).
    """
    if attn_mask is not None or is_causal or enable_gqa or dropout_p or query.dim() != 4:
        return NotImplemented
    b, h, length, width = query.shape
    keys = key.shape[-2]
    scale = width**-0.5 if scale is None else scale
    scores = torch.bmm(
        query.reshape(b * h, length, width) * scale, key.reshape(b * h, keys, width).transpose(1, 2)
    )
    out = torch.bmm(scores.softmax(-1), value.reshape(b * h, keys, value.shape[-1]))
    return out.view(b, h, length, value.shape[-1])


def _batched_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched ``matmul`` as one ``bmm``, expanding only an operand whose batch dims broadcast.

    The default decomposition expands both operands to the common batch shape, even one that already has
    it, and each such expand became a portable ``expand_copy`` of its whole input: the LLM's K and V caches,
    twice per layer and call (10 % of a full-size student's decode step). Vectors: as before.
    """
    if min(a.dim(), b.dim()) < 2 or max(a.dim(), b.dim()) < 3:
        return NotImplemented
    batch = tuple(torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]))

    def flat(x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[:-2]) != batch:
            x = x.expand(*batch, *x.shape[-2:])
        return x.reshape(-1, *x.shape[-2:])

    out = torch.bmm(flat(a), flat(b))
    return out.view(*batch, *out.shape[-2:])


EXECUTORCH_DECOMPOSITIONS = {
    torch.ops.aten.matmul.default: _batched_matmul,
    torch.ops.aten.adaptive_max_pool2d.default: _adaptive_max_pool2d,
    torch.ops.aten.scaled_dot_product_attention.default: _unmasked_sdpa,
}


@contextmanager
def xnnpack_trace_form(module: torch.nn.Module) -> Iterator[None]:
    """Inside the block, ``module`` computes what it did with ops XNNPACK can delegate (for a trace).

    Deformable attention as row lookups (no delegate takes ``grid_sampler_2d``, and its portable kernel is
    slow); the mask decoder's packed projections as separate constants (XNNPACK delegates a linear only when
    its weight is one). Every ExecuTorch trace goes through here, the float export and the quantizer alike.
    """
    with deformable_sampler(module, "rows"), separate_projections(module):
        yield


PARTITIONERS = ("xnnpack", "coreml", "none")
# partitioners whose LLM prefill method takes a dynamic T (the Core ML delegate's models have fixed shapes)
DYNAMIC_PREFILL_PARTITIONERS = ("xnnpack", "none")
# where a program lowered for a partitioner can run in the ExecuTorch runtime (its backend is registered)
_RUNS_ON = {"coreml": "Darwin"}


def _partitioners(partitioner: str, stateful: bool = False) -> list[Any]:
    """The delegate partitioners of ``partitioner``; the MPS one is not in the executorch wheel.

    ``coreml`` lowers to Core ML ML programs (iOS 18, fp16 compute); it lowers on Linux, but only an Apple
    runtime has the Core ML backend registered. For the joint LLM program the cache buffers stay ExecuTorch's
    (``take_over_mutable_buffer=False``): each method becomes its own Core ML model, and a cache taken over as
    Core ML state would be one state per method, not the one cache every method shares.
    """
    if partitioner == "xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        return [XnnpackPartitioner()]
    if partitioner == "coreml":
        import coremltools as ct
        from executorch.backends.apple.coreml.compiler import CoreMLBackend
        from executorch.backends.apple.coreml.partition import CoreMLPartitioner

        specs = CoreMLBackend.generate_compile_specs(minimum_deployment_target=ct.target.iOS18)
        return [CoreMLPartitioner(compile_specs=specs, take_over_mutable_buffer=not stateful)]
    if partitioner == "none":
        return []
    if partitioner == "mps":
        raise ValueError(
            "the MPS partitioner is not in the executorch wheel (executorch.backends.apple.mps is missing); "
            "use 'coreml' for Apple GPUs and the Neural Engine, or build ExecuTorch from source with MPS"
        )
    raise ValueError(f"unknown partitioner {partitioner!r}; use one of {', '.join(PARTITIONERS)}")


def delegation_report(edge_manager: Any, method: str = "forward") -> dict[str, Any]:
    """The placement report of one method of a lowered ``EdgeProgramManager``.

    Args:
        edge_manager (Any): the result of ``to_edge_transform_and_lower``.
        method (str): the method name.

    Returns:
        dict[str, Any]: ``delegated_nodes``, ``portable_nodes``, ``delegate_subgraphs``, ``portable_ops`` (op
        name → count of nodes outside any delegate, most frequent first) and ``delegated_ops`` (op name →
        count inside delegates).
    """
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(edge_manager.exported_program(method).graph_module)
    portable = {
        op: b.non_delegated
        for op, b in info.delegation_by_operator.items()
        if b.non_delegated and op not in _BOOKKEEPING
    }
    delegated = {op: b.delegated for op, b in info.delegation_by_operator.items() if b.delegated}
    return {
        "delegated_nodes": int(info.num_delegated_nodes),
        "portable_nodes": int(sum(portable.values())),
        "delegate_subgraphs": int(info.num_delegated_subgraphs),
        "portable_ops": dict(sorted(portable.items(), key=lambda kv: -kv[1])),
        "delegated_ops": dict(sorted(delegated.items(), key=lambda kv: -kv[1])),
    }


def load_program(path: str | Path, data_path: str | Path | None = None) -> Any:
    """Load a ``.pte`` with the ExecuTorch Python runtime (``executorch.runtime``).

    Args:
        path (str | Path): the program file.
        data_path (str | Path | None): the ``.ptd`` holding the constants the program keeps outside (a
            tied table, ``pack.py``).

    Returns:
        Any: the ``executorch.runtime.Program``; ``load_method(name)`` gives a method that keeps its mutable
        buffers (the LLM caches) between ``execute`` calls.
    """
    from executorch.runtime import Runtime

    return Runtime.get().load_program(str(path), data_path=None if data_path is None else str(data_path))


def run_method(method: Any, inputs: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """Execute a loaded ExecuTorch method once.

    Args:
        method (Any): from ``load_program(path).load_method(name)``.
        inputs (Sequence[torch.Tensor]): positional inputs (contiguous tensors).

    Returns:
        list[np.ndarray]: the outputs, in order (copied out of the runtime's arenas).
    """
    outputs = method.execute([x.contiguous() for x in inputs])
    return [np.array(o.detach().numpy() if isinstance(o, torch.Tensor) else o, copy=True) for o in outputs]


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy()


def export_executorch(
    model: XSam,
    name: str,
    slots: SlotConfig,
    out_dir: str | Path,
    partitioner: str = "xnnpack",
    prepare: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
) -> ExportedGraph:
    """Export one edge graph to an ExecuTorch program and check it in the ExecuTorch runtime against eager.

    ``llm_prefill`` and ``llm_decode`` both give the joint ``llm.pte`` (methods ``prefill``, ``decode``,
    ``read_cache`` and ``write_cache``, shared cache buffers). Its parity check runs prefill on the example
    chunk, reads the cache, runs two decodes at the next positions (then, where the prefill length is
    dynamic, a short prefill after them), writes the read cache back and decodes again, through one loaded
    program, against the eager ``LLMGraph`` doing the same; the outputs are named ``<step>.<output>``
    (``prefill.projected``, ``read_cache.keys``, ``decode1.logits``, ``short_prefill.logits``,
    ``restored_decode1.projected`` …). The manifest marks a dynamic prefill ``"dynamic_tokens": true``:
    its listed T is then the upper bound, and a runtime runs a short chunk at its own length, unpadded.

    Args:
        model (XSam): the model (its dtype sets the example inputs' dtype).
        name (str): a graph of ``ET_GRAPHS``.
        slots (SlotConfig): the fixed slot sizes.
        out_dir (str | Path): destination folder (created).
        partitioner (str): ``"xnnpack"`` (default), ``"coreml"`` (Core ML delegate; its runtime check runs
            only on macOS, elsewhere ``placement["parity_skipped"]`` says why) or ``"none"`` (portable kernels
            only).
        prepare (Callable[[torch.nn.Module], torch.nn.Module] | None): quantization's hook: maps the graph's
            wrapper to the module that is exported and checked (a quantized copy, a pt2e-converted module;
            for the LLM an ``LLMGraph``, which every method is traced around). With it, ``to_executorch``
            also runs ExecuTorch's quant fusion (torchao's INT8 embedding → ``embedding_byte``).

    Returns:
        ExportedGraph: backend ``executorch``; ``files`` = [the ``.pte``] (then the ``.ptd`` of a tied
        table's program, ``pack.py``); names, shapes and dtypes from the
        GraphSpec (the prefill method's for the LLM); ``export_seconds`` covers export, lowering and write;
        ``placement`` has one ``delegation_report`` per method under ``methods``, plus ``file_bytes`` and
        ``lower_seconds``; ``states`` lists the cache buffers of the LLM and ``methods`` the signature of each
        of its methods (``llm_method_specs``).

    Raises:
        ValueError: ``name`` is a KV-I/O graph or unknown, or the partitioner is unknown.
    """
    from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass

    if name in KVIO_GRAPHS:
        raise ValueError(f"ExecuTorch keeps the caches as program state: export {name.replace('_kvio', '')}")
    if name not in ET_GRAPHS:
        raise ValueError(f"unknown graph {name!r}; ExecuTorch graphs: {', '.join(ET_GRAPHS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stateful = name in STATEFUL_GRAPHS
    dynamic_tokens = stateful and partitioner in DYNAMIC_PREFILL_PARTITIONERS
    specs = graph_specs(model.config, slots)
    spec = specs["llm_prefill"] if stateful else specs[name]
    module = build_graph(model, spec.name, slots)  # one LLMGraph instance for every method: shared buffers
    dtype = next(p.dtype for p in module.parameters() if p.is_floating_point())
    with xnnpack_trace_form(module):
        if prepare is not None:
            module = prepare(module)
        start = time.perf_counter()
        if stateful:
            programs = _llm_programs(module, model, slots, dtype, dynamic_tokens)
        else:
            exported = export_graph(module, name, model.config, slots, dtype=dtype)
            programs = {"forward": exported.run_decompositions(EXECUTORCH_DECOMPOSITIONS)}
    export_done = time.perf_counter()
    tied_tag = tied_data_tag(model.config.llm.tie_word_embeddings, name, stateful, partitioner)
    if stateful and tied_tag:  # the head's weight, which XNNPACK packs, goes to llm.ptd (pack.py)
        if not sum(tag_tied_head(p, tied_tag) for p in programs.values()):
            raise RuntimeError("a tied LLM program without an lm_head weight: nothing to store once")
    edge = to_edge_transform_and_lower(
        programs if stateful else programs["forward"], partitioner=_partitioners(partitioner, stateful)
    )
    config = ExecutorchBackendConfig(
        memory_planning_pass=MemoryPlanningPass(share_mutable_buffers=stateful),
        emit_mutable_buffer_names=stateful,
        # constant propagation runs per method: it would fold read_cache's copy of a cache buffer (which that
        # method only reads) into a zero constant; XNNPACK lowers the LLM's quantized ops without it
        do_quant_fusion_and_const_prop=prepare is not None and not stateful,
        # a tied lookup's table goes to embed.ptd, which the pack step merges into llm.ptd (pack.py)
        external_constants=large_constants(tied_tag) if tied_tag and not stateful else False,
    )
    methods = {m: delegation_report(edge, m) for m in programs}  # before to_executorch adds out-vars
    et_program = edge.to_executorch(config)
    lower_seconds = time.perf_counter() - export_done
    path = out_dir / f"{LLM_PROGRAM if stateful else name}.pte"
    atomic_write_bytes(path, et_program.buffer)
    data_paths: list[Path] = []
    if tied_tag:  # <tag>.ptd, moved in whole
        data_paths, _ = write_atomically(out_dir, et_program.write_tensor_data_to_file)
        if [p.name for p in data_paths] != [f"{tied_tag}{DATA_SUFFIX}"]:
            raise RuntimeError(f"expected {tied_tag}{DATA_SUFFIX} beside {path.name}, got {data_paths}")
    data_path = data_paths[0] if data_paths else None
    seconds = time.perf_counter() - start
    placement: dict[str, Any] = {
        "file": str(path),
        "format": "executorch",
        "partitioner": partitioner,
        "file_bytes": sum(p.stat().st_size for p in (path, *data_paths)),
        "lower_seconds": lower_seconds,
        "methods": methods,
    }

    runs_on = _RUNS_ON.get(partitioner)
    if runs_on and platform.system() != runs_on:
        placement["parity_skipped"] = (
            f"a {partitioner}-delegated program runs only where ExecuTorch has that backend ({runs_on})"
        )
        names, want, got = [], [], []
    elif stateful:
        names, want, got = _llm_parity(model, slots, load_program(path, data_path), dtype, dynamic_tokens)
    else:
        inputs = example_inputs(model.config, name, slots, dtype=dtype)
        with torch.no_grad():
            eager = module(*inputs)
        eager = eager if isinstance(eager, tuple | list) else (eager,)
        names = [s.name for s in spec.outputs]
        want = [_numpy(w) for w in eager]
        got = run_method(load_program(path, data_path).load_method("forward"), inputs)
    return ExportedGraph(
        name=LLM_PROGRAM if stateful else name,
        backend="executorch",
        files=[path, *data_paths],
        inputs=[s.name for s in spec.inputs],
        outputs=[s.name for s in spec.outputs],
        input_shapes=[s.shape for s in spec.inputs],
        output_shapes=[s.shape for s in spec.outputs],
        input_dtypes=[s.dtype for s in spec.inputs],
        output_dtypes=[s.dtype for s in spec.outputs],
        export_seconds=seconds,
        route=f"torch.export+to_edge_transform_and_lower({partitioner})"
        + ("+multimethod_shared_buffers" if stateful else ""),
        parity=output_parity(names, want, got),
        placement=placement,
        states=[s.name for s in spec.states],
        methods=_method_entries(llm_method_specs(model.config, slots), dynamic_tokens) if stateful else [],
    )


def llm_method_specs(config: XSamConfig, slots: SlotConfig) -> dict[str, GraphSpec]:
    """The signature of every method of ``llm.pte`` (what an app calls; listed in the manifest).

    Args:
        config (XSamConfig): the model config.
        slots (SlotConfig): the fixed slot sizes.

    Returns:
        dict[str, GraphSpec]: method name → spec, in ``prefill``, ``decode``, ``read_cache``, ``write_cache``
        order; the cache methods' keys and values are (L, kv_heads, max_seq, head_dim), the KV-I/O layout.
    """
    specs = graph_specs(config, slots)
    states = specs["llm_prefill"].states
    past_keys, past_values = specs["llm_kvio_prefill"].inputs[2:]
    cache = (TensorSpec("keys", past_keys.shape), TensorSpec("values", past_values.shape))
    return {
        **{m: dataclasses.replace(specs[g], name=m) for m, g in LLM_METHODS.items()},
        "read_cache": GraphSpec("read_cache", (), cache, states),
        "write_cache": GraphSpec("write_cache", cache, (), states),
    }


def _method_entries(specs: dict[str, GraphSpec], dynamic_tokens: bool) -> list[dict[str, Any]]:
    """Manifest form of the methods: name, inputs and outputs (the states are the graph entry's).

    A prefill with a dynamic T says so (``dynamic_tokens``: the token axis takes 1 to its listed size).
    """
    entries = [{k: v for k, v in spec.to_dict().items() if k != "states"} for spec in specs.values()]
    for entry in entries:
        if entry["name"] == "prefill" and dynamic_tokens:
            entry["dynamic_tokens"] = True
    return entries


def _llm_programs(
    graph: LLMGraph, model: XSam, slots: SlotConfig, dtype: torch.dtype, dynamic_tokens: bool
) -> dict[str, torch.export.ExportedProgram]:
    """The four methods of ``llm.pte``, all traced around ``graph`` so they name the same cache buffers.

    With ``dynamic_tokens`` the prefill takes T ∈ [1, prefill_len] (``export_graph``), so a next query's few
    tokens are not padded to a whole chunk.
    """
    programs = {
        "prefill": export_graph(
            graph, "llm_prefill", model.config, slots, dtype=dtype, dynamic_tokens=dynamic_tokens
        ),
        "decode": export_graph(graph, "llm_decode", model.config, slots, dtype=dtype),
    }
    keys, values = llm_method_specs(model.config, slots)["write_cache"].inputs
    empty = (torch.zeros(keys.shape, dtype=dtype), torch.zeros(values.shape, dtype=dtype))
    with torch.no_grad():
        programs["read_cache"] = torch.export.export(LLMCacheRead(graph), (), strict=False)
        programs["write_cache"] = torch.export.export(LLMCacheWrite(graph), empty, strict=False)
    return {m: p.run_decompositions(EXECUTORCH_DECOMPOSITIONS) for m, p in programs.items()}


def llm_steps(
    model: XSam, slots: SlotConfig, dtype: torch.dtype, short_prefill: bool = False
) -> list[tuple[str, tuple[torch.Tensor, ...]]]:
    """The LLM check sequence: prefill on the example chunk, then two decodes at the next positions.

    Args:
        model (XSam): the model.
        slots (SlotConfig): the fixed slot sizes.
        dtype (torch.dtype): float input dtype.
        short_prefill (bool): then a prefill of fewer rows than the chunk (a dynamic-T method's own length)
            at the positions after the decodes.

    Returns:
        list[tuple[str, tuple[torch.Tensor, ...]]]: (method, inputs) per step.
    """
    steps = [("prefill", example_inputs(model.config, "llm_prefill", slots, dtype=dtype))]
    gen = torch.Generator().manual_seed(1)
    hidden = model.config.llm.hidden_size
    for i in range(2):
        embeds = torch.randn((1, 1, hidden), generator=gen).to(dtype)
        steps.append(("decode", (embeds, torch.tensor([slots.prefill_len + i], dtype=torch.int64))))
    if short_prefill:
        rows = max(2, slots.prefill_len // 2 - 1)
        start = min(slots.prefill_len + 2, slots.seq_len(model.config) - rows)
        embeds = torch.randn((1, rows, hidden), generator=gen).to(dtype)
        steps.append(("prefill", (embeds, torch.arange(rows, dtype=torch.int64) + start)))
    return steps


def _llm_parity(
    model: XSam, slots: SlotConfig, program: Any, dtype: torch.dtype, short_prefill: bool = False
) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """The ``llm_steps`` in the runtime (one program, state kept) and in eager, outputs flattened.

    After the prefill, ``read_cache`` is compared with the eager caches; after the decodes, that read is
    written back with ``write_cache`` and the first decode is run again (``restored_decode1``): it matches
    only if both cache methods reach the state that ``prefill`` and ``decode`` use.
    """
    eager_graph = build_graph(model, "llm_prefill", slots)  # fresh, zero caches
    eager_read = LLMCacheRead(eager_graph)
    methods = {m: program.load_method(m) for m in (*LLM_METHODS, *CACHE_METHODS)}
    names: list[str] = []
    want: list[np.ndarray] = []
    got: list[np.ndarray] = []

    def record(label: str, outputs: Sequence[str], eager: Sequence[torch.Tensor], runtime: list) -> None:
        names.extend(f"{label}.{n}" for n in outputs)
        want.extend(_numpy(e) for e in eager)
        got.extend(runtime)

    # ExecuTorch serialises no initial value for a mutable buffer: zero the cache, as eager starts
    run_method(methods["write_cache"], [torch.zeros(c.shape, dtype=dtype) for c in eager_read()])
    steps = llm_steps(model, slots, dtype, short_prefill)
    first_decode: list[torch.Tensor] = []
    saved: list[np.ndarray] = []
    for i, (method, inputs) in enumerate(steps):
        with torch.no_grad():
            eager = eager_graph(*inputs)
        label = "prefill" if i == 0 else "short_prefill" if method == "prefill" else f"decode{i}"
        record(label, ("projected", "logits"), eager, run_method(methods[method], inputs))
        if i == 0:
            saved = run_method(methods["read_cache"], [])
            with torch.no_grad():
                record("read_cache", ("keys", "values"), eager_read(), saved)
        elif i == 1:
            first_decode = list(eager)
    run_method(methods["write_cache"], [torch.from_numpy(a) for a in saved])
    restored = run_method(methods["decode"], steps[1][1])
    record("restored_decode1", ("projected", "logits"), first_decode, restored)
    return names, want, got
