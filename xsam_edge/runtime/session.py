"""``EdgeSession``: the same ``segment(request)`` as the PyTorch predictor, over a bundle and a backend.

Encode once, query many: ``set_image`` runs the image graph and prefills the prompt prefix every task shares
(the template up to and including the image tokens), then keeps that KV cache. Each ``segment`` restores it
and prefills only its own tokens. Segmentation needs one prefill (tensor mode); GCG and chat decode greedily.
No torch here (unless a backend needs it).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from xsam_edge.runtime.backends import get_backend
from xsam_edge.runtime.host import condition_slots, embed_in_chunks, prefill, splice
from xsam_edge.spec.answers import condition_labels, phrase_spans
from xsam_edge.spec.bundle import TOKENIZER_FILE, Manifest, load_bundle
from xsam_edge.spec.postprocess import Geometry, finish
from xsam_edge.spec.preprocess import PreprocessSpec
from xsam_edge.spec.prompts import build_request_prompt, image_prefix, is_generate_task
from xsam_edge.spec.tokenizer import XSamTokenizer, check_prompt_length, expand_image_placeholder
from xsam_edge.spec.types import PROMPT_TASKS, SegmentationRequest, SegmentationResult, Task


@dataclass
class _Image:
    key: str
    geometry: Geometry
    image_tokens: np.ndarray  # (N_img, H)
    region_grid: np.ndarray  # (1, H, G, G)
    decoder_inputs: list[np.ndarray]  # mask_features, memory_0..L-1
    prefix_ids: list[int]
    prefix_projected: np.ndarray  # (P, D)
    prefix_state: Any


@dataclass
class SessionOutput:
    """Graph outputs of one request before post-processing (compared with golden vectors)."""

    class_logits: np.ndarray | None
    mask_logits: np.ndarray | None
    geometry: Geometry
    labels: list[str]
    prompt_boxes: list | None
    text: str | None
    prefilled_tokens: int


class EdgeSession:
    """Answers ``SegmentationRequest``s from a bundle.

    Args:
        bundle (str | os.PathLike | Manifest): bundle folder (verified on load) or a loaded manifest.
        backend (str): one of the bundle's backends (``onnx``, ``openvino`` …).
        max_new_tokens (int): generation budget for GCG and chat.
        runtime (Any): a backend instance to use instead of the registered one named ``backend`` (e.g. one
            made with options: ONNX Runtime execution providers, Core ML compute units).
    """

    def __init__(
        self,
        bundle: str | os.PathLike | Manifest,
        backend: str,
        max_new_tokens: int = 64,
        runtime: Any = None,
    ) -> None:
        self.manifest = bundle if isinstance(bundle, Manifest) else load_bundle(bundle)
        if backend not in self.manifest.backends:
            raise ValueError(
                f"bundle has no {backend!r} graphs; it was exported for: {', '.join(self.manifest.backends)}"
            )
        self.config = self.manifest.config
        self.spec = PreprocessSpec.from_dict(self.manifest.preprocess)
        self.tokenizer = XSamTokenizer.from_file(self.manifest.path(TOKENIZER_FILE), self.config.tokens)
        self.slots = self.manifest.slots
        runtime = runtime if runtime is not None else get_backend(backend)
        self.encode = runtime.graph(self.manifest, "encode_image")
        self.embed = runtime.graph(self.manifest, "embed")
        self.region = runtime.graph(self.manifest, "region")
        self.segment_graph = runtime.graph(self.manifest, "segment")
        self.llm = runtime.llm(self.manifest)
        self.embed_chunk = int(self.manifest.graph("embed", backend).inputs[0]["shape"][1])
        self.max_new_tokens = max_new_tokens
        self.backend = backend
        self._image: _Image | None = None

    # -- image -------------------------------------------------------------------------------
    def set_image(self, image: np.ndarray) -> None:
        """Encode ``image`` and prefill the shared prompt prefix, unless it is the image set last."""
        key = hashlib.sha1(image.tobytes()).hexdigest() + str(image.shape)
        if self._image is not None and self._image.key == key:
            return
        seg_pixels, scaled_hw = self.spec.letterbox(image)
        inputs = [seg_pixels[None]]
        if self.spec.global_size is not None:
            inputs.append(self.spec.global_pixels(image)[None])
        image_tokens, region_grid, *decoder_inputs = self.encode.run(*inputs)
        tokens = self.config.tokens
        prefix = image_prefix(tokens.template, tokens)
        prefix_ids = expand_image_placeholder(
            self.tokenizer.encode(prefix, add_bos=tokens.add_bos), self.config.num_image_tokens
        )
        embeds = splice(self._embed(prefix_ids), prefix_ids, image_tokens[0], None)
        self.llm.reset()
        projected, _ = prefill(self.llm.step, embeds, 0, self.llm.chunk)
        self._image = _Image(
            key,
            Geometry(image.shape[:2], scaled_hw, self.spec.seg_size),
            image_tokens[0],
            region_grid,
            decoder_inputs,
            prefix_ids,
            projected,
            self.llm.snapshot(),
        )

    def clear_image(self) -> None:
        """Forget the encoded image (the next request encodes its image again)."""
        self._image = None

    def _embed(self, ids: list[int]) -> np.ndarray:
        return embed_in_chunks(lambda x: self.embed.run(x)[0], ids, self.embed_chunk)

    # -- requests ----------------------------------------------------------------------------
    def segment(self, request: SegmentationRequest) -> SegmentationResult:
        """Answer one request, exactly as ``XSamPredictor.segment`` does (with the grid region sampler)."""
        out = self.run(request)
        return finish(
            request.task,
            out.class_logits,
            out.mask_logits,
            out.geometry,
            out.labels,
            out.prompt_boxes,
            out.text,
        )

    def run(self, request: SegmentationRequest) -> SessionOutput:
        """Everything up to post-processing.

        Raises:
            ValueError: the prompt does not fit the context, or more phrases than condition slots.
        """
        cfg = self.config
        self.set_image(request.image)
        image = self._image
        assert image is not None
        generate = is_generate_task(request.task)
        prompt = build_request_prompt(
            request, template=cfg.tokens.template, with_answer=not generate, tokens=cfg.tokens
        )
        ids = expand_image_placeholder(
            self.tokenizer.encode(prompt, add_bos=cfg.tokens.add_bos), cfg.num_image_tokens
        )
        reserved = self.max_new_tokens if generate else 0
        check_prompt_length(len(ids), int(self.slots["max_seq"]), cfg.num_image_tokens, reserved)
        start = len(image.prefix_ids)
        if ids[:start] != image.prefix_ids:
            raise RuntimeError("the prompt does not start with the cached image prefix (tokenizer mismatch)")

        region_tokens, prompt_boxes = None, None
        if request.task in PROMPT_TASKS:
            region_tokens, prompt_boxes = self._region_tokens(request, image)

        rest = ids[start:]
        self.llm.restore(image.prefix_state)
        embeds = splice(self._embed(rest), rest, None, region_tokens)
        projected, logits = prefill(self.llm.step, embeds, start, self.llm.chunk)
        projected = np.concatenate([image.prefix_projected, projected])
        prompt_len = len(ids)
        text = None
        if generate:
            new_ids, new_projected = self._generate(logits, len(ids))
            text = self.tokenizer.decode(new_ids, skip_special=True).strip()
            ids = ids + new_ids
            projected = np.concatenate([projected, new_projected]) if len(new_ids) else projected
            if request.task is Task.CHAT:
                return SessionOutput(None, None, image.geometry, [], None, text, prompt_len)

        search_from = prompt_len if request.task is Task.GCG else 0
        spans = [(s, e) for s, e in phrase_spans(self.tokenizer, ids, generated=generate) if s >= search_from]
        segs = [p for p in self.tokenizer.seg_positions(ids) if p >= search_from]
        if not spans or not segs:
            return SessionOutput(None, None, image.geometry, [], prompt_boxes, text, prompt_len)
        slots = int(self.slots["max_conditions"])
        cond, valid, seg = condition_slots(projected, spans, segs[-1], slots)
        class_logits, mask_logits = self.segment_graph.run(*image.decoder_inputs, cond, valid, seg)
        n = len(spans)
        columns = [*range(n), slots]  # the used condition slots, then background
        return SessionOutput(
            class_logits[0][:, columns],
            mask_logits[0],
            image.geometry,
            condition_labels(self.tokenizer, request, ids, spans),
            prompt_boxes,
            text,
            prompt_len,
        )

    # -- helpers -----------------------------------------------------------------------------
    def _region_tokens(self, request: SegmentationRequest, image: _Image) -> tuple[np.ndarray, list]:
        """Region graph over the prompts, K slots per call: more prompts than slots run in batches."""
        hw = request.image_size
        masks = self.spec.prompt_masks(request.prompts, hw)
        boxes = [self.spec.prompt_box(p, hw) for p in request.prompts]
        k = int(self.slots["max_regions"])
        tokens = []
        for i in range(0, len(masks), k):
            batch = masks[i : i + k]
            padded = np.zeros((1, k, *batch.shape[1:]), np.float32)
            padded[0, : len(batch)] = batch
            tokens.append(self.region.run(image.region_grid, padded)[0][0, : len(batch)])
        return np.concatenate(tokens), boxes

    def _generate(self, logits: np.ndarray, position: int) -> tuple[list[int], np.ndarray]:
        """Greedy decoding; returns the new ids (no stop word) and their projected states."""
        eos = self.tokenizer.eos_id
        new_ids: list[int] = []
        projected: list[np.ndarray] = []
        for _ in range(self.max_new_tokens):
            token = int(np.argmax(logits[0]))
            if token == eos:
                break
            new_ids.append(token)
            embed = self._embed([token])[None]  # (1, 1, H)
            out, logits = self.llm.step(embed, np.array([position], dtype=np.int64))
            projected.append(out[0])
            position += 1
        d = self.config.decoder.hidden_dim
        return new_ids, (np.concatenate(projected) if projected else np.zeros((0, d), np.float32))
