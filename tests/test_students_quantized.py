"""A quantized bundle of the tied student stores its table once (its own module: the suite's workers take
whole modules, and the students' bundle module is already the longest)."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("onnxruntime")

from conftest import every_task_requests, make_image  # noqa: E402
from test_students import IMAGE_HW, shallow_student  # noqa: E402

from xsam_edge.runtime.session import EdgeSession  # noqa: E402
from xsam_edge.spec.bundle import MANIFEST_FILE  # noqa: E402
from xsam_edge.spec.types import Task  # noqa: E402

pytestmark = pytest.mark.slow


def test_a_quantized_onnx_bundle_stores_a_tied_table_once(tmp_path):
    """Each graph part is quantized and packed alone: the w4 embed part and the w4 LLM part both held
    Qwen2's 151,936 × 896 table (82 + 101 MiB; fp16 under jetson-trt: 260 + 318 MiB). The assembled bundle
    is packed once more, and a w4 lookup table is packed as the head over it is, byte for byte."""
    from xsam_edge.quantization.quantize import quantize_bundle
    from xsam_edge.quantization.recipes import Recipe
    from xsam_edge.quantization.schemes import Float16, Int4WeightOnly

    model, tokenizer = shallow_student("x-sam-student-qwen2-0.5b")
    assert model.config.llm.tie_word_embeddings
    need = 4 * sum(p.numel() * p.element_size() for p in model.parameters())
    if shutil.disk_usage(tmp_path).free < need:
        pytest.skip(f"the float export and the bundle need {need / 1e9:.1f} GB of disk")
    recipe = Recipe(
        "onnx-w4", "onnx", {"embed": Int4WeightOnly(), "llm": Int4WeightOnly()}, default=Float16()
    )
    result = quantize_bundle(model, tokenizer, recipe, tmp_path / "q", tmp_path / "work", progress=False)
    entries = {g["name"]: g for g in json.loads((result.bundle / MANIFEST_FILE).read_text())["graphs"]}
    packed_table = model.llm.get_input_embeddings().weight.numel()  # INT8: w4 keeps the tied head at 8 bits
    assert entries["embed"]["files"][1:] == ["onnx/llm_weights.bin"]
    assert (result.bundle / entries["embed"]["files"][0]).stat().st_size < 0.01 * packed_table
    shared = (result.bundle / "onnx" / "llm_weights.bin").stat().st_size
    assert packed_table < shared < 2 * packed_table  # the table once, with the LLM's other weights
    embed_report = next(r for r in result.reports if r.graph == "embed")
    assert any("stored once" in n for n in embed_report.notes)
    session = EdgeSession(result.bundle, "onnx", max_new_tokens=4)
    answers = {
        r.task: session.run(r) for r in every_task_requests(make_image(IMAGE_HW))
    }  # every task answers
    assert answers[Task.REFERRING].mask_logits is not None
