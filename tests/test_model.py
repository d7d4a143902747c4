"""Model parts on the tiny preset: shapes, taps against transformers, pixel shuffle, region samplers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import SiglipVisionModel

from xsam_edge.model.common import pixel_shuffle
from xsam_edge.model.mask_decoder import MASKED_LOGIT
from xsam_edge.model.predictor import XSamPredictor
from xsam_edge.model.presets import TINY
from xsam_edge.model.region_sampler import sample_regions_grid, sample_regions_random
from xsam_edge.model.xsam import ImageFeatures
from xsam_edge.spec.preprocess import PreprocessSpec
from xsam_edge.spec.types import Box, SegmentationRequest, Task

CFG = TINY
SEG_GRID = CFG.seg_encoder.image_size // CFG.seg_encoder.patch_size  # 8 SAM patches a side
TOKEN_GRID = CFG.seg_token_grid  # 4 seg tokens a side after the 2x2 unshuffle
H_LLM = CFG.llm.hidden_size  # 64
D = CFG.decoder.hidden_dim  # 32
Q = CFG.decoder.num_queries  # 10
M = CFG.mask_resolution  # 16


@pytest.fixture(scope="module")
def pixels() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    seg = torch.randn(1, 3, CFG.seg_encoder.image_size, CFG.seg_encoder.image_size, generator=gen)
    glob = torch.randn(1, 3, CFG.global_encoder.image_size, CFG.global_encoder.image_size, generator=gen)
    return seg, glob


@pytest.fixture(scope="module")
def features(tiny_model, pixels) -> ImageFeatures:
    with torch.no_grad():
        return tiny_model.encode_image(*pixels)


def test_tiny_derived_sizes():
    assert (SEG_GRID, TOKEN_GRID, H_LLM, D, Q, M) == (8, 4, 64, 32, 10, 16)
    assert CFG.num_global_tokens == 16 and CFG.num_seg_tokens == 16 and CFG.num_image_tokens == 32
    assert CFG.connector.out_channels == (16, 32, 64)


# -- encoders ------------------------------------------------------------------------------------------------


def test_seg_encoder_taps_are_transformers_hidden_states(tiny_model, pixels):
    encoder = tiny_model.segmentor.encoder
    with torch.no_grad():
        taps = encoder.forward_taps(pixels[0])
        reference = encoder(pixels[0], output_hidden_states=True).hidden_states  # 1 + num_layers entries
    assert len(reference) == CFG.seg_encoder.num_layers + 1
    assert set(taps) == {CFG.seg_encoder.projector_layer, *CFG.seg_encoder.connector_layers} == {2, 3, 4}
    for index, tap in taps.items():
        assert tap.shape == (1, SEG_GRID, SEG_GRID, CFG.seg_encoder.hidden_size)
        # hidden_states[i] is the output of block i-1: the tap must be exactly that entry
        torch.testing.assert_close(tap, reference[index], rtol=0, atol=0)
    assert not torch.equal(taps[2], taps[3])


def test_global_encoder_reads_hidden_states_minus_two(tiny_model, pixels):
    glob = pixels[1]
    reference_model = SiglipVisionModel(tiny_model.visual_encoder.vision_model.config).eval()
    reference_model.vision_model.load_state_dict(tiny_model.visual_encoder.vision_model.state_dict())
    with torch.no_grad():
        tokens = tiny_model.visual_encoder(glob)
        hidden = reference_model(glob, output_hidden_states=True).hidden_states
    assert tokens.shape == (1, CFG.num_global_tokens, CFG.global_encoder.hidden_size) == (1, 16, 32)
    torch.testing.assert_close(tokens, hidden[-2], rtol=1e-5, atol=1e-6)
    assert (tokens - hidden[-1]).abs().max() > 1e-2  # not the last block


# -- projectors and connector --------------------------------------------------------------------------------


def test_projector_shapes(tiny_model, pixels):
    with torch.no_grad():
        taps = tiny_model.segmentor.encoder.forward_taps(pixels[0])
        glob = tiny_model.visual_encoder(pixels[1])
        visual = tiny_model.visual_projector(glob)
        seg = tiny_model.seg_projector(taps[CFG.seg_encoder.projector_layer])
        llm = tiny_model.llm_projector(torch.randn(1, 7, H_LLM))
    assert visual.shape == (1, 16, H_LLM)
    assert seg.shape == (1, TOKEN_GRID * TOKEN_GRID, H_LLM)  # 8x8x32 → unshuffle 4x4x128 → 16 tokens
    assert tiny_model.seg_projector.model[0].in_features == 4 * CFG.seg_encoder.hidden_size
    assert llm.shape == (1, 7, D)


def test_connector_pyramid_shapes(tiny_model, pixels):
    with torch.no_grad():
        taps = tiny_model.segmentor.encoder.forward_taps(pixels[0])
        pyramid = tiny_model.seg_connector([taps[i] for i in CFG.seg_encoder.connector_layers])
    shapes = [tuple(level.shape) for level in pyramid]
    # scale factors 2, 1, 0.5 on the 8x8 grid: finest first, channels 32/s
    assert shapes == [(1, 16, 16, 16), (1, 32, 8, 8), (1, 64, 4, 4)]
    assert shapes[0][-1] == M


def test_encode_image_layout(tiny_model, pixels, features):
    assert features.image_tokens.shape == (1, CFG.num_image_tokens, H_LLM)
    assert features.region_grid.shape == (1, H_LLM, TOKEN_GRID, TOKEN_GRID)
    assert [tuple(p.shape) for p in features.pyramid] == [(1, 16, 16, 16), (1, 32, 8, 8), (1, 64, 4, 4)]
    with torch.no_grad():
        taps = tiny_model.segmentor.encoder.forward_taps(pixels[0])
        seg = tiny_model.seg_projector(taps[CFG.seg_encoder.projector_layer])
        glob = tiny_model.visual_projector(tiny_model.visual_encoder(pixels[1]))
    # global tokens first, then seg tokens (upstream concatenation order)
    torch.testing.assert_close(features.image_tokens[:, :16], glob)
    torch.testing.assert_close(features.image_tokens[:, 16:], seg)
    # the region grid is the seg tokens laid out row-major: token r*G + c sits at (r, c)
    for r, c in ((0, 0), (1, 2), (3, 3)):
        torch.testing.assert_close(features.region_grid[0, :, r, c], seg[0, r * TOKEN_GRID + c])


def test_encode_image_needs_global_pixels(tiny_model, pixels):
    with pytest.raises(ValueError, match="global_pixels"):
        tiny_model.encode_image(pixels[0], None)


# -- decoder -------------------------------------------------------------------------------------------------


def test_decode_shapes_and_class_head(tiny_model, features):
    gen = torch.Generator().manual_seed(2)
    cond = torch.randn(1, 3, D, generator=gen)
    seg = torch.randn(1, D, generator=gen)
    valid = torch.tensor([[True, True, False]])
    with torch.no_grad():
        inputs = tiny_model.decoder_inputs(features.pyramid)
        logits, out = tiny_model.decode(inputs, seg, cond, valid)
    assert inputs.mask_features.shape == (1, CFG.decoder.mask_feature_size, M, M)
    assert len(inputs.memory) == CFG.decoder.num_feature_levels
    assert logits.shape == (1, Q, 3 + 1)
    assert out.mask_logits.shape == (1, Q, M, M)
    assert torch.all(logits[..., 2] == MASKED_LOGIT)  # padded slot
    # cosine head: |logit| <= exp(logit_scale) for real classes and the background column
    bound = float(tiny_model.segmentor.logit_scale.detach().exp()) + 1e-4
    assert logits[..., [0, 1, 3]].abs().max() <= bound
    # background column = scaled cosine with bg_embeds
    q = out.queries[0]
    bg = tiny_model.bg_embeds.weight[0]
    expected = F.cosine_similarity(q, bg[None], dim=-1) * tiny_model.segmentor.logit_scale.exp()
    torch.testing.assert_close(logits[0, :, -1], expected, rtol=1e-3, atol=1e-3)


def test_decode_seg_embed_changes_masks(tiny_model, features):
    cond = torch.randn(1, 2, D)
    valid = torch.ones(1, 2, dtype=torch.bool)
    with torch.no_grad():
        inputs = tiny_model.decoder_inputs(features.pyramid)
        _, a = tiny_model.decode(inputs, torch.zeros(1, D), cond, valid)
        _, b = tiny_model.decode(inputs, torch.ones(1, D), cond, valid)
    assert (a.mask_logits - b.mask_logits).abs().max() > 1e-3


def test_region_tokens_shapes(tiny_model, features):
    size = CFG.seg_encoder.image_size
    masks = torch.zeros(3, size, size)
    masks[0, :40, :40] = 1
    masks[1, 60:, 70:] = 1
    masks[2, 5:7, 100:102] = 1
    gen = torch.Generator().manual_seed(0)
    for sampler in ("random", "grid"):
        tokens = tiny_model.region_tokens(features.region_grid, masks, sampler, generator=gen)
        assert tokens.shape == (3, H_LLM)
        assert torch.isfinite(tokens).all()


# -- pixel shuffle -------------------------------------------------------------------------------------------


def _block_transpose(x: torch.Tensor) -> torch.Tensor:
    """Swap the row and column offsets inside every 2x2 block of a (B, H, W, C) grid."""
    b, h, w, c = x.shape
    blocks = x.reshape(b, h // 2, 2, w // 2, 2, c)  # (B, H/2, dy, W/2, dx, C)
    return blocks.transpose(2, 4).reshape(b, h, w, c)


@pytest.mark.parametrize("channels_first", [False, True])
def test_pixel_shuffle_down_then_up_is_a_lossless_round_trip(channels_first):
    """Down (0.5) then up (2) gives the input back up to a transpose inside each 2x2 block.

    The upstream X-SAM ``pixel_shuffle`` (InternVL ordering, copied exactly because the released projector
    and connector weights depend on it) packs a 2x2 block into channels as (dy, dx, c) when going down but
    unpacks channels as (dx, dy, c) when going up, so the two directions are not exact inverses: their
    composition is the within-block transpose, an involution (applying it twice is the identity).
    """
    x = torch.randn(2, 8, 6, 12)
    layout_in = x.permute(0, 3, 1, 2) if channels_first else x
    down = pixel_shuffle(layout_in, 0.5, channels_first=channels_first)
    assert down.shape == ((2, 48, 4, 3) if channels_first else (2, 4, 3, 48))
    back = pixel_shuffle(down, 2.0, channels_first=channels_first)
    back = back.permute(0, 2, 3, 1) if channels_first else back
    assert torch.equal(back, _block_transpose(x))  # every value returns, one block position off
    assert not torch.equal(back, x)
    again = pixel_shuffle(pixel_shuffle(back, 0.5), 2.0)
    assert torch.equal(again, x)  # the round trip applied twice is the identity
    # up then down: same story in channel space (the offsets of the channel groups swap)
    y = torch.randn(2, 4, 3, 48)
    y_back = pixel_shuffle(pixel_shuffle(y, 2.0), 0.5)
    assert torch.equal(pixel_shuffle(pixel_shuffle(y_back, 2.0), 0.5), y)


def test_pixel_shuffle_channel_order():
    x = torch.arange(4 * 4 * 2, dtype=torch.float32).reshape(1, 4, 4, 2)  # x[h, w, c] = 8h + 2w + c
    down = pixel_shuffle(x, 0.5)
    assert down.shape == (1, 2, 2, 8)
    # down packs block (dy, dx) into channels dy*2C + dx*C + c
    assert down[0, 0, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 8.0, 9.0, 10.0, 11.0]
    assert down[0, 1, 1].tolist() == [20.0, 21.0, 22.0, 23.0, 28.0, 29.0, 30.0, 31.0]
    up = pixel_shuffle(torch.arange(8, dtype=torch.float32).reshape(1, 1, 1, 8), 2.0)
    assert up.shape == (1, 2, 2, 2)
    # up unpacks channels dx*2C + dy*C + c
    assert up[0, :, :, 0].tolist() == [[0.0, 4.0], [2.0, 6.0]]


# -- region samplers -----------------------------------------------------------------------------------------


def _grid(c: int = 5, g: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, c, g, g, generator=torch.Generator().manual_seed(seed))


def test_grid_sampler_empty_slot_is_zero_and_one_cell_is_that_token():
    grid = _grid() - 3.0  # all-negative features: a -inf padding bug would show
    size, cell = 64, 16
    masks = torch.zeros(1, 4, size, size)
    masks[0, 1, cell : 2 * cell, 2 * cell : 3 * cell] = 1  # exactly cell (row 1, col 2)
    masks[0, 2, 50, 5] = 1  # one pixel inside cell (row 3, col 0)
    masks[0, 3, 0:cell, 0 : 2 * cell] = 1  # cells (0, 0) and (0, 1)
    out = sample_regions_grid(grid, masks)
    assert out.shape == (1, 4, 5)
    assert torch.equal(out[0, 0], torch.zeros(5))
    assert torch.equal(out[0, 1], grid[0, :, 1, 2])
    assert torch.equal(out[0, 2], grid[0, :, 3, 0])
    assert torch.equal(out[0, 3], torch.maximum(grid[0, :, 0, 0], grid[0, :, 0, 1]))


def test_random_sampler_is_reproducible_with_a_seeded_generator():
    grid = _grid()[0]
    masks = torch.zeros(2, 64, 64)
    masks[0, 3:40, 10:60] = 1
    masks[1, 30:64, 0:20] = 1
    a = sample_regions_random(grid, masks, 8, torch.Generator().manual_seed(7))
    b = sample_regions_random(grid, masks, 8, torch.Generator().manual_seed(7))
    c = sample_regions_random(grid, masks, 8, torch.Generator().manual_seed(8))
    assert a.shape == (2, 5)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)  # 8 of ~1800 pixels: another seed picks other points


def test_random_sampler_raises_on_an_empty_mask():
    masks = torch.zeros(2, 64, 64)
    masks[0, 10, 10] = 1
    with pytest.raises(ValueError, match="prompt mask 1 is empty"):
        sample_regions_random(_grid()[0], masks, 16, torch.Generator().manual_seed(0))


def test_random_sampler_uses_upstream_point_normalisation():
    # upstream: points = nonzero / size, grid_sample(2p - 1, align_corners=True): pixel x reads grid position
    # x * (G - 1) / size, a bilinear mix of the cells around it
    grid = _grid(c=3, g=4)[0]
    size = 64
    masks = torch.zeros(1, size, size)
    y, x = 40, 21
    masks[0, y, x] = 1
    out = sample_regions_random(grid, masks, 4, torch.Generator().manual_seed(0))
    gx, gy = x * 3 / size, y * 3 / size
    x0, y0 = int(gx), int(gy)
    fx, fy = gx - x0, gy - y0
    expected = (
        grid[:, y0, x0] * (1 - fx) * (1 - fy)
        + grid[:, y0, x0 + 1] * fx * (1 - fy)
        + grid[:, y0 + 1, x0] * (1 - fx) * fy
        + grid[:, y0 + 1, x0 + 1] * fx * fy
    )
    torch.testing.assert_close(out[0], expected, rtol=1e-5, atol=1e-6)


def test_random_sampler_keeps_every_pixel_of_a_small_mask():
    grid = torch.randn(2, 16, 16, generator=torch.Generator().manual_seed(3))
    size = 64
    masks = torch.zeros(1, size, size)
    masks[0, 8:16, 20:28] = 1  # 64 pixels, as many as the points drawn
    ys, xs = torch.nonzero(masks[0] > 0.5, as_tuple=True)
    points = torch.stack([xs, ys], -1).float() / size * 2 - 1
    every_pixel = F.grid_sample(grid[None], points[None, None], align_corners=True)[0, :, 0].amax(-1)
    for seed in range(5):
        out = sample_regions_random(grid, masks, 64, torch.Generator().manual_seed(seed))
        torch.testing.assert_close(out[0], every_pixel)


def test_random_vs_grid_sampler_on_box_prompts(tiny_model, tokenizer, image):
    """Measure the documented difference between the upstream random sampler and the exportable grid one.

    Tiny model, weights re-randomised (std 0.05), the test image, box prompts through the real
    preprocessing. Boxes that cover at least a token cell give cosine > 0.95; a box smaller than one cell
    is where they differ most (upstream's align_corners mapping reads up to a cell up-left of the mask).
    """
    spec = PreprocessSpec.from_config(CFG)
    predictor = XSamPredictor(tiny_model, tokenizer)
    predictor.set_image(image)
    grid = predictor._image.features.encoded.region_grid
    hw = image.shape[:2]
    boxes = {
        "left half": Box(0, 0, 40, 48),
        "red disk": Box(5, 5, 40, 40),
        "blue square": Box(44, 10, 75, 38),
        "whole image": Box(0, 0, 80, 48),
        "bottom strip": Box(10, 30, 70, 47),
        "centre 10x10": Box(20, 20, 30, 30),
        "small 4x4": Box(60, 5, 64, 9),
    }
    masks = torch.from_numpy(np.stack([spec.letterbox_mask(spec.rasterize(b, hw)) for b in boxes.values()]))
    gen = torch.Generator().manual_seed(0)
    random_tokens = tiny_model.region_tokens(grid, masks, "random", generator=gen)
    grid_tokens = tiny_model.region_tokens(grid, masks, "grid")
    cosine = F.cosine_similarity(random_tokens, grid_tokens, dim=-1)
    print("\nrandom vs grid region sampler, cosine per box prompt:")
    for name, value in zip(boxes, cosine.tolist(), strict=True):
        print(f"  {name:<14} {value:.4f}")
    large = cosine[:-1]
    print(f"  mean over boxes >= one token cell: {float(large.mean()):.4f}; min {float(large.min()):.4f}")
    assert large.min() > 0.9
    assert large.mean() > 0.95
    # the sub-cell box still points the same way, but clearly less so
    assert 0.3 < cosine[-1] < large.min()
    # the random max over bilinear samples never exceeds the max over the grid cells it mixes
    assert torch.all(random_tokens <= grid.flatten(2).amax(-1)[0] + 1e-6)


def test_grid_sampler_interactive_masks_agree_with_random(tiny_model, tokenizer, image, monkeypatch):
    """End to end: interactive box prompts answered with each sampler; report the mask IoU."""
    request = SegmentationRequest(image, Task.INTERACTIVE, prompts=[Box(5, 5, 40, 40), Box(44, 10, 75, 38)])
    with_random = XSamPredictor(tiny_model, tokenizer).segment(request)
    monkeypatch.setattr(tiny_model, "config", dataclasses.replace(CFG, region_sampler="grid"))
    with_grid = XSamPredictor(tiny_model, tokenizer).segment(request)
    assert with_random.masks.shape == with_grid.masks.shape == (2, *image.shape[:2])
    inter = (with_random.masks & with_grid.masks).sum(axis=(1, 2))
    union = (with_random.masks | with_grid.masks).sum(axis=(1, 2))
    iou = inter / np.maximum(union, 1)
    print(f"\ninteractive masks, random vs grid sampler: IoU {iou.round(4).tolist()}")
    assert iou.min() > 0.8
