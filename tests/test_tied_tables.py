"""Tied tables (an LLM's input embedding and output head) in quantized files.

ONNX: a weight-only file stores the table once, the lookup reading the head's packed blocks; hand-built
graphs for every form an exporter writes the tie in (a ``Transpose`` of the table, a ``Gemm`` with ``transB``,
a folded transposed copy) and every weight-only scheme. ExecuTorch: the lookup is INT8 per row, and with
an INT8 head both read the same bytes from the program's ``.ptd``, once. Both at real widths: a
Qwen2.5-0.5B-shaped LLM (151,936 × 896 table, one layer) through ``quantize_model``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from xsam_edge.backends.onnx.weight_only import weight_only  # noqa: E402
from xsam_edge.quantization.report import GraphQuantReport  # noqa: E402
from xsam_edge.quantization.schemes import Int4WeightOnly, Int8WeightOnly, Scheme  # noqa: E402

VOCAB, WIDTH = 256, 128
SCHEMES = {
    "w4-g32": Int4WeightOnly(group_size=32),
    "w4-g64-asym": Int4WeightOnly(group_size=64, symmetric=False),
    "w4-mixed": Int4WeightOnly(group_size=32, ratio=0.5),
    "w8": Int8WeightOnly(),
}


def _tied_llm(form: str, table: np.ndarray, other: np.ndarray | None = None) -> onnx.ModelProto:
    """ids (1, 3), x (1, WIDTH) -> embeds (1, 3, WIDTH), logits (1, VOCAB) from one table (or two)."""
    head_table = table if other is None else other
    inits = [
        numpy_helper.from_array(table, "table"),
        numpy_helper.from_array(np.eye(WIDTH, dtype=np.float32), "mix"),
    ]
    nodes = [helper.make_node("Gather", ["table", "ids"], ["embeds"], name="embed")]
    nodes.append(helper.make_node("MatMul", ["x", "mix"], ["h"], name="mixer"))
    if form == "transpose":
        if other is not None:
            inits.append(numpy_helper.from_array(other, "other"))
        source = "table" if other is None else "other"
        nodes.append(helper.make_node("Transpose", [source], ["table_t"], perm=[1, 0]))
        nodes.append(helper.make_node("MatMul", ["h", "table_t"], ["logits"], name="lm_head"))
    elif form == "gemm":
        nodes.append(helper.make_node("Gemm", ["h", "table"], ["logits"], name="lm_head", transB=1))
    else:  # "folded": the exporter wrote the head's weight as its own transposed copy
        inits.append(numpy_helper.from_array(head_table.T.copy(), "head_weight"))
        nodes.append(helper.make_node("MatMul", ["h", "head_weight"], ["logits"], name="lm_head"))
    graph = helper.make_graph(
        nodes,
        "llm",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 3]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, WIDTH]),
        ],
        [
            helper.make_tensor_value_info("embeds", TensorProto.FLOAT, [1, 3, WIDTH]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, VOCAB]),
        ],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _quantize(model: onnx.ModelProto, scheme: Scheme, path: Path, excluded: dict[str, str] | None = None):
    report = GraphQuantReport("llm", "onnx", scheme.label())
    weight_only(model, path, scheme, excluded or {}, False, report)
    return onnx.load(str(path)), report


def _run(path: Path, ids: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    embeds, logits = session.run(["embeds", "logits"], {"ids": ids, "x": x})
    return embeds, logits


@pytest.mark.parametrize("form", ["transpose", "gemm", "folded"])
@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_tied_table_is_stored_once_and_looked_up_from_the_head(
    tmp_path: Path, form: str, scheme: str
) -> None:
    rng = np.random.default_rng(0)
    table = rng.standard_normal((VOCAB, WIDTH)).astype(np.float32)
    model, report = _quantize(_tied_llm(form, table), SCHEMES[scheme], tmp_path / "llm.onnx")
    ops = [n.op_type for n in model.graph.node]
    assert "GatherBlockQuantized" in ops and "Gather" not in ops and ops.count("MatMulNBits") == 2
    # one copy of the table, packed: no float table, and the lookup reads the head's own blocks
    assert (
        max(t.data_type == TensorProto.FLOAT and np.prod(t.dims) for t in model.graph.initializer)
        < table.size
    )
    head = next(n for n in model.graph.node if n.op_type == "MatMulNBits" and n.output[0] == "logits")
    lookup = next(n for n in model.graph.node if n.op_type == "GatherBlockQuantized")
    assert lookup.input[0] == head.input[1]
    assert any("stored once" in note for note in report.notes)
    # the lookup gives the head's dequantized rows: identity rows through the head read its weights out
    ids = np.array([[0, 7, VOCAB - 1]], np.int64)
    embeds, _ = _run(tmp_path / "llm.onnx", ids, np.zeros((1, WIDTH), np.float32))
    session = ort.InferenceSession(str(tmp_path / "llm.onnx"), providers=["CPUExecutionProvider"])
    rows = [
        session.run(["logits"], {"ids": ids, "x": np.eye(WIDTH, dtype=np.float32)[i : i + 1]})[0][0]
        for i in range(WIDTH)
    ]
    dequantized = np.stack(rows, axis=1)  # (VOCAB, WIDTH): the head's weight as it computes with it
    np.testing.assert_allclose(embeds[0], dequantized[ids[0]], atol=1e-5)
    step = np.abs(table).max() / (7 if "w4" in scheme else 127)
    assert np.abs(embeds[0] - table[ids[0]]).max() <= step


def test_an_untied_head_keeps_its_own_table(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    table, other = (rng.standard_normal((VOCAB, WIDTH)).astype(np.float32) for _ in range(2))
    for form in ("transpose", "folded"):
        model, report = _quantize(_tied_llm(form, table, other), SCHEMES["w4-g32"], tmp_path / f"{form}.onnx")
        lookup = next(n for n in model.graph.node if n.op_type == "GatherBlockQuantized")
        assert all(lookup.input[0] != n.input[1] for n in model.graph.node if n.op_type == "MatMulNBits")
        assert not any("stored once" in note for note in report.notes)
    # the folded head is the graph's output layer: INT8 under w4 (head_bits 8), found without a tie
    head = next(n for n in model.graph.node if n.op_type == "MatMulNBits" and n.output[0] == "logits")
    assert {a.name: helper.get_attribute_value(a) for a in head.attribute}["bits"] == 8


def test_a_head_kept_float_leaves_the_tie_alone(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    table = rng.standard_normal((VOCAB, WIDTH)).astype(np.float32)
    model, report = _quantize(
        _tied_llm("transpose", table), SCHEMES["w8"], tmp_path / "llm.onnx", {"lm_head": "lm_head"}
    )
    floats = [
        t
        for t in model.graph.initializer
        if t.data_type == TensorProto.FLOAT and np.prod(t.dims) == table.size
    ]
    assert [t.name for t in floats] == ["table"]  # the float table once, not a transposed copy beside it
    assert "Transpose" in [n.op_type for n in model.graph.node]
    embeds, logits = _run(
        tmp_path / "llm.onnx", np.array([[1, 2, 3]], np.int64), np.ones((1, WIDTH), np.float32)
    )
    np.testing.assert_allclose(embeds[0], table[[1, 2, 3]])
    np.testing.assert_allclose(logits[0], table.sum(axis=1), rtol=1e-4, atol=1e-4)


def _tied_qwen2() -> tuple[Any, list[list[np.ndarray]], int]:
    """A Qwen2.5-0.5B-shaped tied LLM, one layer, as ``ids -> logits``; its samples; its table's size."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.Qwen2Config(
        vocab_size=151_936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=1,
        num_attention_heads=14,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    llm = transformers.Qwen2ForCausalLM(config).eval()
    assert llm.lm_head.weight is llm.model.embed_tokens.weight

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.llm = llm

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.llm(input_ids=ids, use_cache=False).logits

    rng = np.random.default_rng(0)
    samples = [[rng.integers(0, config.vocab_size, (1, 16)).astype(np.int64)] for _ in range(3)]
    return Logits(), samples, config.vocab_size * config.hidden_size


