"""Sensitivity-weighted look-up tables for Core ML palettization (SqueezeLLM's weighted k-means).

Why: coremltools' k-means weighs every weight alike. On a real 0.5 B LLM its 4-bit tables per 16 rows cost
+49.7 % perplexity; weighing each weight by its sensitivity put the same 16 values where the outputs read
them, +20.5 % at the same size (docs/results/real-weights.md). coremltools ships the method as
``SKMPalettizer``, a PyTorch pass that here was OOM-killed at 17 GB and clusters every fp32 value of a group
(14,336 per table; the fp16 values a package stores deduplicate to 2,500-6,000). What: per group of output
channels, the exact weighted 1-D k-means (the ``kmeans1d`` solver coremltools bundles) on the package's own
fp16 values, computed once per tensor and handed to ``palettize_weights`` as a ``custom`` table function;
the same tables give each tensor's weighted error, which ranks a mixed scheme's INT8 share. The groups are
solved on a thread per core (the solver's C call releases the GIL): one thread took 24 min for the 0.5 B LLM.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Tables", "row_weights", "tables_for", "weighted_lut"]


def row_weights(importance: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """Per-element k-means weights of a tensor of ``shape`` from its importance (``None``: all alike).

    Rows the calibration never reached (a lookup table's unseen tokens have no gradient at all) count as the
    tensor's average row, not as nothing; no weight is exactly zero, so every value keeps a nearest entry.
    """
    if importance is None:
        return np.ones(shape)
    f = np.asarray(importance, dtype=np.float64).reshape(shape[0], -1).copy()
    dead = f.sum(axis=1) == 0
    if dead.all():
        return np.ones(shape)
    if dead.any():
        f[dead] = f[~dead].mean()
    return np.maximum(f, f.max() * 1e-12).reshape(shape)


def weighted_lut(values: np.ndarray, weights: np.ndarray, nbits: int) -> tuple[np.ndarray, np.ndarray]:
    """The optimal weighted 1-D k-means of ``values``: a table of ``2**nbits`` entries and each value's index.

    Returns:
        tuple[np.ndarray, np.ndarray]: the table (``values``' dtype, unused entries 0) and uint8 indices,
        flattened in ``values``' order.
    """
    size = 1 << nbits
    # float32, exact for fp16: numpy 2.4's AVX2 quicksort misorders large float16 arrays with many repeated
    # values, so np.unique on them returns duplicates (18 "distinct" values for 16)
    distinct, inverse = np.unique(values.ravel().astype(np.float32), return_inverse=True)
    lut = np.zeros(size, dtype=values.dtype)
    if len(distinct) <= size:
        lut[: len(distinct)] = distinct
        return lut, inverse.astype(np.uint8)
    mass = np.bincount(inverse, weights=np.ravel(weights), minlength=len(distinct))
    centroids, clusters = _cluster(distinct.astype(np.float64), mass, size)
    lut[:] = centroids
    return lut, clusters.astype(np.uint8)[inverse]


def _cluster(points: np.ndarray, mass: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct ``points`` of ``mass`` → ``size`` centroids and each point's cluster.

    Calls the C solver of coremltools' bundled ``kmeans1d`` on the arrays' own buffers: its Python wrapper
    copies every value in and out through Python floats, about a tenth of a group's time, under the GIL.
    """
    import ctypes

    from coremltools._deps.kmeans1d import core

    points = np.ascontiguousarray(points, dtype=np.float64)
    mass = np.ascontiguousarray(mass, dtype=np.float64)
    clusters = np.empty(len(points), dtype=np.dtype(ctypes.c_ulong))
    centroids = np.empty(size, dtype=np.float64)
    core._DLL.cluster_with_weights(
        points.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
        mass.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
        ctypes.c_ulong(len(points)),
        ctypes.c_ulong(size),
        clusters.ctypes.data_as(ctypes.POINTER(ctypes.c_ulong)),
        centroids.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
    )
    return centroids, clusters


@dataclass
class Tables:
    """One tensor's tables, one per group of ``group_size`` output channels (axis 0), and its error.

    Attributes:
        by_group (dict[bytes, tuple[np.ndarray, np.ndarray]]): a group's raw values → (table, indices), so
            ``lut_function`` finds its group whatever order coremltools asks in.
        error (float): Σ weight · (value − table value)² over the tensor, divided by its size.
    """

    by_group: dict[bytes, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    error: float = 0.0

    def lut_function(self, group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The callback of coremltools' ``custom`` mode: the precomputed table of ``group``."""
        lut, indices = self.by_group[np.ascontiguousarray(group).tobytes()]
        return lut.astype(group.dtype), indices

    def config(self, group_size: int) -> Any:
        """The per-constant ``OpPalettizerConfig`` that writes these tables."""
        import coremltools.optimize.coreml as cto

        return cto.OpPalettizerConfig(
            mode="custom",
            lut_function=self.lut_function,
            granularity="per_grouped_channel",
            group_size=group_size,
            channel_axis=0,
        )


def tables_for(
    weight: np.ndarray, importance: np.ndarray | None, nbits: int, group_size: int
) -> Tables | None:
    """The weighted tables of ``weight`` (groups along axis 0), or ``None`` when its rows do not split.

    Args:
        weight (np.ndarray): the values the package stores (fp16 for an fp16 package).
        importance (np.ndarray | None): per-element sensitivity of the same shape (``None``: all alike).
        nbits (int): bits per index.
        group_size (int): output channels per table (0: one table for the tensor).
    """
    rows = weight.shape[0]
    group_size = group_size or rows
    if weight.ndim < 2 or rows % group_size:
        return None
    weights = row_weights(importance, weight.shape)

    def solve(start: int) -> tuple[bytes, np.ndarray, np.ndarray, float]:
        group = np.ascontiguousarray(weight[start : start + group_size])
        group_weights = weights[start : start + group_size]
        lut, indices = weighted_lut(group, group_weights, nbits)
        diff = group.astype(np.float64).ravel() - lut[indices].astype(np.float64)
        return group.tobytes(), lut, indices, float(np.dot(group_weights.ravel(), diff * diff))

    tables = Tables()
    total = 0.0
    with ThreadPoolExecutor(max_workers=solver_threads()) as pool:
        for key, lut, indices, error in pool.map(solve, range(0, rows, group_size)):
            tables.by_group[key] = (lut, indices)
            total += error
    tables.error = total / weight.size
    return tables


def solver_threads() -> int:
    """Threads for the k-means solves: ``XSAM_EDGE_THREADS``, or every core."""
    from xsam_edge.quantization.common import threads

    return threads() or os.cpu_count() or 1
