"""``EdgeSession``: the request plan (``spec.plan``) over a bundle's graphs on one backend.

The same ``segment(request)`` as the PyTorch predictor. ``GraphEngine`` is what the plan needs from a bundle:
the image graph, the fixed-length embed graph, the region graph in K-slot batches, the stateful LLM in
fixed-size prefill chunks (the cache snapshot after the image prefix is what makes the next query cheap), and
the segment graph over C condition slots. No torch here (unless a backend needs it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from xsam_edge.runtime.host import embed_in_chunks, prefill, splice
from xsam_edge.spec.bundle import TOKENIZER_FILE, Manifest, load_bundle
from xsam_edge.spec.plan import Predictor, RawOutput
from xsam_edge.spec.preprocess import PreprocessSpec
from xsam_edge.spec.tokenizer import XSamTokenizer

__all__ = ["GRAPHS", "EdgeSession", "GraphEngine", "RawOutput"]

GRAPHS = ("encode_image", "embed", "region", "segment")  # the stateless graphs a session runs


@dataclass
class _Features:
    image_tokens: np.ndarray  # (N_img, H)
    region_grid: np.ndarray  # (1, H, G, G)
    decoder_inputs: list[np.ndarray]  # mask_features, memory_0..L-1


class GraphEngine:
    """The plan's engine over a bundle's graph runners on one backend.

    Args:
        manifest (Manifest): the loaded bundle.
        backend (str): one of the bundle's backends.
        runtime (Any): the backend runtime (``backends.get_backend(name).make_runtime()``, or one made with
            options).
    """

    def __init__(self, manifest: Manifest, backend: str, runtime: Any) -> None:
        # graph name → runner; ``runtime.observe`` and calibration wrap these in place
        self.graphs = {name: runtime.graph(manifest, name) for name in GRAPHS}
        self.llm = runtime.llm(manifest)
        self.embed_chunk = int(manifest.graph("embed", backend).inputs[0]["shape"][1])
        self.max_seq = int(manifest.slots["max_seq"])
        self.max_conditions = int(manifest.slots["max_conditions"])
        self.max_regions = int(manifest.slots["max_regions"])

    def encode(self, seg_pixels: np.ndarray, global_pixels: np.ndarray | None) -> _Features:
        inputs = [seg_pixels[None]] + ([] if global_pixels is None else [global_pixels[None]])
        image_tokens, region_grid, *decoder_inputs = self.graphs["encode_image"].run(*inputs)
        return _Features(image_tokens[0], region_grid, decoder_inputs)

    def regions(self, image: _Features, masks: np.ndarray) -> np.ndarray:
        """Region graph over the prompt masks, K slots per call: more prompts than slots run in batches."""
        k = self.max_regions
        tokens = []
        for i in range(0, len(masks), k):
            batch = masks[i : i + k]
            padded = np.zeros((1, k, *batch.shape[1:]), np.float32)
            padded[0, : len(batch)] = batch
            tokens.append(self.graphs["region"].run(image.region_grid, padded)[0][0, : len(batch)])
        return np.concatenate(tokens)

    def reset(self) -> None:
        self.llm.reset()

    def forward(
        self, image: _Features, ids: Sequence[int], region_tokens: np.ndarray | None, start: int
    ) -> tuple[np.ndarray, np.ndarray]:
        embeds = embed_in_chunks(lambda x: self.graphs["embed"].run(x)[0], ids, self.embed_chunk)
        embeds = splice(embeds, ids, image.image_tokens, region_tokens)
        if len(ids) == 1:  # one decode step: the decode graph, not a padded prefill chunk
            projected, logits = self.llm.step(embeds[None], np.array([start], dtype=np.int64))
            return projected[0], logits[0]
        projected, logits = prefill(self.llm.step, embeds, start, self.llm.chunk, self.llm.pads_chunks)
        return projected, logits[0]

    def snapshot(self) -> Any:
        return self.llm.snapshot()

    def restore(self, state: Any) -> None:
        self.llm.restore(state)

    def segment(
        self, image: _Features, cond: np.ndarray, valid: np.ndarray, seg: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        class_logits, mask_logits = self.graphs["segment"].run(*image.decoder_inputs, cond, valid, seg)
        return class_logits[0], mask_logits[0]


class EdgeSession(Predictor):
    """Answers ``SegmentationRequest``s from a bundle.

    Args:
        bundle (str | os.PathLike | Manifest): bundle folder (verified on load) or a loaded manifest.
        backend (str): one of the bundle's backends (``onnx``, ``openvino`` …).
        max_new_tokens (int): generation budget for GCG and chat.
        runtime (Any): a backend runtime to use instead of the registered one named ``backend`` (e.g. one
            made with options: ONNX Runtime execution providers, Core ML compute units).
        public_key (Any): require the bundle to be signed by this Ed25519 public key (``spec.signing``).
    """

    def __init__(
        self,
        bundle: str | os.PathLike | Manifest,
        backend: str,
        max_new_tokens: int = 64,
        runtime: Any = None,
        public_key: Any = None,
    ) -> None:
        from xsam_edge.backends import get_backend

        manifest = bundle if isinstance(bundle, Manifest) else load_bundle(bundle, public_key=public_key)
        if backend not in manifest.backends:
            raise ValueError(
                f"bundle has no {backend!r} graphs; it was exported for: {', '.join(manifest.backends)}"
            )
        config = manifest.config
        tokenizer = XSamTokenizer.from_file(manifest.path(TOKENIZER_FILE), config.tokens)
        runtime = runtime if runtime is not None else get_backend(backend).make_runtime()
        engine = GraphEngine(manifest, backend, runtime)
        super().__init__(
            engine, tokenizer, config, PreprocessSpec.from_dict(manifest.preprocess), max_new_tokens
        )
        self.manifest = manifest
        self.backend = backend
        self.slots = manifest.slots
