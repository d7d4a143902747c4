"""The OpenVINO pack step on hand-built IRs: a tied table stored once, in the LLM's weights file, in float
and after NNCF's INT4 weight compression (output layers at INT8, so the head's bytes equal the lookup's)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

ov = pytest.importorskip("openvino")
pytest.importorskip("nncf")

from openvino import opset13 as ops  # noqa: E402

from xsam_edge.backends.openvino.pack import share_tied_table  # noqa: E402
from xsam_edge.spec.bundle import GraphEntry  # noqa: E402

VOCAB, WIDTH, TOKENS = 64, 32, 3


def _save(model: object, path: Path) -> None:
    ov.save_model(model, str(path), compress_to_fp16=False)


def _embed_ir(path: Path, table: np.ndarray) -> None:
    """ids (1, T) → inputs_embeds (1, T, W): the lookup."""
    ids = ops.parameter([1, TOKENS], np.int64, name="input_ids")
    out = ops.gather(ops.constant(table), ids, ops.constant(np.int64(0)))
    out.output(0).set_names({"inputs_embeds"})
    _save(ov.Model([out], [ids], "embed"), path)


def _llm_ir(path: Path, table: np.ndarray, mixer: np.ndarray, projector: np.ndarray) -> None:
    """x (1, T, W) → logits (1, T, V) = (x·mixerᵀ)·tableᵀ, and projected = (x·mixerᵀ)·projectorᵀ: two outputs,
    the head not last in order (as in the student's LLM graph)."""
    x = ops.parameter([1, TOKENS, WIDTH], np.float32, name="inputs_embeds")
    h = ops.matmul(x, ops.constant(mixer), False, True)
    logits = ops.matmul(h, ops.constant(table), False, True)
    projected = ops.matmul(h, ops.constant(projector), False, True)
    logits.output(0).set_names({"logits"})
    projected.output(0).set_names({"projected"})
    _save(ov.Model([logits, projected], [x], "llm"), path)


def _entries() -> list[GraphEntry]:
    return [
        GraphEntry("embed", "openvino", "fp32", ["openvino/embed.xml", "openvino/embed.bin"], [], []),
        GraphEntry("llm_prefill", "openvino", "fp32", ["openvino/llm.xml", "openvino/llm.bin"], [], []),
    ]


def _run(xml: Path, weights: Path, feed: np.ndarray) -> list[np.ndarray]:
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(xml), str(weights)), "CPU")
    return [np.array(v) for v in compiled.create_infer_request().infer([feed]).to_tuple()]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _weights(vocab: int = VOCAB) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    table = rng.standard_normal((vocab, WIDTH)).astype(np.float32)  # 8 KiB: above the pack's 1 KiB floor
    mixer = rng.standard_normal((WIDTH, WIDTH)).astype(np.float32)
    projector = rng.standard_normal((16, WIDTH)).astype(np.float32)
    return table, mixer, projector


def test_pack_points_a_tied_embed_into_the_llm_weights(tmp_path: Path) -> None:
    table, mixer, projector = _weights()
    folder = tmp_path / "openvino"
    folder.mkdir()
    _embed_ir(folder / "embed.xml", table)
    _llm_ir(folder / "llm.xml", table, mixer, projector)
    ids = np.array([[5, 0, VOCAB - 1]], dtype=np.int64)
    x = np.random.default_rng(1).standard_normal((1, TOKENS, WIDTH)).astype(np.float32)
    llm_xml, llm_bin = _digest(folder / "llm.xml"), (folder / "llm.bin").read_bytes()
    want_embed = _run(folder / "embed.xml", folder / "embed.bin", ids)
    want_llm = _run(folder / "llm.xml", folder / "llm.bin", x)

    packed = share_tied_table(_entries(), tmp_path)

    assert packed[0].files == ["openvino/embed.xml", "openvino/llm.bin"]
    assert packed[1] == _entries()[1]
    assert not (folder / "embed.bin").exists()
    assert _digest(folder / "llm.xml") == llm_xml  # the LLM's IR untouched, its weights only appended to
    assert (folder / "llm.bin").read_bytes()[: len(llm_bin)] == llm_bin
    assert (folder / "llm.bin").stat().st_size < len(llm_bin) + 1024  # the table not written again
    np.testing.assert_array_equal(_run(folder / "embed.xml", folder / "llm.bin", ids)[0], want_embed[0])
    for got, want in zip(_run(folder / "llm.xml", folder / "llm.bin", x), want_llm, strict=True):
        np.testing.assert_array_equal(got, want)
    before = {f.name: _digest(f) for f in folder.iterdir()}
    assert share_tied_table(packed, tmp_path) == packed  # packed already: nothing changes
    assert {f.name: _digest(f) for f in folder.iterdir()} == before
    assert not [f for f in folder.iterdir() if f.name.startswith(".")]  # no temporaries left


@pytest.mark.parametrize("case", ["untied", "told not to"])
def test_pack_leaves_an_untied_or_excluded_embed_alone(tmp_path: Path, case: str) -> None:
    table, mixer, projector = _weights()
    folder = tmp_path / "openvino"
    folder.mkdir()
    _embed_ir(folder / "embed.xml", table if case != "untied" else table + 1)
    _llm_ir(folder / "llm.xml", table, mixer, projector)
    before = {f.name: _digest(f) for f in folder.iterdir()}
    packed = share_tied_table(_entries(), tmp_path, tied_embed=case != "told not to")
    assert packed == _entries()
    assert {f.name: _digest(f) for f in folder.iterdir()} == before


