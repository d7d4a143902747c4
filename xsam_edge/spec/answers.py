"""Reading an answer's token ids: phrase spans (tolerant of generated text) and the label of each condition.

Shared by the PyTorch predictor and the edge runtime. No torch here.
"""

from __future__ import annotations

from xsam_edge.spec.tokenizer import XSamTokenizer
from xsam_edge.spec.types import PROMPT_TASKS, SegmentationRequest, Task


def phrase_spans(tokenizer: XSamTokenizer, ids: list[int], generated: bool) -> list[tuple[int, int]]:
    """``<p>…</p>`` spans of the sequence.

    A generated caption may stop inside a phrase (cut by ``max_new_tokens``) or be malformed: its closed
    phrases still count, and a malformed caption yields no spans rather than an error. A prompt the host built
    must be well formed, so there a malformed span raises.
    """
    if not generated:
        return tokenizer.phrase_spans(ids)
    start, end = tokenizer.phrase_start_id, tokenizer.phrase_end_id
    open_at = None
    for i, token in enumerate(ids):
        if token == start:
            open_at = i
        elif token == end:
            open_at = None
    try:
        return tokenizer.phrase_spans(ids if open_at is None else ids[:open_at])
    except ValueError:
        return []


def condition_labels(
    tokenizer: XSamTokenizer, request: SegmentationRequest, ids: list[int], spans: list[tuple[int, int]]
) -> list[str]:
    """One label per condition: the expression, the category, ``prompt {k}``, or the GCG phrase text."""
    task = request.task
    if task in (Task.REFERRING, Task.REASONING):
        return [request.text.strip()]
    if task in PROMPT_TASKS:
        return [f"prompt {k}" for k in range(len(request.prompts))]
    if task is Task.GCG:
        return [tokenizer.decode(ids[s + 1 : e], skip_special=True).strip() for s, e in spans]
    return [c.strip() for c in request.categories]
