"""Core ML handler: compress the weights of converted ``.mlpackage`` files (``coremltools.optimize.coreml``).

Core ML compresses a saved ML program, file to file, with no data (TOOLCHAIN.md §6b):

=============  ==========================================================================================
scheme         what each package of the graph becomes
=============  ==========================================================================================
``fp32``       the package as exported (fp16 compute: ``export_coreml``'s default), copied
``fp16``       the same copy when the package already computes in fp16 (an fp32 package is refused)
``w8``         ``linear_quantize_weights``: symmetric INT8 per output channel
               (``constexpr_blockwise_shift_scale``)
``w4``         ``linear_quantize_weights``: INT4 in blocks of ``group_size`` along the input dimension;
               the output layers (``output_weights``) per-channel INT8 unless ``head_bits`` is 4;
               ``ratio < 1`` keeps the weights INT4 resolves worst at INT8 (``1 - ratio`` of them)
``palettize``  ``palettize_weights``: k-means look-up tables of ``nbits``, one per ``group_size`` output
               channels → ``constexpr_lut_to_dense``; ``data_aware`` weighs the k-means by each weight's
               output sensitivity on the calibration samples (``quantization.importance``, computed on the
               torch graph the package came from; ``backends.coreml.palettize``; X-SAM's lookup takes
               the head's where the table is tied, so the bundle stores it once, and none where not);
               ``ratio < 1`` keeps the weights the tables resolve worst at INT8, ``head_bits`` 8 the
               output layers
=============  ==========================================================================================

Only model parameters are compressed: a constant is one when its MIL name is torch.export's parameter name
(``p_<module path>_weight…``); buffers and folded constants (RoPE tables, attention-mask fills) stay float,
since a few LSBs of a position table move every token. ``keep_float`` patterns are matched against the same
names (``sampling_offsets`` matches ``p_…_self_attn_sampling_offsets_weight_to_fp16``), and coremltools skips
tensors of at most ``weight_threshold`` (2048) elements. Linux has no Core ML runtime, so ``psnr_db`` stays
empty; the evidence is the constexpr decompression ops in the program and the size.
"""

from __future__ import annotations

import shutil
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from xsam_edge.backends.coreml.export import (
    PREDICT_SKIP_REASON,
    convert_decomposed,
    discard_temp_package,
    mil_op_histogram,
)
from xsam_edge.files import write_atomically
from xsam_edge.quantization.common import check_request, keep_float_pattern
from xsam_edge.quantization.handler import FileQuantizer, GraphSource, QuantizedGraph
from xsam_edge.quantization.report import GraphQuantReport, files_bytes
from xsam_edge.quantization.schemes import Int4WeightOnly, Int8WeightOnly, Palettize, Scheme

__all__ = ["EVIDENCE_OPS", "CoreMLQuantizer", "compress_package"]

BACKEND = "coreml"
EVIDENCE_OPS = ("constexpr_blockwise_shift_scale", "constexpr_lut_to_dense")
_PARAMETER_PREFIX = "p_"  # torch.export names a lifted parameter p_<module path with "." → "_">


def _operations(spec: Any) -> Iterator[Any]:
    """Every top-level op of every function of an ML program spec."""
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            yield from block.operations


def _constants(spec: Any) -> dict[str, tuple[int, int]]:
    """Const op name → (element count, MIL data type) over the whole program."""
    out = {}
    for op in _operations(spec):
        if op.type == "const":
            tensor = op.outputs[0].type.tensorType
            out[op.outputs[0].name] = (
                int(np.prod([d.constant.size for d in tensor.dimensions])),
                int(tensor.dataType),
            )
    return out


_OUTPUT_PATH = ("add", "reshape", "squeeze", "expand_dims", "cast", "identity", "slice_by_index")


def output_weights(spec: Any) -> list[str]:
    """The parameter constants of the linears / matmuls whose results are a function's outputs.

    These are ``w4``'s output layers (an LLM's head, a projector's last layer), kept at ``head_bits``.
    """
    found = []
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            producer = {out.name: op for op in block.operations for out in op.outputs}
            for name in block.outputs:
                op = producer.get(name)
                for _ in range(8):
                    if op is None:
                        break
                    if op.type in ("linear", "matmul"):
                        arg = op.inputs["weight" if op.type == "linear" else "y"].arguments
                        weight = arg[0].name if arg and arg[0].HasField("name") else ""
                        found += [weight] if weight.startswith(_PARAMETER_PREFIX) else []
                        break
                    arg = op.inputs["x"].arguments if op.type in _OUTPUT_PATH and "x" in op.inputs else []
                    op = producer.get(arg[0].name) if arg and arg[0].HasField("name") else None
    return list(dict.fromkeys(found))