def test_tied_qwen2_at_real_widths_is_smaller_at_int4_than_at_int8(tmp_path: Path) -> None:
    """The issue's regression: a tied INT4 LLM file came out larger than its INT8 one (a float table kept)."""
    from xsam_edge.quantization.any_model import quantize_model

    module, samples, table_entries = _tied_qwen2()
    sizes, cosines = {}, {}
    schemes = {"w4-h4": Int4WeightOnly(head_bits=4), "w4": Int4WeightOnly(), "w8": Int8WeightOnly()}
    for tag, scheme in schemes.items():
        result = quantize_model(module, "onnx", scheme, tmp_path / tag, name="lm", calibration=samples)
        sizes[tag] = sum(f.stat().st_size for f in result.files)
        assert any("stored once" in note for note in result.report.notes), result.report.notes
        cosines[tag] = result.report.fidelity["output_0"]["worst_cosine"]
        assert cosines[tag] > (0.999 if tag == "w8" else 0.9)
    # each holds the table once, at its own precision: about ½ byte (INT4) and 1 byte (INT8) per entry
    assert sizes["w4-h4"] < 0.75 * table_entries < sizes["w8"] < 1.25 * table_entries
    # w4 keeps the output layer, and with it the tied table, at INT8 (head_bits 8, the default)
    assert 0.75 * table_entries < sizes["w4"] < 1.25 * table_entries
    assert cosines["w4-h4"] < cosines["w4"] < cosines["w8"], cosines


