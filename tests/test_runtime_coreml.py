"""EdgeSession over Core ML bundles: refused with the reason off macOS; on a Mac, every task against PyTorch.

Core ML prediction needs macOS (the Linux coremltools wheel has no ``libcoremlpython``), so the parity tests
skip here with that reason and run on a Mac. A bundle's Core ML graphs are fp16 (what apps ship), so parity is
held to fp16 tolerances: logits within 0.1 and final masks with IoU ≥ 0.95 against the FP32 predictor.
"""

import platform

import numpy as np
import pytest
from conftest import every_task_requests, make_image, make_tiny_model, with_grid_sampler

from xsam_edge.backends.coreml.runtime import COMPUTE_UNITS, CoreMLBackend

SKIP_REASON = "Core ML prediction needs macOS"


def _skip_without_coreml_predict() -> None:
    pytest.importorskip("coremltools")
    from xsam_edge.backends.coreml.export import coreml_predict_available

    if not coreml_predict_available():
        pytest.skip(SKIP_REASON)


def test_off_macos_the_backend_says_it_needs_macos():
    if platform.system() == "Darwin":
        pytest.skip("this machine is a Mac")
    with pytest.raises(RuntimeError, match="Core ML prediction needs macOS.*apple-all"):
        CoreMLBackend()


def test_unknown_compute_units_are_refused():
    with pytest.raises(ValueError, match="CPU_ONLY, CPU_AND_GPU, CPU_AND_NE, ALL; got 'NPU'"):
        CoreMLBackend("NPU")
    assert COMPUTE_UNITS == ("CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE", "ALL")


@pytest.fixture(scope="module")
def coreml_setup(tmp_path_factory):
    _skip_without_coreml_predict()
    from xsam_edge.export.graphs import SlotConfig
    from xsam_edge.export.to_bundle import export_bundle
    from xsam_edge.model.predictor import XSamPredictor
    from xsam_edge.spec.tokenizer import tiny_tokenizer

    model = with_grid_sampler(make_tiny_model(seed=3, tied=True))  # embed: a function of llm.mlpackage
    slots = SlotConfig(max_regions=2, max_conditions=4, prefill_len=16)
    out = tmp_path_factory.mktemp("coreml") / "bundle"
    path, _ = export_bundle(model, tiny_tokenizer(), out, ("coreml",), slots, progress=False)
    predictor = XSamPredictor(model, tiny_tokenizer(), max_new_tokens=12, region_sampler="grid")
    return path, predictor


@pytest.mark.parametrize("units", COMPUTE_UNITS)
def test_every_task_matches_the_pytorch_predictor_on_a_mac(coreml_setup, units):
    from xsam_edge.runtime.session import EdgeSession

    bundle, predictor = coreml_setup
    session = EdgeSession(bundle, "coreml", max_new_tokens=12, runtime=CoreMLBackend(units))
    for request in every_task_requests(make_image()):
        want, got = predictor.run(request), session.run(request)
        if want.class_logits is None:
            assert got.class_logits is None and isinstance(got.text, str)
            continue
        np.testing.assert_allclose(got.class_logits, want.class_logits, atol=0.1, err_msg=request.task)
        a, b = session.segment(request), predictor.segment(request)
        assert a.labels == b.labels and a.masks.shape == b.masks.shape
        union = (a.masks | b.masks).sum()
        assert union == 0 or (a.masks & b.masks).sum() / union >= 0.95, (units, request.task)


def test_the_cached_image_prefix_equals_a_fresh_session_on_a_mac(coreml_setup):
    from xsam_edge.runtime.session import EdgeSession
    from xsam_edge.spec.types import SegmentationRequest, Task

    bundle, _ = coreml_setup
    session = EdgeSession(bundle, "coreml")
    image = make_image()
    session.run(SegmentationRequest(image, Task.REFERRING, text="the red circle"))
    second = SegmentationRequest(image, Task.PANOPTIC, categories=["circle", "square"])
    warm = session.run(second)  # the KV cache restored from the snapshot (MLState.write_state)
    fresh = EdgeSession(bundle, "coreml").run(second)
    np.testing.assert_allclose(warm.class_logits, fresh.class_logits, atol=1e-3)
    assert warm.prompt_tokens > len(session._image.prefix_ids)


def test_the_apple_profiles_pass_their_compute_units_on_a_mac():
    _skip_without_coreml_predict()
    from xsam_edge.bench.profiles import get_profile

    assert get_profile("apple-ane").runtime("coreml").compute_units == "CPU_AND_NE"
    assert get_profile("apple-gpu").runtime("coreml").compute_units == "CPU_AND_GPU"