def _precision(constants: dict[str, tuple[int, int]]) -> str:
    """``fp16`` when the parameters are stored in half precision (a package converted at fp16 compute)."""
    from coremltools.proto import MIL_pb2

    for name, (_, dtype) in constants.items():
        if name.startswith(_PARAMETER_PREFIX):
            return "fp16" if dtype == MIL_pb2.FLOAT16 else "fp32"
    return "fp32"


def _config(scheme: Scheme) -> Any:
    import coremltools.optimize.coreml as cto

    if isinstance(scheme, Int8WeightOnly):
        return cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
    if isinstance(scheme, Int4WeightOnly):
        mode = "linear_symmetric" if scheme.symmetric else "linear"
        return cto.OpLinearQuantizerConfig(
            mode=mode, dtype="int4", granularity="per_block", block_size=scheme.group_size
        )
    assert isinstance(scheme, Palettize)
    if scheme.group_size == 0:
        return cto.OpPalettizerConfig(mode="kmeans", nbits=scheme.nbits, granularity="per_tensor")
    return cto.OpPalettizerConfig(
        mode="kmeans", nbits=scheme.nbits, granularity="per_grouped_channel", group_size=scheme.group_size
    )


def compress_package(
    src: Path,
    dst: Path,
    scheme: Scheme,
    keep_float: Sequence[str] = (),
    importance: Mapping[str, np.ndarray] | None = None,
) -> tuple[list[str], list[str]]:
    """Write ``src`` compressed by ``scheme`` to ``dst`` (atomically).

    Args:
        src (Path): a float ``.mlpackage``.
        dst (Path): the compressed package (replaced if present).
        scheme (Scheme): a Core ML scheme.
        keep_float (Sequence[str]): module-name patterns whose parameters stay float.
        importance (Mapping[str, np.ndarray] | None): torch.export parameter name → per-weight sensitivity
            (``quantization.importance.output_fisher``), which a ``data_aware`` palettization weighs its
            k-means by.

    Returns:
        tuple[list[str], list[str]]: what stayed float (``"name: why"``, parameters large enough to compress
        only) and notes.

    """
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    dst.parent.mkdir(parents=True, exist_ok=True)
    mlmodel = ct.models.MLModel(str(src), skip_model_load=True)
    constants = _constants(mlmodel.get_spec())
    if scheme.name in ("fp32", "fp16"):
        precision = _precision(constants)
        write_atomically(dst.parent, lambda tmp: shutil.copytree(src, tmp / dst.name))
        notes = [f"{src.name}: copied as converted ({precision} compute, weights stored {precision})"]
        if scheme.name == "fp16" and precision != "fp16":  # e.g. a graph with no float weights to store
            notes.append(
                f"{src.name}: fp16 asked, but the package stores no fp16 weights; fp16 compute is a "
                "conversion option (export_coreml(..., precision='fp16'))"
            )
        return [], notes
    config = _config(scheme)
    threshold = config.weight_threshold or 0
    kept, per_constant, buffers = [], {}, 0
    for name, (size, _) in constants.items():
        if not name.startswith(_PARAMETER_PREFIX):
            per_constant[name] = None
            buffers += size > threshold
        elif pattern := keep_float_pattern([name], keep_float):
            per_constant[name] = None
            if size > threshold:
                kept.append(f"{name}: keep_float pattern {pattern!r}")
    compress = cto.palettize_weights if isinstance(scheme, Palettize) else cto.linear_quantize_weights
    notes = []
    if isinstance(scheme, Int4WeightOnly | Palettize) and scheme.head_bits == 8:
        heads = [n for n in output_weights(mlmodel.get_spec()) if n not in per_constant]
        heads = [n for n in heads if constants[n][0] > threshold]
        per_constant.update(dict.fromkeys(heads, _config(Int8WeightOnly())))
        if heads:
            notes.append(f"{src.name}: output layer(s) at INT8 (head_bits 8): {', '.join(heads)}")
    if isinstance(scheme, Int4WeightOnly) and scheme.ratio < 1:
        int8 = _int8_share(src, constants, per_constant, threshold, scheme)
        per_constant.update(dict.fromkeys(int8, _config(Int8WeightOnly())))
        notes.append(
            f"{src.name}: {len(int8)} weight(s) at INT8 (ratio {scheme.ratio}: those INT4 resolves worst)"
        )
    if isinstance(scheme, Palettize) and (scheme.data_aware or scheme.ratio < 1):
        notes += _weighted_tables(src, constants, per_constant, threshold, scheme, importance)
    try:
        compressed = _compress(compress, mlmodel, config, per_constant)
    except AttributeError as error:
        # coremltools 9.0's conv-bias fusion reads the weight of conv → transpose → add(constant) and fails
        # when that weight is compressed: a ViT patch embedding whose position table is at or below the size
        # threshold, so it stays a plain constant (tiny models). Keep the patch-embedding convs float.
        patch = [n for n in constants if n.startswith(_PARAMETER_PREFIX) and "patch_embed" in n]
        if not patch or "dtype" not in str(error):
            raise
        per_constant.update(dict.fromkeys(patch))
        reason = "coremltools' conv-bias fusion fails on it compressed"
        kept += [f"{n}: {reason}" for n in patch if constants[n][0] > threshold]
        notes.append(f"{src.name}: patch-embedding convs kept float (coremltools conv-bias fusion)")
        compressed = _compress(compress, mlmodel, config, per_constant)
    write_atomically(dst.parent, lambda tmp: compressed.save(str(tmp / dst.name)))
    discard_temp_package(compressed)
    if buffers:
        notes.append(f"{src.name}: {buffers} non-parameter constants (RoPE tables, mask fills …) kept float")
    return kept, notes