def test_executorch_8da4w_looks_up_a_tied_table_at_int8(tmp_path: Path) -> None:
    """8da4w covered Linear only: the tied table stayed float beside its INT4 head (600 MiB for 0.5 B).
    With ``head_bits = 8`` the head, found as the Linear whose result is the output, is INT8 per channel:
    the same bytes as the INT8 lookup, which both read from the program's ``.ptd``, once (it was in the
    program twice, 2 bytes per entry)."""
    pytest.importorskip("executorch")
    from xsam_edge.quantization.any_model import quantize_model
    from xsam_edge.quantization.schemes import Int8DynActInt4Weight

    module, samples, table_entries = _tied_qwen2()
    sizes, cosines = {}, {}
    for head_bits in (4, 8):
        scheme = Int8DynActInt4Weight(head_bits=head_bits)
        result = quantize_model(module, "executorch", scheme, tmp_path / str(head_bits), calibration=samples)
        assert result.report.integer_ops.get("portable:quantized_decomposed::embedding_byte.out") == 1
        assert not [k for k in result.report.kept_float if "embed_tokens" in k]
        heads = [n for n in result.report.notes if "head_bits 8" in n]
        assert heads == (["output layer(s) at INT8 (head_bits 8): llm.lm_head"] if head_bits == 8 else [])
        assert [Path(f).suffix for f in result.files] == [".pte", ".ptd"]
        sizes[head_bits] = sum(f.stat().st_size for f in result.files)
        cosines[head_bits] = result.report.fidelity["output_0"]["worst_cosine"]
    # an INT8 lookup table and an INT4 head: under 1.75 bytes per entry, where a float table alone takes 4;
    # an INT8 head over the lookup's own bytes: about 1
    assert 1.25 * table_entries < sizes[4] < 1.75 * table_entries
    assert 0.75 * table_entries < sizes[8] < 1.25 * table_entries
    assert 0.9 < cosines[4] < cosines[8], cosines


