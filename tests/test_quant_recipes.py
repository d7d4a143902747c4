"""Recipes and schemes as values: validation before any work, TOML files, and the named targets."""

import pytest

from xsam_edge.backends import BACKENDS, get_backend
from xsam_edge.quantization.recipes import (
    QUANT_GRAPHS,
    RECIPES,
    Calibration,
    Recipe,
    get_recipe,
    load_recipe,
)
from xsam_edge.quantization.schemes import (
    SCHEMES,
    Float32,
    Int4WeightOnly,
    Int8DynActInt4Weight,
    Int8Dynamic,
    Int8Static,
    Palettize,
    scheme_from_dict,
)


def test_named_recipes_cover_the_targets_and_round_trip():
    assert set(RECIPES) == {"android-xnnpack", "apple-ane", "apple-gpu", "intel-openvino", "jetson-trt"}
    for name, recipe in RECIPES.items():
        assert Recipe.from_dict(recipe.to_dict()) == recipe, name
        for graph in QUANT_GRAPHS:
            assert recipe.scheme_for(graph).name in get_backend(recipe.backend).schemes
    android = get_recipe("android-xnnpack")
    assert android.scheme_for("llm") == Int8DynActInt4Weight(32, head_bits=8, ratio=0.8)
    assert android.scheme_for("encode_image") == Int8Dynamic()  # per-token scales: no calibration
    assert android.scheme_for("region") == Float32()
    assert not android.calibrated and get_recipe("jetson-trt").calibrated
    assert not get_recipe("apple-gpu").calibrated  # weight-only: no data needed
    assert get_recipe("apple-ane").calibrated  # its LLM tables are weighted by output sensitivity


def test_scheme_fields_are_validated():
    assert scheme_from_dict({"scheme": "w4", "group_size": 64}) == Int4WeightOnly(group_size=64)
    assert Int4WeightOnly(group_size=128, data_aware=True).label() == "w4-g128-awq"
    assert Palettize(nbits=6).bits == 6
    with pytest.raises(ValueError, match="power of two"):
        Int4WeightOnly(group_size=48)
    with pytest.raises(ValueError, match="nbits"):
        Palettize(nbits=5)
    with pytest.raises(ValueError, match="unknown scheme 'int3'.*known schemes: fp32"):
        scheme_from_dict("int3", "graphs.llm")
    with pytest.raises(ValueError, match="no field.*block"):
        scheme_from_dict({"scheme": "w8", "block": 3})
    assert set(SCHEMES) == {"fp32", "fp16", "w8a8", "w8a8-dyn", "w8", "w4", "8da4w", "palettize"}


def test_bad_recipes_fail_before_any_work():
    with pytest.raises(ValueError, match="no graph named 'vision_tower'.*graphs: encode_image"):
        Recipe("x", "onnx", {"vision_tower": Int8Static()})
    with pytest.raises(ValueError, match="'palettize' for llm is not supported by 'onnx'; supported: fp32"):
        Recipe("x", "onnx", {"llm": Palettize()})
    with pytest.raises(ValueError, match="unknown backend 'tflite'"):
        Recipe("x", "tflite")
    with pytest.raises(ValueError, match="empty calibration set"):
        Calibration(images=0)
    with pytest.raises(ValueError, match="unknown recipe 'android'.*android-xnnpack"):
        get_recipe("android")


def test_toml_recipe(tmp_path):
    path = tmp_path / "phone.toml"
    path.write_text(
        'name = "phone"\nbackend = "executorch"\nkeep_float = ["sampling_offsets"]\n'
        '[calibration]\ndata = "shapes:val-fast"\nimages = 2\n'
        '[graphs]\nencode_image = "w8a8"\nllm = { scheme = "8da4w", group_size = 64 }\n'
    )
    recipe = load_recipe(path)
    assert recipe.scheme_for("llm") == Int8DynActInt4Weight(64)
    assert recipe.keep_float == ("sampling_offsets",)
    assert recipe.calibration == Calibration("shapes:val-fast", 2)

    path.write_text('name = "bad"\nbackend = "coreml"\n[graphs]\nsegment = "w8a8"\n')
    with pytest.raises(
        ValueError, match=r"recipe file .*bad.*'w8a8' for segment is not supported by 'coreml'"
    ):
        load_recipe(path)
    path.write_text('name = "bad"\nbackend = "onnx"\n[calibration]\nimages = 0\n')
    with pytest.raises(ValueError, match="empty calibration set"):
        load_recipe(path)
    path.write_text('name = "bad"\nbackend = "onnx"\nlayers = 3\n')
    with pytest.raises(ValueError, match="unknown key.*layers"):
        load_recipe(path)
    path.write_text("name = [\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_recipe(path)
    with pytest.raises(FileNotFoundError):
        load_recipe(tmp_path / "missing.toml")


def test_float_layers_are_per_graph_and_validated(tmp_path):
    recipe = get_recipe("android-xnnpack")
    assert recipe.float_layers == {} and recipe.keep_float_for("llm") == recipe.keep_float
    kept = recipe.with_float_layers("llm", ["lm.blocks.0.down_proj"], suffix="+layers")
    assert kept.name == "android-xnnpack+layers" and kept.graphs == recipe.graphs
    assert kept.keep_float_for("llm") == (*recipe.keep_float, "lm.blocks.0.down_proj")
    assert kept.keep_float_for("segment") == recipe.keep_float  # the other graphs keep their cache key
    assert kept.with_float_layers("llm", ["lm.blocks.0.down_proj"]).float_layers == kept.float_layers
    assert Recipe.from_dict(kept.to_dict()) == kept  # manifest / TOML round trip

    path = tmp_path / "phone.toml"
    path.write_text(
        'name = "phone"\nbackend = "executorch"\n[graphs]\nllm = "8da4w"\n'
        '[float_layers]\nllm = ["lm.blocks.0.down_proj"]\n'
    )
    assert load_recipe(path).float_layers == {"llm": ("lm.blocks.0.down_proj",)}
    with pytest.raises(ValueError, match="float_layers: no graph named .decoder."):
        Recipe("x", "onnx", float_layers={"decoder": ("a",)})
    with pytest.raises(ValueError, match="float_layers.llm must be a list of module names"):
        Recipe("x", "onnx", float_layers={"llm": "lm.lm_head"})


def test_handler_registry_matches_the_support_matrix():
    """Every registered backend's handler implements the protocol for its own registry name."""
    from xsam_edge.quantization.handler import QuantizeHandler

    for name, backend in BACKENDS.items():
        handler = backend.quantize_handler()
        assert isinstance(handler, QuantizeHandler) and handler.backend == name, name
        assert callable(handler.quantize) and callable(handler.quantize_module), name
        assert handler.schemes == backend.schemes and set(handler.graphs) == set(QUANT_GRAPHS), name
