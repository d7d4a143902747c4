"""The quantize-handler protocol: how one backend quantizes one graph, for X-SAM bundles and any module alike.

A backend's handler (``backends/<name>/quantize.py``, named by its registry record) implements ``quantize``:
one graph in, its quantized files and a report out. The graph comes as a ``GraphSource``: a recipe graph of
an X-SAM bundle (its float files, and the model it was exported from) or a user's module with example
inputs. Two shapes of handler exist, and the base classes here hold what each shape shares:

- ``FileQuantizer``: quantizes the backend's float files (ONNX Runtime, NNCF, coremltools.optimize). A module
  becomes a float file first (``export_float``); per-layer sensitivity quantizes the file once per layer.
- a handler that quantizes in PyTorch before lowering (ExecuTorch's torchao / pt2e) implements ``quantize``
  and ``layer_sensitivity`` on the module itself.

``QuantizeHandler.quantize_module`` is the one generic entry for a user's module on any backend. A handler
never skips silently: every op it leaves float is in the report with the reason.
"""

from __future__ import annotations

import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from .common import add_note, model_file, standard_strides
from .report import GraphQuantReport, LayerScore
from .schemes import Int8Static, Scheme

Samples = dict[str, list[list[np.ndarray]]]
"""Bundle graph name → positional input samples."""

SMOOTH_QUANT_AUTO = "smooth_quant auto: "
"""How a report's note starts that says what ``smooth_quant="auto"`` chose (``on (…)`` or ``off (…)``)."""


@dataclass
class GraphSource:
    """One graph to quantize.

    Attributes:
        name (str): the recipe graph (``encode_image`` … ``llm``) or the user's name for a module.
        files (dict[str, list[Path]]): bundle graph name → its float files (X-SAM graphs).
        model (Any): the float ``XSam`` the files came from (handlers that quantize in PyTorch re-export).
        slots (Any): the bundle's ``SlotConfig``.
        module (Any): a user's ``nn.Module`` (instead of an X-SAM graph).
        example_inputs (tuple): the module's positional inputs (they fix static shapes).
    """

    name: str
    files: dict[str, list[Path]] = field(default_factory=dict)
    model: Any = None
    slots: Any = None
    module: Any = None
    example_inputs: tuple = ()


@dataclass
class QuantizedGraph:
    """What a handler made: bundle graph name → new files, the report, and (PyTorch handlers) the program."""

    files: dict[str, list[Path]]
    report: GraphQuantReport
    exported: Any = None  # an ``ExportedGraph`` when the handler lowered the graph itself


def cannot_rank(backend: str) -> ValueError:
    """The error for a per-layer pass on a backend whose runtime does not run here."""
    return ValueError(
        f"per-layer sensitivity compares outputs in the backend's runtime, and {backend!r} "
        "cannot run here; its budget keeps whole graphs float"
    )


