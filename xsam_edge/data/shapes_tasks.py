"""Examples of every task from one "shapes" scene: texts, visual prompts and ground truth.

Referring and reasoning texts (:mod:`xsam_edge.data.shapes_expressions`) pick out exactly one object;
visual prompts are made the upstream way (XSAM.md §1.6) but deterministically from the generator. No torch
here; :mod:`xsam_edge.data.shapes` is the public entry point.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from xsam_edge.data.sample import Example, Target
from xsam_edge.data.shapes_expressions import (
    EDGES,
    MAX_ATTEMPTS,
    NOUNS,
    RELATION_MARGIN,
    RELATIONS,
    SIZE_WORDS,
    SUPERLATIVES,
    Desc,
    desc_words,
    make_reasoning,
    make_referring,
    relation_offset,
    select,
    unique_desc,
)
from xsam_edge.data.shapes_prompts import PROMPT_KINDS, make_prompt
from xsam_edge.data.shapes_scene import (
    CATEGORIES,
    COLOUR_NAMES,
    OPEN_VOCAB_HELD_OUT,
    PLURALS,
    SEEN_THING_CLASSES,
    STUFF_CLASSES,
    THING_CLASSES,
    Scene,
    ShapeObject,
    SuiteConfig,
)
from xsam_edge.spec.prompts import answer_for
from xsam_edge.spec.types import SegmentationRequest, Task

# Every fixed phrase the texts below are built from (fillers are the class, colour and size names).
TEXT_FRAGMENTS: tuple[str, ...] = (
    "the shape with the most corners",
    "the shape with the fewest corners",
    "the shape with no corners",
    "the shape with corners",
    "the largest object",
    "the smallest object",
    "the object closest to the center",
    "the only object",
    "the object with the same colour as the",
    "the shape with a hole",
    "the that is not",
    "how many are there?",
    "how many objects are there?",
    "there are no . there is 1 . there are objects . there is 1 object .",
    "what colour is the?",
    "it is .",
    "what shape is the object? it is a .",
    "is there a? yes . no .",
    "where is the? it is at the top bottom left right center .",
    "what is the background? it is and .",
    "<p>a an</p> on a background . And <SEG>.",
    "<p>a</p> is <p>a</p>",
    "<p>a</p> , <p>a</p> and <p>a</p> from left to right",
    "Sure, it is <SEG>.",
    "Sure, <SEG>.",
)


def suite_vocabulary() -> list[str]:
    """Every word the suite can emit in a request text, category or answer (lowercase), plus 0–20.

    Words are split the way the word-level tokenizer splits them (whitespace, then each punctuation
    character alone); ``<SEG>``, ``<p>`` and ``</p>`` are special tokens and not listed.

    Returns:
        list[str]: sorted unique words.
    """
    texts = list(TEXT_FRAGMENTS)
    texts += list(CATEGORIES) + list(PLURALS.values()) + list(COLOUR_NAMES)
    texts += list(SIZE_WORDS) + list(SUPERLATIVES) + list(NOUNS) + list(RELATIONS.values()) + list(EDGES)
    texts += [str(n) for n in range(21)]
    words: set[str] = set()
    for text in texts:
        words.update(_words(text))
    return sorted(words)


def _words(text: str) -> list[str]:
    text = re.sub(r"<SEG>|</?p>", " ", text)
    return re.findall(r"\w+|[^\w\s]", text.lower())


_HELD_OUT_RE = re.compile(r"\b(" + "|".join(OPEN_VOCAB_HELD_OUT) + r")s?\b", re.IGNORECASE)


# -- examples --------------------------------------------------------------------------------------


def scene_examples(
    scene: Scene,
    rng: np.random.Generator,
    image_id: str,
    source: str,
    config: SuiteConfig,
    index: int | None = None,
) -> list[Example]:
    """One :class:`Example` per task in ``config.tasks`` (in that order), all sharing ``scene.image``.

    A task is skipped only when it is impossible: referring and reasoning after :data:`MAX_ATTEMPTS` tries
    without a unique referent, open-vocabulary in scenes without held-out shapes allowed (train). Each
    task draws from its own generator derived from ``rng``, so the tasks chosen do not change the others.

    Args:
        scene (Scene): the scene from :func:`make_scene`.
        rng (np.random.Generator): randomness for texts and prompts (one draw is taken from it).
        image_id (str): the id shared by the examples.
        source (str): the dataset name, e.g. ``"shapes:val"``.
        config (SuiteConfig): which tasks to make.
        index (int | None): the image's index in its split; the visual prompt kind cycles with it
            (point, scribble, box, mask). ``None`` draws the kind at random.

    Returns:
        list[Example]: the examples; ``meta`` holds ``unseen`` (a held-out class is involved) and per task
        ``query`` (referring, reasoning), ``prompt_kind`` (interactive, visual-grounded), ``held_out``
        (open-vocabulary) or ``chat_kind``.
    """
    base = int(rng.integers(2**62))
    cycle = int(rng.integers(4)) if index is None else int(index)
    examples = []
    for task in config.tasks:
        task_rng = np.random.default_rng([base, list(Task).index(task)])
        made = _MAKERS[task](scene, task_rng, cycle)
        if made is None:
            continue
        request_kw, masks, label_ids, answer, meta, involved = made
        is_thing = request_kw.pop("is_thing", None)
        h, w = scene.hw
        target = Target(
            masks=np.stack(masks).astype(bool) if masks else np.zeros((0, h, w), dtype=bool),
            label_ids=np.asarray(label_ids, dtype=np.int64),
            is_thing=is_thing,
            answer=answer,
        )
        request = SegmentationRequest(image=scene.image, task=task, **request_kw)
        texts = " ".join([request.text or "", answer or "", *request.categories])
        meta["unseen"] = any(n in OPEN_VOCAB_HELD_OUT for n in involved) or bool(_HELD_OUT_RE.search(texts))
        examples.append(Example(request, target, image_id, source, meta))
    return examples


# (request fields, target masks, label ids, answer, meta, class names involved) or None when impossible
_Made = tuple[dict, list[np.ndarray], list[int], str | None, dict, list[str]] | None
_Maker = Callable[[Scene, np.random.Generator, int], _Made]


_Finder = Callable[[Scene, np.random.Generator], tuple[str, int, dict] | None]


def _text_task(task: Task, maker: _Finder) -> _Maker:
    def make(scene: Scene, rng: np.random.Generator, cycle: int) -> _Made:
        found = maker(scene, rng)
        if found is None:
            return None
        text, i, query = found
        obj = scene.objects[i]
        return {"text": text}, [obj.mask], [0], answer_for(task), {"query": query}, [obj.shape]

    return make


def _shuffled(rng: np.random.Generator, items: Sequence[str]) -> list[str]:
    return [items[k] for k in rng.permutation(len(items))]


def _category_list(rng: np.random.Generator, present: list[str], pool: Sequence[str]) -> list[str]:
    """``present`` plus 0–2 absent classes from ``pool``, shuffled."""
    absent = [c for c in pool if c not in present]
    k = min(int(rng.integers(0, 3)), len(absent))
    negatives = [absent[i] for i in rng.choice(len(absent), size=k, replace=False)] if k else []
    return _shuffled(rng, present + negatives)


def _allowed_things(scene: Scene) -> tuple[str, ...]:
    return THING_CLASSES if scene.allow_held_out else SEEN_THING_CLASSES


def _make_generic(task: Task) -> _Maker:
    def make(scene: Scene, rng: np.random.Generator, cycle: int) -> _Made:
        things = list(dict.fromkeys(o.shape for o in scene.objects))
        stuff = [s.name for s in scene.stuff]
        meta: dict = {}
        if task is Task.OPEN_VOCABULARY:
            if not scene.allow_held_out:
                return None
            categories = _category_list(rng, things + stuff, THING_CLASSES + STUFF_CLASSES)
            missing = [c for c in OPEN_VOCAB_HELD_OUT if c not in categories]
            if len(missing) == len(OPEN_VOCAB_HELD_OUT):  # make sure a held-out name is asked for
                extra = missing[int(rng.integers(len(missing)))]
                categories.insert(int(rng.integers(len(categories) + 1)), extra)
            meta["held_out"] = [c for c in categories if c in OPEN_VOCAB_HELD_OUT]
        elif task is Task.INSTANCE:
            categories = _category_list(rng, things, _allowed_things(scene))
        else:
            categories = _category_list(rng, things + stuff, _allowed_things(scene) + STUFF_CLASSES)
        kw: dict = {"categories": categories}
        if task in (Task.PANOPTIC, Task.OPEN_VOCABULARY):
            masks, is_thing, names = scene.panoptic()
            kw["is_thing"] = is_thing
            masks_list = list(masks)
        elif task is Task.INSTANCE:
            masks_list, names = [o.mask for o in scene.objects], [o.shape for o in scene.objects]
        else:  # semantic: one union mask per present class, in category-list order
            names = [c for c in categories if c in things or c in stuff]
            seg_masks, _, seg_names = scene.panoptic()
            masks_list = [seg_masks[[n == c for n in seg_names]].any(axis=0) for c in names]
        label_ids = [categories.index(n) for n in names]
        return kw, masks_list, label_ids, answer_for(task), meta, list(categories)

    return make


def _kind(cycle: int, offset: int) -> str:
    return PROMPT_KINDS[(cycle + offset) % len(PROMPT_KINDS)]


def _make_interactive(scene: Scene, rng: np.random.Generator, cycle: int) -> _Made:
    kind = _kind(cycle, 0)
    n = len(scene.objects)
    k = int(rng.integers(1, min(3, n) + 1))
    chosen = [int(i) for i in rng.choice(n, size=k, replace=False)]
    prompts = [make_prompt(kind, scene.objects[i].mask, rng) for i in chosen]
    masks = [scene.objects[i].mask for i in chosen]
    meta = {"prompt_kind": kind, "objects": chosen}
    return (
        {"prompts": prompts},
        masks,
        list(range(k)),
        answer_for(Task.INTERACTIVE),
        meta,
        [scene.objects[i].shape for i in chosen],
    )


def _make_visual_grounded(scene: Scene, rng: np.random.Generator, cycle: int) -> _Made:
    kind = _kind(cycle, 1)
    objs = scene.objects
    classes = list(dict.fromkeys(o.shape for o in objs))
    counts = np.array([sum(o.shape == c for o in objs) for c in classes], dtype=float)
    k = int(rng.integers(1, min(2, len(classes)) + 1))
    picked = [classes[i] for i in rng.choice(len(classes), size=k, replace=False, p=counts / counts.sum())]
    prompts, masks, label_ids = [], [], []
    for p, cls in enumerate(picked):
        members = [i for i, o in enumerate(objs) if o.shape == cls]
        prompts.append(make_prompt(kind, objs[members[int(rng.integers(len(members)))]].mask, rng))
        masks += [objs[i].mask for i in members]
        label_ids += [p] * len(members)
    meta = {"prompt_kind": kind, "classes": picked}
    return {"prompts": prompts}, masks, label_ids, answer_for(Task.VISUAL_GROUNDED), meta, picked


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _phrase(objs: Sequence[ShapeObject], i: int) -> str:
    """``a red circle``, or ``a small red circle`` when that tells it from another red circle."""
    o = objs[i]
    if len(select(objs, (None, o.colour, o.shape))) > 1 and o.size in SIZE_WORDS:
        words = f"{o.size} {o.colour} {o.shape}"
    else:
        words = f"{o.colour} {o.shape}"
    return f"{_article(words)} {words}"


def _make_gcg(scene: Scene, rng: np.random.Generator, cycle: int) -> _Made:
    objs = scene.objects
    h, w = scene.hw
    n = len(objs)
    k = int(rng.integers(1, min(3, n) + 1))
    chosen = [int(i) for i in rng.choice(n, size=k, replace=False)]
    background = f"on a {' and '.join(s.name for s in scene.stuff)} background" if scene.stuff else ""
    spans = [f"<p>{_phrase(objs, i)}</p>" for i in chosen]
    tail = background
    if k == 2:
        a, b = objs[chosen[0]], objs[chosen[1]]
        rel = max(RELATIONS, key=lambda r: relation_offset(a, b, r))
        if relation_offset(a, b, rel) >= RELATION_MARGIN * min(h, w):
            caption = f"{spans[0]} is {RELATIONS[rel]} {spans[1]}"
            tail = ""
        else:
            caption = f"{spans[0]} and {spans[1]}"
    elif k == 3:
        chosen.sort(key=lambda i: objs[i].centroid[0])
        spans = [f"<p>{_phrase(objs, i)}</p>" for i in chosen]
        xs = [objs[i].centroid[0] for i in chosen]
        if min(xs[1] - xs[0], xs[2] - xs[1]) >= 0.05 * w:
            tail = "from left to right"
        caption = f"{spans[0]} , {spans[1]} and {spans[2]}"
    else:
        caption = spans[0]
    answer = f"{caption} {tail} . And <SEG>." if tail else f"{caption} . And <SEG>."
    masks = [objs[i].mask for i in chosen]
    return {}, masks, list(range(k)), answer, {"objects": chosen}, [objs[i].shape for i in chosen]


CHAT_KINDS: tuple[str, ...] = (
    "count_shape",
    "count_colour",
    "count_all",
    "colour_of",
    "shape_of",
    "exists",
    "where",
    "background",
)


def _count_answer(n: int, singular: str, plural: str) -> str:
    if n == 0:
        return f"there are no {plural} ."
    return f"there is 1 {singular} ." if n == 1 else f"there are {n} {plural} ."


def _make_chat(scene: Scene, rng: np.random.Generator, cycle: int) -> _Made:
    objs = scene.objects
    h, w = scene.hw
    pool = _allowed_things(scene)
    for _ in range(MAX_ATTEMPTS):
        kind = CHAT_KINDS[int(rng.integers(len(CHAT_KINDS)))]
        qa: tuple[str, str] | None = None
        if kind == "count_shape":
            shape = pool[int(rng.integers(len(pool)))]
            if rng.random() < 0.7:
                shape = objs[int(rng.integers(len(objs)))].shape
            n = sum(o.shape == shape for o in objs)
            qa = f"how many {PLURALS[shape]} are there?", _count_answer(n, shape, PLURALS[shape])
        elif kind == "count_colour":
            colour = objs[int(rng.integers(len(objs)))].colour
            n = sum(o.colour == colour for o in objs)
            qa = (
                f"how many {colour} objects are there?",
                _count_answer(n, f"{colour} object", f"{colour} objects"),
            )
        elif kind == "count_all":
            qa = "how many objects are there?", _count_answer(len(objs), "object", "objects")
        elif kind == "colour_of":
            i = int(rng.integers(len(objs)))
            for d in ((None, None, objs[i].shape), (objs[i].size, None, objs[i].shape)):
                if d[0] != "medium" and select(objs, d) == [i]:
                    qa = f"what colour is the {desc_words(d)}?", f"it is {objs[i].colour} ."
                    break
        elif kind == "shape_of":
            i = int(rng.integers(len(objs)))
            if select(objs, (None, objs[i].colour, None)) == [i]:
                qa = f"what shape is the {objs[i].colour} object?", f"it is a {objs[i].shape} ."
        elif kind == "exists":
            with_colour = rng.random() < 0.5
            if rng.random() < 0.5:
                o = objs[int(rng.integers(len(objs)))]
                shape, colour = o.shape, o.colour
            else:
                shape = pool[int(rng.integers(len(pool)))]
                colour = COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))]
            d: Desc = (None, colour if with_colour else None, shape)
            words = desc_words(d)
            qa = f"is there {_article(words)} {words}?", "yes ." if select(objs, d) else "no ."
        elif kind == "where":
            i = int(rng.integers(len(objs)))
            d = unique_desc(objs, i, None)
            cx, cy = objs[i].centroid
            fx, fy = (cx + 0.5) / w * 3, (cy + 0.5) / h * 3  # thirds; the grid lines are at 1 and 2
            if d is not None and min(abs(f - g) for f in (fx, fy) for g in (1, 2)) >= 0.12:
                row = ("top", "", "bottom")[min(int(fy), 2)]
                col = ("left", "", "right")[min(int(fx), 2)]
                where = " ".join(x for x in (row, col) if x) or "center"
                qa = f"where is the {desc_words(d)}?", f"it is at the {where} ."
        elif scene.stuff:  # background
            qa = "what is the background?", f"it is {' and '.join(s.name for s in scene.stuff)} ."
        if qa is not None:
            question, reply = qa
            empty: list[np.ndarray] = []
            return {"text": question}, empty, [], reply, {"chat_kind": kind}, []
    return None


_MAKERS = {
    Task.REFERRING: _text_task(Task.REFERRING, make_referring),
    Task.REASONING: _text_task(Task.REASONING, make_reasoning),
    Task.PANOPTIC: _make_generic(Task.PANOPTIC),
    Task.INSTANCE: _make_generic(Task.INSTANCE),
    Task.SEMANTIC: _make_generic(Task.SEMANTIC),
    Task.OPEN_VOCABULARY: _make_generic(Task.OPEN_VOCABULARY),
    Task.INTERACTIVE: _make_interactive,
    Task.VISUAL_GROUNDED: _make_visual_grounded,
    Task.GCG: _make_gcg,
    Task.CHAT: _make_chat,
}
