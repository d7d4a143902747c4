"""The full-size size benchmark's arithmetic: linear extrapolation in LLM depth and the goal per recipe."""

from __future__ import annotations

import pytest

from xsam_edge.benchmarks.quantized_size_full import _goal, _recipe, extrapolate, markdown


def _depth(depth: int, llm_fp32: int, llm_quant: int) -> dict:
    graphs = {
        "encode_image": {"scheme": "w8a8", "bytes_fp32": 4000, "bytes_quant": 1000},
        "embed": {"scheme": "w8", "bytes_fp32": 400, "bytes_quant": 100},
        "region": {"scheme": "fp32", "bytes_fp32": 10, "bytes_quant": 10},
        "llm": {"scheme": "w4-g32", "bytes_fp32": llm_fp32, "bytes_quant": llm_quant},
        "segment": {"scheme": "w8a8", "bytes_fp32": 200, "bytes_quant": 50},
    }
    return {"depth": depth, "recipes": {"r": {"backend": "openvino", "goal": "int4-llm", "graphs": graphs}}}


def test_extrapolation_is_linear_in_depth_and_only_the_llm_grows():
    # 1 layer: 100 fixed + 450 per layer float, 10 fixed + 60 per layer quantized
    full = extrapolate(_depth(1, 550, 70), _depth(2, 1000, 130), depth=32)["r"]
    assert full["graphs"]["llm"]["bytes_fp32"] == 100 + 450 * 32
    assert full["graphs"]["llm"]["bytes_quant"] == 10 + 60 * 32
    assert full["graphs"]["llm"]["bytes_quant_per_layer"] == 60
    assert full["graphs"]["encode_image"]["bytes_fp32_per_layer"] == 0
    fp32 = 4000 + 400 + 10 + 200 + 100 + 450 * 32
    quant = 1000 + 100 + 10 + 50 + 10 + 60 * 32
    assert full["bytes_fp32"] == fp32 and full["bytes_quant"] == quant
    assert full["ratio"] == pytest.approx(fp32 / quant)
    assert full["meets_goal"] is (fp32 / quant >= 6.0)
    assert "smaller by" in markdown({"preset": "p", "date": "d", "depths": [1, 2], "full_depth": 32,
                                     "full": {"r": full}})  # fmt: skip


def test_each_named_recipe_is_held_to_the_goal_its_schemes_make():
    assert _goal(_recipe("android-xnnpack")) == "int4-llm"
    assert _goal(_recipe("intel-openvino")) == "int4-llm"
    assert _goal(_recipe("int8-openvino")) == "int8"
    assert _goal(_recipe("jetson-trt")).startswith("none")  # fp16 decoder: no integer size goal
    assert _recipe("intel-openvino").calibration.images == 1  # sizes do not depend on calibration size
    with pytest.raises(ValueError, match="unknown recipe"):
        _recipe("no-such-recipe")
