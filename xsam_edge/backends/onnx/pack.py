"""The ONNX pack step: the KV-I/O LLM pair stores its weights once.

``llm_kvio_prefill`` and ``llm_kvio_decode`` are the same weights traced at two chunk lengths; exported as
two ONNX files they held every weight twice (a 2.1 GB float bundle for 1.24 GB of weights). Here every
initializer of 1 KiB or more is written once, by content, to ``onnx/llm_weights.bin`` and both files point
at it as ONNX external data (offsets aligned to 64 KiB, so ONNX Runtime can map the file rather than read
it). Small initializers (scales, zero points, shapes) stay inside each file. Run again on packed files, it
writes the same result.

A tied LLM (``tie_word_embeddings``: Qwen2.5-0.5B's 151,936 × 896 table, 519 MiB in fp32) holds its table
as the ``embed`` graph's lookup and as the LLM's ``lm_head``, byte for byte the same: when ``embed`` shares
such a tensor with the pair, it joins the pack and the table is stored once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from xsam_edge.spec.bundle import GraphEntry

__all__ = ["SHARED_WEIGHTS", "share_llm_weights"]

SHARED_WEIGHTS = "llm_weights.bin"
LLM_PAIR = ("llm_kvio_prefill", "llm_kvio_decode")
TIED = "embed"  # joins the pack when it holds a tensor of the pair (tied embeddings)
MIN_SHARED_BYTES = 1024
ALIGN = 1 << 16  # ONNX Runtime maps external data whose offset is a multiple of the allocation granularity


def share_llm_weights(entries: list[GraphEntry], root: Path, tied_embed: bool = True) -> list[GraphEntry]:
    """The bundle's pack step for ONNX: both LLM graphs over one weights file.

    Args:
        entries (list[GraphEntry]): a bundle's entries (files relative to ``root``); anything but the ONNX
            LLM pair passes through, and without both of them nothing changes.
        root (Path): the folder the entries' files are relative to.
        tied_embed (bool): let ``embed`` join when it holds a tensor of the pair. Quantization's float
            export turns it off: its graph parts are quantized one at a time, and a float ``embed`` copied
            as it is must not point into a weights file that the quantized LLM part replaces.

    Returns:
        list[GraphEntry]: the entries, the pair's ``files`` now ``[<graph>.onnx, <folder>/llm_weights.bin]``
        (and ``embed``'s, when it holds the tied table).
    """
    import onnx

    pair = {e.name: e for e in entries if e.backend == "onnx" and e.name in LLM_PAIR}
    if len(pair) != len(LLM_PAIR):
        return entries
    root = Path(root)
    tied = [e for e in entries if e.backend == "onnx" and e.name == TIED]
    graph_files = {name: root / e.files[0] for name, e in pair.items()}
    folders = {p.parent for p in graph_files.values()}
    if len(folders) != 1:
        return entries  # the pair in two folders (a merged bundle): leave it as it came
    folder = folders.pop()
    models = {name: onnx.load(str(path), load_external_data=True) for name, path in graph_files.items()}
    if tied_embed and tied and (root / tied[0].files[0]).parent == folder:
        embed = onnx.load(str(root / tied[0].files[0]), load_external_data=True)
        if _shares_a_tensor(embed, models.values()):
            pair[TIED], graph_files[TIED], models[TIED] = tied[0], root / tied[0].files[0], embed
    old_files = {root / f for e in pair.values() for f in e.files[1:]}
    target = folder / SHARED_WEIGHTS
    tmp = folder / f".{SHARED_WEIGHTS}.tmp-{os.getpid()}"
    placed: dict[str, tuple[int, int]] = {}
    with open(tmp, "wb") as out:
        for model in models.values():
            for tensor in model.graph.initializer:
                if not _movable(tensor):
                    continue
                raw = tensor.raw_data
                digest = hashlib.sha256(raw).hexdigest()
                if digest not in placed:
                    offset = -(-out.tell() // ALIGN) * ALIGN
                    out.seek(offset)
                    out.write(raw)
                    placed[digest] = (offset, len(raw))
                offset, length = placed[digest]
                onnx.external_data_helper.set_external_data(tensor, SHARED_WEIGHTS, offset, length)
                tensor.ClearField("raw_data")
                tensor.data_location = onnx.TensorProto.EXTERNAL
    for name, model in models.items():
        part = graph_files[name].with_name(f".{graph_files[name].name}.tmp-{os.getpid()}")
        onnx.save(model, str(part))
        os.replace(part, graph_files[name])
    os.replace(tmp, target)
    for stale in old_files - {target}:
        stale.unlink(missing_ok=True)
    shared = str(target.relative_to(root))
    return [dataclasses.replace(e, files=[e.files[0], shared]) if e in pair.values() else e for e in entries]


def _movable(tensor: Any) -> bool:
    """An initializer the pack moves to the shared file: raw data of ``MIN_SHARED_BYTES`` or more."""
    return tensor.HasField("raw_data") and len(tensor.raw_data) >= MIN_SHARED_BYTES


def _shares_a_tensor(embed: Any, models: Iterable[Any]) -> bool:
    """Whether ``embed`` holds a movable initializer byte for byte equal to one of ``models``'.

    Only the pair's tensors of a length ``embed`` has are hashed: the main loop hashes them all anyway.
    """
    mine = [t.raw_data for t in embed.graph.initializer if _movable(t)]
    lengths = {len(raw) for raw in mine}
    digests = {hashlib.sha256(raw).hexdigest() for raw in mine}
    return any(
        hashlib.sha256(t.raw_data).hexdigest() in digests
        for model in models
        for t in model.graph.initializer
        if _movable(t) and len(t.raw_data) in lengths
    )
