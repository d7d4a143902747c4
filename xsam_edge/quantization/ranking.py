"""Rank quantized layers by the error each adds, from runs of the float and quantized graphs.

The per-layer pass (one quantization per layer) is exact but costs a whole quantization per layer: hours on a
ViT-B or a 119-conv segmenter. One run of each graph already shows where the error enters (ONNX Runtime's
``qdq_loss_debug`` idea): read every quantized op's activation input (before its quantizer) and its output
from both graphs; an op's score is the relative error of its output against float minus the largest
relative error of its inputs, what quantizing this op added. The signal-to-noise of the input alone
misleads: a 1000× outlier channel dominates the norm, so the input looks well resolved while every other
channel is rounded away, which only the output shows.

Backends supply how to read named tensors (``Reader``); the tensors are read a group at a time and reduced
to two sums per tensor as they come, so memory stays that of one group of one sample.

A mixed INT4/INT8 scheme without data ranks by the weights alone (``int4_weight_error``, ``int8_share``),
the same on every backend that lacks a library ranking.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import numpy as np

from .common import unique_pattern

__all__ = ["GROUP", "Reader", "int4_weight_error", "int8_share", "rank_by_added_error"]

Reader = Callable[[list[Hashable], Sequence[np.ndarray]], list[np.ndarray]]
"""``read(tensors, sample)``: the named tensors' values for one sample."""

GROUP = 48
"""Tensors read per run: bounds memory on graphs with large activations (a 1024² segmenter)."""


def _relative_errors(
    tensors: list[Hashable], read_float: Reader, read_quant: Reader, samples: Sequence[Sequence[np.ndarray]]
) -> dict[Hashable, float]:
    """‖quant − float‖ / ‖float‖ per tensor over every sample."""
    noise = dict.fromkeys(tensors, 0.0)
    power = dict.fromkeys(tensors, 0.0)
    for start in range(0, len(tensors), GROUP):
        group = tensors[start : start + GROUP]
        for sample in samples:
            for name, want, got in zip(
                group, read_float(group, sample), read_quant(group, sample), strict=True
            ):
                want = np.asarray(want, np.float64).ravel()
                noise[name] += float(np.sum((np.asarray(got, np.float64).ravel() - want) ** 2))
                power[name] += float(np.sum(want**2))
    return {t: float(np.sqrt(noise[t] / max(power[t], 1e-24))) for t in tensors}


def rank_by_added_error(
    io: dict[str, tuple[list[Hashable], Hashable]],
    read_float: Reader,
    read_quant: Reader,
    samples: Sequence[Sequence[np.ndarray]],
    candidates: dict[str, tuple[Sequence[str], Sequence[str]]],
) -> list[str]:
    """Keep-float patterns of the ops in ``io``, the op that adds the most error first.

    Args:
        io (dict[str, tuple[list[Hashable], Hashable]]): op → (its activation inputs before their quantizer,
            its output), tensor names both graphs know.
        read_float (Reader): reads tensors of the float graph.
        read_quant (Reader): reads tensors of the quantized graph.
        samples (Sequence[Sequence[np.ndarray]]): positional inputs.
        candidates (dict[str, tuple[Sequence[str], Sequence[str]]]): op → (patterns to try, names keep-float
            sees), as the handler's ``quantized_layers`` helpers give them.

    Returns:
        list[str]: one pattern per ranked op that names it alone among the candidates.
    """
    tensors = sorted({t for pre, out in io.values() for t in (*pre, out)}, key=str)
    if not tensors or not samples:
        return []
    error = _relative_errors(tensors, read_float, read_quant, samples)
    added = {op: error[out] - max(error[p] for p in pre) for op, (pre, out) in io.items()}
    ranked = sorted(added, key=lambda o: -added[o])
    return list(dict.fromkeys(unique_pattern(op, candidates) for op in ranked))


def int4_weight_error(weight: np.ndarray, group_size: int) -> float | None:
    """The relative error of rounding a 2-D weight to symmetric INT4 in groups along its input axis.

    The data-free ranking of a mixed INT4/INT8 scheme (NNCF's weight quantization error metric): the layers
    whose weights INT4 resolves worst are the ones kept at INT8.

    Args:
        weight (np.ndarray): (in_features, out_features), the layout of an ONNX MatMul constant (a torch
            Linear's weight transposed).
        group_size (int): weights per scale along the input axis.

    Returns:
        float | None: ‖w − q(w)‖ / ‖w‖ over the whole groups; ``None`` when no whole group fits.
    """
    w = np.asarray(weight, np.float64)
    k = w.shape[0] - w.shape[0] % group_size
    if k == 0:
        return None
    groups = w[:k].reshape(-1, group_size, w.shape[1])
    scale = np.abs(groups).max(axis=1, keepdims=True) / 7 + 1e-12
    error = np.linalg.norm(groups - np.clip(np.round(groups / scale), -8, 7) * scale)
    return float(error / (np.linalg.norm(groups) + 1e-12))


def int8_share(errors: dict[str, float], sizes: dict[str, int], ratio: float) -> set[str]:
    """The layers a mixed scheme keeps at INT8: largest ``errors`` first, until ``1 - ratio`` of the weights.

    Args:
        errors (dict[str, float]): layer → its INT4 error (``int4_weight_error``).
        sizes (dict[str, int]): layer → weight count (every layer in ``errors``).
        ratio (float): the fraction of the weights left at INT4.

    Returns:
        set[str]: the chosen layers.
    """
    budget, chosen, taken = (1 - ratio) * sum(sizes[n] for n in errors), set(), 0
    for name in sorted(errors, key=lambda n: -errors[n]):
        if taken >= budget:
            break
        chosen.add(name)
        taken += sizes[name]
    return chosen
