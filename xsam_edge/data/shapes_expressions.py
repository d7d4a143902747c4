"""Referring and reasoning expressions over a "shapes" scene: each picks out exactly one object.

Relations between objects use the centroids of their visible pixels ("A left of B": A's centroid x is
smaller), sizes use the visible area. The descriptions here also serve the chat and GCG makers of
:mod:`xsam_edge.data.shapes_tasks`. No torch here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from xsam_edge.data.shapes_scene import Scene, ShapeObject

RELATIONS: dict[str, str] = {"left": "left of", "right": "right of", "above": "above", "below": "below"}
EDGES: tuple[str, ...] = ("top", "bottom", "left", "right")
SUPERLATIVES: tuple[str, ...] = ("largest", "smallest")
SIZE_WORDS: tuple[str, ...] = ("small", "large")  # "medium" is never said
NOUNS: tuple[str, ...] = ("shape", "object")

RELATION_MARGIN = 0.08  # of min(H, W): how far apart centroids must be for a relation to be stated
AREA_RATIO = 1.3  # a superlative's winner must be this much larger (or smaller) than the runner-up
EDGE_MARGIN = 0.06  # of the image side: lead of the object closest to an edge or the centre
MAX_ATTEMPTS = 32


# -- descriptions ----------------------------------------------------------------------------------

Desc = tuple[str | None, str | None, str | None]  # (size, colour, shape); None = not said


def matches(obj: ShapeObject, desc: Desc) -> bool:
    size, colour, shape = desc
    return (
        (size is None or obj.size == size)
        and (colour is None or obj.colour == colour)
        and (shape is None or obj.shape == shape)
    )


def desc_words(desc: Desc, noun: str = "shape") -> str:
    size, colour, shape = desc
    return " ".join(w for w in (size, colour, shape or noun) if w)


def select(objects: Sequence[ShapeObject], desc: Desc) -> list[int]:
    return [i for i, o in enumerate(objects) if matches(o, desc)]


def simple_descs(obj: ShapeObject, with_size: bool) -> list[Desc]:
    """Descriptions of ``obj`` by attributes, shortest first (size only if it is said: small or large)."""
    descs: list[Desc] = [(None, None, obj.shape), (None, obj.colour, None), (None, obj.colour, obj.shape)]
    if with_size and obj.size in SIZE_WORDS:
        size = obj.size
        descs += [(size, None, obj.shape), (size, obj.colour, None), (size, obj.colour, obj.shape)]
    return descs


def unique_desc(objects: Sequence[ShapeObject], i: int, rng: np.random.Generator | None) -> Desc | None:
    """A description matching only object ``i``: a random one if ``rng`` is given, else the shortest."""
    descs = simple_descs(objects[i], with_size=True)
    if rng is not None:
        descs = [descs[k] for k in rng.permutation(len(descs))]
    for d in descs:
        if select(objects, d) == [i]:
            return d
    return None


def relation_offset(a: ShapeObject, b: ShapeObject, relation: str) -> float:
    """How far ``a`` is in direction ``relation`` of ``b`` (pixels between centroids; > 0: it holds)."""
    (ax, ay), (bx, by) = a.centroid, b.centroid
    return {"left": bx - ax, "right": ax - bx, "above": by - ay, "below": ay - by}[relation]


def extreme(values: Sequence[float], largest: bool, ratio: float | None, margin: float | None) -> int | None:
    """Index of the clear maximum (or minimum) of ``values``: ahead by ``ratio`` times or ``margin``."""
    if len(values) < 2:
        return None
    order = np.argsort(values, kind="stable")
    best, second = (order[-1], order[-2]) if largest else (order[0], order[1])
    vb, vs = float(values[best]), float(values[second])
    if ratio is not None:
        ok = vb >= ratio * vs if largest else vb * ratio <= vs
    else:
        ok = abs(vb - vs) >= (margin or 0.0)
    return int(best) if ok else None


# -- referring -------------------------------------------------------------------------------------


def make_referring(scene: Scene, rng: np.random.Generator) -> tuple[str, int, dict] | None:
    """An expression naming exactly one object: attributes, a relation to another object, or a superlative.

    Returns:
        tuple[str, int, dict] | None: (text, object index, query) where query records the parse
        (``form``, ``desc``, ``relation``, ``anchor``, ``superlative``), or ``None`` after
        :data:`MAX_ATTEMPTS` failed tries.
    """
    objs = scene.objects
    side = min(scene.hw)
    forms = ("attributes", "attributes", "size", "relation", "relation", "superlative")
    for _ in range(MAX_ATTEMPTS):
        t = int(rng.integers(len(objs)))
        form = forms[int(rng.integers(len(forms)))]
        noun = NOUNS[int(rng.integers(2))]
        if form in ("attributes", "size"):
            sized = form == "size"
            descs = [d for d in simple_descs(objs[t], with_size=sized) if (d[0] is not None) == sized]
            if not descs:  # a medium object has no size word
                continue
            d = descs[int(rng.integers(len(descs)))]
            if select(objs, d) == [t]:
                return f"the {desc_words(d, noun)}", t, {"form": form, "desc": d}
        elif form == "relation":
            descs = simple_descs(objs[t], with_size=False)
            d = descs[int(rng.integers(len(descs)))]
            others = [j for j in range(len(objs)) if j != t]
            if not others:
                continue
            a = others[int(rng.integers(len(others)))]
            anchor = unique_desc(objs, a, rng)
            rels = [r for r in RELATIONS if relation_offset(objs[t], objs[a], r) >= RELATION_MARGIN * side]
            if anchor is None or not rels:
                continue
            rel = rels[int(rng.integers(len(rels)))]
            rivals = [k for k in select(objs, d) if k != t]
            if all(relation_offset(objs[k], objs[a], rel) <= 0 for k in rivals):
                text = f"the {desc_words(d, noun)} {RELATIONS[rel]} the {desc_words(anchor, noun)}"
                return text, t, {"form": form, "desc": d, "relation": rel, "anchor": anchor}
        else:  # the group of objects sharing a shape or colour with object t, and its clear extreme
            d = [(None, None, objs[t].shape), (None, objs[t].colour, None)][int(rng.integers(2))]
            group = select(objs, d)
            sup = SUPERLATIVES[int(rng.integers(2))]
            best = extreme([objs[k].area for k in group], sup == "largest", AREA_RATIO, None)
            if best is not None:
                text = f"the {sup} {desc_words(d, noun)}"
                return text, group[best], {"form": form, "desc": d, "superlative": sup}
    return None


# -- reasoning -------------------------------------------------------------------------------------

REASONING_KINDS: tuple[str, ...] = (
    "most_corners",
    "fewest_corners",
    "no_corners",
    "n_corners",
    "largest",
    "smallest",
    "closest_edge",
    "closest_center",
    "only_colour",
    "same_colour",
    "hole",
    "not_colour",
)


def make_reasoning(scene: Scene, rng: np.random.Generator) -> tuple[str, int, dict] | None:
    """A question answered by exactly one object (corners, size, position, colour logic).

    Returns:
        tuple[str, int, dict] | None: (text, object index, query with ``kind`` and its parameters), or
        ``None`` after :data:`MAX_ATTEMPTS` failed tries.
    """
    objs = scene.objects
    h, w = scene.hw
    side = min(h, w)
    corners = [o.corners for o in objs]
    for _ in range(MAX_ATTEMPTS):
        kind = REASONING_KINDS[int(rng.integers(len(REASONING_KINDS)))]
        found: tuple[str, int, dict] | None = None
        if kind in ("most_corners", "fewest_corners"):
            best = extreme(corners, kind == "most_corners", None, 0.5)
            word = "most" if kind == "most_corners" else "fewest"
            if best is not None:
                found = f"the shape with the {word} corners", best, {}
        elif kind in ("no_corners", "n_corners"):
            n = 0 if kind == "no_corners" else corners[int(rng.integers(len(objs)))]
            hits = [i for i, c in enumerate(corners) if c == n]
            if len(hits) == 1 and (n > 0 or kind == "no_corners"):
                text = "the shape with no corners" if n == 0 else f"the shape with {n} corners"
                found = text, hits[0], {"n": n}
        elif kind in ("largest", "smallest"):
            best = extreme([o.area for o in objs], kind == "largest", AREA_RATIO, None)
            if best is not None:
                found = f"the {kind} object", best, {}
        elif kind == "closest_edge":
            edge = EDGES[int(rng.integers(4))]
            dist = [
                {"top": o.bbox[1], "bottom": h - o.bbox[3], "left": o.bbox[0], "right": w - o.bbox[2]}[edge]
                for o in objs
            ]
            best = extreme(dist, False, None, EDGE_MARGIN * (h if edge in ("top", "bottom") else w))
            if best is not None:
                found = f"the object closest to the {edge}", best, {"edge": edge}
        elif kind == "closest_center":
            dist = [math.hypot(o.centroid[0] - (w - 1) / 2, o.centroid[1] - (h - 1) / 2) for o in objs]
            best = extreme(dist, False, None, EDGE_MARGIN * side)
            if best is not None:
                found = "the object closest to the center", best, {}
        elif kind == "only_colour":
            singles = [i for i, o in enumerate(objs) if sum(p.colour == o.colour for p in objs) == 1]
            if singles:
                i = singles[int(rng.integers(len(singles)))]
                found = f"the only {objs[i].colour} object", i, {"colour": objs[i].colour}
        elif kind == "same_colour":
            t = int(rng.integers(len(objs)))
            mates = [j for j, o in enumerate(objs) if j != t and o.colour == objs[t].colour]
            if len(mates) == 1:
                a = mates[0]
                anchor = next(
                    (
                        d
                        for d in ((None, None, objs[a].shape), (objs[a].size, None, objs[a].shape))
                        if d[0] != "medium" and select(objs, d) == [a]
                    ),
                    None,
                )
                if anchor is not None:
                    text = f"the object with the same colour as the {desc_words(anchor)}"
                    found = text, t, {"anchor": anchor}
        elif kind == "hole":
            rings = select(objs, (None, None, "ring"))
            if len(rings) == 1:
                found = "the shape with a hole", rings[0], {}
        else:  # not_colour: "the circle that is not red"
            t = int(rng.integers(len(objs)))
            same = [k for k in select(objs, (None, None, objs[t].shape)) if k != t]
            colours = {objs[k].colour for k in same}
            if len(colours) == 1 and objs[t].colour not in colours:  # all others share one other colour
                colour = colours.pop()
                found = f"the {objs[t].shape} that is not {colour}", t, {"colour": colour}
        if found is not None:
            text, index, query = found
            return text, index, {"kind": kind, **query}
    return None
