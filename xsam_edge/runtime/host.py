"""What the host does around the graphs, in numpy.

Embedding in fixed chunks, splicing image and region tokens, and chunked prefill: how ``GraphEngine`` feeds
fixed-shape graphs (the plan itself, span averaging into condition slots included, is ``spec.plan``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from xsam_edge.spec.tokenizer import IMAGE_TOKEN_ID, REGION_TOKEN_ID

PAD_POSITION = -1  # a padding row: writes no cache slot, attends to nothing real (export.graphs_llm)

StepFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""(1, T, H) float32 embeds, (T,) int64 positions → projected (1, T, D), logits (1, V)."""


def embed_in_chunks(embed: Callable[[np.ndarray], np.ndarray], ids: Sequence[int], chunk: int) -> np.ndarray:
    """Embed ``ids`` with a fixed-length embed graph; placeholders (negative ids) embed as 0.

    Returns:
        np.ndarray: (len(ids), H) float32.
    """
    n = len(ids)
    padded = np.zeros(-(-n // chunk) * chunk, dtype=np.int32)
    padded[:n] = np.maximum(np.asarray(ids, dtype=np.int64), 0)
    parts = [embed(padded[i : i + chunk][None])[0] for i in range(0, len(padded), chunk)]
    return np.concatenate(parts)[:n].astype(np.float32)


def splice(
    embeds: np.ndarray, ids: Sequence[int], image_tokens: np.ndarray | None, region_tokens: np.ndarray | None
) -> np.ndarray:
    """Put image and region tokens in place of their placeholders.

    Args:
        embeds (np.ndarray): (T, H).
        ids (Sequence[int]): (T,) with ``IMAGE_TOKEN_ID`` / ``REGION_TOKEN_ID`` placeholders.
        image_tokens (np.ndarray | None): (N_img, H); used where the ids hold the image span.
        region_tokens (np.ndarray | None): (k, H) in order of appearance.

    Returns:
        np.ndarray: (T, H).

    Raises:
        ValueError: placeholder counts differ from the tokens given.
    """
    ids_arr = np.asarray(ids)
    out = embeds.copy()
    for slots, tokens, what in (
        (ids_arr == IMAGE_TOKEN_ID, image_tokens, "image"),
        (ids_arr == REGION_TOKEN_ID, region_tokens, "region"),
    ):
        n = int(slots.sum())
        given = 0 if tokens is None else tokens.shape[0]
        # the image span is all or nothing: a request's own tokens follow the cached image prefix
        if n != given and not (what == "image" and n == 0):
            raise ValueError(f"{n} {what} placeholders but {given} {what} tokens")
        if n:
            out[slots] = tokens
    return out


def prefill(
    step: StepFn, embeds: np.ndarray, start: int, chunk: int, pad: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Run a stateful LLM over ``embeds`` at positions ``start ..`` in calls of at most ``chunk`` rows.

    With ``pad`` (a graph with a fixed T), a short last chunk is left-padded at ``PAD_POSITION``, so its last
    row is the last real token; without it (a graph that takes any T up to ``chunk``), it runs as it is: a
    next query's 20 tokens cost 20 rows of work, not 64.

    Returns:
        tuple[np.ndarray, np.ndarray]: projected states (L, D) and the last row's logits (1, V).
    """
    n, h = embeds.shape
    projected, logits = [], None
    for i in range(0, n, chunk):
        rows = embeds[i : i + chunk]
        real = rows.shape[0]
        padding = chunk - real if pad else 0
        x = np.concatenate((np.zeros((padding, h), embeds.dtype), rows))[None]  # (1, real + padding, H)
        positions = np.full(real + padding, PAD_POSITION, dtype=np.int64)
        positions[padding:] = np.arange(start + i, start + i + real)
        out_projected, logits = step(x, positions)
        projected.append(out_projected[0, padding:])
    if logits is None:
        raise ValueError("prefill needs at least one token")
    return np.concatenate(projected), logits