class QuantizeHandler(ABC):
    """One backend's quantizer. Subclasses set ``backend`` (its registry name).

    Attributes:
        backend (str): the registry name.
        float_export_options (Mapping[str, Any]): export options of the float graphs it quantizes (Core ML:
            two single-function LLM packages, which ``coremltools.optimize`` takes).
    """

    backend: str = ""
    float_export_options: Mapping[str, Any] = MappingProxyType({})

    @property
    def graphs(self) -> dict[str, tuple[str, ...]]:
        """Recipe graph → the bundle graphs it covers (``llm``: the registry's LLM graphs of the backend)."""
        from xsam_edge.backends import get_backend
        from xsam_edge.backends.registry import COMMON_GRAPHS

        return {**{g: (g,) for g in COMMON_GRAPHS}, "llm": get_backend(self.backend).llm_graphs}

    @property
    def schemes(self) -> tuple[str, ...]:
        from xsam_edge.backends import get_backend

        return get_backend(self.backend).schemes

    @abstractmethod
    def quantize(
        self,
        source: GraphSource,
        scheme: Scheme,
        keep_float: tuple[str, ...],
        calibration: Samples,
        holdout: Samples,
        out_dir: Path,
    ) -> QuantizedGraph:
        """Quantize ``source`` by ``scheme`` into ``out_dir``.

        Args:
            source (GraphSource): the graph (X-SAM files and model, or a module).
            scheme (Scheme): one of the backend's ``schemes``.
            keep_float (tuple[str, ...]): module-name patterns left in float.
            calibration (Samples): samples that set activation ranges (static and data-aware schemes).
            holdout (Samples): samples the report's PSNR is measured on.
            out_dir (Path): destination folder.

        Raises:
            ValueError: an unsupported scheme or graph, or missing calibration data.
        """

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
        """The graph's PSNR per output, and its quantized layers ranked by the gain of keeping each float.

        Raises:
            ValueError: this backend cannot compare outputs here (no runtime on this machine).
        """
        raise cannot_rank(self.backend)

    def rank_layers(
        self,
        source: GraphSource,
        scheme: Scheme,
        keep_float: tuple[str, ...],
        calibration: Samples,
        holdout: Samples,
        work: Path,
        quantized: QuantizedGraph,
        progress: bool = False,
    ) -> list[str]:
        """The quantized layers as keep-float patterns, most sensitive first (the fallback's order).

        The default is the per-layer pass (``layer_sensitivity``: one quantization per layer, scored on
        ``holdout``); a handler with a cheaper measurement overrides it. ``quantized`` is the whole graph's
        result, for handlers that rank from it.

        Raises:
            ValueError: this backend cannot rank layers here.
        """
        _, scores = self.layer_sensitivity(source, scheme, keep_float, calibration, holdout, work, progress)
        return [s.module for s in scores]

    def quantize_module(
        self,
        module: Any,
        example_inputs: Sequence[Any],
        calibration: Sequence[Sequence[np.ndarray]],
        scheme: Scheme,
        out_dir: str | Path,
        name: str,
        keep_float: tuple[str, ...] = (),
        holdout: Sequence[Sequence[np.ndarray]] = (),
    ) -> GraphQuantReport:
        """Quantize any module for this backend: ``out_dir/<name>.<ext>`` (a user's own graph).

        Args:
            module (Any): the float ``nn.Module`` (not modified; eval mode is set).
            example_inputs (Sequence[Any]): positional tensors fixing the static shapes; fidelity is
                measured on them only when ``holdout`` is empty (the report says so).
            calibration (Sequence[Sequence[np.ndarray]]): positional input samples (static schemes need them).
            scheme (Scheme): one of the backend's ``schemes``.
            out_dir (str | Path): destination folder.
            name (str): file stem and report name.
            keep_float (tuple[str, ...]): module-name patterns left in float.
            holdout (Sequence[Sequence[np.ndarray]]): samples kept out of calibration, that the report's
                fidelity (worst-sample PSNR and cosine) is measured on.

        Returns:
            GraphQuantReport: ``files`` holds the quantized file(s).
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        # one dim order: a channels-last example made ExecuTorch read contiguous inputs in the wrong order
        inputs = tuple(standard_strides(x) for x in example_inputs)
        source = GraphSource(name, module=module.eval(), example_inputs=inputs)
        held = [list(s) for s in holdout] or [[x.detach().cpu().numpy() for x in inputs]]
        samples = {name: [list(s) for s in calibration]}
        report = self.quantize(source, scheme, keep_float, samples, {name: held}, out_dir).report
        if not holdout:
            report.measured_on = "the example input only: no held-out samples given"
        return report


RANK_SAMPLES = 8
"""Samples the one-run ranking reads (two tensors per quantized op each)."""


class FileQuantizer(QuantizeHandler):
    """A handler that quantizes the backend's own float files (ONNX Runtime, NNCF, coremltools.optimize).

    Attributes:
        model_suffix (str): the model file among a graph's files (``.onnx``, ``.xml``).
    """

    model_suffix: str = ""

    @abstractmethod
    def export_float(
        self, module: Any, example_inputs: tuple, out_dir: Path, name: str, scheme: Scheme
    ) -> list[Path]:
        """Write ``module`` as this backend's float file(s) ``out_dir/<name>.*`` for ``scheme``; the files."""

    @abstractmethod
    def quantize_files(
        self,
        graph: str,
        names: Sequence[str],
        fp32_files: dict[str, list[Path]],
        scheme: Scheme,
        keep_float: tuple[str, ...],
        calibration: Samples,
        holdout: Samples,
        out_dir: Path,
    ) -> tuple[dict[str, list[Path]], GraphQuantReport]:
        """Quantize the bundle graphs ``names`` of ``fp32_files`` (same file names in ``out_dir``).

        Raises:
            ValueError: an unsupported scheme, a file of ``names`` missing, or no calibration data where the
                scheme needs it.
        """

    def smooth_quant_unavailable(self, fp32_files: Mapping[str, Sequence[Path]]) -> str | None:
        """Why this backend cannot apply SmoothQuant to the graph in ``fp32_files`` (``None`` when it can)."""
        return f"{self.backend!r} has no SmoothQuant"

    def rank_one_run(
        self, float_file: Path, quant_file: Path, scheme: Scheme, samples: list[list[np.ndarray]]
    ) -> list[str] | None:
        """The layers of ``quant_file`` by the error each adds, from one run of each file.

        ``None`` (the default): no such ranking for this scheme here, and ``rank_layers`` runs the per-layer
        pass.
        """
        return None

    def rank_layers(
        self,
        source: GraphSource,
        scheme: Scheme,
        keep_float: tuple[str, ...],
        calibration: Samples,
        holdout: Samples,
        work: Path,
        quantized: QuantizedGraph,
        progress: bool = False,
    ) -> list[str]:
        """``rank_one_run`` per file where the backend reads the scheme's graph; else the per-layer pass.

        The one-run ranking runs on calibration samples, not held-out ones, so the target is not fitted to
        its data. A module's float file was temporary: the same export gives the same node names.
        """
        with tempfile.TemporaryDirectory(prefix=".rank-float-", dir=work) as tmp:
            floats = dict(source.files)
            for name in quantized.files:
                if name not in floats:
                    folder = Path(tmp) / name
                    folder.mkdir()
                    floats[name] = self.export_float(
                        source.module, source.example_inputs, folder, name, scheme
                    )
            ranked: list[str] = []
            for name, files in quantized.files.items():
                samples = (calibration.get(name) or holdout.get(name) or [])[:RANK_SAMPLES]
                float_file = model_file(floats[name], self.model_suffix)
                ranks = self.rank_one_run(float_file, model_file(files, self.model_suffix), scheme, samples)
                if ranks is None:
                    break
                ranked += ranks
            else:
                return list(dict.fromkeys(ranked))
            files_source = replace(source, files=floats, module=None)
            return super().rank_layers(
                files_source, scheme, keep_float, calibration, holdout, work, quantized, progress
            )

    def quantize_files_tuned(
        self,
        graph: str,
        names: Sequence[str],
        fp32_files: dict[str, list[Path]],
        scheme: Scheme,
        keep_float: tuple[str, ...],
        calibration: Samples,
        holdout: Samples,
        out_dir: Path,
    ) -> tuple[dict[str, list[Path]], GraphQuantReport]:
        """``quantize_files`` with ``smooth_quant="auto"`` resolved by measurement.

        SmoothQuant is applied only where it measurably helps: the graph is quantized without it, then with
        it, and the run whose worst held-out sample is closer to float (cosine, then PSNR) is kept; the
        report's note gives both scores. Without held-out samples, or on a backend without SmoothQuant,
        ``auto`` means off, and the note says why.
        """
        if not (isinstance(scheme, Int8Static) and scheme.smooth_quant == "auto"):
            return self.quantize_files(
                graph, names, fp32_files, scheme, keep_float, calibration, holdout, out_dir
            )
        off, on = replace(scheme, smooth_quant="off"), replace(scheme, smooth_quant="on")
        files, report = self.quantize_files(
            graph, names, fp32_files, off, keep_float, calibration, holdout, out_dir
        )
        why_not = self.smooth_quant_unavailable({n: fp32_files[n] for n in names if n in fp32_files})
        if why_not is None and not any(holdout.get(n) for n in names):
            why_not = "no held-out samples to compare on"
        if why_not:
            add_note(report, f"{SMOOTH_QUANT_AUTO}off ({why_not})")
            return files, report
        with tempfile.TemporaryDirectory(prefix=".smooth-quant-", dir=out_dir) as tmp:
            on_files, on_report = self.quantize_files(
                graph, names, fp32_files, on, keep_float, calibration, holdout, Path(tmp)
            )
            off_score, on_score = report.closeness, on_report.closeness
            scores = f"worst cosine off {off_score[0]:.4f}, on {on_score[0]:.4f}"
            if on_score <= off_score:
                add_note(report, f"{SMOOTH_QUANT_AUTO}off ({scores})")
                return files, report
            for f in (f for paths in files.values() for f in paths):
                if f.is_dir():
                    shutil.rmtree(f, ignore_errors=True)
                else:
                    f.unlink(missing_ok=True)
            moved = {
                n: [Path(shutil.move(str(f), out_dir / f.name)) for f in fs] for n, fs in on_files.items()
            }
        on_report.files = [str(f) for fs in moved.values() for f in fs]
        add_note(on_report, f"{SMOOTH_QUANT_AUTO}on ({scores})")
        return moved, on_report

    def quantized_layers(
        self, fp32_files: dict[str, list[Path]], quant_files: dict[str, list[Path]]
    ) -> list[str]:
        """The names, usable in ``keep_float``, of the ops quantization changed (per-layer sensitivity)."""
        raise ValueError(f"{self.backend!r} cannot rank layers: its runtime does not run here")

    def quantize_graph(
        self,
        graph: str,
        fp32_files: dict[str, list[Path]],
        scheme: Scheme,
        keep_float: tuple[str, ...],
        calibration: Samples,
        holdout: Samples,
        out_dir: Path,
    ) -> tuple[dict[str, list[Path]], GraphQuantReport]:
        """Quantize one recipe graph of an X-SAM bundle (``graph`` names which bundle graphs it covers).

        Raises:
            ValueError: an unknown recipe graph, or what ``quantize_files`` raises.
        """
        graphs = self.graphs
        if graph not in graphs:
            raise ValueError(f"unknown graph {graph!r}; {self.backend} quantizes: {', '.join(graphs)}")
        return self.quantize_files_tuned(
            graph, graphs[graph], fp32_files, scheme, keep_float, calibration, holdout, Path(out_dir)
        )

    def quantize(
        self,
        source: GraphSource,
        scheme: Scheme,
        keep_float: tuple[str, ...],
        calibration: Samples,
        holdout: Samples,
        out_dir: Path,
    ) -> QuantizedGraph:
        if source.module is None and source.model is not None:  # a recipe graph of an X-SAM bundle
            files, report = self.quantize_graph(
                source.name, source.files, scheme, keep_float, calibration, holdout, out_dir
            )
            return QuantizedGraph(files, report)
        if source.module is None:  # a user's own file(s), each quantized under its own name
            files, report = self.quantize_files_tuned(
                source.name,
                tuple(source.files),
                source.files,
                scheme,
                keep_float,
                calibration,
                holdout,
                out_dir,
            )
            return QuantizedGraph(files, report)
        # a module: its float file lives in a folder of its own, removed once quantized
        with tempfile.TemporaryDirectory(prefix=".fp32-", dir=out_dir) as tmp:
            folder = Path(tmp) / "export"
            folder.mkdir()
            module, inputs = source.module, source.example_inputs
            fp32 = {source.name: self.export_float(module, inputs, folder, source.name, scheme)}
            files, report = self.quantize_files_tuned(
                source.name, (source.name,), fp32, scheme, keep_float, calibration, holdout, Path(out_dir)
            )
        return QuantizedGraph(files, report)

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
        """One quantization per layer: the graph as a whole, then with each quantized op alone kept float.

        Each trial uses the scheme itself and the handler's own PSNR on ``holdout`` in its runtime; the
        trials live in a temporary folder under ``work``.

        Raises:
            ValueError: no held-out samples (nothing to compare on), or what ``quantize_graph`` raises.
        """
        from tqdm import tqdm

        from .common import mean_gain

        graph, fp32_files = source.name, source.files
        if not any(holdout.get(name) for name in fp32_files):
            raise ValueError(
                f"{graph}: per-layer sensitivity needs held-out samples; record calibration data"
            )
        work.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=work, prefix=f"layers-{graph}-") as tmp:
            whole_graph = self.quantize(source, scheme, keep_float, calibration, holdout, Path(tmp) / "whole")
            files, whole = whole_graph.files, whole_graph.report
            scores = []
            layers = self.quantized_layers(fp32_files, files)
            for layer in tqdm(layers, desc=f"layers of {graph}", disable=not progress):
                trial = Path(tmp) / f"trial-{len(scores)}"
                report = self.quantize(
                    source, scheme, (*keep_float, layer), calibration, holdout, trial
                ).report
                gain = round(mean_gain(whole.psnr_db, report.psnr_db), 2)
                scores.append(LayerScore(layer, gain, report.psnr_db))
                shutil.rmtree(trial, ignore_errors=True)
        return whole.psnr_db, sorted(scores, key=lambda s: -s.gain_db)
