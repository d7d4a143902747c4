"""The ExecuTorch pack step: a tied table stored once, in the LLM program's data file.

A tied LLM (``tie_word_embeddings``: Qwen2.5-0.5B's 151,936 × 896 table, 519 MiB in fp32) holds its table as
``embed.pte``'s lookup and as ``llm.pte``'s ``lm_head``. XNNPACK packs the head's weight inside its delegate
and the lookup is a portable kernel over a program constant, so each program carried its own copy. Both
exports therefore put that table outside the program, in a ``.ptd`` (ExecuTorch's named-data file): the
lookup's constant under its name (``external_constants``), the XNNPACK head's under the digest XNNPACK keys
it by (``delegate_constant_tag``). This step merges ``embed.ptd`` into ``llm.ptd``: ExecuTorch's
``NamedDataStore`` keeps one buffer for equal bytes, whatever keys point at it. Both programs then load with
``llm.ptd`` (``Runtime.load_program(pte, data_path=…)``, ``Module(pte, ptd)``), and the manifest lists it in
both entries. The bytes are equal in float and after ``w8a8-dyn`` / ``8da4w`` with an INT8 head
(``embedding_byte``'s table and XNNPACK's per-channel INT8 weights are the same torchao quantization); an
INT4 head differs from the INT8 lookup, and then the two are still stored apart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from xsam_edge.files import atomic_write_bytes
from xsam_edge.spec.bundle import GraphEntry

if TYPE_CHECKING:  # torch is imported where a graph is exported, not where a bundle is run
    import torch

__all__ = [
    "DATA_SUFFIX",
    "data_file",
    "has_tied_parameters",
    "large_constants",
    "share_tied_table",
    "tag_delegate_constants",
    "tag_tied_head",
    "tied_data_tag",
]

DATA_SUFFIX = ".ptd"
EMBED = "embed"
LLM_PROGRAM = "llm"  # llm.pte's stem and its manifest entry's name (export.LLM_PROGRAM)
MIN_EXTERNAL_BYTES = 1024  # scales and zero points stay inside the program
T = TypeVar("T", str, Path)


def tied_data_tag(tied: bool, name: str, stateful: bool, partitioner: str) -> str | None:
    """The data file (stem) a graph's tied table goes to, or ``None`` where it stays in the program.

    Args:
        tied (bool): the LLM's ``tie_word_embeddings``.
        name (str): the graph.
        stateful (bool): the graph is the LLM program.
        partitioner (str): only XNNPACK programs are paired (a Core ML delegate keeps its own weights).
    """
    if not tied or partitioner != "xnnpack":
        return None
    return LLM_PROGRAM if stateful else EMBED if name == EMBED else None


def large_constants(tag: str) -> Any:
    """``ExecutorchBackendConfig(external_constants=…)`` for a tied lookup: large constants to ``<tag>.ptd``.

    The table goes; scales and zero points (under ``MIN_EXTERNAL_BYTES``) stay inside the program.
    """
    import torch

    def gen_tag(node: torch.fx.Node) -> str | None:
        value = node.meta.get("val")
        size = value.numel() * value.element_size() if isinstance(value, torch.Tensor) else 0
        return tag if size >= MIN_EXTERNAL_BYTES else None

    return gen_tag


def tag_delegate_constants(
    program: torch.export.ExportedProgram, tag: str, match: Callable[[str], bool] = lambda fqn: True
) -> int:
    """Mark weight placeholders so XNNPACK writes them to ``<tag>.ptd`` (before lowering).

    Args:
        program (torch.export.ExportedProgram): one method.
        tag (str): the data file's stem.
        match (Callable[[str], bool]): which parameters, buffers or constants, by qualified name (all).

    Returns:
        int: how many placeholders were marked (a float head: its weight; a quantized one: its parts).
    """
    signature = program.graph_signature
    names = {**signature.inputs_to_parameters, **signature.inputs_to_buffers}
    names.update(signature.inputs_to_lifted_tensor_constants)
    marked = 0
    for node in program.graph.nodes:
        fqn = names.get(node.name, "") if node.op == "placeholder" else ""
        if fqn and match(fqn):
            node.meta.setdefault("custom", {})["delegate_constant_tag"] = tag
            marked += 1
    return marked


def tag_tied_head(program: torch.export.ExportedProgram, tag: str, head: str = "lm_head.") -> int:
    """``tag_delegate_constants`` on the LLM head's parameters (``head``: its module path's last part)."""
    return tag_delegate_constants(program, tag, lambda fqn: fqn.startswith(head) or f".{head}" in fqn)


def has_tied_parameters(module: torch.nn.Module) -> bool:
    """Whether one parameter is held by two modules (a tied embedding and head)."""
    seen: set[int] = set()
    for _, param in module.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            return True
        seen.add(id(param))
    return False


def data_file(files: Sequence[T]) -> T | None:
    """The ``.ptd`` among an ExecuTorch entry's files (names or paths), or ``None``."""
    return next((f for f in files[1:] if str(f).endswith(DATA_SUFFIX)), None)


def share_tied_table(entries: list[GraphEntry], root: Path, tied_embed: bool = True) -> list[GraphEntry]:
    """The bundle's pack step for ExecuTorch: ``embed.ptd`` merged into ``llm.ptd``, equal bytes once.

    Args:
        entries (list[GraphEntry]): a bundle's entries (files relative to ``root``); anything but the
            ExecuTorch ``embed`` and LLM entries passes through, and unless both have a data file nothing
            changes.
        root (Path): the folder the entries' files are relative to.
        tied_embed (bool): off, nothing changes. Quantization's float export turns it off: its graph parts
            are quantized one at a time, and ``embed`` must not point into a file the LLM part replaces.

    Returns:
        list[GraphEntry]: the entries, ``embed``'s files ``[<folder>/embed.pte, <folder>/llm.ptd]`` once
        merged. Run again on packed entries, nothing changes.
    """
    from executorch.exir._serialize._named_data_store import NamedDataStore
    from executorch.exir._serialize.data_serializer import DataPayload
    from executorch.extension.flat_tensor.serialize.serialize import FlatTensorSerializer

    by_name = {e.name: e for e in entries if e.backend == "executorch"}
    if not tied_embed or EMBED not in by_name or LLM_PROGRAM not in by_name:
        return entries
    root = Path(root)
    embed_data, llm_data = data_file(by_name[EMBED].files), data_file(by_name[LLM_PROGRAM].files)
    if embed_data is None or llm_data is None or embed_data == llm_data:
        return entries
    if Path(embed_data).parent != Path(llm_data).parent:
        return entries  # two folders (a merged bundle): leave it as it came
    serializer = FlatTensorSerializer()
    store = NamedDataStore()
    for name in (llm_data, embed_data):  # the LLM's first: its buffers keep their order
        # the tag is only a label here: every key read back goes into the merged file
        store.merge_named_data_store(
            serializer.deserialize_to_named_data_store_output((root / name).read_bytes(), LLM_PROGRAM)
        )
    merged = store.get_named_data_store_output()
    payload = DataPayload(buffers=merged.buffers, named_data=merged.external_data[LLM_PROGRAM])
    atomic_write_bytes(root / llm_data, bytes(serializer.serialize(payload)))
    (root / embed_data).unlink()
    files = [by_name[EMBED].files[0], llm_data]
    return [dataclasses.replace(e, files=files) if e is by_name[EMBED] else e for e in entries]
