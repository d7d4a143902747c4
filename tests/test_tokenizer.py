from importlib import resources

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from xsam_edge.model.presets import TINY
from xsam_edge.spec.config import TokenConfig
from xsam_edge.spec.prompts import TEMPLATES, build_prompt, image_prefix
from xsam_edge.spec.tokenizer import (
    IMAGE_TOKEN_ID,
    REGION_TOKEN_ID,
    TINY_TOKENIZER_ASSET,
    TINY_WORDS,
    WORD_SPECIAL_TOKENS,
    XSamTokenizer,
    build_word_tokenizer,
    tiny_tokenizer,
    tiny_tokenizer_json,
    write_tiny_tokenizer,
)
from xsam_edge.spec.types import CATEGORY_TASKS, PROMPT_TASKS, Task

CATEGORIES = ["red circle", "large blue square", "tiny yellow star"]
FIELDS = {"text": "the small green triangle left of the ring", "categories": CATEGORIES, "num_regions": 2}
WORD_TEMPLATES = ("phi3_chat", "plain")  # the tiny word-level vocabulary has no Qwen tokens


@pytest.fixture(scope="module")
def tiny():
    return tiny_tokenizer()


def all_prompts(template="phi3_chat"):
    prompts = {task: build_prompt(task, template=template, **FIELDS) for task in Task}
    prompts[Task.GCG] = build_prompt(Task.GCG, template=template)  # the default GCG question
    return prompts


def expected_spans(task: Task) -> int:
    if task in (Task.REFERRING, Task.REASONING):
        return 1
    if task in CATEGORY_TASKS:
        return len(CATEGORIES)
    if task in PROMPT_TASKS:
        return FIELDS["num_regions"]
    return 0


# -- tiny tokenizer ------------------------------------------------------------------------------


def test_committed_asset_matches_generator(tmp_path):
    committed = resources.files("xsam_edge").joinpath(TINY_TOKENIZER_ASSET).read_text(encoding="utf-8")
    assert committed == tiny_tokenizer_json(), "regenerate with xsam_edge.spec.tokenizer.write_tiny_tokenizer"
    out = write_tiny_tokenizer(tmp_path / "sub" / "tiny.json")
    assert out.read_text(encoding="utf-8") == committed
    assert [p.name for p in out.parent.iterdir()] == ["tiny.json"]  # no temp file left behind


def test_tiny_ids_match_tiny_preset(tiny):
    assert len(tiny) <= TINY.llm.vocab_size
    assert (tiny.pad_id, tiny.bos_id, tiny.eos_id) == (
        TINY.llm.pad_token_id,
        TINY.llm.bos_token_id,
        TINY.llm.eos_token_id,
    )
    assert [tiny.token_to_id(t) for t in WORD_SPECIAL_TOKENS] == list(range(len(WORD_SPECIAL_TOKENS)))
    assert (tiny.seg_id, tiny.phrase_start_id, tiny.phrase_end_id) == (6, 7, 8)
    assert len(tiny) == len(WORD_SPECIAL_TOKENS) + len(TINY_WORDS)


def test_markers_and_bos(tiny):
    ids = tiny.encode("<image>\nred <region>, <p><region></p>")
    assert ids[:2] == [tiny.bos_id, IMAGE_TOKEN_ID]
    assert ids.count(REGION_TOKEN_ID) == 2
    assert tiny.encode("<image>", add_bos=False) == [IMAGE_TOKEN_ID]
    assert tiny.encode("", add_bos=True) == [tiny.bos_id]
    assert tiny.encode("red", add_bos=False) == [tiny.token_to_id("red")]


def test_word_splitting_and_case(tiny):
    assert tiny.encode("Circle,circle  CIRCLE!", add_bos=False) == [
        tiny.token_to_id(w) for w in "circle , circle circle !".split()
    ]
    # added tokens match inside text without spaces
    ids = tiny.encode("<p>red circle</p><SEG>.<|end|>", add_bos=False)
    assert ids == [tiny.token_to_id(t) for t in ("<p>", "red", "circle", "</p>", "<SEG>", ".", "<|end|>")]
    assert tiny.encode("zebra", add_bos=False) == [tiny.token_to_id("<unk>")]


