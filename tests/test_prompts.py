import subprocess
import sys

import numpy as np
import pytest

from xsam_edge.spec.config import TokenConfig
from xsam_edge.spec.prompts import (
    GCG_QUESTION,
    TEMPLATES,
    ChatTemplate,
    answer_for,
    build_prompt,
    build_question,
    build_request_prompt,
    get_template,
    image_prefix,
    is_generate_task,
)
from xsam_edge.spec.types import Box, Point, SegmentationRequest, Task

FIELDS = {"text": "the red circle", "categories": ["red circle", "square", "blue star"], "num_regions": 2}


def test_referring_prompt_matches_upstream_eval_string():
    prompt = build_prompt(Task.REFERRING, text="the red circle")
    assert prompt == (
        "<|user|>\n<image>\nCan you segment <p>the red circle</p> in this image? "
        "Please output the corresponding segmentation mask.<|end|>\n<|assistant|>\nSure, it is <SEG>.<|end|>"
    )


def test_reasoning_prompt():
    prompt = build_prompt(Task.REASONING, text="which shape is the biggest?", with_answer=False)
    assert prompt == (
        "<|user|>\n<image>\n<p>which shape is the biggest?</p> Please output the corresponding segmentation "
        "mask.<|end|>\n<|assistant|>\n"
    )


@pytest.mark.parametrize("task", [Task.PANOPTIC, Task.INSTANCE, Task.SEMANTIC, Task.OPEN_VOCABULARY])
def test_category_prompt(task):
    prompt = build_prompt(task, categories=["red circle", " square "])
    assert prompt == (
        "<|user|>\n<image>\nCan you segment the image based on the following categories: <p>red circle</p>, "
        "<p>square</p>? Please output the segmentation masks.<|end|>\n<|assistant|>\nSure, <SEG>.<|end|>"
    )


@pytest.mark.parametrize("task", [Task.INTERACTIVE, Task.VISUAL_GROUNDED])
def test_region_prompt(task):
    question = build_question(task, num_regions=3)
    assert question == (
        "Can you segment the image based on the following regions: <p><region></p>, <p><region></p>, "
        "<p><region></p>? Please output the segmentation masks."
    )
    assert build_prompt(task, num_regions=1).endswith("Sure, <SEG>.<|end|>")


def test_generate_tasks_end_with_assistant_header():
    assert build_prompt(Task.GCG) == f"<|user|>\n<image>\n{GCG_QUESTION}<|end|>\n<|assistant|>\n"
    assert build_prompt(Task.CHAT, text="How many stars? ") == (
        "<|user|>\n<image>\nHow many stars? <|end|>\n<|assistant|>\n"
    )
    assert build_question(Task.GCG, text="Describe it briefly.") == "Describe it briefly."
    assert is_generate_task("gcg") and is_generate_task(Task.CHAT)
    assert not is_generate_task(Task.REFERRING)


def test_answers():
    assert answer_for(Task.REFERRING) == answer_for("reasoning") == "Sure, it is <SEG>."
    for task in (Task.PANOPTIC, Task.OPEN_VOCABULARY, Task.INTERACTIVE, Task.VISUAL_GROUNDED):
        assert answer_for(task) == "Sure, <SEG>."
    assert answer_for(Task.GCG) is None and answer_for(Task.CHAT) is None
    assert answer_for(Task.REFERRING, TokenConfig(seg="[SEG]")) == "Sure, it is [SEG]."


def test_with_answer_false_stops_at_assistant_header():
    for task in Task:
        for name in TEMPLATES:
            prompt = build_prompt(task, template=name, with_answer=False, **FIELDS)
            assert prompt.endswith(get_template(name).instruction.split("{input}")[1])


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_image_prefix_is_a_string_prefix_of_every_prompt(name):
    prefix = image_prefix(name)
    assert prefix.endswith("<image>\n")
    assert prefix.count("<image>") == 1
    for task in Task:
        assert build_prompt(task, template=name, **FIELDS).startswith(prefix)


def test_templates_and_registry():
    assert set(TEMPLATES) == {"phi3_chat", "qwen_chat", "plain"}
    assert image_prefix("phi3_chat") == "<|user|>\n<image>\n"
    assert image_prefix("qwen_chat") == "<|im_start|>user\n<image>\n"
    assert get_template("phi3_chat").stop_word == "<|end|>"
    assert get_template("qwen_chat").stop_word == "<|im_end|>"
    qwen = build_prompt(Task.REFERRING, text="x", template="qwen_chat")
    assert qwen.endswith("<|im_end|>\n<|im_start|>assistant\nSure, it is <SEG>.<|im_end|>")
    plain = build_prompt(Task.PANOPTIC, categories=["a"], template="plain")
    assert plain.startswith("<|user|> <image>\n") and plain.endswith("<|assistant|> Sure, <SEG>. <|end|>")
    custom = ChatTemplate("mine", "U: {input}\nA: ", "\n", ("\n",), system="SYS\n")
    assert get_template(custom) is custom
    assert build_prompt(Task.CHAT, text="hi", template=custom) == "SYS\nU: <image>\nhi\nA: "
    assert image_prefix(custom) == "SYS\nU: <image>\n"
    with pytest.raises(ValueError, match="known templates: phi3_chat, plain, qwen_chat"):
        get_template("vicuna")
    with pytest.raises(ValueError, match="exactly once"):
        ChatTemplate("bad", "no field", "", ("x",))


def test_braces_in_user_text_are_kept():
    assert "<p>a {input} b</p>" in build_prompt(Task.REFERRING, text="a {input} b")


@pytest.mark.parametrize(
    ("task", "kwargs", "match"),
    [
        (Task.REFERRING, {}, "non-empty text"),
        (Task.REASONING, {"text": "  "}, "non-empty text"),
        (Task.CHAT, {"text": ""}, "non-empty text"),
        (Task.PANOPTIC, {}, "category names"),
        (Task.SEMANTIC, {"categories": ["a", " "]}, "category names"),
        (Task.INTERACTIVE, {}, "num_regions >= 1"),
        (Task.REFERRING, {"text": "the <p>red</p> circle"}, "reserved marker"),
        (Task.CHAT, {"text": "look <image>"}, "reserved marker"),
        (Task.INSTANCE, {"categories": ["<SEG>"]}, "reserved marker"),
    ],
)
def test_errors(task, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_prompt(task, **kwargs)


def test_unused_fields_are_ignored_and_task_names_work():
    assert build_prompt("referring", text="x", categories=["y"], num_regions=4) == build_prompt(
        Task.REFERRING, text="x"
    )
    with pytest.raises(ValueError):
        build_prompt("segment-everything")


def test_request_prompt():
    image = np.zeros((8, 8, 3), np.uint8)
    request = SegmentationRequest(image, Task.VISUAL_GROUNDED, prompts=[Point(1, 1), Box(0, 0, 4, 4)])
    assert build_request_prompt(request) == build_prompt(Task.VISUAL_GROUNDED, num_regions=2)
    request = SegmentationRequest(image, "panoptic", categories=["a", "b"])
    assert build_request_prompt(request, with_answer=False) == build_prompt(
        Task.PANOPTIC, categories=["a", "b"], with_answer=False
    )


def test_spec_modules_import_no_torch_or_transformers():
    code = (
        "import sys, xsam_edge.spec.prompts, xsam_edge.spec.tokenizer; "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
