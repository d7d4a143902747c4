"""Every task end to end on the tiny preset through ``XSamPredictor``."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import IMAGE_HW, make_image

from xsam_edge.model.predictor import XSamPredictor, load_predictor
from xsam_edge.model.presets import TINY
from xsam_edge.spec.postprocess import postprocess
from xsam_edge.spec.tokenizer import TINY_WORDS, XSamTokenizer, build_word_tokenizer
from xsam_edge.spec.types import (
    Box,
    MaskPrompt,
    Point,
    Scribble,
    SegmentationRequest,
    SegmentationResult,
    Task,
)

Q = TINY.decoder.num_queries
M = TINY.mask_resolution
CATEGORIES = ["red circle", "blue square", "background"]


def _mask_prompt() -> MaskPrompt:
    mask = np.zeros(IMAGE_HW, bool)
    mask[12:36, 50:72] = True
    return MaskPrompt(mask)


# task → (request fields, number of conditions C the decoder must see)
CASES = {
    "referring": (dict(task=Task.REFERRING, text="the red circle"), 1),
    "reasoning": (dict(task=Task.REASONING, text="which shape is red ?"), 1),
    "panoptic": (dict(task=Task.PANOPTIC, categories=CATEGORIES), 3),
    "instance": (dict(task=Task.INSTANCE, categories=CATEGORIES[:2]), 2),
    "semantic": (dict(task=Task.SEMANTIC, categories=CATEGORIES), 3),
    "open_vocabulary": (dict(task=Task.OPEN_VOCABULARY, categories=["circle", "square"]), 2),
    "interactive_point": (dict(task=Task.INTERACTIVE, prompts=[Point(20, 24)]), 1),
    "interactive_scribble": (
        dict(task=Task.INTERACTIVE, prompts=[Scribble(((10, 10), (30, 30), (40, 20)))]),
        1,
    ),
    "interactive_box": (dict(task=Task.INTERACTIVE, prompts=[Box(50, 10, 75, 38)]), 1),
    "interactive_mask": (dict(task=Task.INTERACTIVE, prompts=[_mask_prompt()]), 1),
    "interactive_several": (
        dict(
            task=Task.INTERACTIVE,
            prompts=[Point(20, 24), Box(50, 10, 75, 38), _mask_prompt(), Scribble(((5, 40), (30, 44)))],
        ),
        4,
    ),
    "visual_grounded": (dict(task=Task.VISUAL_GROUNDED, prompts=[Point(20, 24), Box(50, 10, 75, 38)]), 2),
}


@pytest.fixture(scope="module")
def predictor(tiny_model, tokenizer) -> XSamPredictor:
    return XSamPredictor(tiny_model, tokenizer, seed=0, max_new_tokens=16)


def _check_result(result: SegmentationResult, hw: tuple[int, int]) -> None:
    n = len(result.labels)
    assert result.masks.dtype == np.bool_
    assert result.masks.shape == (n, *hw)
    assert result.scores.shape == (n,) and result.scores.dtype == np.float32
    assert result.label_ids.shape == (n,)
    assert np.all((result.scores >= 0) & (result.scores <= 1))


@pytest.mark.parametrize("case", list(CASES))
def test_task_end_to_end(predictor, image, case):
    fields, num_cond = CASES[case]
    request = SegmentationRequest(image, **fields)
    raw = predictor.run(request)
    assert raw.class_logits.shape == (Q, num_cond + 1)
    assert raw.mask_logits.shape == (Q, M, M)
    assert np.isfinite(raw.class_logits).all() and np.isfinite(raw.mask_logits).all()
    assert raw.num_tokens > TINY.num_image_tokens
    result = predictor.segment(request)
    _check_result(result, IMAGE_HW)
    assert result.text is None
    task = request.task
    if task in (Task.REFERRING, Task.REASONING):
        assert result.labels == [request.text] and result.label_ids.tolist() == [0]
    elif task is Task.INTERACTIVE:
        # one mask per prompt, in prompt order
        assert result.labels == [f"prompt {k}" for k in range(num_cond)]
        assert result.label_ids.tolist() == list(range(num_cond))
    elif task is Task.VISUAL_GROUNDED:
        assert all(label == f"prompt {i}" for label, i in zip(result.labels, result.label_ids, strict=True))
        assert set(result.label_ids.tolist()) <= {0, 1}
    else:
        names = request.categories
        assert all(label == names[i] for label, i in zip(result.labels, result.label_ids, strict=True))
    if task in (Task.PANOPTIC, Task.SEMANTIC, Task.OPEN_VOCABULARY):
        assert result.masks.sum(axis=0).max(initial=0) <= 1  # disjoint segments
    if task is Task.SEMANTIC:
        assert np.array_equal(result.masks.sum(axis=0), np.ones(IMAGE_HW))  # every pixel gets a class


def test_referring_result_matches_the_best_query(predictor, image):
    request = SegmentationRequest(image, Task.REFERRING, text="the red circle")
    raw = predictor.run(request)
    result = predictor.segment(request)
    logits = raw.class_logits - raw.class_logits.max(axis=1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert result.scores[0] == pytest.approx(probs[:, 0].max(), rel=1e-5)


@pytest.mark.parametrize("hw", [(48, 80), (80, 48), (33, 57)])
def test_masks_come_back_at_the_original_size(predictor, hw):
    image = make_image(hw)
    for request in (
        SegmentationRequest(image, Task.REFERRING, text="the red circle"),
        SegmentationRequest(image, Task.INTERACTIVE, prompts=[Box(2, 2, hw[1] - 3, hw[0] - 3)]),
    ):
        _check_result(predictor.segment(request), hw)


def test_gcg_generate_mode(predictor, image):
    request = SegmentationRequest(image, Task.GCG)
    result = predictor.segment(request)
    _check_result(result, IMAGE_HW)
    assert isinstance(result.text, str) and result.text
    raw = predictor.run(request)
    assert raw.text == result.text  # greedy: the same caption every time
    assert len(raw.labels) == len(result.labels)


def test_gcg_teacher_forced_answer_gives_the_phrase_mask(predictor, image):
    request = SegmentationRequest(image, Task.GCG)
    raw = predictor.run(request, answer="<p> red circle </p> . And <SEG> .")
    assert raw.labels == ["red circle"]
    assert raw.text == "red circle. and."
    assert raw.class_logits.shape == (Q, 2) and raw.mask_logits.shape == (Q, M, M)
    result = postprocess(
        Task.GCG, raw.class_logits, raw.mask_logits, raw.geometry, labels=raw.labels, text=raw.text
    )
    _check_result(result, IMAGE_HW)
    assert result.labels == ["red circle"] and result.label_ids.tolist() == [0]
    assert result.text == "red circle. and."


def test_gcg_teacher_forced_two_phrases(predictor, image):
    request = SegmentationRequest(image, Task.GCG)
    raw = predictor.run(request, answer="a <p> red circle </p> and a <p> blue square </p> . And <SEG> .")
    assert raw.labels == ["red circle", "blue square"]
    assert raw.class_logits.shape == (Q, 3)
    # the conditions come from the answer's spans: swapping the phrases swaps the class columns' inputs
    swapped = predictor.run(request, answer="a <p> blue square </p> and a <p> red circle </p> . And <SEG> .")
    assert swapped.labels == ["blue square", "red circle"]
    assert not np.allclose(swapped.class_logits[:, 0], raw.class_logits[:, 0])


def test_gcg_answer_without_seg_is_text_only(predictor, image):
    raw = predictor.run(SegmentationRequest(image, Task.GCG), answer="a red circle .")
    assert raw.class_logits is None and raw.mask_logits is None
    assert raw.text == "a red circle."


def test_gcg_truncated_generation_does_not_raise(predictor, image):
    # an answer cut inside a phrase, as max_new_tokens cuts a generated caption
    result = predictor.segment(
        SegmentationRequest(image, Task.GCG), answer="a <p> red circle </p> and <p> blue"
    )
    assert result.text is not None and "blue" in result.text


def test_chat_returns_text_and_no_masks(predictor, image):
    request = SegmentationRequest(image, Task.CHAT, text="what is in the image ?")
    raw = predictor.run(request)
    assert raw.class_logits is None and raw.mask_logits is None and raw.labels == []
    result = predictor.segment(request)
    assert result.masks.shape == (0, *IMAGE_HW) and result.labels == [] and result.scores.shape == (0,)
    assert isinstance(result.text, str) and result.text and result.text == raw.text
    # at most max_new_tokens tokens were generated (word-level tokenizer: one token per word or mark)
    assert len(predictor.tokenizer.encode(result.text, add_bos=False)) <= predictor.max_new_tokens


# -- encode once ---------------------------------------------------------------------------------------------


def test_set_image_encodes_once_and_matches_a_fresh_predictor(tiny_model, tokenizer, image, monkeypatch):
    calls = []
    original = tiny_model.encode_image

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(tiny_model, "encode_image", counting)
    predictor = XSamPredictor(tiny_model, tokenizer)
    predictor.set_image(image)
    assert len(calls) == 1
    first = SegmentationRequest(image.copy(), Task.REFERRING, text="the red circle")
    second = SegmentationRequest(image.copy(), Task.INTERACTIVE, prompts=[Box(50, 10, 75, 38)])
    cached = [predictor.run(first), predictor.run(second)]
    assert len(calls) == 1  # both requests reused the cached features
    for request, raw in zip((first, second), cached, strict=True):
        fresh = XSamPredictor(tiny_model, tokenizer).run(request)
        np.testing.assert_array_equal(raw.class_logits, fresh.class_logits)
        np.testing.assert_array_equal(raw.mask_logits, fresh.mask_logits)
    assert len(calls) == 3  # each fresh predictor encoded once
    other = image.copy()
    other[0, 0] = 0
    predictor.run(SegmentationRequest(other, Task.REFERRING, text="the red circle"))
    assert len(calls) == 4  # a different image is encoded again


# -- errors --------------------------------------------------------------------------------------------------


def test_context_overflow_is_a_clear_error(predictor, image):
    text = " ".join(["red"] * 1000)
    with pytest.raises(ValueError, match=r"context holds 512.*shorten the text"):
        predictor.run(SegmentationRequest(image, Task.REFERRING, text=text))


def test_generation_keeps_room_for_the_answer(predictor, image):
    # fits the 512 context in one prefill, but not with max_new_tokens kept for the answer
    text = " ".join(["red"] * 470)
    with pytest.raises(
        ValueError, match=r"needs 50\d tokens .*context holds 496 with 16 tokens kept for the answer"
    ):
        predictor.run(SegmentationRequest(image, Task.CHAT, text=text))


def test_tokenizer_larger_than_the_llm_vocab_is_refused(tiny_model):
    words = list(TINY_WORDS) + [f"extra{i}" for i in range(200)]
    big = XSamTokenizer(build_word_tokenizer(words, 1024), TINY.tokens, bos_token="<s>", pad_token="<pad>")
    assert len(big) > TINY.llm.vocab_size
    with pytest.raises(ValueError, match=r"tokenizer has \d+ tokens but the LLM embeds only 512"):
        XSamPredictor(tiny_model, big)


def test_load_predictor_arguments():
    with pytest.raises(ValueError, match="exactly one"):
        load_predictor()
    with pytest.raises(ValueError, match="exactly one"):
        load_predictor(model_dir="x", preset="tiny")
    with pytest.raises(ValueError, match="needs its tokenizer"):
        load_predictor(preset="x-sam-phi3")
    predictor = load_predictor(preset="tiny", seed=3)
    assert predictor.seed == 3 and predictor.model.config.name == "tiny"


# -- determinism ---------------------------------------------------------------------------------------------


def test_same_request_twice_gives_identical_results(predictor, image):
    request = SegmentationRequest(image, Task.INTERACTIVE, prompts=[Box(5, 5, 40, 40), Point(60, 20)])
    a, b = predictor.segment(request), predictor.segment(request)
    assert np.array_equal(a.masks, b.masks)
    assert np.array_equal(a.scores, b.scores) and a.labels == b.labels
    raw_a, raw_b = predictor.run(request), predictor.run(request)
    np.testing.assert_array_equal(raw_a.class_logits, raw_b.class_logits)


def test_sampler_seed_is_used(tiny_model, tokenizer, image):
    request = SegmentationRequest(image, Task.INTERACTIVE, prompts=[Box(0, 0, 80, 48)])
    seeded = [XSamPredictor(tiny_model, tokenizer, seed=s).run(request).class_logits for s in (0, 0, 1)]
    np.testing.assert_array_equal(seeded[0], seeded[1])
    assert not np.array_equal(seeded[0], seeded[2])


def test_predictor_runs_without_grad(predictor, image):
    predictor.run(SegmentationRequest(image, Task.REFERRING, text="the red circle"))
    features = predictor._image.features
    assert not features.encoded.image_tokens.requires_grad
    assert not features.decoder_inputs.mask_features.requires_grad
    assert not predictor.model.training
