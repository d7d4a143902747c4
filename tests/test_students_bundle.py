"""The real X-SAM's students at their real widths (reduced depth) exported to every backend that runs here,
answering every task from the bundle as the eager model does: what the tiny bundles cannot show (208 image
tokens, a grouped-query LLM at width 1024, dynamic-shape guards at real sizes, the need-sized KV cache).

Two students hold every part at every width: ``x-sam-student-s-conv`` (the conv seg encoder, the
1024-wide Phi-3-shaped LLM with grouped-query attention, Phi-3's tokenizer and template) and the Qwen2
student (the ViT-S seg encoder, SigLIP-S, the tied 896-wide Qwen2 LLM). ``x-sam-student-s`` is the first
one's LLM under the second one's image side: each graph of its bundle is already exported and run here at
its shapes, and its three backends' exports took 270 s of a suite held to ~25 minutes. Its eager model is
tested in test_students.py."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
pytest.importorskip("executorch")

from conftest import every_task_requests, make_image  # noqa: E402
from test_students import IMAGE_HW, shallow_student  # noqa: E402

from xsam_edge.export.to_bundle import export_bundle  # noqa: E402
from xsam_edge.model.predictor import XSamPredictor  # noqa: E402
from xsam_edge.runtime.session import EdgeSession  # noqa: E402
from xsam_edge.spec.bundle import MANIFEST_FILE, BundleError  # noqa: E402

BACKENDS = ("onnx", "openvino", "executorch")
BUNDLED_STUDENTS = ("x-sam-student-s-conv", "x-sam-student-qwen2-0.5b")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=BUNDLED_STUDENTS)
def student(request):
    return shallow_student(request.param)


@pytest.fixture(scope="module")
def bundle(student, tmp_path_factory):
    model, tokenizer = student
    out = tmp_path_factory.mktemp("s") / "b"
    # three backends' files, each about the fp32 weights, plus the export's temporaries: a full disk would
    # otherwise fail half-way with ENOSPC
    need = 6 * sum(p.numel() * p.element_size() for p in model.parameters())
    free = shutil.disk_usage(out.parent).free
    if free < need:
        pytest.skip(f"{free / 1e9:.1f} GB free in {out.parent}; the three bundles need {need / 1e9:.1f} GB")
    path, graphs = export_bundle(model, tokenizer, out, BACKENDS, progress=False)
    assert all(g.min_psnr_db >= 60 for g in graphs), [(g.backend, g.name, g.min_psnr_db) for g in graphs]
    return path


@pytest.fixture(scope="module")
def predictor(student):
    model, tokenizer = student
    return XSamPredictor(model, tokenizer, max_new_tokens=4, region_sampler="grid")


def test_the_bundle_cache_is_sized_to_the_work(bundle):
    slots = json.loads((bundle / MANIFEST_FILE).read_text())["slots"]
    assert slots["max_seq"] == 1280  # 208 image tokens + 1024 text budget in 64-token chunks, not 4096


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_task_matches_the_eager_student(bundle, predictor, backend):
    session = EdgeSession(bundle, backend, max_new_tokens=4)
    for request in every_task_requests(make_image(IMAGE_HW)):
        want, got = predictor.run(request), session.run(request)
        assert got.text == want.text, (backend, request.task)
        if want.class_logits is None:
            assert got.class_logits is None, (backend, request.task)
            continue
        for name in ("class_logits", "mask_logits"):
            # XNNPACK's FP32 kernels sum 1024-wide rows in their own order: at these widths the largest
            # difference is ~2e-3 of the range (~75 dB); a real bug (a wrong token count, a misplaced cache
            # row) costs tens of dB
            a, b = getattr(got, name), getattr(want, name)
            scale = float(np.abs(b).max()) or 1.0
            psnr = 20 * np.log10(scale / max(float(np.sqrt(np.mean((a - b) ** 2))), 1e-12))
            assert psnr >= 60, (backend, request.task, name, psnr)
            np.testing.assert_allclose(a, b, atol=1e-2 * scale, err_msg=f"{backend} {request.task} {name}")


def test_onnx_stores_each_weight_once(bundle, student):
    """The prefill and decode graphs (and a tied embed graph) share one weights file: the ONNX folder holds
    the weights once."""
    model, _ = student
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    llm_files = [
        g["files"] for g in manifest["graphs"] if g["backend"] == "onnx" and g["name"].startswith("llm")
    ]
    assert [f[1] for f in llm_files] == ["onnx/llm_weights.bin"] * 2
    embed = next(g for g in manifest["graphs"] if g["backend"] == "onnx" and g["name"] == "embed")
    # a tied table (the embed graph's lookup, the LLM's lm_head) is in the shared file once, not in both
    assert embed["files"][1:] == (["onnx/llm_weights.bin"] if model.config.llm.tie_word_embeddings else [])
    onnx_bytes = sum(f.stat().st_size for f in (bundle / "onnx").rglob("*") if f.is_file())
    assert onnx_bytes < 1.1 * weights, (onnx_bytes, weights)


def test_openvino_stores_a_tied_table_once(bundle, student):
    """The tied table is the embed IR's lookup and the LLM IR's head: embed.xml reads it from llm.bin."""
    model, _ = student
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    embed = next(g for g in manifest["graphs"] if g["backend"] == "openvino" and g["name"] == "embed")
    tied = model.config.llm.tie_word_embeddings
    assert embed["files"] == ["openvino/embed.xml", "openvino/llm.bin" if tied else "openvino/embed.bin"]
    table = model.llm.get_input_embeddings().weight
    embed_bytes = sum((bundle / f).stat().st_size for f in embed["files"] if "llm" not in f)
    assert (embed_bytes < 0.01 * table.numel() * table.element_size()) == tied


def test_executorch_stores_a_tied_table_once(bundle, student):
    """The tied table is embed.pte's lookup and llm.pte's XNNPACK head: both read it from llm.ptd, where it
    is once (it was in both programs: 519 MiB twice for Qwen2's 151,936 × 896 in fp32)."""
    model, _ = student
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    entries = {g["name"]: g["files"] for g in manifest["graphs"] if g["backend"] == "executorch"}
    tied = model.config.llm.tie_word_embeddings
    data = ["executorch/llm.ptd"] if tied else []
    assert entries["embed"] == ["executorch/embed.pte", *data]
    assert entries["llm"] == ["executorch/llm.pte", *data]
    table = model.llm.get_input_embeddings().weight.detach()
    assert ((bundle / "executorch" / "embed.pte").stat().st_size < 0.01 * table.numel() * 4) == tied
    rows = table[:16].numpy().tobytes()  # the table's first rows, wherever a copy of it is stored
    copies = sum(f.read_bytes().count(rows) for f in (bundle / "executorch").iterdir())
    assert copies == 1  # untied, the LLM program never reads the lookup's table


def test_an_executorch_program_listed_without_its_data_file_is_a_bundle_error(bundle, student, tmp_path):
    """A crafted manifest lists the tied lookup without llm.ptd (every file still listed and checksummed):
    ExecuTorch's bare 0x2 at load becomes a BundleError naming the program's files."""
    model, _ = student
    if not model.config.llm.tie_word_embeddings:
        pytest.skip("an untied bundle has no data file")
    crafted = tmp_path / "crafted"
    shutil.copytree(bundle, crafted, copy_function=os.link)  # hard links: regular files, no copying
    manifest = json.loads((crafted / MANIFEST_FILE).read_text())
    embed = next(g for g in manifest["graphs"] if g["backend"] == "executorch" and g["name"] == "embed")
    embed["files"] = embed["files"][:1]
    (crafted / MANIFEST_FILE).unlink()  # a new file, not the shared link's contents
    (crafted / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(
        BundleError, match=r"ExecuTorch cannot load it from \['executorch/embed.pte'\].*\.ptd"
    ):
        EdgeSession(crafted, "executorch")