def _int8_share(
    src: Path, constants: dict[str, tuple[int, int]], settled: dict, threshold: int, scheme: Int4WeightOnly
) -> set[str]:
    """The 2-D parameters a mixed ``w4`` keeps at INT8.

    The largest INT4 rounding error first, until ``1 - ratio`` of the weights (``ranking.int8_share``;
    ONNX and ExecuTorch rank the same way).
    """
    from xsam_edge.backends.coreml.weights import package_weights, parameter_name
    from xsam_edge.quantization.ranking import int4_weight_error, int8_share

    values = package_weights(src)
    errors, sizes = {}, {}
    for name, (size, _) in constants.items():
        weight = values.get(parameter_name(name))
        if name in settled or size <= threshold or weight is None or weight.ndim != 2:
            continue
        error = int4_weight_error(weight.T, scheme.group_size)  # (out, in) → the (in, out) it ranks
        if error is not None:
            errors[name], sizes[name] = error, size
    return int8_share(errors, sizes, scheme.ratio)


def _weighted_tables(
    src: Path,
    constants: dict[str, tuple[int, int]],
    per_constant: dict,
    threshold: int,
    scheme: Palettize,
    importance: Mapping[str, np.ndarray] | None,
) -> list[str]:
    """Each parameter's own tables (weighted by ``importance`` where ``data_aware``), and the INT8 share.

    The tables go into ``per_constant`` as ``custom`` configs; with ``ratio < 1`` the tensors with the
    largest (weighted) error per weight take INT8 until ``1 - ratio`` of the weights (``ranking.int8_share``,
    as ``w4`` ranks). Returns the notes.
    """
    from xsam_edge.backends.coreml.palettize import tables_for
    from xsam_edge.backends.coreml.weights import package_weights, parameter_name
    from xsam_edge.quantization.ranking import int8_share

    values = package_weights(src)
    tables, sizes, unweighted = {}, {}, []
    weigh = scheme.data_aware and importance is not None
    for name, (size, _) in constants.items():
        weight = values.get(parameter_name(name))
        if name in per_constant or size <= threshold or weight is None:
            continue
        found = importance.get(parameter_name(name)) if weigh else None
        if weigh and (found is None or found.shape != weight.shape):
            unweighted.append(name)
            found = None
        made = tables_for(weight, found, scheme.nbits, scheme.group_size)
        if made is not None:
            tables[name], sizes[name] = made, size
    errors = {name: t.error for name, t in tables.items()}
    int8 = int8_share(errors, sizes, scheme.ratio) if scheme.ratio < 1 else set()
    for name, made in tables.items():
        per_constant[name] = _config(Int8WeightOnly()) if name in int8 else made.config(scheme.group_size)
    notes = []
    if scheme.data_aware and importance is None:
        notes.append(f"{src.name}: data_aware without a torch graph to weigh against: tables unweighted")
    elif weigh and len(tables) > len(unweighted):
        notes.append(
            f"{src.name}: {len(tables) - len(unweighted)} tensor(s) palettized with tables weighted by their "
            "output sensitivity on the calibration samples"
        )
    if unweighted:
        notes.append(f"{src.name}: no sensitivity for {', '.join(unweighted)}: tables unweighted")
    if scheme.ratio < 1:
        notes.append(
            f"{src.name}: {len(int8)} weight(s) at INT8 "
            f"(ratio {scheme.ratio}: those the tables resolve worst)"
        )
    return notes


