"""The next-token Fisher diagonal of a language model: SqueezeLLM's sensitivity, for the benchmark only.

Why: the Core ML handler weighs its palettization k-means by a labels-free output sensitivity
(``quantization.importance``), since a bundle graph has no loss. A language model on text does have one:
SqueezeLLM weighs by the Fisher diagonal of the next-token loss. ``benchmarks.real_weights.llm_coreml``
scores both on the same tables (``backends.coreml.palettize``), so the gap between the shipped sensitivity
and the loss's own is measured, not assumed. What: summed squared gradients over calibration samples, one
model, one gradient and one sum in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


def fisher_diagonal(
    module: torch.nn.Module, samples: Iterable[Any], loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Sum over ``samples`` of each parameter's squared gradient of ``loss_fn(module, sample)``."""
    params = dict(module.named_parameters())
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    for sample in samples:
        module.zero_grad(set_to_none=True)
        loss_fn(module, sample).backward()
        with torch.no_grad():
            for name, p in params.items():
                if p.grad is not None:
                    total[name].add_(p.grad.square())
    module.zero_grad(set_to_none=True)
    return total
