"""Shared fixtures: the tiny model with non-trivial weights, its tokenizer, a small non-square test image.

Nothing here touches the network: the tiny preset builds from configs and the tokenizer ships in the package.
"""

from __future__ import annotations

import dataclasses
import itertools
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One thread everywhere, subprocesses included: torch (below), and ORT, OpenVINO and ExecuTorch through
# XSAM_EDGE_THREADS. pytest-xdist runs one worker per core, so a second thread per worker only adds hand-offs.
TEST_THREADS = os.environ.get("XSAM_EDGE_TEST_THREADS", "1")
os.environ.setdefault("XSAM_EDGE_THREADS", TEST_THREADS)
os.environ.setdefault("OMP_NUM_THREADS", TEST_THREADS)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from xsam_edge.model.build import build_model  # noqa: E402
from xsam_edge.model.presets import TINY  # noqa: E402
from xsam_edge.model.xsam import XSam  # noqa: E402
from xsam_edge.runtime.host import prefill  # noqa: E402
from xsam_edge.spec.tokenizer import XSamTokenizer, tiny_tokenizer  # noqa: E402
from xsam_edge.spec.types import Box, MaskPrompt, Point, Scribble, SegmentationRequest, Task  # noqa: E402

# One intra-op thread: the tiny model's ops take microseconds, and with two threads on a 2-core machine that
# is also running anything else, OpenMP hand-offs make every op wait on a busy core (measured: a tiny
# referring request 14 ms with one thread, 1.9 s with two while another process held one core).
torch.set_num_threads(int(TEST_THREADS))

# the test image: H x W, deliberately not square so the letterbox and the crop back are exercised
IMAGE_HW = (48, 80)
WEIGHT_STD = 0.05


