"""Property-based fuzzing of the boundary (issue #34): a few hundred cases here, 10 000 in benchmarks/fuzz.py.

Every generated request is answered as documented or refused with a ``RequestError``; every manifest
mutation is refused with a ``BundleError`` or loads and answers; nothing in the folder beside the bundle that
hostile manifests point at is ever opened.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402

from benchmarks.fuzz import (  # noqa: E402
    OutsideReads,
    answer,
    manifest_mutation,
    request_kwargs,
    tiny_predictors,
    try_manifest,
)
from xsam_edge.spec.bundle import MANIFEST_FILE  # noqa: E402


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    work = tmp_path_factory.mktemp("fuzz")
    predictors, bundle = tiny_predictors(work)
    (work / "outside").mkdir()
    (work / "outside" / "secret.txt").write_text("outside the bundle")
    shutil.copy2(bundle / "onnx" / "segment.onnx", work / "outside" / "segment.onnx")
    return predictors, bundle, work, OutsideReads(work / "outside")


def test_requests_are_answered_or_refused_never_crash(setup):
    predictors = setup[0]
    seen: dict[str, int] = {}

    @fuzz(250)
    @given(request_kwargs())
    def check(kwargs):
        start = time.monotonic()
        for outcome in answer(predictors, kwargs, hang_seconds=10.0).values():
            seen[outcome] = seen.get(outcome, 0) + 1
            assert outcome != "hang"
        assert time.monotonic() - start < 30

    check()
    assert seen.get("answered", 0) > 10 and seen.get("refused", 0) > 10, seen


def test_manifest_mutations_are_refused_or_load_and_never_read_outside(setup):
    _, bundle, work, reads = setup
    original = json.loads((bundle / MANIFEST_FILE).read_text())
    seen: dict[str, int] = {}

    @fuzz(80)
    @given(manifest_mutation(original))
    def check(mutation):
        _, data = mutation
        outcome = try_manifest(bundle, work, data, reads)
        seen[outcome] = seen.get(outcome, 0) + 1

    check()
    assert reads.hits == [] and seen.get("refused", 0) > 40, (reads.hits, seen)
