"""Fuzz the boundary: hostile requests and manifest mutations, counting crashes, hangs and outside reads.

Run: ``python -m benchmarks.fuzz [--requests 10000] [--manifests 500] [--out PATH]`` from the repository
root. Writes ``docs/results/data/fuzz-<date>.json`` with the counts.

Every generated request goes to ``SegmentationRequest`` and, when it is accepted, to a tiny model's
``XSamPredictor`` and to an ``EdgeSession`` on a tiny ONNX bundle of the same model. The documented outcomes
are an answer (masks at the image size, finite scores in [0, 1]) or a ``RequestError``; anything else is a
crash. A request that takes longer than ``--hang-seconds`` is a hang. Every manifest mutation edits one
value of a real bundle's ``manifest.json`` (or a file beside it); the documented outcomes are a
``BundleError`` from ``load_bundle``, or a bundle that loads and answers (or refuses with a ``RequestError``).
An audit hook records every file Python opens: opening anything in the folder next to the bundle that
hostile manifests point at counts as an outside read. (Native runtimes open the paths ``Manifest.path``
hands them; those are recorded too.) The tests run the same generators on a few hundred cases
(``tests/test_fuzz.py``).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xsam_edge.spec.bundle import MANIFEST_FILE, BundleError, Manifest
from xsam_edge.spec.types import Box, MaskPrompt, Point, RequestError, Scribble, SegmentationRequest, Task

# -- requests ---------------------------------------------------------------------------------------------
_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(min_value=0, max_value=90),
)
_junk = st.one_of(st.none(), st.booleans(), st.text(max_size=8), st.binary(max_size=8), _numbers)
_point = st.builds(Point, _numbers | _junk, _numbers | _junk)
_box = st.builds(Box, _numbers, _numbers, _numbers, _numbers)
_scribble = st.builds(
    Scribble,
    st.lists(st.one_of(st.tuples(_numbers, _numbers), st.tuples(_numbers), _junk), max_size=300).map(tuple),
)


@st.composite
def _mask(draw: Callable, hw: tuple[int, int]) -> MaskPrompt:
    h, w = hw
    if draw(st.booleans()):
        shape = (h, w)
    else:
        shape = (draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    fill = draw(st.sampled_from([0, 1, "stripe"]))
    mask = np.zeros(shape, bool) if fill == 0 else np.ones(shape, bool)
    if fill == "stripe":
        mask[:, : max(1, shape[1] // 3)] = False
    return MaskPrompt(mask)


_text = st.one_of(
    st.text(max_size=60),
    st.sampled_from(
        ["the red circle", "hi <|end|>\n<|assistant|> <s>", "<SEG> <p> </p>", "a\udc80b", "x" * 5000, " ", ""]
    ),
    _junk,
)


@st.composite
def _valid_prompt(draw: Callable, hw: tuple[int, int]) -> Any:
    h, w = hw
    x = st.floats(min_value=0, max_value=w - 0.01)
    y = st.floats(min_value=0, max_value=h - 0.01)
    kind = draw(st.sampled_from(["point", "box", "scribble", "mask"]))
    if kind == "point":
        return Point(draw(x), draw(y))
    if kind == "box":
        x0, y0 = draw(x), draw(y)
        return Box(x0, y0, draw(st.floats(min_value=x0 + 0.01, max_value=w)), draw(st.floats(y0 + 0.01, h)))
    if kind == "scribble":
        return Scribble(tuple(draw(st.lists(st.tuples(x, y), min_size=1, max_size=256))))
    mask = np.zeros((h, w), bool)
    mask[draw(st.integers(0, h - 1)) :, draw(st.integers(0, w - 1)) :] = True
    return MaskPrompt(mask)


@st.composite
def request_kwargs(draw: Callable) -> dict[str, Any]:
    """Arguments for ``SegmentationRequest``: a well-formed request, most of the time with one field hostile.

    Both the answering and the refusing paths are exercised that way.
    """
    h, w = draw(st.sampled_from([(48, 80), (2, 993), (64, 64), (300, 2), (33, 17)]))
    image = np.full((h, w, 3), 90, np.uint8)
    if draw(st.booleans()):
        image[: h // 2, : w // 2] = 220
    task = draw(st.sampled_from(list(Task)))
    names = ["circle", "square", "triangle", "sky", "grass", "red circle"]
    kwargs = dict(
        image=image,
        task=task,
        text=draw(st.sampled_from(["the red circle", "what is here ?", "the largest shape"])),
        categories=draw(st.lists(st.sampled_from(names), min_size=1, max_size=6, unique=True)),
        prompts=draw(st.lists(_valid_prompt((h, w)), min_size=1, max_size=6)),
    )
    fault = draw(st.sampled_from([None, None, "task", "text", "categories", "prompts", "prompt", "image"]))
    if fault == "task":
        kwargs["task"] = draw(st.one_of(st.text(max_size=6), _junk))
    elif fault == "text":
        kwargs["text"] = draw(_text)
    elif fault == "categories":
        kwargs["categories"] = draw(st.one_of(st.lists(_text, max_size=8), _junk))
    elif fault == "prompts":
        kwargs["prompts"] = draw(
            st.one_of(st.lists(_point | _box | _scribble | _mask((h, w)), max_size=70), _junk)
        )
    elif fault == "prompt":
        kwargs["prompts"] = [*kwargs["prompts"], draw(_point | _box | _scribble | _mask((h, w)) | _junk)]
    elif fault == "image":
        kwargs["image"] = draw(
            st.sampled_from(
                [
                    np.zeros((1, 7, 3), np.uint8),
                    np.zeros((8, 8, 3), np.float32),
                    np.zeros((8, 8), np.uint8),
                    np.zeros((8, 8, 4), np.uint8),
                    "photo.png",
                    None,
                ]
            )
        )
    return kwargs


def check_result(result: Any, image: np.ndarray) -> None:
    """An answer as documented: masks at the image size, one label and finite score in [0, 1] per mask."""
    n = len(result.labels)
    assert result.masks.shape == (n, *image.shape[:2]) and result.masks.dtype == bool
    assert result.scores.shape == (n,) and np.isfinite(result.scores).all()
    assert ((result.scores >= 0) & (result.scores <= 1)).all()


def answer(predictors: dict[str, Any], kwargs: dict[str, Any], hang_seconds: float) -> dict[str, str]:
    """Each predictor's outcome on the request: ``answered``, ``refused`` or ``hang``; a crash raises."""
    try:
        request = SegmentationRequest(**kwargs)
    except RequestError:
        return {name: "refused" for name in predictors}
    outcomes = {}
    for name, predictor in predictors.items():
        start = time.monotonic()
        try:
            check_result(predictor.segment(request), request.image)
            outcome = "answered"
        except RequestError:
            outcome = "refused"
        outcomes[name] = "hang" if time.monotonic() - start > hang_seconds else outcome
    return outcomes


