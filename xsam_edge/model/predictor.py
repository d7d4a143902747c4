"""Request → result over the PyTorch model: the reference that every exported bundle is compared with.

Two modes, as upstream:
- *tensor* (every segmentation task): the answer ``Sure, it is <SEG>.`` is appended to the prompt and the
  LLM runs one prefill; the hidden states at ``<p>…</p>`` and ``<SEG>`` are read directly.
- *predict* (GCG, chat): greedy generation; for GCG the phrase spans and ``<SEG>`` are then found in the
  generated tokens, whose hidden states come from one teacher-forced pass over prompt + answer (so a
  ``<SEG>`` generated last still has a hidden state, which upstream's step-wise capture lacks).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np
import torch

from xsam_edge.model.checkpoint import TOKENIZER_FILE, from_pretrained
from xsam_edge.model.xsam import DecoderInputs, ImageFeatures, XSam
from xsam_edge.spec.answers import condition_labels, phrase_spans
from xsam_edge.spec.postprocess import Geometry, finish
from xsam_edge.spec.preprocess import PreprocessSpec
from xsam_edge.spec.prompts import build_request_prompt, is_generate_task
from xsam_edge.spec.tokenizer import XSamTokenizer, check_prompt_length, expand_image_placeholder
from xsam_edge.spec.types import PROMPT_TASKS, SegmentationRequest, SegmentationResult, Task


@dataclass
class RawOutput:
    """Decoder outputs of one request before host post-processing (also what golden vectors store).

    Attributes:
        class_logits (np.ndarray | None): (Q, C+1); ``None`` when nothing was segmented (chat).
        mask_logits (np.ndarray | None): (Q, m, m) low-resolution mask logits.
        geometry (Geometry): where the letterboxed input sits in the image.
        labels (list[str]): one label per condition.
        prompt_boxes (list | None): visual-prompt boxes (interactive post-processing).
        text (str | None): generated text (GCG, chat).
        num_tokens (int): LLM sequence length, image tokens included.
    """

    class_logits: np.ndarray | None
    mask_logits: np.ndarray | None
    geometry: Geometry
    labels: list[str]
    prompt_boxes: list | None
    text: str | None
    num_tokens: int


@dataclass
class _ImageState:
    key: str
    features: ImageFeatures
    decoder_inputs: DecoderInputs
    geometry: Geometry


class XSamPredictor:
    """Answers ``SegmentationRequest``s with an ``XSam`` model; encodes each image once.

    Args:
        model (XSam): the model (put in eval mode here).
        tokenizer (XSamTokenizer): must hold the model's ``<SEG>``, ``<p>``, ``</p>``.
        seed (int): seeds the upstream random region sampler, so results are reproducible.
        max_new_tokens (int): generation budget for GCG and chat.
        region_sampler (str | None): ``random`` or ``grid``; ``None`` uses the model config's.
    """

    def __init__(
        self,
        model: XSam,
        tokenizer: XSamTokenizer,
        seed: int = 0,
        max_new_tokens: int = 64,
        region_sampler: str | None = None,
    ) -> None:
        if region_sampler not in (None, "random", "grid"):
            raise ValueError(f"region_sampler must be 'random' or 'grid', got {region_sampler!r}")
        if len(tokenizer) > model.config.llm.vocab_size:
            raise ValueError(
                f"tokenizer has {len(tokenizer)} tokens but the LLM embeds only "
                f"{model.config.llm.vocab_size}; "
                "use the tokenizer the model was trained with"
            )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.spec = PreprocessSpec.from_config(model.config)
        self.seed = seed
        self.max_new_tokens = max_new_tokens
        self.region_sampler = region_sampler
        self._image: _ImageState | None = None

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **kwargs) -> XSamPredictor:
        """Load a model folder written by ``save_pretrained`` (it must hold ``tokenizer.json``)."""
        model = from_pretrained(directory)
        path = os.path.join(directory, TOKENIZER_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{directory} has no {TOKENIZER_FILE}; save the model with its tokenizer")
        return cls(model, XSamTokenizer.from_file(path, model.config.tokens), **kwargs)

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- image ---------------------------------------------------------------------------------
    @torch.no_grad()
    def set_image(self, image: np.ndarray) -> None:
        """Encode ``image`` (H, W, 3) uint8 unless it is the image encoded last."""
        key = hashlib.sha1(image.tobytes()).hexdigest() + str(image.shape)
        if self._image is not None and self._image.key == key:
            return
        seg_pixels, scaled_hw = self.spec.letterbox(image)
        global_pixels = None
        if self.spec.global_size is not None:
            global_pixels = torch.from_numpy(self.spec.global_pixels(image))[None].to(
                self._device, self._dtype
            )
        seg = torch.from_numpy(seg_pixels)[None].to(self._device, self._dtype)
        features = self.model.encode_image(seg, global_pixels)
        geometry = Geometry(image.shape[:2], scaled_hw, self.spec.seg_size)
        self._image = _ImageState(key, features, self.model.decoder_inputs(features.pyramid), geometry)

    # -- one request ---------------------------------------------------------------------------
    def segment(self, request: SegmentationRequest) -> SegmentationResult:
        """Answer one request: masks at the original image size, labels, scores (and text for GCG/chat)."""
        raw = self.run(request)
        return finish(
            request.task,
            raw.class_logits,
            raw.mask_logits,
            raw.geometry,
            raw.labels,
            raw.prompt_boxes,
            raw.text,
        )

    @torch.no_grad()
    def run(self, request: SegmentationRequest, answer: str | None = None) -> RawOutput:
        """Everything up to host post-processing: prompt, LLM, conditions, decoder.

        Args:
            request (SegmentationRequest): the request.
            answer (str | None): GCG/chat only: score this answer instead of generating one (teacher forcing,
                as training and golden references do).

        Raises:
            ValueError: the prompt does not fit in the LLM context, or the request is malformed.
        """
        cfg = self.model.config
        self.set_image(request.image)
        state = self._image
        assert state is not None
        generate = is_generate_task(request.task)
        prompt = build_request_prompt(
            request, template=cfg.tokens.template, with_answer=not generate, tokens=cfg.tokens
        )
        ids = expand_image_placeholder(
            self.tokenizer.encode(prompt, add_bos=cfg.tokens.add_bos), cfg.num_image_tokens
        )
        reserved = self.max_new_tokens if generate else 0
        check_prompt_length(len(ids), cfg.llm.max_position_embeddings, cfg.num_image_tokens, reserved)

        region_tokens, prompt_boxes = None, None
        if request.task in PROMPT_TASKS:
            region_tokens, prompt_boxes = self._region_tokens(request, state)

        prompt_len = len(ids)
        text = None
        if generate:
            if answer is not None:
                new_ids = self.tokenizer.encode(answer, add_bos=False)
            else:
                new_ids = self._generate(ids, state.features, region_tokens)
            text = self.tokenizer.decode(new_ids, skip_special=True).strip()
            ids = ids + new_ids
            if request.task is Task.CHAT:
                return RawOutput(None, None, state.geometry, [], None, text, len(ids))

        id_tensor = torch.tensor(ids, device=self._device)
        embeds = self.model.splice(id_tensor, state.features.image_tokens[0], region_tokens)
        hidden = self.model.llm_hidden(embeds[None])[0]  # (T, H_llm)

        search_from = prompt_len if request.task is Task.GCG else 0
        spans = [(s, e) for s, e in phrase_spans(self.tokenizer, ids, generated=generate) if s >= search_from]
        segs = [p for p in self.tokenizer.seg_positions(ids) if p >= search_from]
        labels = condition_labels(self.tokenizer, request, ids, spans)
        if not spans or not segs:
            # GCG output without a phrase or <SEG>: text only, nothing to segment
            return RawOutput(None, None, state.geometry, [], prompt_boxes, text, len(ids))

        cond, seg = self.model.condition_embeds(hidden, spans, segs[-1])
        valid = torch.ones(1, cond.shape[0], dtype=torch.bool, device=self._device)
        class_logits, out = self.model.decode(state.decoder_inputs, seg[None], cond[None], valid)
        return RawOutput(
            class_logits[0].float().cpu().numpy(),
            out.mask_logits[0].float().cpu().numpy(),
            state.geometry,
            labels,
            prompt_boxes,
            text,
            len(ids),
        )

    # -- helpers -------------------------------------------------------------------------------
    def _region_tokens(self, request: SegmentationRequest, state: _ImageState) -> tuple[torch.Tensor, list]:
        hw = request.image_size
        masks = self.spec.prompt_masks(request.prompts, hw)
        boxes = [self.spec.prompt_box(p, hw) for p in request.prompts]
        generator = torch.Generator().manual_seed(self.seed)
        tokens = self.model.region_tokens(
            state.features.region_grid,
            torch.from_numpy(masks).to(self._device, self._dtype),
            sampler=self.region_sampler,
            generator=generator,
        )
        return tokens, boxes

    def _generate(
        self, ids: list[int], features: ImageFeatures, region_tokens: torch.Tensor | None
    ) -> list[int]:
        """Greedy decoding from the spliced prompt; returns the new ids without the stop word."""
        embeds = self.model.splice(
            torch.tensor(ids, device=self._device), features.image_tokens[0], region_tokens
        )[None]
        eos = self.tokenizer.eos_id
        out = self.model.llm.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=self._device),
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=self.tokenizer.pad_id,
        )
        new = out[0].tolist()
        return new[: new.index(eos)] if eos in new else new


def load_predictor(
    model_dir: str | os.PathLike | None = None,
    preset: str | None = None,
    tokenizer_dir: str | os.PathLike | None = None,
    seed: int = 0,
) -> XSamPredictor:
    """A predictor from a model folder, or from a preset with random weights (for smoke runs).

    Args:
        model_dir (str | os.PathLike | None): folder written by ``save_pretrained``.
        preset (str | None): preset name; its weights are random (untrained).
        tokenizer_dir (str | os.PathLike | None): a local HF tokenizer folder, for a preset other than
            ``tiny``.
        seed (int): seeds random weights and the region sampler.

    Raises:
        ValueError: neither or both of ``model_dir`` and ``preset``, or no tokenizer for the preset.
    """
    if (model_dir is None) == (preset is None):
        raise ValueError("give exactly one of a model folder (--model) or a preset (--preset)")
    if model_dir is not None:
        return XSamPredictor.from_pretrained(model_dir, seed=seed)
    from xsam_edge.model.build import build_model
    from xsam_edge.model.presets import get_preset
    from xsam_edge.spec.tokenizer import tiny_tokenizer

    config = get_preset(preset)
    if tokenizer_dir is not None:
        tokenizer = XSamTokenizer.from_pretrained_dir(tokenizer_dir, config.tokens)
    elif config.tokens.builtin_tokenizer == "tiny":
        tokenizer = tiny_tokenizer(config.tokens)
    else:
        raise ValueError(
            f"preset {preset!r} needs its tokenizer: pass a local tokenizer folder (--tokenizer DIR)"
        )
    torch.manual_seed(seed)
    return XSamPredictor(build_model(config), tokenizer, seed=seed)