@pytest.mark.parametrize("template", WORD_TEMPLATES)
def test_round_trip_every_task(tiny, template):
    for task, prompt in all_prompts(template).items():
        ids = tiny.encode(prompt)
        text = tiny.decode(ids)
        assert tiny.encode(text, add_bos=False) == ids, task
        assert text.count("<image>") == 1
        assert text.count("<region>") == ids.count(REGION_TOKEN_ID)
        stripped = tiny.decode(ids, skip_special=True)
        assert all(m not in stripped for m in ("<image>", "<region>", "<p>", "<SEG>", "<s>", "<|end|>"))
    assert tiny.decode([tiny.bos_id, tiny.token_to_id("red"), tiny.token_to_id(",")]) == "<s> red,"


@pytest.mark.parametrize("template", WORD_TEMPLATES)
def test_no_unknown_words_in_any_prompt(tiny, template):
    unk = tiny.token_to_id("<unk>")
    for task, prompt in all_prompts(template).items():
        assert unk not in tiny.encode(prompt), (task, tiny.decode(tiny.encode(prompt)))


@pytest.mark.parametrize("template", WORD_TEMPLATES)
def test_image_prefix_ids_are_a_prefix_of_every_prompt(tiny, template):
    prefix = tiny.encode(image_prefix(template))
    assert prefix[-1] == IMAGE_TOKEN_ID
    for task, prompt in all_prompts(template).items():
        assert tiny.encode(prompt)[: len(prefix)] == prefix, task


def test_phrase_spans_referring(tiny):
    ids = tiny.encode(build_prompt(Task.REFERRING, text="the red circle"))
    spans = tiny.phrase_spans(ids)
    assert len(spans) == 1
    start, end = spans[0]
    assert ids[start] == tiny.phrase_start_id and ids[end] == tiny.phrase_end_id
    assert tiny.decode(ids[start : end + 1]) == "<p> the red circle </p>"
    assert tiny.seg_positions(ids) == [len(ids) - 3]  # "<SEG>", ".", "<|end|>"


def test_phrase_spans_categories_and_regions(tiny):
    ids = tiny.encode(build_prompt(Task.PANOPTIC, categories=CATEGORIES))
    spans = tiny.phrase_spans(ids)
    assert [tiny.decode(ids[s + 1 : e]) for s, e in spans] == CATEGORIES
    assert len(tiny.seg_positions(ids)) == 1
    ids = tiny.encode(build_prompt(Task.VISUAL_GROUNDED, num_regions=3))
    spans = tiny.phrase_spans(ids)
    assert [ids[s : e + 1] for s, e in spans] == [
        [tiny.phrase_start_id, REGION_TOKEN_ID, tiny.phrase_end_id]
    ] * 3


@pytest.mark.parametrize("text", ["<p>red", "red</p>", "<p>a</p></p>", "<p>a<p>b</p></p>"])
def test_unbalanced_or_nested_spans_raise(tiny, text):
    with pytest.raises(ValueError, match="unbalanced|nested"):
        tiny.phrase_spans(tiny.encode(text))


def test_generated_gcg_output_spans(tiny):
    ids = tiny.encode("<p>a red circle</p> above <p>the square</p>. and <SEG>.", add_bos=False)
    assert tiny.phrase_spans(ids) == [(0, 4), (6, 9)]
    assert tiny.seg_positions(ids) == [12]


def test_errors(tiny):
    with pytest.raises(ValueError, match="unknown negative id"):
        tiny.decode([-5])
    qwen = XSamTokenizer(Tokenizer.from_str(tiny_tokenizer_json()), TokenConfig(template="qwen_chat"))
    with pytest.raises(ValueError, match="stop word '<\\|im_end\\|>'"):
        _ = qwen.eos_id
    with pytest.raises(ValueError, match="bos_token"):
        XSamTokenizer(Tokenizer.from_str(tiny_tokenizer_json()), bos_token="<bos>")
    with pytest.raises(ValueError, match="does not exist"):
        XSamTokenizer.from_pretrained_dir("/nonexistent/tokenizer")


# -- word tokenizer builder ----------------------------------------------------------------------