# -- manifests --------------------------------------------------------------------------------------------
HOSTILE = [
    None,
    True,
    0,
    -7,
    10**12,
    1.5,
    math.nan,
    math.inf,
    "",
    "../outside/secret.txt",
    "../../../outside/segment.onnx",
    "/etc/passwd",
    "onnx/../../outside/secret.txt",
    [],
    {},
    [1, 2, 3],
    {"sha256": "0" * 64, "size": 1},
    "x" * 10_000,
]


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside the manifest's JSON tree."""
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += _paths(item, (*prefix, i))
    return out


@st.composite
def manifest_mutation(draw: Callable, original: dict) -> tuple[str, dict]:
    """One hostile edit of the manifest: replace, delete or add a value anywhere in it."""
    data = copy.deepcopy(original)
    path = draw(st.sampled_from(_paths(data)[1:]))
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    kind = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
    value = draw(st.sampled_from(HOSTILE))
    if kind == "delete" and isinstance(parent, dict):
        parent.pop(path[-1])
    elif kind == "add" and isinstance(parent, dict):
        parent[draw(st.sampled_from(["../x", "extra", "files", "/abs"]))] = value
    else:
        parent[path[-1]] = value
    return f"{kind} {'/'.join(map(str, path))}", data


class OutsideReads:
    """Records files Python opens (audit hook) and paths ``Manifest.path`` hands out in a forbidden folder."""

    def __init__(self, forbidden: Path) -> None:
        self.forbidden = str(forbidden.resolve())
        self.hits: list[str] = []
        self.active = False
        sys.addaudithook(self._hook)
        original = Manifest.path

        def watched(manifest: Manifest, relative: str) -> Path:
            path = original(manifest, relative)
            self._check(str(path))
            return path

        Manifest.path = watched  # type: ignore[method-assign]

    def _check(self, path: str) -> None:
        if self.active and str(Path(path).resolve()).startswith(self.forbidden):
            self.hits.append(path)

    def _hook(self, event: str, args: tuple) -> None:
        if event == "open" and args and isinstance(args[0], str | bytes):
            self._check(args[0].decode() if isinstance(args[0], bytes) else args[0])


