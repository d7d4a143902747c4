"""The full-size preset on the meta device: parameters and MACs against XSAM.md §1 and §4; config files."""

from __future__ import annotations

import json

import pytest
import torch

from xsam_edge.model.build import build_model
from xsam_edge.model.info import info_json, info_table
from xsam_edge.model.presets import PRESETS, TINY, X_SAM_PHI3, get_preset
from xsam_edge.spec.config import SCHEMA_VERSION, XSamConfig

B, M, G, T = 1e9, 1e6, 1e9, 1e12


@pytest.fixture(scope="module")
def phi3_meta():
    with torch.device("meta"):
        return build_model("x-sam-phi3")


@pytest.fixture(scope="module")
def phi3_info() -> dict:
    return info_json(X_SAM_PHI3)


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_full_size_preset_instantiates_on_meta(phi3_meta):
    params = list(phi3_meta.parameters())
    assert params and all(p.is_meta for p in params)
    assert phi3_meta.config.name == "x-sam-phi3"
    assert phi3_meta.llm.get_input_embeddings().weight.shape == (32014, 3072)
    assert phi3_meta.segmentor.decoder is not None


def test_derived_sizes_of_the_released_model():
    cfg = X_SAM_PHI3
    assert cfg.num_global_tokens == 729 and cfg.num_seg_tokens == 1024 and cfg.num_image_tokens == 1753
    assert cfg.connector.out_channels == (512, 1024, 2048)
    assert cfg.mask_resolution == 128 and cfg.seg_token_grid == 32
    assert cfg.seg_projector.unshuffled_features == 4096
    assert cfg.decoder.num_masked_layers == 9


# XSAM.md §1.1 (and the brief): value in the unit, and the rounding the document uses
DOCUMENTED_PARAMS = {
    "llm": (3.82, B, 0.005),
    "visual_encoder": (428, M, 0.5),  # SigLIP incl. the unused MAP head
    "segmentor.encoder": (308, M, 0.5),  # SAM ViT-L incl. the unused neck
    "visual_projector": (13.0, M, 0.05),
    "seg_projector": (22.0, M, 0.05),
    "llm_projector": (0.85, M, 0.005),
    "seg_connector": (10.5, M, 0.05),
    "segmentor.pixel_decoder": (6.10, M, 0.005),
    "segmentor.decoder": (14.51, M, 0.005),
}


@pytest.mark.parametrize("name", list(DOCUMENTED_PARAMS))
def test_parameter_count_per_component(phi3_meta, name):
    value, unit, half_step = DOCUMENTED_PARAMS[name]
    module = phi3_meta.get_submodule(name)
    actual = _count(module) / unit
    assert abs(actual - value) <= half_step, f"{name}: {actual:.4f} vs documented {value}"


def test_heads_that_are_loaded_but_not_run(phi3_meta):
    # SigLIP: 413 M trunk + 15 M MAP head; SAM: 307 M + 0.85 M neck (XSAM.md §1.1)
    siglip_head = _count(phi3_meta.visual_encoder.vision_model.head)
    assert abs(siglip_head / M - 15) < 0.5
    assert abs((_count(phi3_meta.visual_encoder) - siglip_head) / M - 413) < 0.5
    neck = _count(phi3_meta.segmentor.encoder.neck)
    assert abs(neck / M - 0.85) < 0.01
    assert abs((_count(phi3_meta.segmentor.encoder) - neck) / M - 307) < 0.5


def test_total_parameters(phi3_meta):
    total = _count(phi3_meta)
    assert abs(total / 4.62e9 - 1) < 0.01
    parts = sum(_count(phi3_meta.get_submodule(n)) for n in DOCUMENTED_PARAMS)
    rest = _count(phi3_meta.bg_embeds) + phi3_meta.segmentor.logit_scale.numel()
    assert parts + rest == total  # the table covers the whole model: bg_embeds (256) + logit_scale (1)
    assert rest == 257


def test_info_json_schema_and_params(phi3_info, phi3_meta):
    assert phi3_info["preset"] == "x-sam-phi3"
    assert phi3_info["query"] == {"task": "referring", "image_tokens": 1753, "text_tokens": 48}
    components = phi3_info["components"]
    assert list(components) == [
        "seg_encoder",
        "visual_encoder",
        "visual_projector",
        "seg_projector",
        "seg_connector",
        "llm",
        "llm_projector",
        "pixel_decoder",
        "mask_decoder",
    ]
    for name, cost in components.items():
        assert set(cost) == {"params", "macs"}, name
        assert isinstance(cost["params"], int) and isinstance(cost["macs"], int), name
        assert cost["params"] > 0 and cost["macs"] > 0, name
    assert phi3_info["total_params"] == sum(c["params"] for c in components.values()) == _count(phi3_meta)
    assert phi3_info["total_macs"] == sum(c["macs"] for c in components.values())
    assert components["llm"]["params"] == _count(phi3_meta.llm)
    assert components["seg_encoder"]["params"] == _count(phi3_meta.segmentor.encoder)
    json.dumps(phi3_info)  # JSON-ready