def test_build_word_tokenizer_limits_and_dedup():
    tok = build_word_tokenizer(["Red", "red", "circle", ","], vocab_size=12)
    assert tok.get_vocab_size(with_added_tokens=True) == len(WORD_SPECIAL_TOKENS) + 3
    with pytest.raises(ValueError, match="exceed vocab_size"):
        build_word_tokenizer(["a", "b", "c", "d"], vocab_size=12)
    with pytest.raises(ValueError, match="split"):
        build_word_tokenizer(["don't"], vocab_size=100)
    assert len(set(TINY_WORDS)) == len(TINY_WORDS)


# -- save / load ---------------------------------------------------------------------------------


def test_save_and_reload(tiny, tmp_path):
    path = tiny.save(tmp_path / "bundle")
    assert sorted(p.name for p in path.parent.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    again = XSamTokenizer.from_file(path)
    prompt = build_prompt(Task.REFERRING, text="the red circle")
    assert again.encode(prompt) == tiny.encode(prompt)
    assert (again.bos_id, again.eos_id, again.pad_id, len(again)) == (
        tiny.bos_id,
        tiny.eos_id,
        tiny.pad_id,
        len(tiny),
    )


def _small_bpe() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<unk>", "<s>", "<|end|>", "<|user|>", "<|assistant|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [p for template in TEMPLATES for p in all_prompts(template).values()] * 5
    tok.train_from_iterator(corpus, trainer)
    return tok


def test_sentencepiece_style_unigram_keeps_the_image_prefix():
    # Metaspace with prepend_scheme="first" (SentencePiece / Phi-3 style): each piece between markers gets
    # its own leading "▁", and the newline after <image> still tokenizes alike in prefix and prompt.
    uni = Tokenizer(models.Unigram())
    uni.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    uni.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    trainer = trainers.UnigramTrainer(
        vocab_size=200,
        special_tokens=["<unk>", "<s>", "<|end|>", "<|user|>", "<|assistant|>"],
        unk_token="<unk>",
        show_progress=False,
    )
    uni.train_from_iterator(list(all_prompts().values()) * 5, trainer)
    tok = XSamTokenizer(uni, bos_token="<s>")
    prefix = tok.encode(image_prefix())
    for task, prompt in all_prompts().items():
        ids = tok.encode(prompt)
        assert ids[: len(prefix)] == prefix, task
        assert tok.decode(ids) == "<s>" + prompt
        assert len(tok.phrase_spans(ids)) == expected_spans(task), task


def test_from_pretrained_dir_adds_tokens_after_vocab(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import PreTrainedTokenizerFast

    bpe = _small_bpe()
    original = bpe.get_vocab_size(with_added_tokens=True)
    assert bpe.token_to_id("<SEG>") is None
    hf = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="<|end|>", unk_token="<unk>"
    )
    hf.save_pretrained(tmp_path / "hf")

    tok = XSamTokenizer.from_pretrained_dir(tmp_path / "hf")
    assert len(tok) == original + 3
    assert [tok.seg_id, tok.phrase_start_id, tok.phrase_end_id] == [original, original + 1, original + 2]
    assert tok.bos_id == bpe.token_to_id("<s>") and tok.eos_id == bpe.token_to_id("<|end|>")
    assert tok.pad_id == tok.eos_id  # no pad token: pad with EOS

    prefix = tok.encode(image_prefix())
    for task, prompt in all_prompts().items():
        ids = tok.encode(prompt)
        assert ids[: len(prefix)] == prefix, task
        assert tok.decode(ids, skip_special=False) == "<s>" + prompt  # byte-level BPE round-trips exactly
        assert len(tok.seg_positions(ids)) == (0 if task in (Task.GCG, Task.CHAT) else 1)
        assert len(tok.phrase_spans(ids)) == expected_spans(task), task
    spans = tok.phrase_spans(tok.encode(build_prompt(Task.PANOPTIC, categories=CATEGORIES)))
    assert len(spans) == 3

    # save → load again keeps the ids; loading a folder that already has the tokens adds nothing
    tok.save(tmp_path / "saved")
    again = XSamTokenizer.from_pretrained_dir(tmp_path / "saved")
    assert len(again) == original + 3 and again.seg_id == original and again.bos_id == tok.bos_id