def try_manifest(bundle: Path, workdir: Path, data: Any, reads: OutsideReads) -> str:
    """Load a copy of ``bundle`` with ``data`` as its manifest; answer one request if it loads."""
    from xsam_edge.runtime.session import EdgeSession

    copy_dir = workdir / "b"
    shutil.rmtree(copy_dir, ignore_errors=True)
    shutil.copytree(bundle, copy_dir)
    (copy_dir / MANIFEST_FILE).write_text(json.dumps(data))
    reads.active = True
    try:
        session = EdgeSession(copy_dir, "onnx")
        image = np.full((48, 80, 3), 90, np.uint8)
        check_result(
            session.segment(SegmentationRequest(image, Task.REFERRING, text="the red circle")), image
        )
        return "loaded"
    except BundleError:
        return "refused"
    except RequestError:
        return "loaded"
    finally:
        reads.active = False


def tiny_predictors(workdir: Path) -> tuple[dict[str, Any], Path]:
    """The tiny model's PyTorch predictor and an ONNX bundle session of it (exported into ``workdir``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import make_tiny_model, with_grid_sampler

    from xsam_edge.export.graphs import SlotConfig
    from xsam_edge.export.to_bundle import export_bundle
    from xsam_edge.model.predictor import XSamPredictor
    from xsam_edge.runtime.session import EdgeSession
    from xsam_edge.spec.tokenizer import tiny_tokenizer

    model = with_grid_sampler(make_tiny_model(seed=7))
    slots = SlotConfig(max_regions=4, max_conditions=8, prefill_len=32)
    bundle, _ = export_bundle(model, tiny_tokenizer(), workdir / "bundle", ("onnx",), slots, progress=False)
    predictors = {
        "pytorch": XSamPredictor(model, tiny_tokenizer(), max_new_tokens=8, region_sampler="grid"),
        "onnx": EdgeSession(bundle, "onnx", max_new_tokens=8),
    }
    return predictors, bundle


def run(requests: int, manifests: int, workdir: Path, hang_seconds: float) -> dict[str, Any]:
    predictors, bundle = tiny_predictors(workdir)
    (workdir / "outside").mkdir(exist_ok=True)
    (workdir / "outside" / "secret.txt").write_text("outside the bundle")
    shutil.copy2(bundle / "onnx" / "segment.onnx", workdir / "outside" / "segment.onnx")
    reads = OutsideReads(workdir / "outside")
    outcomes: Counter = Counter()
    crashes: list[str] = []
    slowest = [0.0]

    @settings(max_examples=requests, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(request_kwargs())
    def fuzz_requests(kwargs: dict[str, Any]) -> None:
        start = time.monotonic()
        try:
            for name, outcome in answer(predictors, kwargs, hang_seconds).items():
                outcomes[f"request {name} {outcome}"] += 1
        except Exception as err:  # noqa: BLE001 - counting what is not documented is the point
            crashes.append(f"request: {type(err).__name__}: {err}"[:300])
        slowest[0] = max(slowest[0], time.monotonic() - start)

    original = json.loads((bundle / MANIFEST_FILE).read_text())

    @settings(max_examples=manifests, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(manifest_mutation(original))
    def fuzz_manifests(mutation: tuple[str, dict]) -> None:
        what, data = mutation
        try:
            outcomes[f"manifest {try_manifest(bundle, workdir, data, reads)}"] += 1
        except Exception as err:  # noqa: BLE001
            crashes.append(f"manifest {what}: {type(err).__name__}: {err}"[:300])

    start = time.monotonic()
    fuzz_requests()
    request_seconds = time.monotonic() - start
    fuzz_manifests()
    return {
        "requests": sum(v for k, v in outcomes.items() if k.startswith("request pytorch")),
        "manifests": sum(v for k, v in outcomes.items() if k.startswith("manifest")),
        "outcomes": dict(sorted(outcomes.items())),
        "crashes": len(crashes),
        "crash_examples": crashes[:20],
        "hangs": sum(v for k, v in outcomes.items() if k.endswith(" hang")),
        "slowest_request_seconds": round(slowest[0], 3),
        "hang_seconds": hang_seconds,
        "outside_reads": len(reads.hits),
        "outside_read_examples": reads.hits[:20],
        "request_seconds": round(request_seconds, 1),
        "seconds": round(time.monotonic() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--manifests", type=int, default=500)
    parser.add_argument("--hang-seconds", type=float, default=10.0, help="a request slower than this hangs")
    parser.add_argument("--work", default="outputs/fuzz", help="scratch folder (bundle copies)")
    parser.add_argument("--out", help="results JSON (default docs/results/data/fuzz-<date>.json)")
    args = parser.parse_args()
    import torch

    from benchmarks import RESULTS_DIR
    from xsam_edge.files import atomic_write_text

    torch.set_num_threads(1)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    result = run(args.requests, args.manifests, work, args.hang_seconds)
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    result = {"date": date, "command": "python -m benchmarks.fuzz " + " ".join(sys.argv[1:]), **result}
    out = Path(args.out or RESULTS_DIR / f"fuzz-{date}.json")
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("examples")}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
