"""ONNX backend: one edge graph → ``<name>.onnx``, checked once with ONNX Runtime CPU against eager.

Route: ``torch.onnx.export(wrapper, example_inputs, dynamo=True, opset_version=20)`` (EXPORT-RISKS: opset
≥ 16 for ``GridSample``); the legacy TorchScript exporter (``dynamo=False``, opset 17) is tried only when the
dynamo route raises for a graph, and ``ExportedGraph.route`` records which one made the file.

ONNX has no mutable state, so the stateful ``llm_prefill`` / ``llm_decode`` graphs are refused: the host runs
``llm_kvio_prefill`` / ``llm_kvio_decode`` and passes ``past_*`` → ``present_*`` between calls itself.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from xsam_edge.export.graphs import GRAPH_NAMES, SlotConfig, build_graph, example_inputs, graph_specs
from xsam_edge.export.placement import ExportedGraph, output_parity, placement_report
from xsam_edge.files import write_atomically
from xsam_edge.model.xsam import XSam

__all__ = ["EXTERNAL_DATA_BYTES", "ONNX_GRAPHS", "OPSET", "export_file", "export_onnx", "run_onnx"]

OPSET = 20
LEGACY_OPSET = 17
STATEFUL_GRAPHS = ("llm_prefill", "llm_decode")
ONNX_GRAPHS = tuple(name for name in GRAPH_NAMES if name not in STATEFUL_GRAPHS)
EXTERNAL_DATA_BYTES = 2**31 - 2**20  # protobuf's 2 GB limit, with a margin


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


def run_onnx(
    path: str | Path, inputs: Sequence[torch.Tensor | np.ndarray], threads: int = 1
) -> list[np.ndarray]:
    """Run an ONNX file once with ONNX Runtime CPU, inputs by position.

    Args:
        path (str | Path): the ``.onnx`` file.
        inputs (Sequence[torch.Tensor | np.ndarray]): positional inputs.
        threads (int): intra-op threads.

    Returns:
        list[np.ndarray]: the outputs, in order.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    arrays = [_to_numpy(x) if isinstance(x, torch.Tensor) else np.asarray(x) for x in inputs]
    if len(names) != len(arrays):
        raise ValueError(f"{path} takes {len(names)} inputs ({', '.join(names)}), got {len(arrays)}")
    return session.run(None, dict(zip(names, arrays, strict=True)))


def export_file(
    module: torch.nn.Module,
    inputs: tuple[torch.Tensor, ...],
    input_names: list[str],
    output_names: list[str],
    path: Path,
    external_data: bool,
) -> str:
    """Write ``path`` with the dynamo exporter, or the legacy one when dynamo fails; returns the route.

    Also the float32 route of ``quantization.onnx.quantize_module`` for any user module.
    """
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                inputs,
                dynamo=True,
                opset_version=OPSET,
                input_names=input_names,
                output_names=output_names,
                external_data=external_data,
                verbose=False,
            )
            program.save(str(path), external_data=external_data)
        return "dynamo"
    except Exception as dynamo_error:  # noqa: BLE001 - any exporter failure falls back, and is reported
        for stale in path.parent.iterdir():
            stale.unlink()
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module,
                    inputs,
                    str(path),
                    dynamo=False,
                    opset_version=LEGACY_OPSET,
                    input_names=input_names,
                    output_names=output_names,
                )
        except Exception as legacy_error:
            raise RuntimeError(
                f"ONNX export failed with both exporters: dynamo: {dynamo_error!r}; legacy: {legacy_error!r}"
            ) from legacy_error
        return "torchscript"


def export_onnx(model: XSam, name: str, slots: SlotConfig, out_dir: str | Path) -> ExportedGraph:
    """Export one edge graph to ``out_dir/<name>.onnx`` and check it with ONNX Runtime against eager.

    The file is written in a temporary folder inside ``out_dir`` and moved into place (with its external
    data file, when the weights exceed 2 GB), so a failed export never leaves a partial file.

    Args:
        model (XSam): the model (its dtype sets the example inputs' dtype).
        name (str): a graph of ``ONNX_GRAPHS`` (``GRAPH_NAMES`` without the stateful LLM).
        slots (SlotConfig): the fixed slot sizes.
        out_dir (str | Path): destination folder (created).

    Returns:
        ExportedGraph: names, shapes and dtypes from the ONNX file, export time, route, parity per output
        (max |Δ| and PSNR against the eager wrapper on the example inputs) and the placement report.

    Raises:
        ValueError: ``name`` is stateful or unknown.
        RuntimeError: both exporters failed.
    """
    import onnx

    if name in STATEFUL_GRAPHS:
        raise ValueError(f"ONNX has no state: export {name.replace('llm_', 'llm_kvio_')} instead of {name}")
    if name not in ONNX_GRAPHS:
        raise ValueError(f"unknown graph {name!r}; ONNX graphs: {', '.join(ONNX_GRAPHS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = graph_specs(model.config, slots)[name]
    module = build_graph(model, name, slots)
    dtype = next(p.dtype for p in module.parameters() if p.is_floating_point())
    inputs = example_inputs(model.config, name, slots, dtype=dtype)
    input_names = [s.name for s in spec.inputs]
    output_names = [s.name for s in spec.outputs]
    n_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    external = n_bytes > EXTERNAL_DATA_BYTES

    start = time.perf_counter()
    files, route = write_atomically(
        out_dir,
        lambda tmp: export_file(module, inputs, input_names, output_names, tmp / f"{name}.onnx", external),
    )
    seconds = time.perf_counter() - start
    path = out_dir / f"{name}.onnx"

    proto = onnx.load(str(path), load_external_data=False)

    def describe(values: Sequence[onnx.ValueInfoProto]) -> tuple[list[str], list[tuple[int, ...]], list[str]]:
        shapes = [
            tuple(d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim)
            for v in values
        ]
        dtypes = [onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name for v in values]
        return [v.name for v in values], shapes, dtypes

    in_names, in_shapes, in_dtypes = describe(proto.graph.input)
    out_names, out_shapes, out_dtypes = describe(proto.graph.output)
    with torch.no_grad():
        want = module(*inputs)
    want = want if isinstance(want, tuple | list) else (want,)
    got = run_onnx(path, inputs)
    return ExportedGraph(
        name=name,
        backend="onnx",
        files=files,
        inputs=in_names,
        outputs=out_names,
        input_shapes=in_shapes,
        output_shapes=out_shapes,
        input_dtypes=in_dtypes,
        output_dtypes=out_dtypes,
        export_seconds=seconds,
        route=route,
        parity=output_parity(output_names, [_to_numpy(w) for w in want], got),
        placement=placement_report({name: path})[name],
    )