def _compress(compress, mlmodel, config, per_constant: dict):
    """One coremltools pass; a palettization with INT8 tensors (head, mixed share) takes two.

    ``palettize_weights`` accepts palettizer configs only: the INT8 tensors stay as they are in the first
    pass and ``linear_quantize_weights`` compresses only them in the second.
    """
    import coremltools.optimize.coreml as cto

    linear = {}
    if compress is cto.palettize_weights:
        linear = {n: c for n, c in per_constant.items() if isinstance(c, cto.OpLinearQuantizerConfig)}
    first = {n: (None if n in linear else c) for n, c in per_constant.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = compress(mlmodel, cto.OptimizationConfig(global_config=config, op_name_configs=first))
        if linear:
            out = cto.linear_quantize_weights(out, cto.OptimizationConfig(op_name_configs=linear))
    return out


def _evidence(files: Sequence[Path]) -> dict[str, int]:
    import coremltools as ct

    counts: Counter[str] = Counter()
    for f in files:
        hist = mil_op_histogram(ct.models.MLModel(str(f), skip_model_load=True).get_spec())
        counts.update({op: n for op, n in hist.items() if op in EVIDENCE_OPS})
    return dict(sorted(counts.items()))


class CoreMLQuantizer(FileQuantizer):
    """Core ML packages compressed with ``coremltools.optimize`` (the recipe graph ``llm``: two packages)."""

    backend = BACKEND
    float_export_options = MappingProxyType({"multifunction": False, "tied_embed": False})
    _importance: dict[str, np.ndarray] | None = None  # set while a data-aware palettization runs

    def quantize(
        self,
        source: GraphSource,
        scheme: Scheme,
        keep_float: tuple[str, ...],
        calibration: dict[str, list[list[np.ndarray]]],
        holdout: dict[str, list[list[np.ndarray]]],
        out_dir: Path,
    ) -> QuantizedGraph:
        """As every file handler; a ``data_aware`` palettization first weighs the torch graph's weights.

        The sensitivity comes from the module (or the X-SAM graph) on the calibration samples, before the
        float package is written; packages have no gradients, and Core ML does not run here.
        """
        note = ""
        if isinstance(scheme, Palettize) and scheme.data_aware:
            self._importance, note = self._sensitivity(source, calibration)
        try:
            result = super().quantize(source, scheme, keep_float, calibration, holdout, out_dir)
        finally:
            self._importance = None
        if note:
            result.report.notes.insert(0, note)
        return result

    def _sensitivity(
        self, source: GraphSource, calibration: dict[str, list[list[np.ndarray]]]
    ) -> tuple[dict[str, np.ndarray] | None, str]:
        """What a ``data_aware`` palettization of ``source`` weighs its k-means by, and a note for the report.

        X-SAM's lookup (``embed``) is not weighed by its own graph, whose output is the looked-up row: a
        random probe on it weighs a row's values by noise. A table tied to the LLM's head takes the head's
        sensitivity from the LLM graphs, so the ``embed`` and ``llm`` packages hold the same tables and the
        bundle stores them once (``pack.join_tied_embed``); an untied lookup's tables are unweighted.
        """
        from xsam_edge.export.graphs import build_graph
        from xsam_edge.quantization.importance import export_name, source_importance

        if source.model is None:
            return source_importance(source, (), calibration), ""
        if source.name != "embed":
            names = self.graphs.get(source.name, (source.name,))
            return source_importance(source, names, calibration), ""
        llm = source.model.llm
        table = llm.get_input_embeddings().weight
        if table is not llm.get_output_embeddings().weight:
            return {}, "embed: an untied lookup's own output is its row; its tables are unweighted"

        def names(graph: str) -> set[str]:  # each wrapper names the table after its own module path
            wrapper = build_graph(source.model, graph, source.slots)
            return {export_name(n) for n, p in wrapper.named_parameters(remove_duplicate=False) if p is table}

        head = source_importance(source, self.graphs["llm"], calibration)
        found = [head[n] for g in self.graphs["llm"] for n in names(g) if n in head]
        note = (
            "embed: its table is the LLM's tied head, weighed by the head's sensitivity (the LLM graphs), so "
            "the two hold the same tables"
        )
        return (dict.fromkeys(names(source.name), found[0]), note) if found else ({}, "")

    def export_float(
        self, module: torch.nn.Module, example_inputs: tuple, out_dir: Path, name: str, scheme: Scheme
    ) -> list[Path]:
        """Any module to an iOS18 ML program, fp16 compute (fp32 for the ``fp32`` scheme).

        Integer inputs become int32 Core ML inputs.
        """
        import coremltools as ct

        check_request(BACKEND, name, (), scheme, {}, {}, needs_data=False)  # before the conversion
        with torch.no_grad():
            program = torch.export.export(module.eval(), tuple(example_inputs), strict=False)
        user_inputs = program.graph_signature.user_inputs
        inputs = [
            ct.TensorType(name=n, shape=x.shape, dtype=np.float32 if x.is_floating_point() else np.int32)
            for n, x in zip(user_inputs, example_inputs, strict=True)
        ]
        precision = ct.precision.FLOAT32 if scheme.name == "fp32" else ct.precision.FLOAT16

        def convert(decomposed: torch.export.ExportedProgram) -> Any:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return ct.convert(
                    decomposed,
                    inputs=inputs,
                    convert_to="mlprogram",
                    minimum_deployment_target=ct.target.iOS18,
                    compute_precision=precision,
                    skip_model_load=True,
                )

        mlmodel = convert_decomposed(program, convert)  # what coremltools cannot translate, decomposed
        package = Path(out_dir) / f"{name}.mlpackage"
        write_atomically(package.parent, lambda tmp: mlmodel.save(str(tmp / package.name)))
        discard_temp_package(mlmodel)
        return [package]

    def quantize_files(
        self,
        graph: str,
        names: Sequence[str],
        fp32_files: dict[str, list[Path]],
        scheme: Scheme,
        keep_float: tuple[str, ...],
        calibration: dict[str, list[list[np.ndarray]]],
        holdout: dict[str, list[list[np.ndarray]]],
        out_dir: Path,
    ) -> tuple[dict[str, list[Path]], GraphQuantReport]:
        """Compress every package of one recipe graph into ``out_dir`` (same file names).

        Args:
            graph (str): the recipe graph (``encode_image``, ``llm`` …).
            names (Sequence[str]): its bundle graphs (the LLM has ``llm_prefill`` and ``llm_decode``).
            fp32_files (dict[str, list[Path]]): bundle graph name → its float ``.mlpackage`` (the LLM has
                ``llm_prefill`` and ``llm_decode``).
            scheme (Scheme): one of ``SUPPORTED["coreml"]``.
            keep_float (tuple[str, ...]): module-name patterns whose parameters stay float.
            calibration (dict[str, list[list[np.ndarray]]]): unused here: a ``data_aware`` palettization
                reads it in ``quantize``, on the torch graph.
            holdout (dict[str, list[list[np.ndarray]]]): unused: Core ML prediction needs macOS.
            out_dir (Path): destination folder.

        Returns:
            tuple[dict[str, list[Path]], GraphQuantReport]: bundle graph name → the new packages, and the
            report (``integer_ops``: constexpr decompression op counts; ``psnr_db`` empty).

        Raises:
            ValueError: an unsupported scheme, or a package of the graph missing from ``fp32_files``.
        """
        check_request(BACKEND, graph, names, scheme, fp32_files, calibration, False)
        start = time.perf_counter()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        files: dict[str, list[Path]] = {}
        kept: list[str] = []
        notes: list[str] = []
        for name in names:
            sources = fp32_files[name]
            files[name] = []
            for src in map(Path, sources):
                dst = out_dir / src.name
                k, n = compress_package(src, dst, scheme, keep_float, self._importance)
                kept += k
                notes += n
                files[name].append(dst)
        if isinstance(scheme, Int4WeightOnly) and scheme.data_aware:
            notes.append(
                "data_aware ignored: coremltools' file-level INT4 picks scales from the weights alone"
            )
        written = [f for fs in files.values() for f in fs]
        evidence = _evidence(written) if scheme.name not in ("fp32", "fp16") else {}
        report = GraphQuantReport(
            graph=graph,
            backend=BACKEND,
            scheme=scheme.label(),
            files=[str(f) for f in written],
            bytes_fp32=files_bytes([Path(f) for fs in fp32_files.values() for f in fs]),
            bytes_quant=files_bytes(written),
            seconds=time.perf_counter() - start,
            quantized=sum(evidence.values()),
            kept_float=kept,
            integer_ops=evidence,
            notes=[*notes, PREDICT_SKIP_REASON],
        )
        return files, report