# XSAM.md §4: MACs per image for one referring query
DOCUMENTED_MACS = {
    "llm": (7.16 * T, 0.01),
    "seg_encoder": (1.49 * T, 0.01),
    "visual_encoder": (320 * G, 0.02),  # truncated to the 26 layers actually used
    "visual_projector": (9.5 * G, 0.02),
    "seg_projector": (22.6 * G, 0.02),
    "seg_connector": (43 * G, 0.02),
    "pixel_decoder": (112 * G, 0.05),
    "mask_decoder": (27 * G, 0.05),
}


def test_info_json_macs(phi3_info):
    components = phi3_info["components"]
    total = phi3_info["total_macs"]
    print(
        f"\nx-sam-phi3 MACs: total {total / T:.3f} T, "
        + ", ".join(f"{k} {v['macs'] / G:.1f} G" for k, v in components.items())
    )
    assert abs(total / (9.2 * T) - 1) < 0.05
    for name, (value, tolerance) in DOCUMENTED_MACS.items():
        actual = components[name]["macs"]
        assert abs(actual / value - 1) < tolerance, f"{name}: {actual / G:.1f} G vs {value / G:.1f} G"
    # the split quoted in §4: LLM ≈ 78 %, SAM-L ≈ 16 %
    assert 0.76 < components["llm"]["macs"] / total < 0.80
    assert 0.15 < components["seg_encoder"]["macs"] / total < 0.17


def test_info_table_lists_every_component(phi3_info):
    table = info_table(phi3_info)
    for name in phi3_info["components"]:
        assert name in table
    assert "total" in table and "x-sam-phi3" in table


def test_info_macs_grow_with_the_text(phi3_info):
    tiny_short = info_json(TINY, text_tokens=8)
    tiny_long = info_json(TINY, text_tokens=64)
    assert tiny_long["components"]["llm"]["macs"] > tiny_short["components"]["llm"]["macs"]
    assert tiny_long["components"]["seg_encoder"] == tiny_short["components"]["seg_encoder"]
    assert tiny_long["total_params"] == _count(build_model(TINY))


# -- presets and config files --------------------------------------------------------------------------------


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown preset 'x-sam-phi4'") as info:
        get_preset("x-sam-phi4")
    for name in PRESETS:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="known presets"):
        build_model("nope")
    with pytest.raises(ValueError):
        get_preset("X-SAM-PHI3")  # exact names only


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_dict_round_trip(name):
    config = get_preset(name)
    data = config.to_dict()
    assert data["schema_version"] == SCHEMA_VERSION
    assert XSamConfig.from_dict(data) == config
    # through JSON text, where tuples become lists
    again = XSamConfig.from_dict(json.loads(config.to_json()))
    assert again == config
    assert isinstance(again.seg_encoder.global_attn_indexes, tuple)
    assert isinstance(again.connector.scale_factors, tuple)


def test_config_round_trip_without_global_encoder():
    import dataclasses

    config = dataclasses.replace(TINY, global_encoder=None, name="no-siglip")
    again = XSamConfig.from_dict(json.loads(config.to_json()))
    assert again == config and again.global_encoder is None and again.num_image_tokens == 16


def test_newer_schema_version_is_refused():
    data = TINY.to_dict()
    data["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(ValueError, match=f"schema version {SCHEMA_VERSION + 1} is newer.*upgrade"):
        XSamConfig.from_dict(data)
    data["schema_version"] = SCHEMA_VERSION
    assert XSamConfig.from_dict(data) == TINY


def test_unknown_config_field_is_refused():
    data = TINY.to_dict()
    data["decoder"]["num_querys"] = 3
    with pytest.raises(ValueError, match=r"unknown DecoderConfig fields \['num_querys'\]"):
        XSamConfig.from_dict(data)


def test_inconsistent_config_is_refused():
    import dataclasses

    with pytest.raises(ValueError, match="connector.in_channels"):
        dataclasses.replace(TINY, connector=dataclasses.replace(TINY.connector, in_channels=64))
    with pytest.raises(ValueError, match="region_sampler"):
        dataclasses.replace(TINY, region_sampler="mean")
    with pytest.raises(ValueError, match="SAM tap"):
        dataclasses.replace(TINY.seg_encoder, projector_layer=9)