def _quantize_w4_at_real_vocab(tmp_path: Path, head_bits: int) -> tuple[np.ndarray, Path, list[str]]:
    """The hand-built ``embed`` and ``llm`` IRs at Qwen2.5's 151,936 rows, through the w4 handler; the table,
    the quantized folder and the LLM report's notes."""
    from xsam_edge.backends.openvino.quantize import OpenVinoQuantizer, output_layers
    from xsam_edge.quantization.schemes import Int4WeightOnly

    table, mixer, projector = _weights(151_936)
    src = tmp_path / "fp32"
    src.mkdir()
    _embed_ir(src / "embed.xml", table)
    _llm_ir(src / "llm.xml", table, mixer, projector)
    assert len(output_layers(ov.Core().read_model(str(src / "llm.xml")))) == 2
    out = tmp_path / "q" / "openvino"
    out.mkdir(parents=True)
    notes = []
    for graph, name in (("embed", "embed"), ("llm", "llm_prefill")):
        stem = "llm" if graph == "llm" else "embed"
        files = {name: [src / f"{stem}.xml", src / f"{stem}.bin"]}
        scheme = Int4WeightOnly(head_bits=head_bits)
        _, report = OpenVinoQuantizer().quantize_files(graph, [name], files, scheme, (), {}, {}, out)
        notes += report.notes if graph == "llm" else []
    return table, out, notes


def _weight_types(xml: Path) -> dict[tuple[int, ...], str]:
    from xsam_edge.backends.openvino.quantize import _weight

    weights = [_weight(op) for op in ov.Core().read_model(str(xml)).get_ordered_ops()]
    return {
        tuple(w.get_output_shape(0)): w.get_element_type().get_type_name() for w in weights if w is not None
    }


def _assert_packed_once(tmp_path: Path, table: np.ndarray, bytes_per_value: float, tolerance: float) -> None:
    """The pack points ``embed`` into ``llm.bin``, which holds the table once, and the lookup reads it."""
    out = tmp_path / "q" / "openvino"
    packed = share_tied_table(_entries(), tmp_path / "q")
    assert packed[0].files == ["openvino/embed.xml", "openvino/llm.bin"]
    assert (out / "llm.bin").stat().st_size < bytes_per_value * table.size
    ids = np.array([[5, 0, 151_935]], dtype=np.int64)
    got = _run(out / "embed.xml", out / "llm.bin", ids)[0]
    np.testing.assert_allclose(got, table[ids], atol=tolerance * np.abs(table).max())


def test_w4_keeps_output_layers_at_int8_and_a_tied_table_is_stored_once(tmp_path: Path) -> None:
    """At the real vocabulary (Qwen2.5's 151,936 rows). NNCF keeps "the last layer" at INT8, but takes the
    last MatMul in order (here ``projected``'s), so the head went INT4 beside an INT8 lookup table: the
    tied table was stored twice, in two precisions. Every output layer is INT8 now, the head's bytes equal
    the lookup's, and the pack stores them once."""
    table, out, notes = _quantize_w4_at_real_vocab(tmp_path, head_bits=8)
    assert any("output layer(s) kept at INT8" in n for n in notes), notes
    precision = _weight_types(out / "llm.xml")
    assert precision[(151_936, WIDTH)] == precision[(16, WIDTH)] == "u8"  # both output layers
    assert precision[(WIDTH, 1, WIDTH)] in ("i4", "u4")  # the mixer, in one group of 32
    embed_size = (out / "embed.bin").stat().st_size
    assert embed_size > table.size  # the lookup at INT8: one byte a value

    _assert_packed_once(tmp_path, table, bytes_per_value=1.1, tolerance=0.05)  # the table once, at INT8


def test_w4_with_head_bits_4_packs_heads_and_lookup_at_int4_and_stores_the_table_once(tmp_path: Path) -> None:
    """``head_bits = 4`` (NNCF's ``all_layers``): no INT8 weight left, and the table still stored once."""
    table, out, notes = _quantize_w4_at_real_vocab(tmp_path, head_bits=4)
    assert not any("kept at INT8" in n for n in notes), notes
    for stem in ("embed", "llm"):
        types = set(_weight_types(out / f"{stem}.xml").values())
        assert types and types <= {"i4", "u4"}, (stem, types)

    _assert_packed_once(tmp_path, table, bytes_per_value=0.6, tolerance=0.2)  # the table once, at INT4


def test_the_runtime_refuses_an_ir_entry_without_its_xml(tmp_path: Path) -> None:
    from xsam_edge.backends.openvino.runtime import OpenVinoBackend
    from xsam_edge.spec.bundle import BundleError

    class _Manifest:
        def path(self, relative: str) -> Path:
            return tmp_path / relative

    entry = GraphEntry("embed", "openvino", "fp32", ["openvino/embed.bin"], [], [])
    with pytest.raises(BundleError, match="needs an .xml"):
        OpenVinoBackend()._compile(_Manifest(), entry)
