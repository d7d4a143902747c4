"""The real X-SAM's student presets at their real widths, token counts and resolutions, at reduced depth
(``at_depth``): what the tiny presets hide (pooling, image-token counts, shape guards, cache sizes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import every_task_requests, make_image

from xsam_edge.export.graphs import SlotConfig
from xsam_edge.model.build import build_model
from xsam_edge.model.checkpoint import from_pretrained, save_pretrained
from xsam_edge.model.predictor import XSamPredictor
from xsam_edge.model.presets import at_depth, get_preset
from xsam_edge.model.projector import Projector
from xsam_edge.spec.config import ProjectorConfig
from xsam_edge.spec.tokenizer import TINY_WORDS, XSamTokenizer, word_tokenizer
from xsam_edge.spec.types import RequestError, SegmentationRequest, Task

STUDENTS = ("x-sam-student-s", "x-sam-student-s-conv", "x-sam-student-qwen2-0.5b")
IMAGE_HW = (240, 320)


def shallow_student(name: str, seed: int = 0) -> tuple[torch.nn.Module, XSamTokenizer]:
    config = at_depth(get_preset(name))
    torch.manual_seed(seed)
    return build_model(config).eval(), word_tokenizer(config.tokens)


def test_projector_pools_a_token_sequence_as_its_square_grid():
    """SigLIP hands (B, N, C) tokens: ``visual_pool=2`` must pool them as the 24×24 grid they came from."""
    torch.manual_seed(0)
    projector = Projector(ProjectorConfig(384, 1024, pool=2)).eval()
    tokens = torch.randn(1, 576, 384)
    grid = tokens.reshape(1, 24, 24, 384)
    with torch.no_grad():
        out = projector(tokens)
        want = projector(grid)
    assert out.shape == (1, 144, 1024)
    torch.testing.assert_close(out, want)
    with pytest.raises(ValueError, match="square grid"):
        projector(torch.randn(1, 575, 384))


@pytest.mark.parametrize("name", STUDENTS)
def test_student_encodes_as_many_image_tokens_as_its_config_counts(name):
    model, _ = shallow_student(name)
    cfg = model.config
    seg = torch.zeros(1, 3, cfg.seg_encoder.image_size, cfg.seg_encoder.image_size)
    glob = torch.zeros(1, 3, cfg.global_encoder.image_size, cfg.global_encoder.image_size)
    with torch.no_grad():
        features = model.encode_image(seg, glob)
    assert features.image_tokens.shape == (1, cfg.num_image_tokens, cfg.llm.hidden_size)
    assert cfg.num_image_tokens == 208  # 12² SigLIP + 8² SAM tokens, as the preset's comment promises


@pytest.mark.slow
@pytest.mark.parametrize("name", STUDENTS)
def test_student_answers_every_task_eagerly(name):
    model, tokenizer = shallow_student(name)
    predictor = XSamPredictor(model, tokenizer, max_new_tokens=4)
    image = make_image(IMAGE_HW)
    for request in every_task_requests(image):
        result = predictor.segment(request)
        assert result.masks.shape[1:] == IMAGE_HW, request.task
        assert len(result.labels) == len(result.masks) == len(result.scores), request.task


def test_tied_student_round_trips_through_save_pretrained(tmp_path):
    """Qwen2's tied embeddings are stored once and come back under either name."""
    model, tokenizer = shallow_student("x-sam-student-qwen2-0.5b")
    save_pretrained(model, tmp_path / "m", tokenizer)
    again = from_pretrained(tmp_path / "m").eval()
    assert again.llm.lm_head.weight.data_ptr() == again.llm.get_input_embeddings().weight.data_ptr()
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        want = model.llm(input_ids=ids).logits
        got = again.llm(input_ids=ids).logits
    np.testing.assert_array_equal(got.numpy(), want.numpy())


@pytest.mark.parametrize(
    ("name", "cache"), [("x-sam-student-s", 1280), ("x-sam-phi3", 2816), ("shapes-teacher", 512)]
)
def test_kv_cache_is_sized_to_the_work_not_the_context(name, cache):
    """Image tokens + the text budget in whole prefill chunks, capped at the context: 1280 of 4096 slots for a
    student (every slot costs attention MACs on every prefill and decode step)."""
    config = get_preset(name)
    slots = SlotConfig()
    assert slots.seq_len(config) == cache
    assert slots.seq_len(config) % slots.prefill_len == 0 or cache == config.llm.max_position_embeddings
    assert SlotConfig(text_budget=64).seq_len(get_preset("x-sam-student-s")) == 320  # 208 + 64 → 5 chunks


def test_a_request_longer_than_the_sized_cache_is_refused_clearly():
    model, tokenizer = shallow_student("x-sam-student-s")
    predictor = XSamPredictor(model, tokenizer)
    predictor.engine.max_seq = SlotConfig(text_budget=64).seq_len(
        model.config
    )  # as a bundle's cache would be
    request = SegmentationRequest(make_image(IMAGE_HW), Task.PANOPTIC, categories=tuple(TINY_WORDS[:40]))
    with pytest.raises(RequestError, match="LLM context holds"):
        predictor.segment(request)