def rerandomize(model: torch.nn.Module, seed: int = 0, std: float = WEIGHT_STD) -> torch.nn.Module:
    """Give every parameter a visible random value, in place.

    SAM's config initialiser draws weights with std 1e-10 and zero position tables, and norms start at one:
    with those values two different models can agree by accident. Norm scales (all ones) become
    1 + N(0, std), everything else N(0, std); the scalar ``logit_scale`` keeps its value.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 0:
                continue
            noise = torch.randn(param.shape, generator=gen, dtype=torch.float32).to(param.dtype) * std
            if bool(torch.all(param == 1)):
                param.copy_(1 + noise)
            else:
                param.copy_(noise)
    return model


def make_tiny_model(seed: int = 0, tied: bool = False) -> XSam:
    """A fresh tiny model: built with ``torch.manual_seed(seed)``, then re-randomised with std 0.05.

    ``tied``: its LLM's head is its input table (``tie_word_embeddings``, as Qwen2.5's).
    """
    config = (
        TINY
        if not tied
        else dataclasses.replace(TINY, llm=dataclasses.replace(TINY.llm, tie_word_embeddings=True))
    )
    torch.manual_seed(seed)
    return rerandomize(build_model(config), seed=seed).eval()


def with_grid_sampler(model: XSam) -> XSam:
    """The same parts under a config with the grid region sampler (the one the exported region graph runs)."""
    return model.__class__(
        dataclasses.replace(model.config, region_sampler="grid"),
        llm=model.llm,
        visual_encoder=model.visual_encoder,
        visual_projector=model.visual_projector,
        seg_projector=model.seg_projector,
        llm_projector=model.llm_projector,
        seg_connector=model.seg_connector,
        segmentor=model.segmentor,
    ).eval()


Shapes = tuple[tuple[int, ...], tuple[int, ...]]


def edge_op_shapes(edge, op: str, in_delegates: bool = False) -> list[Shapes]:  # noqa: ANN001
    """(input shape, output shape) of each node of a lowered ExecuTorch program whose op names ``op``: in its
    top-level graph (the portable part), or inside its delegates."""
    program = edge.exported_program()
    graphs = [program.graph]
    if in_delegates:
        children = program.graph_module.named_children()
        graphs = [m.original_module.graph for name, m in children if name.startswith("lowered_module")]
    return [
        (tuple(n.args[0].meta["val"].shape), tuple(n.meta["val"].shape))
        for graph in graphs
        for n in graph.nodes
        if n.op == "call_function" and op in str(n.target)
    ]


def prefill_graph(
    graph: torch.nn.Module, embeds: torch.Tensor, start: int, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The runtime's chunked prefill (``runtime.host.prefill``) driving an eager LLM graph wrapper.

    Returns:
        tuple[torch.Tensor, torch.Tensor]: projected states (L, D) and the last row's logits (1, V).
    """

    def step(x: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = graph(torch.from_numpy(x), torch.from_numpy(positions))
        return out[0].numpy(), out[1].numpy()

    projected, logits = prefill(step, embeds.numpy(), start, chunk)
    return torch.from_numpy(projected), torch.from_numpy(logits)


def shapes_examples(n: int = 8, tasks: tuple[Task, ...] = tuple(Task)) -> list:
    """The first ``n`` examples of the given tasks in the shapes training stream (seed 0)."""
    from xsam_edge.training.teacher import shapes_source

    stream = (e for e in shapes_source("train")(0) if e.task in tasks)
    return list(itertools.islice(stream, n))


def make_image(hw: tuple[int, int] = IMAGE_HW) -> np.ndarray:
    """A gray (H, W, 3) uint8 image with a red disk on the left and a blue square on the right."""
    h, w = hw
    image = np.full((h, w, 3), 128, np.uint8)
    ys, xs = np.mgrid[:h, :w]
    disk = (xs - w * 0.3) ** 2 + (ys - h * 0.5) ** 2 <= (min(h, w) * 0.3) ** 2
    image[disk] = (220, 30, 30)
    image[h // 4 : 3 * h // 4, int(w * 0.6) : int(w * 0.9)] = (30, 40, 210)
    return image


# Modules that take minutes (``--durations``): they start first, so xdist's workers finish together instead
# of one running a late heavy module while the other idles. The rest keep their collection order.
HEAVY_MODULES_FIRST = (
    "test_students_bundle.py",  # three students exported to three backends at real widths
    "test_native.py",
    "test_quant_pipeline.py",
    "test_bundle_runtime.py",
    "test_export_executorch_coreml.py",
    "test_quant_executorch_coreml.py",
    "test_bench.py",
    "test_pipeline.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(HEAVY_MODULES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each module keeps its order


@pytest.fixture(scope="session")
def tiny_model() -> XSam:
    """Shared, read-only: a test that changes weights or attributes must build its own (make_tiny_model)."""
    return make_tiny_model(0)


@pytest.fixture(scope="session")
def tokenizer() -> XSamTokenizer:
    return tiny_tokenizer(TINY.tokens)


@pytest.fixture()
def image() -> np.ndarray:
    return make_image()


def every_task_requests(image: np.ndarray) -> list[SegmentationRequest]:
    """One request per task (two interactive: the second has more prompts than 2 region slots)."""
    h, w = image.shape[:2]
    mask = np.zeros((h, w), bool)
    mask[5:20, 10:40] = True
    return [
        SegmentationRequest(image, Task.REFERRING, text="the red circle"),
        SegmentationRequest(image, Task.REASONING, text="the shape with the most corners"),
        SegmentationRequest(image, Task.PANOPTIC, categories=["circle", "square", "sky"]),
        SegmentationRequest(image, Task.INSTANCE, categories=["circle", "square"]),
        SegmentationRequest(image, Task.SEMANTIC, categories=["circle", "sky"]),
        SegmentationRequest(image, Task.OPEN_VOCABULARY, categories=["ring", "hexagon"]),
        SegmentationRequest(image, Task.INTERACTIVE, prompts=[Point(30, 20), Box(5, 5, 40, 30)]),
        SegmentationRequest(
            image, Task.INTERACTIVE, prompts=[Scribble(((2, 2), (30, 20))), MaskPrompt(mask), Point(60, 10)]
        ),  # 3 prompts for 2 region slots: the session batches
        SegmentationRequest(image, Task.VISUAL_GROUNDED, prompts=[Point(40, 24)]),
        SegmentationRequest(image, Task.GCG),
        SegmentationRequest(image, Task.CHAT, text="how many objects are there?"),
    ]
