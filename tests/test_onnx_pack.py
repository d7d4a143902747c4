"""The ONNX pack step on hand-built graphs: the LLM pair's weights once, a tied table once with ``embed``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from xsam_edge.backends.onnx.pack import SHARED_WEIGHTS, share_llm_weights  # noqa: E402
from xsam_edge.spec.bundle import GraphEntry  # noqa: E402

VOCAB, WIDTH = 64, 16


def _head_graph(path: Path, table: np.ndarray, mixer: np.ndarray) -> None:
    """x (1, WIDTH) -> logits (1, VOCAB) = (x @ mixer) @ tableᵀ: an LLM with its output head."""
    nodes = [
        helper.make_node("MatMul", ["x", "mixer"], ["h"]),
        helper.make_node("Gemm", ["h", "lm_head"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "llm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, WIDTH])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, VOCAB])],
        [numpy_helper.from_array(mixer, "mixer"), numpy_helper.from_array(table, "lm_head")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _embed_graph(path: Path, table: np.ndarray) -> None:
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["embeds"])],
        "embed",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info("embeds", TensorProto.FLOAT, [3, WIDTH])],
        [numpy_helper.from_array(table, "table")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _entry(name: str) -> GraphEntry:
    return GraphEntry(name, "onnx", "fp32", [f"onnx/{name}.onnx"], [], [])


@pytest.mark.parametrize("tied", [True, False])
def test_pack_stores_the_pair_once_and_a_tied_table_once(tmp_path: Path, tied: bool) -> None:
    rng = np.random.default_rng(0)
    table = rng.standard_normal((VOCAB, WIDTH)).astype(np.float32)  # 4 KiB: above the pack's 1 KiB floor
    mixer = rng.standard_normal((WIDTH, WIDTH)).astype(np.float32)
    folder = tmp_path / "onnx"
    folder.mkdir()
    for name in ("llm_kvio_prefill", "llm_kvio_decode"):
        _head_graph(folder / f"{name}.onnx", table, mixer)
    embed_table = table if tied else rng.standard_normal((VOCAB, WIDTH)).astype(np.float32)
    _embed_graph(folder / "embed.onnx", embed_table)
    entries = [_entry(n) for n in ("embed", "llm_kvio_prefill", "llm_kvio_decode")]

    packed = share_llm_weights(entries, tmp_path)

    shared = f"onnx/{SHARED_WEIGHTS}"
    assert [e.files[1:] for e in packed[1:]] == [[shared], [shared]]
    assert packed[0].files[1:] == ([shared] if tied else [])
    table_bytes = table.nbytes
    # the pair's two tensors once each (64 KiB aligned); a tied table adds nothing, an untied one stays put
    assert (folder / SHARED_WEIGHTS).stat().st_size <= (1 << 16) + table_bytes
    embed_file = (folder / "embed.onnx").stat().st_size
    assert (embed_file < table_bytes) if tied else (embed_file > table_bytes)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["embed.onnx", "llm_kvio_prefill.onnx", "llm_kvio_decode.onnx", SHARED_WEIGHTS]
    )  # no temporaries left

    ids = np.array([0, 5, VOCAB - 1], dtype=np.int64)
    x = rng.standard_normal((1, WIDTH)).astype(np.float32)
    embeds = ort.InferenceSession(str(folder / "embed.onnx")).run(None, {"ids": ids})[0]
    np.testing.assert_array_equal(embeds, embed_table[ids])
    for name in ("llm_kvio_prefill", "llm_kvio_decode"):
        logits = ort.InferenceSession(str(folder / f"{name}.onnx")).run(None, {"x": x})[0]
        np.testing.assert_allclose(logits, (x @ mixer) @ table.T, rtol=1e-5, atol=1e-5)

    again = share_llm_weights(packed, tmp_path)  # packing packed files changes nothing
    assert again == packed
    assert (folder / SHARED_WEIGHTS).stat().st_size <= (1 << 16) + table_bytes


def test_pack_leaves_a_tied_embed_alone_when_told(tmp_path: Path) -> None:
    """Quantization's float export: each graph part must stay self-contained."""
    rng = np.random.default_rng(1)
    table = rng.standard_normal((VOCAB, WIDTH)).astype(np.float32)
    mixer = rng.standard_normal((WIDTH, WIDTH)).astype(np.float32)
    folder = tmp_path / "onnx"
    folder.mkdir()
    for name in ("llm_kvio_prefill", "llm_kvio_decode"):
        _head_graph(folder / f"{name}.onnx", table, mixer)
    _embed_graph(folder / "embed.onnx", table)
    entries = [_entry(n) for n in ("embed", "llm_kvio_prefill", "llm_kvio_decode")]
    packed = share_llm_weights(entries, tmp_path, tied_embed=False)
    assert packed[0] == entries[0]
    assert (folder / "embed.onnx").stat().st_size > table.nbytes
