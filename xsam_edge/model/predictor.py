"""The PyTorch model behind the request plan: the reference every exported bundle is compared with.

Two modes, as upstream:
- *tensor* (every segmentation task): the answer ``Sure, it is <SEG>.`` is appended to the prompt and the
  LLM runs one prefill; the hidden states at ``<p>…</p>`` and ``<SEG>`` are read directly.
- *predict* (GCG, chat): greedy generation; for GCG the phrase spans and ``<SEG>`` are then found in the
  generated tokens, whose hidden states are those the decode steps produced (so a ``<SEG>`` generated last
  still has a hidden state, which upstream's step-wise capture lacks).

The plan itself (``spec.plan``) is shared with the bundle runtime; this module is only the engine: the
model's own core methods, the LLM with a transformers ``DynamicCache``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from xsam_edge.model.checkpoint import TOKENIZER_FILE, from_pretrained
from xsam_edge.model.xsam import DecoderInputs, ImageFeatures, XSam
from xsam_edge.spec.plan import Predictor, RawOutput
from xsam_edge.spec.preprocess import PreprocessSpec
from xsam_edge.spec.tokenizer import XSamTokenizer

__all__ = ["RawOutput", "TorchEngine", "XSamPredictor", "load_predictor"]


@dataclass
class _Features:
    encoded: ImageFeatures
    decoder_inputs: DecoderInputs


class TorchEngine:
    """The plan's engine over an eager ``XSam`` (any device and dtype it sits on).

    Args:
        model (XSam): the model (put in eval mode here).
        seed (int): seeds the upstream random region sampler per request, so results are reproducible.
        region_sampler (str | None): ``random`` or ``grid``; ``None`` uses the model config's.
    """

    max_conditions = None  # the eager decoder takes any number of conditions

    def __init__(self, model: XSam, seed: int = 0, region_sampler: str | None = None) -> None:
        if region_sampler not in (None, "random", "grid"):
            raise ValueError(f"region_sampler must be 'random' or 'grid', got {region_sampler!r}")
        self.model = model.eval()
        self.seed = seed
        self.region_sampler = region_sampler
        self.max_seq = model.config.llm.max_position_embeddings
        self._cache: Any = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).to(self.device, self.dtype)

    @torch.no_grad()
    def encode(self, seg_pixels: np.ndarray, global_pixels: np.ndarray | None) -> _Features:
        glob = None if global_pixels is None else self._tensor(global_pixels)[None]
        features = self.model.encode_image(self._tensor(seg_pixels)[None], glob)
        return _Features(features, self.model.decoder_inputs(features.pyramid))

    @torch.no_grad()
    def regions(self, image: _Features, masks: np.ndarray) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        return self.model.region_tokens(
            image.encoded.region_grid, self._tensor(masks), sampler=self.region_sampler, generator=generator
        )

    def reset(self) -> None:
        self._cache = None

    @torch.no_grad()
    def forward(
        self, image: _Features, ids: Sequence[int], region_tokens: torch.Tensor | None, start: int
    ) -> tuple[np.ndarray, np.ndarray]:
        from transformers import DynamicCache

        if self._cache is None:
            self._cache = DynamicCache(config=self.model.llm.config)
        id_tensor = torch.tensor(list(ids), device=self.device)
        embeds = self.model.splice(id_tensor, image.encoded.image_tokens[0], region_tokens)  # (T, H)
        positions = torch.arange(start, start + len(ids), device=self.device)
        out = self.model.llm.model(
            inputs_embeds=embeds[None],
            past_key_values=self._cache,
            use_cache=True,
            position_ids=positions[None],
            cache_position=positions,
        )
        self._cache = out.past_key_values
        hidden = out.last_hidden_state[0]  # (T, H)
        projected = self.model.llm_projector(hidden)  # (T, D)
        logits = self.model.llm.lm_head(hidden[-1:])[0]  # (V,)
        return projected.float().cpu().numpy(), logits.float().cpu().numpy()

    def snapshot(self) -> Any:
        return copy.deepcopy(self._cache)

    def restore(self, state: Any) -> None:
        self._cache = copy.deepcopy(state)

    @torch.no_grad()
    def segment(
        self, image: _Features, cond: np.ndarray, valid: np.ndarray, seg: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        class_logits, out = self.model.decode(
            image.decoder_inputs,
            self._tensor(seg),
            self._tensor(cond),
            torch.from_numpy(valid > 0).to(self.device),
        )
        return class_logits[0].float().cpu().numpy(), out.mask_logits[0].float().cpu().numpy()


class XSamPredictor(Predictor):
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
        if len(tokenizer) > model.config.llm.vocab_size:
            raise ValueError(
                f"tokenizer has {len(tokenizer)} tokens but the LLM embeds only "
                f"{model.config.llm.vocab_size}; use the tokenizer the model was trained with"
            )
        engine = TorchEngine(model, seed=seed, region_sampler=region_sampler)
        super().__init__(
            engine, tokenizer, model.config, PreprocessSpec.from_config(model.config), max_new_tokens
        )
        self.model = engine.model
        self.seed = seed

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **kwargs: Any) -> XSamPredictor:
        """Load a model folder written by ``save_pretrained`` (it must hold ``tokenizer.json``)."""
        model = from_pretrained(directory)
        path = os.path.join(directory, TOKENIZER_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{directory} has no {TOKENIZER_FILE}; save the model with its tokenizer")
        return cls(model, XSamTokenizer.from_file(path, model.config.tokens), **kwargs)


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
        ValueError: neither or both of ``model_dir`` and ``preset``, no tokenizer for the preset, or a
            tokenizer folder beside a model folder.
    """
    if (model_dir is None) == (preset is None):
        raise ValueError("give exactly one of a model folder (--model) or a preset (--preset)")
    if model_dir is not None:
        if tokenizer_dir is not None:
            raise ValueError("a model folder carries its own tokenizer: --tokenizer goes with --preset only")
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