def _graph(nodes: list, inputs: list, outputs: list, inits: list) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    ("scheme", "width"), [("w4-g32", 128), ("w4-g64-asym", 128), ("w8", 128), ("w4-g32", 64)]
)
def test_a_lone_lookup_is_packed_as_the_tied_head_of_another_graph_and_stored_once(
    tmp_path: Path, scheme: str, width: int
) -> None:
    """The bundle's ``embed`` graph and its LLM pair are quantized apart: the lookup's blocks must be the
    head's, byte for byte, for the bundle's pack to store the table once. A table narrower than the INT8
    block (the embedded teacher's 64) has its INT8 head packed in the INT4 group instead."""
    from xsam_edge.backends.onnx.pack import SHARED_WEIGHTS, share_llm_weights
    from xsam_edge.spec.bundle import GraphEntry

    rng = np.random.default_rng(3)
    table = rng.standard_normal((VOCAB, width)).astype(np.float32)
    mixer = np.eye(width, dtype=np.float32)  # exact at every precision: the head's rows read out as they are
    folder = tmp_path / "onnx"
    folder.mkdir()
    ids_in = helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 3])
    embed = _graph(
        [helper.make_node("Gather", ["table", "ids"], ["embeds"], name="embed")],
        [ids_in],
        [helper.make_tensor_value_info("embeds", TensorProto.FLOAT, [1, 3, width])],
        [numpy_helper.from_array(table, "table")],
    )
    report = GraphQuantReport("embed", "onnx", scheme)
    weight_only(embed, folder / "embed.onnx", SCHEMES[scheme], {}, False, report)
    assert any("laid out as a head's" in note for note in report.notes)
    for name in ("llm_kvio_prefill", "llm_kvio_decode"):  # the exporter writes the head as Gemm(transB)
        head = _graph(
            [
                helper.make_node("MatMul", ["x", "mixer"], ["h"], name="mixer"),
                helper.make_node("Gemm", ["h", "lm_head"], ["logits"], name="lm_head", transB=1),
            ],
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, VOCAB])],
            [numpy_helper.from_array(mixer, "mixer"), numpy_helper.from_array(table, "lm_head")],
        )
        weight_only(
            head, folder / f"{name}.onnx", SCHEMES[scheme], {}, False, GraphQuantReport(name, "onnx", "")
        )
    entries = [
        GraphEntry(n, "onnx", scheme, [f"onnx/{n}.onnx"], [], [])
        for n in ("embed", "llm_kvio_prefill", "llm_kvio_decode")
    ]
    packed = share_llm_weights(entries, tmp_path)
    assert packed[0].files[1:] == [f"onnx/{SHARED_WEIGHTS}"]  # the table's blocks are the head's

    def where(model: onnx.ModelProto, name: str) -> dict[str, str]:
        tensor = next(t for t in model.graph.initializer if t.name == name)
        return {e.key: e.value for e in tensor.external_data}

    embed_q = onnx.load(str(folder / "embed.onnx"), load_external_data=False)
    llm_q = onnx.load(str(folder / "llm_kvio_prefill.onnx"), load_external_data=False)
    lookup = next(n for n in embed_q.graph.node if n.op_type == "GatherBlockQuantized")
    head = next(n for n in llm_q.graph.node if n.op_type == "MatMulNBits" and n.output[0] == "logits")
    assert where(embed_q, lookup.input[0]) == where(llm_q, head.input[1])  # one place in the shared file
    # the lookup reads what the head computes with
    ids = np.array([[1, 100, VOCAB - 1]], np.int64)
    embeds = ort.InferenceSession(str(folder / "embed.onnx")).run(None, {"ids": ids})[0]
    session = ort.InferenceSession(str(folder / "llm_kvio_prefill.onnx"))
    rows = np.stack([session.run(None, {"x": mixer[i : i + 1]})[0][0] for i in range(width)], axis=1)
    np.testing.assert_allclose(embeds[0], rows[ids[0]], atol=1e-5)
