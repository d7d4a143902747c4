"""The students' conv seg encoder: the ViT's tap contract at real widths, fewer MACs, foldable norms."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from xsam_edge.model.build import SEG_ENCODERS, build_model, build_seg_encoder
from xsam_edge.model.conv_seg_encoder import ConvSegEncoder
from xsam_edge.model.info import info_json
from xsam_edge.model.presets import at_depth, get_preset
from xsam_edge.model.seg_encoder import SegEncoder
from xsam_edge.spec.config import SEG_ENCODER_KINDS, SegEncoderConfig, XSamConfig


def test_conv_encoder_hands_the_connector_the_vit_taps_at_real_width():
    """At x-sam-student-s's width (384) and 1024² input: the same (B, 64, 64, 384) taps as the ViT-S."""
    vit = at_depth(get_preset("x-sam-student-s"), encoder_layers=3).seg_encoder
    conv = dataclasses.replace(vit, kind="conv", intermediate_size=768)
    pixels = torch.randn(1, 3, 1024, 1024)
    torch.manual_seed(0)
    with torch.no_grad():
        want = build_seg_encoder(vit).eval().forward_taps(pixels)
        got = build_seg_encoder(conv).eval().forward_taps(pixels)
    assert sorted(got) == sorted(want)
    for index, tap in got.items():
        assert tap.shape == want[index].shape == (1, 64, 64, 384), index
        assert torch.isfinite(tap).all()


def test_conv_student_cuts_the_image_side_of_a_query():
    vit, conv = info_json(get_preset("x-sam-student-s")), info_json(get_preset("x-sam-student-s-conv"))
    assert conv["components"]["seg_encoder"]["macs"] < vit["components"]["seg_encoder"]["macs"] / 2.5
    assert conv["total_macs"] < vit["total_macs"]
    for part in ("seg_connector", "pixel_decoder", "llm"):  # everything downstream of the taps is unchanged
        assert conv["components"][part]["macs"] == vit["components"][part]["macs"], part


def test_kind_picks_the_module_and_round_trips_through_json():
    config = get_preset("x-sam-student-s-conv")
    assert XSamConfig.from_dict(json.loads(config.to_json())).seg_encoder.kind == "conv"
    old = json.loads(get_preset("x-sam-student-s").to_json())
    del old["seg_encoder"]["kind"]  # a config saved before the field existed means the SAM ViT
    assert XSamConfig.from_dict(old).seg_encoder.kind == "sam-vit"
    assert sorted(SEG_ENCODERS) == sorted(SEG_ENCODER_KINDS)  # the torch-free list the config checks
    assert isinstance(build_model("tiny").segmentor.encoder, SegEncoder)
    tiny_conv = dataclasses.replace(
        get_preset("tiny"), seg_encoder=dataclasses.replace(get_preset("tiny").seg_encoder, kind="conv")
    )
    assert isinstance(build_model(tiny_conv).segmentor.encoder, ConvSegEncoder)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "mobilevit"}, "unknown seg encoder kind"),
        ({"kind": "conv", "patch_size": 12}, "power of two"),
        ({"num_heads": 5}, "multiple of num_heads"),
    ],
)
def test_bad_seg_encoder_configs_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(get_preset("tiny").seg_encoder, **fields)
    with pytest.raises(ValueError, match=message):
        SegEncoderConfig(**fields)


def test_every_norm_follows_a_conv_so_export_folds_it():
    """BatchNorm right after a conv folds into it (XNNPACK, OpenVINO, ORT, Core ML): free at run time."""
    encoder = ConvSegEncoder(at_depth(get_preset("x-sam-student-s-conv")).seg_encoder)
    modules = list(encoder.modules())
    for i, module in enumerate(modules):
        if isinstance(module, torch.nn.BatchNorm2d):
            assert isinstance(modules[i - 1], torch.nn.Conv2d), i
