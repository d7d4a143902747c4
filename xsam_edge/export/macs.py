"""MACs of one edge-graph call, the roofline's numerator (stored per graph in the bundle manifest).

Counted as ``xsam-edge info`` counts a component (``model.info.count_macs``: torch's FLOP counter halved),
on the export wrapper of a twin of the model built on the meta device. The meta device matters beyond speed:
on CPU, ``scaled_dot_product_attention`` dispatches to ``_scaled_dot_product_flash_attention_for_cpu``, which
torch's FLOP counter does not know, so a CPU run silently counts no attention in the encoders and the mask
decoder; on meta it decomposes into the ``bmm`` calls the counter counts.
"""

from __future__ import annotations

import torch

from xsam_edge.model.build import build_model
from xsam_edge.model.info import count_macs
from xsam_edge.model.xsam import XSam

from .graphs import GRAPH_NAMES, SlotConfig, build_graph, example_inputs


def graph_macs(model: XSam, graph_name: str, slots: SlotConfig | None = None) -> int:
    """Multiply-accumulates of one call of ``graph_name`` exported from ``model`` with ``slots``.

    The count follows from ``model.config`` and ``slots`` only: it runs on a meta-device twin built from the
    config (no memory, any model size), so ``model``'s weights, precision and KV-cache state play no part and
    ``model`` is not touched. The stateful LLM graphs start from a new wrapper's empty cache and the KV-I/O
    graphs from zero past caches (``example_inputs``), so the count never depends on an earlier call.

    Args:
        model (XSam): the model whose graph is counted (only its config is read).
        graph_name (str): one of ``GRAPH_NAMES``; ``*_prefill`` counts ``prefill_len`` tokens, ``*_decode``
            one.
        slots (SlotConfig | None): fixed slot sizes; ``None`` means the defaults.

    Returns:
        int: MACs of one call: matmuls, convolutions and attention; element-wise ops, norms, softmax, lookups
        and ``grid_sample`` count 0 (so ``embed`` and ``region`` are 0).

    Raises:
        ValueError: unknown graph name.
    """
    if graph_name not in GRAPH_NAMES:
        raise ValueError(f"unknown graph {graph_name!r}; known graphs: {', '.join(GRAPH_NAMES)}")
    with torch.device("meta"), torch.no_grad():
        # frozen: torch's module tracker cannot hook a Parameter that is passed as a layer input
        twin = build_model(model.config).requires_grad_(False)
        module = build_graph(twin, graph_name, slots)
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
    inputs = [x.to("meta") for x in example_inputs(model.config, graph_name, slots, dtype=dtype)]
    return count_macs(lambda: module(*inputs))
