"""A tied table in an ExecuTorch bundle is stored once: ``embed.pte``'s lookup and ``llm.pte``'s XNNPACK head
read it from ``llm.ptd`` (``backends/executorch/pack.py``).

The float path at real widths is in ``test_students_bundle.py`` (the tied Qwen2 student); the C++ core loads
a tied bundle in ``test_native.py`` (its reference model is tied). Here: a quantized bundle, where the embed
part and the LLM part are quantized and lowered apart, and the same INT8 table must come out of both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("executorch")

from conftest import make_tiny_model  # noqa: E402

from xsam_edge.backends.executorch.export import llm_method_specs, llm_steps, load_program, run_method  # noqa: E402
from xsam_edge.backends.executorch.pack import share_tied_table  # noqa: E402
from xsam_edge.backends.executorch.quantize import quantize_graph  # noqa: E402
from xsam_edge.export.graphs import SlotConfig, build_graph  # noqa: E402
from xsam_edge.export.to_bundle import graph_entry  # noqa: E402
from xsam_edge.quantization.schemes import Int8DynActInt4Weight, Int8WeightOnly  # noqa: E402


def _int8_rows(table: torch.Tensor) -> bytes:
    """The table as torchao quantizes both sides: INT8 per row, symmetric (``embedding_byte``'s weights
    and XNNPACK's per-channel head weights)."""
    from torchao.quantization import IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerAxis

    lookup = torch.nn.Embedding(*table.shape)
    with torch.no_grad():
        lookup.weight.copy_(table)
    config = IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0))
    quantize_(lookup, config, lambda module, fqn: True)
    return lookup.weight.qdata.contiguous().numpy().tobytes()


def _occurrences(folder: Path, piece: bytes) -> int:
    return sum(f.read_bytes().count(piece) for f in folder.rglob("*") if f.is_file())


def test_quantized_tied_programs_read_one_int8_table_from_llm_ptd(tmp_path: Path) -> None:
    """As android-xnnpack: ``embed`` at w8 (``embedding_byte``) and the LLM at 8da4w with its head at INT8
    per channel hold the tied table at INT8, byte for byte the same. Each part is lowered alone (as
    ``quantize_bundle`` does), so each holds it; the pack merges ``embed.ptd`` into ``llm.ptd``, where the
    table is once, and both programs run over it."""
    model = make_tiny_model(0, tied=True)
    table = model.llm.get_input_embeddings().weight.detach()
    assert model.llm.get_output_embeddings().weight is model.llm.get_input_embeddings().weight
    slots = SlotConfig()
    entries = []
    for graph, scheme in (("embed", Int8WeightOnly()), ("llm", Int8DynActInt4Weight(head_bits=8))):
        exported, report = quantize_graph(model, graph, slots, scheme, (), {}, {}, tmp_path)
        assert exported.min_psnr_db > 20, (graph, exported.parity)  # INT4 against the float graph
        entries.append(graph_entry(exported, tmp_path))
    assert [e.files[1:] for e in entries] == [["embed.ptd"], ["llm.ptd"]]
    assert _occurrences(tmp_path, _int8_rows(table)) == 2  # one in each part's data file

    packed = share_tied_table(entries, tmp_path)
    assert [e.files for e in packed] == [["embed.pte", "llm.ptd"], ["llm.pte", "llm.ptd"]]
    assert share_tied_table(packed, tmp_path) == packed  # packed entries stay as they are
    assert sorted(f.name for f in tmp_path.iterdir() if f.suffix == ".ptd") == ["llm.ptd"]
    assert (tmp_path / "embed.pte").stat().st_size < 0.1 * table.numel()  # the table is not inside
    assert _occurrences(tmp_path, _int8_rows(table)) == 1
    assert _occurrences(tmp_path, table.numpy().tobytes()[:4096]) == 0  # nor a float copy

    ids = torch.arange(slots.prefill_len, dtype=torch.int32).reshape(1, -1) % table.shape[0]
    embed = load_program(tmp_path / "embed.pte", tmp_path / "llm.ptd").load_method("forward")
    rows = run_method(embed, [ids])[0]
    np.testing.assert_allclose(rows, table[ids.long()].numpy(), atol=float(table.abs().max()) / 100)
    llm = load_program(tmp_path / "llm.pte", tmp_path / "llm.ptd")
    steps = llm_steps(model, slots, torch.float32)
    run_method(
        llm.load_method("write_cache"),
        [torch.zeros(s.shape) for s in llm_method_specs(model.config, slots)["write_cache"].inputs],
    )
    _, logits = run_method(llm.load_method("prefill"), steps[0][1])
    with torch.no_grad():
        want = build_graph(model, "llm_prefill", slots)(*steps[0][1])[1].numpy()
    assert np.corrcoef(logits.ravel(), want.ravel())[0, 1] > 0.99
