"""Examples → one padded training batch, using the same pre-processing and prompts as inference."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from xsam_edge.data.sample import Example
from xsam_edge.spec.config import XSamConfig
from xsam_edge.spec.preprocess import PreprocessSpec
from xsam_edge.spec.prompts import answer_for, build_request_prompt, get_template
from xsam_edge.spec.tokenizer import XSamTokenizer, expand_image_placeholder
from xsam_edge.spec.types import PROMPT_TASKS, Task

IGNORE_INDEX = -100


@dataclass
class Batch:
    """Tensors for one step. Per-example lists hold what differs in length between examples.

    Attributes:
        seg_pixels (torch.Tensor): (B, 3, S, S).
        global_pixels (torch.Tensor | None): (B, 3, s, s).
        input_ids (torch.Tensor): (B, T) right-padded, image placeholders expanded.
        attention_mask (torch.Tensor): (B, T) 1 for real tokens.
        lm_labels (torch.Tensor): (B, T) next-token targets on the answer, ``IGNORE_INDEX`` elsewhere
            (aligned with ``input_ids``; the loss shifts them).
        prompt_masks (list[torch.Tensor | None]): (K_i, S, S) letterboxed visual prompts.
        spans (list[list[tuple[int, int]]]): ``<p>…</p>`` spans per example.
        seg_positions (list[int | None]): the ``<SEG>`` position per example (``None``: no mask loss).
        gt_masks (list[torch.Tensor]): (N_i, S, S) float ground truth in the letterboxed frame.
        gt_labels (list[torch.Tensor]): (N_i,) int64 condition index of each ground-truth mask.
        tasks (list[Task]): the task of each example.
    """

    seg_pixels: torch.Tensor
    global_pixels: torch.Tensor | None
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    lm_labels: torch.Tensor
    prompt_masks: list[torch.Tensor | None]
    spans: list[list[tuple[int, int]]]
    seg_positions: list[int | None]
    gt_masks: list[torch.Tensor]
    gt_labels: list[torch.Tensor]
    tasks: list[Task]

    def __len__(self) -> int:
        return len(self.tasks)


class Collator:
    """Turns examples into a ``Batch`` for a given model config and tokenizer.

    Args:
        config (XSamConfig): sizes, tokens, template.
        tokenizer (XSamTokenizer): the model's tokenizer.
    """

    def __init__(self, config: XSamConfig, tokenizer: XSamTokenizer) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.spec = PreprocessSpec.from_config(config)
        self.suffix = get_template(config.tokens.template).suffix

    def token_ids(self, example: Example) -> tuple[list[int], int]:
        """Prompt + answer ids (image expanded) and where the answer starts."""
        cfg = self.config
        request = example.request
        prompt = build_request_prompt(
            request, template=cfg.tokens.template, with_answer=False, tokens=cfg.tokens
        )
        answer = example.target.answer or answer_for(request.task, cfg.tokens) or ""
        prompt_ids = self.tokenizer.encode(prompt, add_bos=cfg.tokens.add_bos)
        answer_ids = self.tokenizer.encode(answer + self.suffix, add_bos=False)
        ids = expand_image_placeholder(prompt_ids + answer_ids, cfg.num_image_tokens)
        return ids, len(ids) - len(answer_ids)

    def __call__(self, examples: list[Example]) -> Batch:
        cfg, spec = self.config, self.spec
        seg_pixels, global_pixels, sequences, starts = [], [], [], []
        prompt_masks, spans, seg_positions, gt_masks, gt_labels = [], [], [], [], []
        for example in examples:
            image = example.request.image
            pixels, _ = spec.letterbox(image)
            seg_pixels.append(pixels)
            if spec.global_size is not None:
                global_pixels.append(spec.global_pixels(image))
            ids, start = self.token_ids(example)
            if len(ids) > cfg.llm.max_position_embeddings:
                raise ValueError(
                    f"example {example.image_id} ({example.task.value}) needs {len(ids)} tokens; "
                    f"the context holds {cfg.llm.max_position_embeddings}"
                )
            sequences.append(ids)
            starts.append(start)
            prompt_masks.append(self._prompt_masks(example))
            spans.append(self.tokenizer.phrase_spans(ids))
            segs = self.tokenizer.seg_positions(ids)
            seg_positions.append(segs[-1] if segs and spans[-1] else None)
            masks = example.target.masks
            letterboxed = [spec.letterbox_mask(m) for m in masks]
            gt_masks.append(
                torch.from_numpy(np.stack(letterboxed)) if letterboxed else torch.zeros(0, *pixels.shape[1:])
            )
            gt_labels.append(torch.from_numpy(example.target.label_ids.astype(np.int64)))

        length = max(len(s) for s in sequences)
        pad = self.tokenizer.pad_id
        input_ids = torch.full((len(examples), length), pad, dtype=torch.long)
        attention = torch.zeros((len(examples), length), dtype=torch.long)
        labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
        for i, (ids, start) in enumerate(zip(sequences, starts, strict=True)):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention[i, : len(ids)] = 1
            labels[i, start : len(ids)] = torch.tensor(ids[start:])
        return Batch(
            seg_pixels=torch.from_numpy(np.stack(seg_pixels)),
            global_pixels=torch.from_numpy(np.stack(global_pixels)) if global_pixels else None,
            input_ids=input_ids,
            attention_mask=attention,
            lm_labels=labels,
            prompt_masks=prompt_masks,
            spans=spans,
            seg_positions=seg_positions,
            gt_masks=gt_masks,
            gt_labels=gt_labels,
            tasks=[e.task for e in examples],
        )

    def _prompt_masks(self, example: Example) -> torch.Tensor | None:
        request = example.request
        if request.task not in PROMPT_TASKS:
            return None
        return torch.from_numpy(self.spec.prompt_masks(request.prompts, request.image_size))
