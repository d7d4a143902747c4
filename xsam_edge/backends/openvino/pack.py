"""The OpenVINO pack step: a tied table stored once, in the LLM's weights file.

A tied LLM (``tie_word_embeddings``: Qwen2.5-0.5B's 151,936 × 896 table, 519 MiB in fp32) holds its table
as the ``embed`` IR's lookup and as the stateful LLM IR's head, byte for byte the same (in float, and after
NNCF's weight compression where it keeps both embeddings and the last layer at INT8 per row). An IR's ``.xml``
names each constant by offset and size in a weights file, and ``read_model(xml, bin)`` takes that file's path:
so ``embed.xml`` is rewritten to point into ``llm.bin`` for every constant that file already holds, its other
(small) constants are appended to ``llm.bin`` (the LLM's offsets do not move), and ``embed.bin`` goes. The
manifest then lists ``[embed.xml, llm.bin]``, and the runtime reads each IR with the weights file its entry
names (``runtime.py``). Run again on packed files, it changes nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import mmap
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from xsam_edge.files import atomic_write_bytes, atomic_write_with
from xsam_edge.spec.bundle import GraphEntry

__all__ = ["ir_files", "share_tied_table"]

LLM = "llm_prefill"  # the stateful IR's entry (llm.xml)
TIED = "embed"
MIN_SHARED_BYTES = 1024
ALIGN = 64  # appended constants start on a cache line


def ir_files(files: list[str]) -> tuple[str, str | None]:
    """The ``.xml`` and the ``.bin`` among an OpenVINO entry's files (``None``: an IR without weights)."""
    xml = next((f for f in files if f.endswith(".xml")), None)
    if xml is None:
        raise ValueError(f"an OpenVINO graph needs an .xml file; its files are {files}")
    weights = next((f for f in files if f.endswith(".bin")), None)
    return xml, weights


def share_tied_table(entries: list[GraphEntry], root: Path, tied_embed: bool = True) -> list[GraphEntry]:
    """The bundle's pack step for OpenVINO: ``embed`` over the LLM's weights when it holds one of its tensors.

    Args:
        entries (list[GraphEntry]): a bundle's entries (files relative to ``root``); anything but the
            OpenVINO ``embed`` and LLM entries passes through, and without both nothing changes.
        root (Path): the folder the entries' files are relative to.
        tied_embed (bool): off, nothing changes. Quantization's float export turns it off: its graph parts
            are quantized one at a time, and ``embed`` must not point into a file the LLM part replaces.

    Returns:
        list[GraphEntry]: the entries, ``embed``'s files ``[<folder>/embed.xml, <folder>/llm.bin]`` when it
        shared a tensor with the LLM.
    """
    by_name = {e.name: e for e in entries if e.backend == "openvino"}
    if not tied_embed or TIED not in by_name or LLM not in by_name:
        return entries
    root = Path(root)
    embed_xml, embed_bin = ir_files(by_name[TIED].files)
    llm_xml, llm_bin = ir_files(by_name[LLM].files)
    if embed_bin is None or llm_bin is None or embed_bin == llm_bin:
        return entries
    if Path(embed_xml).parent != Path(llm_bin).parent:
        return entries  # two folders (a merged bundle): leave it as it came
    tree = ET.parse(root / embed_xml)
    consts = [d for d in tree.iter("data") if "offset" in d.attrib and "size" in d.attrib]
    spans = [(int(d.get("offset")), int(d.get("size"))) for d in consts]
    with _mapped(root / embed_bin) as own:
        digests = [hashlib.sha256(own[o : o + n]).digest() for o, n in spans]
        wanted = {g: n for g, (_, n) in zip(digests, spans, strict=True) if n >= MIN_SHARED_BYTES}
        found = _find_in(root / llm_xml, root / llm_bin, wanted)
        if not found:
            return entries
        appended, end = bytearray(), (root / llm_bin).stat().st_size
        for d, (o, n), digest in zip(consts, spans, digests, strict=True):
            if digest in found:
                d.set("offset", str(found[digest]))
                continue
            appended += bytes(-(end + len(appended)) % ALIGN)
            d.set("offset", str(end + len(appended)))
            appended += own[o : o + n]
    if appended:

        def extend(tmp: Path) -> None:
            shutil.copyfile(root / llm_bin, tmp)
            with open(tmp, "ab") as f:
                f.write(appended)

        atomic_write_with(root / llm_bin, extend)
    atomic_write_bytes(root / embed_xml, ET.tostring(tree.getroot(), encoding="utf-8", xml_declaration=True))
    (root / embed_bin).unlink()
    return [dataclasses.replace(e, files=[embed_xml, llm_bin]) if e is by_name[TIED] else e for e in entries]


def _find_in(xml: Path, weights: Path, wanted: dict[bytes, int]) -> dict[bytes, int]:
    """Where each wanted piece (sha-256 → length) sits in ``weights``.

    Only at the offsets of constants ``xml`` names, and only those of a wanted length are hashed.
    """
    if not wanted:
        return {}
    lengths = set(wanted.values())
    found: dict[bytes, int] = {}
    with _mapped(weights) as data:
        for d in ET.parse(xml).iter("data"):
            if "offset" not in d.attrib or int(d.get("size", -1)) not in lengths:
                continue
            offset, size = int(d.get("offset")), int(d.get("size"))
            digest = hashlib.sha256(data[offset : offset + size]).digest()
            if digest in wanted:
                found.setdefault(digest, offset)
    return found


@contextmanager
def _mapped(path: Path) -> Iterator[memoryview]:
    """A file's bytes, mapped read-only (slices do not copy)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        view = memoryview(data)
        try:
            yield view
        finally:
            view.release()
