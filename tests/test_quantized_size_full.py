"""The full-size size benchmark's arithmetic: linear extrapolation per stack depth and the goal per recipe."""

from __future__ import annotations

import pytest

from benchmarks.quantized_size_full import (
    _goal,
    _recipe,
    config_at,
    extrapolate,
    full_depths,
    markdown,
    plan_points,
)
from xsam_edge.model.presets import get_preset

FULL = {"llm": 32, "sam": 24, "siglip": 26}


def _point(point: dict, llm: tuple[int, int], image: tuple[int, int], backend: str = "openvino") -> dict:
    graphs = {
        "encode_image": {"scheme": "w8a8", "bytes_fp32": image[0], "bytes_quant": image[1]},
        "embed": {"scheme": "w8", "bytes_fp32": 400, "bytes_quant": 100},
        "region": {"scheme": "fp32", "bytes_fp32": 10, "bytes_quant": 10},
        "llm": {"scheme": "w4-g32", "bytes_fp32": llm[0], "bytes_quant": llm[1]},
        "segment": {"scheme": "w8a8", "bytes_fp32": 200, "bytes_quant": 50},
    }
    return {"point": point, "recipes": {"r": {"backend": backend, "goal": "int4-llm", "graphs": graphs}}}


def test_extrapolation_is_linear_in_the_llm_depth_and_only_the_llm_grows():
    # 1 layer: 100 fixed + 450 per layer float, 10 fixed + 60 per layer quantized
    low, high = plan_points([1, 2], None, FULL)
    full = extrapolate([_point(low, (550, 70), (4000, 1000)), _point(high, (1000, 130), (4000, 1000))], FULL)
    full = full["r"]
    assert full["graphs"]["llm"]["bytes_fp32"] == 100 + 450 * 32
    assert full["graphs"]["llm"]["bytes_quant"] == 10 + 60 * 32
    assert full["graphs"]["llm"]["bytes_quant_per_block"] == {"llm": pytest.approx(60)}
    assert full["graphs"]["encode_image"]["bytes_fp32_per_block"] == {}  # encoders measured whole
    fp32 = 4000 + 400 + 10 + 200 + 100 + 450 * 32
    quant = 1000 + 100 + 10 + 50 + 10 + 60 * 32
    assert full["bytes_fp32"] == fp32 and full["bytes_quant"] == quant
    assert full["ratio"] == pytest.approx(fp32 / quant)
    assert full["meets_goal"] is (fp32 / quant >= 6.0)
    result = {"preset": "p", "date": "d", "points": [low, high], "full_depths": FULL, "full": {"r": full}}
    assert "smaller by" in markdown(result)


def test_encoder_depths_are_told_apart_by_three_points():
    # image graph: 50 fixed + 30 per SAM block + 20 per SigLIP block; the LLM as above
    points = plan_points([1, 2], [1, 2], FULL)
    assert points == [
        {"llm": 1, "sam": 1, "siglip": 1},
        {"llm": 2, "sam": 2, "siglip": 1},
        {"llm": 2, "sam": 2, "siglip": 2},
    ]
    image = [50 + 30 * p["sam"] + 20 * p["siglip"] for p in points]
    llm = [100 + 450 * p["llm"] for p in points]
    measured = [_point(p, (f, f // 10), (i, i // 4)) for p, f, i in zip(points, llm, image, strict=True)]
    graphs = extrapolate(measured, FULL)["r"]["graphs"]
    assert graphs["encode_image"]["bytes_fp32"] == 50 + 30 * 24 + 20 * 26
    assert graphs["encode_image"]["bytes_fp32_per_block"] == pytest.approx({"sam": 30, "siglip": 20})
    assert graphs["llm"]["bytes_fp32"] == 100 + 450 * 32
    assert graphs["llm"]["bytes_fp32_fit_residual"] == pytest.approx(0, abs=1e-6)
    # the embedding table does not change with any stack: its fit is exact, and a change would show
    assert graphs["embed"]["bytes_fp32"] == 400 and graphs["embed"]["bytes_fp32_fit_residual"] == 0
    measured[2]["recipes"]["r"]["graphs"]["embed"]["bytes_fp32"] = 430
    assert extrapolate(measured, FULL)["r"]["graphs"]["embed"]["bytes_fp32_fit_residual"] == pytest.approx(20)


def test_a_stack_measured_at_one_cut_depth_cannot_be_extrapolated():
    points = [{"llm": 1, "sam": 2, "siglip": 26}, {"llm": 2, "sam": 2, "siglip": 26}]
    measured = [_point(p, (550, 70), (4000, 1000)) for p in points]
    with pytest.raises(ValueError, match="sam is measured at one depth"):
        extrapolate(measured, FULL)


def test_a_cut_point_keeps_every_width_and_only_drops_blocks():
    config = get_preset("x-sam-phi3")
    assert full_depths(config) == FULL  # Phi-3-mini's 32 layers; X-SAM runs 24 SAM and 26 of 27 SigLIP blocks
    cut = config_at(config, {"llm": 2, "sam": 1, "siglip": 1})
    assert full_depths(cut) == {"llm": 2, "sam": 1, "siglip": 1}
    assert cut.seg_encoder.hidden_size == config.seg_encoder.hidden_size
    assert cut.global_encoder.intermediate_size == config.global_encoder.intermediate_size
    assert cut.seg_encoder.image_size == 1024 and cut.llm.hidden_size == 3072
    assert config_at(config, FULL) == config
    assert cut.seg_encoder.num_layers == 1 and cut.seg_encoder.connector_layers == (1, 1, 1)
    assert cut.global_encoder.num_layers == 2  # one block run, the one after select_layer kept as upstream


def test_each_named_recipe_is_held_to_the_goal_its_schemes_make():
    assert _goal(_recipe("android-xnnpack")) == "int4-llm"
    assert _goal(_recipe("intel-openvino")) == "int4-llm"
    assert _goal(_recipe("apple-ane")) == "int4-llm"  # 4-bit palettized LLM, INT8 weights elsewhere
    assert _goal(_recipe("int8-openvino")) == "int8"
    assert _goal(_recipe("jetson-trt")).startswith("none")  # fp16 decoder: no integer size goal
    assert _goal(_recipe("apple-gpu")).startswith("none")  # fp16 encoders
    assert _recipe("intel-openvino").calibration.images == 1  # sizes do not depend on calibration size
    with pytest.raises(ValueError, match="unknown recipe"):
        _recipe("no-such-recipe")
