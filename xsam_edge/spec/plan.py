"""The request plan, once: what happens between a ``SegmentationRequest`` and its ``SegmentationResult``.

prompt → region tokens → prefill → answer (generate, or teacher-forced) → condition slots → segment → finish

The PyTorch predictor and the bundle runtime are this plan over two engines: the eager model
(``model.predictor.TorchEngine``) and a bundle's graphs on a backend (``runtime.session.GraphEngine``). A
native runtime follows the same steps from the manifest. Encode once, query many: the image sits before the
question in every template, so ``set_image`` prefills the shared prefix (template head + image tokens) once
and every request restores that cache and prefills only its own tokens. No torch here.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from xsam_edge.spec.answers import condition_labels, phrase_spans
from xsam_edge.spec.config import XSamConfig
from xsam_edge.spec.geometry import Geometry
from xsam_edge.spec.postprocess import finish
from xsam_edge.spec.preprocess import PreprocessSpec
from xsam_edge.spec.prompts import build_request_prompt, image_prefix, is_generate_task
from xsam_edge.spec.tokenizer import XSamTokenizer, check_prompt_length, expand_image_placeholder
from xsam_edge.spec.types import (
    PROMPT_TASKS,
    RequestError,
    SegmentationRequest,
    SegmentationResult,
    Task,
    validate_request,
)


class Engine(Protocol):
    """The model side of the plan.

    Image features and region tokens stay opaque to the plan (numpy arrays for a bundle, tensors on the
    model's device for PyTorch); what the plan reads is numpy.

    Attributes:
        max_seq (int): tokens the LLM context (or KV cache) holds, prompt and answer together.
        max_conditions (int | None): condition slots of the segment step; ``None``: as many as phrases.
    """

    max_seq: int
    max_conditions: int | None

    def encode(self, seg_pixels: np.ndarray, global_pixels: np.ndarray | None) -> Any:
        """(3, S, S) letterboxed pixels [+ (3, G, G) global pixels] → the image's features (opaque)."""
        ...

    def regions(self, image: Any, masks: np.ndarray) -> Any:
        """(k, S, S) float prompt masks → k region tokens (opaque), in prompt order."""
        ...

    def reset(self) -> None:
        """Empty the LLM cache."""
        ...

    def forward(
        self, image: Any, ids: Sequence[int], region_tokens: Any | None, start: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run the LLM over ``ids`` at positions ``start ..`` after what the cache holds (and keep them).

        Placeholders (``IMAGE_TOKEN_ID``, ``REGION_TOKEN_ID``) take the image's tokens and ``region_tokens``.

        Returns:
            tuple[np.ndarray, np.ndarray]: projected states (len(ids), D) float32 and the last row's
            next-token logits (V,).
        """
        ...

    def snapshot(self) -> Any:
        """The LLM cache as it is now (restorable any number of times)."""
        ...

    def restore(self, state: Any) -> None:
        """Put back a snapshot."""
        ...

    def segment(
        self, image: Any, cond: np.ndarray, valid: np.ndarray, seg: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Decoder over C condition slots: cond (1, C, D), valid (1, C) 0/1, seg (1, D).

        Returns:
            tuple[np.ndarray, np.ndarray]: class logits (Q, C + 1) (background last) and mask logits
            (Q, m, m).
        """
        ...


@dataclass
class RawOutput:
    """One request's decoder outputs before post-processing (what golden vectors store).

    Attributes:
        class_logits (np.ndarray | None): (Q, n + 1) over the request's n conditions and background;
            ``None`` when nothing was segmented (chat, or an answer without a phrase).
        mask_logits (np.ndarray | None): (Q, m, m) low-resolution mask logits.
        geometry (Geometry): where the letterboxed input sits in the image.
        labels (list[str]): one label per condition.
        prompt_boxes (list | None): visual-prompt boxes (interactive post-processing).
        text (str | None): the answer's text (GCG, chat).
        prompt_tokens (int): the prompt's length, image tokens included.
        num_tokens (int): the LLM sequence, prompt and answer.
    """

    class_logits: np.ndarray | None
    mask_logits: np.ndarray | None
    geometry: Geometry
    labels: list[str]
    prompt_boxes: list | None
    text: str | None
    prompt_tokens: int
    num_tokens: int


@dataclass
class EncodedImage:
    """The image set last: its features, where it sits in the input, and the cache after its prefix."""

    key: str
    features: Any
    geometry: Geometry
    prefix_ids: list[int]
    prefix_projected: np.ndarray  # (P, D)
    prefix_state: Any


def image_key(image: np.ndarray) -> str:
    """Identity of an image's pixels (the encoded image is reused while the key is the same)."""
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest() + str(image.shape)


def condition_slots(
    projected: np.ndarray, spans: Sequence[tuple[int, int]], seg_position: int, slots: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Span-average projected states into ``slots`` condition slots (padding slots zero and invalid).

    Returns:
        tuple: cond (1, C, D) float32, valid (1, C) float32 0/1, seg (1, D) float32.

    Raises:
        RequestError: more phrases than slots.
    """
    if len(spans) > slots:
        raise RequestError(
            f"the request has {len(spans)} categories / phrases but the segment graph has {slots} "
            "condition slots; re-export with a larger --max-conditions"
        )
    d = projected.shape[1]
    cond = np.zeros((1, slots, d), np.float32)
    valid = np.zeros((1, slots), np.float32)
    for i, (s, e) in enumerate(spans):
        cond[0, i] = projected[s : e + 1].mean(axis=0)
        valid[0, i] = 1
    return cond, valid, projected[seg_position][None].astype(np.float32)


class Predictor:
    """Answers ``SegmentationRequest``s by the plan over ``engine``; encodes each image once.

    Args:
        engine (Engine): the model side.
        tokenizer (XSamTokenizer): holds the model's ``<SEG>``, ``<p>``, ``</p>``.
        config (XSamConfig): the model's config (template, token counts).
        spec (PreprocessSpec): pre-processing (letterbox, global pixels, prompt rasterisation).
        max_new_tokens (int): generation budget for GCG and chat.
    """

    def __init__(
        self,
        engine: Engine,
        tokenizer: XSamTokenizer,
        config: XSamConfig,
        spec: PreprocessSpec,
        max_new_tokens: int = 64,
    ) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.config = config
        self.spec = spec
        self.max_new_tokens = max_new_tokens
        self._image: EncodedImage | None = None

    # -- image -------------------------------------------------------------------------------
    def set_image(self, image: np.ndarray) -> None:
        """Encode ``image`` (H, W, 3) uint8 and prefill the shared prefix, unless it is the image set last."""
        key = image_key(image)
        if self._image is not None and self._image.key == key:
            return
        seg_pixels, scaled_hw = self.spec.letterbox(image)
        global_pixels = self.spec.global_pixels(image) if self.spec.global_size is not None else None
        features = self.engine.encode(seg_pixels, global_pixels)
        tokens = self.config.tokens
        prefix_ids = self._expand(
            self.tokenizer.encode(image_prefix(tokens.template, tokens), tokens.add_bos)
        )
        self.engine.reset()
        projected, _ = self.engine.forward(features, prefix_ids, None, 0)
        geometry = Geometry(image.shape[:2], scaled_hw, self.spec.seg_size)
        self._image = EncodedImage(key, features, geometry, prefix_ids, projected, self.engine.snapshot())

    def clear_image(self) -> None:
        """Forget the encoded image (the next request encodes its image again)."""
        self._image = None

    # -- one request -------------------------------------------------------------------------
    def segment(self, request: SegmentationRequest, answer: str | None = None) -> SegmentationResult:
        """Answer one request: masks at the original image size, labels, scores (and text for GCG/chat).

        ``answer`` (GCG, chat): score this answer instead of generating one (see ``run``).
        """
        raw = self.run(request, answer)
        return finish(
            request.task,
            raw.class_logits,
            raw.mask_logits,
            raw.geometry,
            raw.labels,
            raw.prompt_boxes,
            raw.text,
        )

    def run(self, request: SegmentationRequest, answer: str | None = None) -> RawOutput:
        """Everything up to post-processing.

        Args:
            request (SegmentationRequest): the request.
            answer (str | None): GCG / chat only: score this answer instead of generating one (teacher
                forcing, as training and golden references do).

        Raises:
            ValueError: the prompt does not fit the context, or more phrases than condition slots.
        """
        validate_request(request)  # a request's fields can change after it was made
        cfg = self.config
        generate = is_generate_task(request.task)

        # prompt: the template around the question (and, in tensor mode, the answer with <SEG>), checked
        # against the context before the image is encoded
        prompt = build_request_prompt(
            request,
            template=cfg.tokens.template,
            with_answer=not generate,
            tokens=cfg.tokens,
            reserved=self.special_strings,
        )
        ids = self._expand(self.tokenizer.encode(prompt, add_bos=cfg.tokens.add_bos))
        reserved = self.max_new_tokens if generate else 0
        check_prompt_length(len(ids), self.engine.max_seq, cfg.num_image_tokens, reserved)
        self.set_image(request.image)
        image = self._image
        assert image is not None
        start = len(image.prefix_ids)
        if ids[:start] != image.prefix_ids:
            raise RuntimeError("the prompt does not start with the cached image prefix (tokenizer mismatch)")

        # region tokens: one per visual prompt
        region_tokens, prompt_boxes = None, None
        if request.task in PROMPT_TASKS:
            hw = request.image_size
            masks = self.spec.prompt_masks(request.prompts, hw)
            region_tokens = self.engine.regions(image.features, masks)
            prompt_boxes = [self.spec.prompt_box(p, hw) for p in request.prompts]

        # prefill: the cached prefix, then this request's own tokens
        self.engine.restore(image.prefix_state)
        projected, logits = self.engine.forward(image.features, ids[start:], region_tokens, start)
        projected = np.concatenate([image.prefix_projected, projected])
        prompt_tokens = len(ids)

        # answer: generated greedily, or the given one teacher-forced
        text = None
        if generate:
            new_ids, new_projected = self._answer(image, answer, logits, len(ids))
            text = self.tokenizer.decode(new_ids, skip_special=True).strip()
            ids = ids + new_ids
            projected = np.concatenate([projected, new_projected])
            if request.task is Task.CHAT:
                return RawOutput(None, None, image.geometry, [], None, text, prompt_tokens, len(ids))

        # conditions: <p>…</p> spans and the last <SEG> (GCG: only those of the answer)
        search_from = prompt_tokens if request.task is Task.GCG else 0
        spans = [(s, e) for s, e in phrase_spans(self.tokenizer, ids, generated=generate) if s >= search_from]
        segs = [p for p in self.tokenizer.seg_positions(ids) if p >= search_from]
        if not spans or not segs:
            return RawOutput(None, None, image.geometry, [], prompt_boxes, text, prompt_tokens, len(ids))
        slots = self.engine.max_conditions or len(spans)
        cond, valid, seg = condition_slots(projected, spans, segs[-1], slots)

        # segment: the used condition slots, then background
        class_logits, mask_logits = self.engine.segment(image.features, cond, valid, seg)
        columns = [*range(len(spans)), slots]
        return RawOutput(
            class_logits[:, columns],
            mask_logits,
            image.geometry,
            condition_labels(self.tokenizer, request, ids, spans),
            prompt_boxes,
            text,
            prompt_tokens,
            len(ids),
        )

    # -- helpers -----------------------------------------------------------------------------
    @functools.cached_property
    def special_strings(self) -> tuple[str, ...]:
        """The tokenizer's special tokens: user text may not hold them (``<s>``, ``<pad>`` …)."""
        return self.tokenizer.special_strings()

    def _expand(self, ids: list[int]) -> list[int]:
        return expand_image_placeholder(ids, self.config.num_image_tokens)

    def _answer(
        self, image: EncodedImage, answer: str | None, logits: np.ndarray, position: int
    ) -> tuple[list[int], np.ndarray]:
        """The answer's ids (no stop word) and their projected states."""
        if answer is not None:
            new_ids = self.tokenizer.encode(answer, add_bos=False)
            if not new_ids:
                return [], np.zeros((0, image.prefix_projected.shape[1]), np.float32)
            projected, _ = self.engine.forward(image.features, new_ids, None, position)
            return new_ids, projected
        eos = self.tokenizer.eos_id
        new_ids, rows = [], []
        for _ in range(self.max_new_tokens):
            token = int(np.argmax(logits))
            if token == eos:
                break
            new_ids.append(token)
            row, logits = self.engine.forward(image.features, [token], None, position)
            rows.append(row)
            position += 1
        d = image.prefix_projected.shape[1]
        return new_ids, (np.concatenate(rows) if rows else np.zeros((0, d), np.float32))
