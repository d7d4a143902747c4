"""The procedural "shapes" suite: determinism, exact ground truth, unique referents, prompts, vocabulary."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from xsam_edge.data.sample import Example
from xsam_edge.data.shapes import (
    CATEGORIES,
    COLOUR_NAMES,
    DEFAULT_CONFIG,
    OPEN_VOCAB_HELD_OUT,
    SPLITS,
    STUFF_CLASSES,
    THING_CLASSES,
    Scene,
    SuiteConfig,
    image_examples,
    iter_shapes,
    load_shapes,
    make_scene,
    scene_examples,
    suite_vocabulary,
)
from xsam_edge.spec.prompts import TEMPLATES, answer_for, build_question, build_request_prompt
from xsam_edge.spec.tokenizer import XSamTokenizer, build_word_tokenizer
from xsam_edge.spec.types import Box, MaskPrompt, Point, Scribble, Task

PLURAL_OF = {"cross": "crosses"}


@pytest.fixture(scope="module")
def val() -> list[Example]:
    return load_shapes("val")


def _scenes(split_index: int, n: int, config: SuiteConfig = DEFAULT_CONFIG, allow_held_out: bool = True):
    """(scene, examples) pairs made the way image_examples makes them."""
    for i in range(n):
        rng = np.random.default_rng([0, split_index, i])
        scene = make_scene(rng, config, allow_held_out)
        yield scene, scene_examples(scene, rng, f"t/{i}", "shapes:t", config, index=i)


def _same(a: list[Example], b: list[Example]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if x.task != y.task or x.request.text != y.request.text or x.target.answer != y.target.answer:
            return False
        if x.request.categories != y.request.categories or x.image_id != y.image_id:
            return False
        if not np.array_equal(x.request.image, y.request.image):
            return False
        if not np.array_equal(x.target.masks, y.target.masks):
            return False
        if not np.array_equal(x.target.label_ids, y.target.label_ids):
            return False
        for p, q in zip(x.request.prompts, y.request.prompts, strict=True):
            if isinstance(p, MaskPrompt):
                if not np.array_equal(p.mask, q.mask):
                    return False
            elif p != q:
                return False
    return True


def test_determinism_and_splits():
    a = load_shapes("val", 3)
    b = load_shapes("val", 3)
    assert _same(a, b)
    assert _same(load_shapes("val", 3, seed=1), load_shapes("val", 3, seed=1))
    assert not np.array_equal(a[0].request.image, load_shapes("val", 1, seed=1)[0].request.image)
    # image i is the same however it is read
    lazy = iter_shapes("train", start=5)
    first = [next(lazy) for _ in range(len(image_examples("train", 5)))]
    assert _same(first, image_examples("train", 5))
    # splits draw different images
    images = {split: load_shapes(split, 2)[0].request.image for split in SPLITS}
    names = list(images)
    for i, s in enumerate(names):
        for t in names[i + 1 :]:
            assert not np.array_equal(images[s], images[t]), (s, t)
    assert a[0].image_id == "val/000000" and a[0].source == "shapes:val"


def test_errors():
    with pytest.raises(ValueError, match="val-fast"):
        load_shapes("validation")
    with pytest.raises(ValueError, match="known splits"):
        next(iter_shapes("nope"))
    with pytest.raises(ValueError, match="num_images"):
        load_shapes("val-fast", SPLITS["val-fast"] + 1)
    with pytest.raises(ValueError):
        SuiteConfig(image_hw=(8, 64))
    with pytest.raises(ValueError):
        SuiteConfig(min_objects=3, max_objects=2)
    assert load_shapes("test", 0) == []


def test_every_task_in_val(val):
    tasks = {e.task for e in val}
    assert tasks == set(Task)
    per_image: dict[str, int] = {}
    for e in val:
        per_image[e.image_id] = per_image.get(e.image_id, 0) + 1
    assert len(per_image) == SPLITS["val"]
    assert max(per_image.values()) == len(Task)
    kinds = {e.meta["prompt_kind"] for e in val if e.task is Task.INTERACTIVE}
    assert kinds == {"point", "scribble", "box", "mask"}


def test_task_subset():
    config = SuiteConfig(tasks=(Task.PANOPTIC, Task.CHAT))
    examples = load_shapes("val-fast", 4, config=config)
    assert [e.task for e in examples] == [Task.PANOPTIC, Task.CHAT] * 4
    # the other tasks do not shift a task's randomness
    full = [e for e in load_shapes("val-fast", 4) if e.task in config.tasks]
    assert _same(examples, full)


def _check_panoptic(scene: Scene, examples: list[Example]) -> None:
    h, w = scene.hw
    masks, is_thing, names = scene.panoptic()
    assert masks.shape[1:] == (h, w)
    assert (masks.sum(axis=0) == 1).all()  # every pixel in exactly one segment
    assert all(m.any() for m in masks)
    assert int(is_thing.sum()) == len(scene.objects)
    for o in scene.objects:
        assert o.area >= 0.4 * o.full_area - 1e-9 and o.area > 0
    by_task = {e.task: e for e in examples}
    for task in (Task.PANOPTIC, Task.OPEN_VOCABULARY):
        if task not in by_task:
            continue
        e = by_task[task]
        t = e.target
        assert (t.masks.sum(axis=0) == 1).all()
        assert t.is_thing is not None and t.is_thing.shape == t.label_ids.shape
        cats = e.request.categories
        assert sorted(cats[i] for i in t.label_ids) == sorted(names)
        assert len(set(cats)) == len(cats)
        assert set(names) <= set(cats) and len(cats) - len(set(names)) <= 2 + (task is Task.OPEN_VOCABULARY)
        assert e.target.answer == "Sure, <SEG>."
    sem = by_task[Task.SEMANTIC]
    cats = sem.request.categories
    assert (sem.target.masks.sum(axis=0) == 1).all()
    for m, i in zip(sem.target.masks, sem.target.label_ids, strict=True):
        union = masks[[n == cats[i] for n in names]].any(axis=0)
        assert np.array_equal(m, union)
    inst = by_task[Task.INSTANCE]
    assert len(inst.target.masks) == len(scene.objects)
    assert all(inst.request.categories[i] in THING_CLASSES for i in inst.target.label_ids)
    assert not set(inst.request.categories) & set(STUFF_CLASSES)


def test_panoptic_gt_exact():
    for scene, examples in _scenes(9, 20):
        _check_panoptic(scene, examples)
        # the image is painted from the masks: each shape's visible pixels are close to its colour
        for o in scene.objects:
            mean = scene.image[o.mask].astype(float).mean(axis=0)
            assert mean.shape == (3,)


_SIZES = ("small", "large")
_RELATIONS = {"left of": "left", "right of": "right", "above": "above", "below": "below"}


def _parse_desc(words: list[str]) -> tuple[dict, list[str]]:
    assert words[0] == "the", words
    words = words[1:]
    desc: dict = {}
    if words[0] in ("largest", "smallest"):
        desc["superlative"], words = words[0], words[1:]
    if words[0] in _SIZES:
        desc["size"], words = words[0], words[1:]
    if words[0] in COLOUR_NAMES:
        desc["colour"], words = words[0], words[1:]
    assert words[0] in THING_CLASSES or words[0] in ("shape", "object"), words
    if words[0] in THING_CLASSES:
        desc["shape"] = words[0]
    return desc, words[1:]


def _resolve(scene: Scene, text: str) -> list[int]:
    """Objects the referring expression picks out, by attribute filters and centroid comparisons."""
    objs = scene.objects

    def match(desc: dict) -> list[int]:
        return [
            i
            for i, o in enumerate(objs)
            if all(getattr(o, k) == v for k, v in desc.items() if k in ("size", "colour", "shape"))
        ]

    desc, rest = _parse_desc(text.split())
    hits = match(desc)
    if "superlative" in desc:
        areas = [objs[i].area for i in hits]
        best = max(areas) if desc["superlative"] == "largest" else min(areas)
        hits = [i for i in hits if objs[i].area == best]
        assert len(match({k: v for k, v in desc.items() if k != "superlative"})) >= 2
    if rest:
        phrase = " ".join(rest[:2]) if rest[0] in ("left", "right") else rest[0]
        rel = _RELATIONS[phrase]
        anchor_desc, tail = _parse_desc(rest[len(phrase.split()) :])
        assert not tail
        anchors = match(anchor_desc)
        assert len(anchors) == 1, (text, anchors)
        a = objs[anchors[0]].centroid
        sign = {"left": (0, -1), "right": (0, 1), "above": (1, -1), "below": (1, 1)}[rel]
        hits = [i for i in hits if sign[1] * (objs[i].centroid[sign[0]] - a[sign[0]]) > 0]
    return hits


def test_referring_expressions_are_unique():
    seen_forms = set()
    for scene, examples in _scenes(7, 40):
        for e in examples:
            if e.task is not Task.REFERRING:
                continue
            hits = _resolve(scene, e.request.text)
            assert len(hits) == 1, (e.request.text, hits)
            assert np.array_equal(e.target.masks[0], scene.objects[hits[0]].mask)
            assert e.target.answer == "Sure, it is <SEG>." and e.target.label_ids.tolist() == [0]
            seen_forms.add(e.meta["query"]["form"])
    assert seen_forms == {"attributes", "size", "relation", "superlative"}


def test_reasoning_targets_one_object():
    kinds = set()
    for scene, examples in _scenes(8, 40):
        for e in examples:
            if e.task is not Task.REASONING:
                continue
            q = e.meta["query"]
            kinds.add(q["kind"])
            hit = [i for i, o in enumerate(scene.objects) if np.array_equal(o.mask, e.target.masks[0])]
            assert len(hit) == 1
            o = scene.objects[hit[0]]
            others = [p for p in scene.objects if p is not o]
            if q["kind"] == "only_colour":
                assert all(p.colour != o.colour for p in others)
            elif q["kind"] == "most_corners":
                assert all(p.corners < o.corners for p in others)
            elif q["kind"] == "largest":
                assert all(p.area < o.area for p in others)
            elif q["kind"] == "no_corners":
                assert o.corners == 0 and all(p.corners for p in others)
    assert len(kinds) >= 8


def test_visual_prompts_inside(val):
    for e in val:
        if e.task not in (Task.INTERACTIVE, Task.VISUAL_GROUNDED):
            continue
        h, w = e.request.image_size
        kind = e.meta["prompt_kind"]
        assert {Point: "point", Scribble: "scribble", Box: "box", MaskPrompt: "mask"}[
            type(e.request.prompts[0])
        ] == kind
        assert all(type(p) is type(e.request.prompts[0]) for p in e.request.prompts)
        assert sorted(set(e.target.label_ids.tolist())) == list(range(len(e.request.prompts)))
        if e.task is Task.INTERACTIVE:
            assert len(e.target.masks) == len(e.request.prompts) <= 3
        for k, p in enumerate(e.request.prompts):
            target = e.target.masks[e.target.label_ids == k].any(axis=0)
            if isinstance(p, Point):
                assert 0 <= p.x < w and 0 <= p.y < h and target[int(p.y), int(p.x)]
            elif isinstance(p, Scribble):
                assert 2 <= len(p.points) <= 4
                assert all(0 <= x < w and 0 <= y < h and target[int(y), int(x)] for x, y in p.points)
            elif isinstance(p, Box):
                assert 0 <= p.x0 < p.x1 <= w and 0 <= p.y0 < p.y1 <= h
                ys, xs = np.nonzero(target)
                # the jittered box overlaps the object's box
                assert p.x0 < xs.max() + 1 and p.x1 > xs.min() and p.y0 < ys.max() + 1 and p.y1 > ys.min()
            else:
                assert p.mask.shape == (h, w) and p.mask.dtype == bool
                # blurred and thresholded at the mean: one instance and a margin of a few pixels
                assert any(_covers(p.mask, m) for m in e.target.masks[e.target.label_ids == k])


def _covers(prompt: np.ndarray, obj: np.ndarray, margin: int = 8) -> bool:
    ys, xs = np.nonzero(obj)
    pys, pxs = np.nonzero(prompt)
    return bool(
        (prompt & obj).sum() >= 0.9 * obj.sum()
        and pxs.min() >= xs.min() - margin
        and pxs.max() <= xs.max() + margin
        and pys.min() >= ys.min() - margin
        and pys.max() <= ys.max() + margin
    )


def test_visual_grounded_targets_all_instances():
    for scene, examples in _scenes(6, 20):
        e = next(e for e in examples if e.task is Task.VISUAL_GROUNDED)
        for k, cls in enumerate(e.meta["classes"]):
            masks = e.target.masks[e.target.label_ids == k]
            assert len(masks) == sum(o.shape == cls for o in scene.objects)


def test_open_vocabulary_split(val):
    held = set(OPEN_VOCAB_HELD_OUT)
    words_re = re.compile(r"\w+")
    train = load_shapes("train", 40)
    assert not any(e.task is Task.OPEN_VOCABULARY for e in train)
    for e in train:
        assert not held & set(e.request.categories)
        for text in (e.request.text or "", e.target.answer or ""):
            assert not held & set(words_re.findall(text)), text
            assert "hexagons" not in text and "rings" not in text
        assert not e.meta["unseen"]
    for scene, _ in _scenes(0, 40, allow_held_out=False):
        assert not held & {o.shape for o in scene.objects}
    ov = [e for e in val if e.task is Task.OPEN_VOCABULARY]
    assert len(ov) == SPLITS["val"]
    assert all(held & set(e.request.categories) for e in ov)
    # held-out shapes do occur, with masks, in val
    labelled = [e.request.categories[i] for e in ov for i in e.target.label_ids]
    assert held <= set(labelled)
    assert any(e.meta["unseen"] for e in val if e.task is Task.REFERRING)


@pytest.mark.parametrize("hw", [(96, 160), (160, 64), (37, 41)])
def test_non_square(hw):
    config = SuiteConfig(image_hw=hw, max_objects=4)
    for scene, examples in _scenes(5, 4, config):
        assert scene.image.shape == (*hw, 3) and scene.image.dtype == np.uint8
        _check_panoptic(scene, examples)
        for e in examples:
            assert e.target.masks.shape[1:] == hw
            assert e.request.image_size == hw


def test_gcg_and_chat(val):
    for e in val:
        if e.task is Task.GCG:
            assert e.request.text is None
            spans = re.findall(r"<p>(.*?)</p>", e.target.answer)
            assert 1 <= len(spans) == len(e.target.masks) <= 3
            assert e.target.label_ids.tolist() == list(range(len(spans)))
            assert e.target.answer.endswith(" . And <SEG>.")
        elif e.task is Task.CHAT:
            assert e.request.text.endswith("?") and e.target.masks.shape == (0, *e.request.image_size)
            assert e.target.answer.endswith(" .") and "<SEG>" not in e.target.answer
        elif e.task in (Task.REFERRING, Task.REASONING):
            assert e.target.answer == answer_for(e.task)
    replies = {e.target.answer for e in val if e.task is Task.CHAT}
    assert "yes ." in replies or "no ." in replies


def _template_words() -> list[str]:
    """Every word of the prompts.py templates and questions (placeholders filled with suite words)."""
    texts = []
    for task in Task:
        text = None if task is Task.GCG else "circle"
        texts.append(build_question(task, text=text, categories=["circle"], num_regions=1))
        texts.append(answer_for(task) or "")
    for template in TEMPLATES.values():
        texts += [template.instruction, template.suffix, template.system]
    words = []
    for text in texts:
        text = re.sub(r"<\|?/?[A-Za-z_]+\|?>", " ", text)  # special tokens and markers
        words += re.findall(r"\w+|[^\w\s]", text.lower())
    return list(dict.fromkeys(words))


def test_vocabulary_covers_every_text():
    vocab = suite_vocabulary()
    assert vocab == sorted(set(vocab)) and all(w == w.lower() for w in vocab)
    assert {str(n) for n in range(21)} <= set(vocab)
    assert set(CATEGORIES) <= set(vocab)
    backend = build_word_tokenizer(vocab + _template_words(), 512)
    tok = XSamTokenizer(backend, bos_token="<s>", pad_token="<pad>")
    unk = backend.token_to_id("<unk>")
    examples = load_shapes("train", 100) + load_shapes("test", 100)
    for e in examples:
        for template in ("phi3_chat", "plain"):
            prompt = build_request_prompt(e.request, template=template, with_answer=False)
            ids = tok.encode(prompt + (e.target.answer or ""))
            assert unk not in ids, (prompt, e.target.answer, tok.decode(ids))
        if e.task is Task.GCG:
            ids = tok.encode(e.target.answer, add_bos=False)
            assert len(tok.phrase_spans(ids)) == len(e.target.masks)
            assert len(tok.seg_positions(ids)) == 1


def test_generation_speed_sanity():
    start = time.perf_counter()
    n = 50
    count = sum(len(image_examples("train", i)) for i in range(1000, 1000 + n))
    rate = n / (time.perf_counter() - start)
    print(f"shapes: {n} images, {count} examples, {rate:.0f} images/s")
    assert count >= 9 * n - 5
