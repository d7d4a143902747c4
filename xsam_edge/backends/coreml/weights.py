"""The weights a Core ML package computes with, read on any OS: its parameter constants, decompressed.

Core ML predicts only on macOS, but what a weight-only compressed package computes differs from its float
source only by the weights it decompresses to (and by fp16 arithmetic). coremltools reads a saved ML program
into MIL on Linux and evaluates each ``constexpr_*`` op (look-up table, per-block scale and shift, sparsity)
as the runtime does, so the decompressed values can be put back into the PyTorch module the package was
converted from (``quantization.replay``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

__all__ = ["COMPRESSION_SUFFIXES", "package_weights", "parameter_name"]

# what the converter and ``coremltools.optimize`` append to a torch.export parameter name (``p_<path>``)
COMPRESSION_SUFFIXES = ("_palettized", "_quantized", "_sparsified", "_to_fp16")


def parameter_name(mil_name: str) -> str:
    """``p_blocks_0_fc1_weight_to_fp16_palettized`` → ``p_blocks_0_fc1_weight``: the torch.export name."""
    name = mil_name
    while any(name.endswith(s) for s in COMPRESSION_SUFFIXES):
        name = next(name[: -len(s)] for s in COMPRESSION_SUFFIXES if name.endswith(s))
    return name


def _program(package: Path):
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load
    from coremltools.models.utils import _convert_model_spec_to_pymil_prog

    mlmodel = ct.models.MLModel(str(package), skip_model_load=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _convert_model_spec_to_pymil_prog(mlmodel, mlmodel.get_spec().specificationVersion, load)


def package_weights(package: str | Path, function: str | None = None) -> dict[str, np.ndarray]:
    """The parameter weights one function of ``package`` computes with, decompressed, by torch.export name.

    Args:
        package (str | Path): a ``.mlpackage``.
        function (str | None): the function of a multifunction package (``prefill``, ``embed`` …); ``None``
            for the package's only (``main``) function.

    Returns:
        dict[str, np.ndarray]: ``p_<module path>`` → the dense weight (fp16 where the package stores fp16).
        Constants that are not parameters (RoPE tables, folded constants) are left out.

    Raises:
        ValueError: the package has no function ``function``.
    """
    program = _program(Path(package))
    name = function or "main"
    if name not in program.functions:
        raise ValueError(f"{package}: no function {name!r}; functions: {', '.join(program.functions)}")
    weights = {}
    for op in program.functions[name].operations:
        if not (op.op_type == "const" or op.op_type.startswith("constexpr_")):
            continue
        out = op.outputs[0]
        if not out.name.startswith("p_"):
            continue
        readers = [child.op_type for child in out.child_ops]
        if readers and all(t.startswith("constexpr_") for t in readers):
            continue  # a look-up table, indices or scales: part of a compressed weight, not one
        value = out.val if op.op_type == "const" else op.materialized_val_inference()
        weights[parameter_name(out.name)] = np.asarray(value)
    return weights
