"""Quantize any model, not only X-SAM: one entry point for a torch module, an ONNX file or a HF model folder.

``quantize_model`` is the Python twin of ``xsam-edge quantize --model-file``. The model comes in as

- an ``nn.Module`` with positional ``example_inputs`` (they fix the static shapes);
- a ``.onnx`` file of any opset (converted to opset 13 where the quantizer needs it), for ONNX Runtime, or
  converted to OpenVINO IR first; ``outputs`` cuts it to the outputs the user deploys (a segmenter's side
  heads, a detector's auxiliary losses), so neither the fallback nor the file carries what nobody reads;
- a Hugging Face model folder (``config.json`` + weights, read offline), wrapped so its outputs are a tuple.

Calibration samples set the ranges; held-out samples, never the calibration ones, are what the report's
fidelity and the ``target_cosine`` are measured on (20 % of the calibration samples are held back when no
held-out set is given, and the report says so). With a target, the layers are ranked by measured
sensitivity and kept float one group at a time until the worst held-out sample holds it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xsam_edge.backends import get_backend

from .common import standard_strides
from .fallback import quantize_to_target
from .handler import FileQuantizer, GraphSource
from .report import GraphQuantReport
from .schemes import Scheme, scheme_from_dict

__all__ = [
    "ModelQuantResult",
    "TupleOutputs",
    "keep_outputs",
    "load_samples",
    "quantize_model",
    "split_holdout",
]

HOLDOUT_FRACTION = 0.2


@dataclass
class ModelQuantResult:
    """The quantized file(s), the report and whether the fidelity target was met (``None``: no target)."""

    files: list[Path]
    report: GraphQuantReport
    target_met: bool | None


def split_holdout(
    samples: Sequence[Sequence[np.ndarray]], fraction: float = HOLDOUT_FRACTION
) -> tuple[list[list[np.ndarray]], list[list[np.ndarray]]]:
    """(calibration, held-out): every ``round(1 / fraction)``-th sample held out, at least one of each.

    Raises:
        ValueError: fewer than two samples (nothing to hold out).
    """
    if len(samples) < 2:
        raise ValueError(
            f"give at least 2 calibration samples to hold some out, or a held-out set ({len(samples)})"
        )
    step = max(2, round(1 / fraction))
    held_out = set(range(step - 1, len(samples), step)) or {len(samples) - 1}
    calib = [list(s) for i, s in enumerate(samples) if i not in held_out]
    return calib, [list(s) for i, s in enumerate(samples) if i in held_out]


def load_samples(path: str | os.PathLike) -> list[list[np.ndarray]]:
    """Positional samples from an ``.npz``: one array per model input, in file order, samples on axis 0.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an ``.npz`` of arrays with one common sample count, or object arrays (refused:
            loading them would run pickle).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no samples file {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = [data[k] for k in data.files]
    except (ValueError, OSError) as err:
        raise ValueError(f"{path}: not an .npz of plain arrays ({err})") from None
    if not arrays or any(a.ndim == 0 for a in arrays) or len({a.shape[0] for a in arrays}) != 1:
        raise ValueError(
            f"{path}: give one array per input, each with the samples on axis 0 and the same count"
        )
    return [[a[i] for a in arrays] for i in range(arrays[0].shape[0])]


class TupleOutputs(torch.nn.Module):
    """A Hugging Face model whose ``forward`` returns a tuple of tensors (what the exporters take)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.inner(*args)
        values = out.to_tuple() if hasattr(out, "to_tuple") else out
        values = values if isinstance(values, tuple | list) else (values,)
        return tuple(v for v in values if isinstance(v, torch.Tensor))


def _hf_module(folder: Path) -> Any:
    """A HF model folder as a module (offline: only the folder's own files are read)."""
    from transformers import AutoModel

    try:
        model = AutoModel.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(
            f"{folder}: not a Hugging Face model folder this transformers reads ({err})"
        ) from None
    return TupleOutputs(model).eval()


def _onnx_files(path: Path) -> list[Path]:
    """The ONNX file and the external data files it names (all beside it)."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    locations = {
        dict((e.key, e.value) for e in t.external_data)["location"]
        for t in model.graph.initializer
        if uses_external_data(t)
    }
    return [path, *(path.parent / loc for loc in sorted(locations))]


def keep_outputs(path: str | os.PathLike, outputs: Sequence[str], out: str | os.PathLike) -> Path:
    """``path`` cut to ``outputs`` (in that order) and the nodes they need, written to ``out``.

    The graph keeps all its inputs (callers feed the same samples); initializers no kept node reads go.

    Raises:
        ValueError: an output the graph does not have, or no outputs.
    """
    import onnx

    path, out = Path(path), Path(out)
    model = onnx.load(str(path))
    graph = model.graph
    have = {o.name: o for o in graph.output}
    missing = [o for o in outputs if o not in have]
    if not outputs or missing:
        raise ValueError(f"{path.name}: no output(s) {missing or '(none given)'}; it has {', '.join(have)}")
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output}
    needed, stack, keep = set(outputs), list(outputs), set()
    while stack:  # by producer, not by position: converted files list nodes out of order
        i = producer.get(stack.pop())
        if i is not None and i not in keep:
            keep.add(i)
            reads = _reads(graph.node[i])
            stack += [t for t in reads if t not in needed]
            needed |= reads
    kept = _topological([node for i, node in enumerate(graph.node) if i in keep], graph)
    del graph.node[:]
    graph.node.extend(kept)
    initializers = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    produced = {o for node in kept for o in node.output}
    shapes = [v for v in graph.value_info if v.name in produced]  # a dangling one stops OpenVINO's reader
    del graph.value_info[:]
    graph.value_info.extend(shapes)
    chosen = [have[o] for o in outputs]
    del graph.output[:]
    graph.output.extend(chosen)
    big = sum(t.ByteSize() for t in initializers) > 2**30  # protobuf's 2 GiB limit, with room
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out), save_as_external_data=big, location=f"{out.name}.data" if big else None)
    return out


def _topological(nodes: list[Any], graph: Any) -> list[Any]:
    """``nodes`` each after the producers of its inputs (the order the ONNX checker asks for)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    ordered, pending = [], nodes
    while pending:
        left = [n for n in pending if not set(n.input) <= ready]
        ran = [n for n in pending if set(n.input) <= ready]
        if not ran:  # inputs nobody produces (or a cycle): keep the file's order for the rest
            return ordered + left
        ordered += ran
        ready |= {o for n in ran for o in n.output}
        pending = left
    return ordered


def _reads(node: Any) -> set[str]:
    """Every tensor name ``node`` reads, those of its subgraphs (``If``/``Loop`` bodies) included."""
    import onnx

    names = {n for n in node.input if n}
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            for inner in g.node:
                names |= _reads(inner)
    return names


def _as_ir(onnx_path: Path, folder: Path, name: str) -> list[Path]:
    """An ONNX file converted to a float32 OpenVINO IR ``folder/<name>.xml`` (+ ``.bin``)."""
    import openvino as ov

    xml = folder / f"{name}.xml"
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
    return [xml, xml.with_suffix(".bin")]


def quantize_model(
    model: Any,
    backend: str,
    scheme: Scheme | str | dict[str, Any],
    out_dir: str | os.PathLike,
    *,
    name: str = "model",
    example_inputs: Sequence[Any] = (),
    calibration: Sequence[Sequence[np.ndarray]] = (),
    holdout: Sequence[Sequence[np.ndarray]] = (),
    keep_float: Sequence[str] = (),
    outputs: Sequence[str] = (),
    target_cosine: float | None = None,
    max_float: float = 0.25,
    progress: bool = False,
) -> ModelQuantResult:
    """Quantize ``model`` for ``backend`` into ``out_dir`` and measure it on held-out samples.

    Args:
        model (Any): an ``nn.Module``, a ``.onnx`` path, or a Hugging Face model folder.
        backend (str): a registered backend (``onnx``, ``openvino``, ``executorch``, ``coreml``).
        scheme (Scheme | str | dict[str, Any]): the scheme, or its TOML form (``{"scheme": "w4", …}``).
        out_dir (str | os.PathLike): destination folder (the kept trial's files end up here).
        name (str): the graph's name (file stem, report name).
        example_inputs (Sequence[Any]): positional tensors for a module or HF folder (default: the first
            calibration sample).
        calibration (Sequence[Sequence[np.ndarray]]): positional input samples that set ranges.
        holdout (Sequence[Sequence[np.ndarray]]): samples the fidelity is measured on (default: 20 % of
            ``calibration``, held back).
        keep_float (Sequence[str]): layer name patterns kept float (module paths, node or weight names).
        outputs (Sequence[str]): an ONNX file's outputs to keep (default: all); the rest of the graph, and
            its error, is cut away before quantization, and the fidelity is measured on these.
        target_cosine (float | None): the worst held-out sample's cosine to reach by layer fallback.
        max_float (float): the largest fraction of ranked layers the fallback may keep float.
        progress (bool): progress bars.

    Raises:
        ValueError: an unknown backend or scheme, a model kind the backend cannot take, or bad samples.
        FileNotFoundError: the model path does not exist.
    """
    handler = get_backend(backend).quantize_handler()
    scheme = scheme if isinstance(scheme, Scheme) else scheme_from_dict(scheme)
    out_dir = Path(out_dir)
    calib, held = [list(s) for s in calibration], [list(s) for s in holdout]
    measured_on = ""
    if not held and len(calib) >= 2:
        calib, held = split_holdout(calib)
        measured_on = f"{len(held)} sample(s) held back from the {len(calibration)} given for calibration"
    with tempfile.TemporaryDirectory(prefix=".float-") as tmp:
        if outputs:
            if not (isinstance(model, str | os.PathLike) and Path(model).suffix == ".onnx"):
                raise ValueError("outputs cuts an .onnx file; a module returns what its forward returns")
            model = keep_outputs(model, outputs, Path(tmp) / "outputs" / f"{name}.onnx")
        source = _source(model, handler, backend, name, example_inputs, calib or held, Path(tmp), scheme)
        fit = quantize_to_target(
            handler,
            source,
            scheme,
            tuple(keep_float),
            {name: calib},
            {name: held},
            out_dir,
            target_cosine,
            max_float,
            progress,
        )
    files = [Path(f) for fs in fit.result.files.values() for f in fs]
    report = fit.result.report
    if measured_on:
        report.measured_on = measured_on
    return ModelQuantResult(files, report, fit.target_met if target_cosine is not None else None)


def _source(
    model: Any,
    handler: Any,
    backend: str,
    name: str,
    example_inputs: Sequence[Any],
    samples: list[list[np.ndarray]],
    tmp: Path,
    scheme: Scheme,
) -> GraphSource:
    """The graph as the handler takes it: float files (ONNX input) or a module with example inputs."""
    if isinstance(model, str | os.PathLike):
        path = Path(model)
        if not path.exists():
            raise FileNotFoundError(f"no model at {path}")
        if path.suffix == ".onnx":
            if not isinstance(handler, FileQuantizer) or backend not in ("onnx", "openvino"):
                raise ValueError(
                    f"an ONNX file quantizes on onnx or openvino, not {backend!r}: give the module"
                )
            files = _onnx_files(path) if backend == "onnx" else _as_ir(path, tmp, name)
            return GraphSource(name, files={name: files})
        if path.is_dir() and (path / "config.json").is_file():
            model = _hf_module(path)
        else:
            raise ValueError(f"{path}: give an .onnx file or a Hugging Face model folder (with config.json)")
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"a model is an nn.Module, an .onnx file or a HF folder, got {type(model).__name__}")
    inputs = tuple(example_inputs) or tuple(torch.from_numpy(np.asarray(x)) for x in samples[0])
    inputs = tuple(standard_strides(x) for x in inputs)  # one dim order
    if not inputs:
        raise ValueError("give example_inputs (or calibration samples) to fix the module's input shapes")
    return GraphSource(name, module=model.eval(), example_inputs=inputs)
