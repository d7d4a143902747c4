"""How much each weight matters to a graph's outputs: the diagonal of the output Gauss-Newton matrix.

Why: a weight-only quantizer that weighs every weight alike spends its few levels on weights the outputs
barely read. SqueezeLLM weighs each weight by the Fisher diagonal of the model's loss; a graph in a bundle
has no loss (an image encoder, an LLM chunk whose targets are unknown), but its outputs do: with a random
probe ε ~ N(0, I) on each output, E[(Jᵀε)²] = diag(JᵀJ), the second-order cost of a weight error to the
outputs' squared error, which is what a handler's held-out PSNR measures. Each output is divided by its own
RMS first, so a graph's small outputs count as much as its large ones (``output_fisher``); a model that
does have a loss (a language model on text) passes it to ``fisher_diagonal``. What: one forward and one
backward per calibration sample, summed squared gradients; each gradient is freed as soon as it is squared
into the sum, so the pass holds the model, one running sum and one layer's gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from .handler import GraphSource

__all__ = ["export_name", "fisher_diagonal", "output_fisher", "source_importance"]


def export_name(parameter: str) -> str:
    """``blocks.0.fc1.weight`` → ``p_blocks_0_fc1_weight``: the name torch.export lifts a parameter under."""
    return "p_" + parameter.replace(".", "_")


def _tensors(sample: Sequence[Any]) -> tuple[torch.Tensor, ...]:
    return tuple(x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x)) for x in sample)


def _float_outputs(outputs: Any) -> list[torch.Tensor]:
    items = outputs if isinstance(outputs, list | tuple) else [outputs]
    return [o for o in items if isinstance(o, torch.Tensor) and o.is_floating_point() and o.requires_grad]


def fisher_diagonal(
    module: torch.nn.Module, samples: Iterable[Any], loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor]
) -> dict[str, np.ndarray]:
    """Each parameter's summed squared gradient of ``loss_fn(module, sample)`` over ``samples``.

    Args:
        module (torch.nn.Module): the float graph (its weights are read, never changed; buffers the forward
            writes, such as an LLM's KV caches, keep their values but lose their autograd history).
        samples (Iterable[Any]): what ``loss_fn`` takes, one sample each.
        loss_fn (Callable[[torch.nn.Module, Any], torch.Tensor]): a scalar loss of one sample.

    Returns:
        dict[str, np.ndarray]: torch.export name (``export_name``) → float32 array of the parameter's shape.
        A tied parameter is listed under each of its names (one array): torch.export names a tied table
        after its head, while ``named_parameters`` lists the lookup's name. Parameters the loss never
        reached are left out.

    Raises:
        ValueError: no samples, or weights on the meta device.
    """
    params = dict(module.named_parameters())
    aliases: dict[int, list[str]] = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(p), []).append(name)
    if any(p.is_meta for p in params.values()):
        raise ValueError("sensitivity needs the model's weights; its parameters are on the meta device")
    flags = {name: p.requires_grad for name, p in params.items()}
    total: dict[str, torch.Tensor] = {}

    def accumulate(name: str):  # each gradient is squared into the sum and freed as soon as it exists
        def hook(p: torch.nn.Parameter) -> None:
            total.setdefault(name, torch.zeros_like(p)).add_(p.grad.square())
            p.grad = None

        return hook

    count = 0
    was_training = module.training
    module.eval()
    hooks = []
    try:
        for name, p in params.items():
            p.requires_grad_(True)
            hooks.append(p.register_post_accumulate_grad_hook(accumulate(name)))
        with torch.enable_grad():
            for sample in samples:
                module.zero_grad(set_to_none=True)
                loss_fn(module, sample).backward()
                for buffer in module.buffers():  # a cache the forward wrote keeps its value, not its graph
                    buffer.detach_()
                count += 1
    finally:
        for handle in hooks:
            handle.remove()
        module.zero_grad(set_to_none=True)
        for name, p in params.items():
            p.requires_grad_(flags[name])
        module.train(was_training)
    if not count:
        raise ValueError("a sensitivity pass needs at least one calibration sample")
    found = {}
    for name, t in total.items():
        array = t.numpy()
        for alias in aliases[id(params[name])]:
            found[export_name(alias)] = array
    return found


def output_fisher(
    module: torch.nn.Module, samples: Iterable[Sequence[Any]], seed: int = 0
) -> dict[str, np.ndarray]:
    """``fisher_diagonal`` of ``Σ_o ⟨ε_o, out_o / rms(out_o)⟩``: the output sensitivity, labels-free.

    Args:
        module (torch.nn.Module): the float graph (as ``fisher_diagonal``).
        samples (Iterable[Sequence[Any]]): positional inputs (numpy arrays or tensors), one sample each.
        seed (int): seeds the probes, so two runs agree.

    Returns:
        dict[str, np.ndarray]: as ``fisher_diagonal``.

    Raises:
        ValueError: no samples, weights on the meta device, or no floating-point output depends on the
            parameters.
    """
    generator = torch.Generator().manual_seed(seed)

    def probe(m: torch.nn.Module, sample: Sequence[Any]) -> torch.Tensor:
        outputs = _float_outputs(m(*_tensors(sample)))
        if not outputs:
            raise ValueError("no floating-point output depends on the module's parameters")
        return sum(
            (torch.randn(o.shape, generator=generator) * o).sum()
            / o.detach().square().mean().sqrt().clamp_min(1e-12)
            for o in outputs
        )

    return fisher_diagonal(module, samples, probe)


def source_importance(
    source: GraphSource, bundle_graphs: Sequence[str], calibration: Mapping[str, Sequence[Sequence[Any]]]
) -> dict[str, np.ndarray] | None:
    """``output_fisher`` of the torch graph a handler's source came from, on its calibration samples.

    A user's module is measured on the samples under its own name; an X-SAM recipe graph on each of its
    bundle graphs that has samples (the LLM's ``llm_prefill``; ``llm_decode`` shares its weights), summed.

    Returns:
        dict[str, np.ndarray] | None: as ``output_fisher``; ``None`` for a source with no torch graph (a
        user's ONNX or package file).

    Raises:
        ValueError: a torch graph but no calibration samples for it.
    """
    if source.module is not None:
        samples = calibration.get(source.name) or []
        if not samples:
            raise ValueError(f"{source.name}: a data-aware scheme needs calibration samples")
        return output_fisher(source.module, samples)
    if source.model is None:
        return None
    from xsam_edge.export.graphs import build_graph

    total: dict[str, np.ndarray] = {}
    for name in bundle_graphs:
        if samples := calibration.get(name):
            for key, value in output_fisher(build_graph(source.model, name, source.slots), samples).items():
                total[key] = total[key] + value if key in total else value
    if not total:
        raise ValueError(
            f"{source.name}: a data-aware scheme needs recorded inputs of {', '.join(bundle_graphs)}"
        )
    return total
