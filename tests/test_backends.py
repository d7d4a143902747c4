"""The backend registry: one record per backend, and every stage and verb reads it."""

from __future__ import annotations

import pytest

from xsam_edge.backends import BACKENDS, Backend, get_backend, register, runnable_backends, unregister
from xsam_edge.bench.profiles import get_profile
from xsam_edge.cli import main
from xsam_edge.quantization.handler import GraphSource, QuantizedGraph, QuantizeHandler
from xsam_edge.quantization.recipes import Recipe
from xsam_edge.quantization.schemes import Float32


class _FakeQuantizer(QuantizeHandler):
    backend = "fakert"

    def quantize(
        self, source: GraphSource, scheme, keep_float, calibration, holdout, out_dir
    ) -> QuantizedGraph:
        raise NotImplementedError


class _FakeRuntime:
    def __init__(self, **options) -> None:
        self.options = options


FAKE = Backend(
    name="fakert",
    description="a fake runtime registered by a test",
    llm_graphs=("llm_kvio_prefill", "llm_kvio_decode"),
    stateful=False,
    schemes=("fp32",),
    requires=(),
    exporter="xsam_edge.backends.onnx.export:export_onnx",
    quantizer=_FakeQuantizer,
    runtime=_FakeRuntime,
)


@pytest.fixture()
def fake_backend():
    register(FAKE)
    yield FAKE
    unregister(FAKE.name)


def test_the_four_backends_are_registered_and_complete():
    assert list(BACKENDS) == ["onnx", "openvino", "executorch", "coreml"]
    for name, backend in BACKENDS.items():
        assert backend.graphs[:4] == ("encode_image", "embed", "region", "segment"), name
        assert backend.llm_graphs and backend.schemes[0] == "fp32", name
        assert callable(backend.load_exporter()), name  # the references resolve
        assert backend.runtime_class().__name__.endswith("Backend"), name
    assert not get_backend("onnx").stateful and get_backend("openvino").stateful
    assert "coreml" not in runnable_backends() or get_backend("coreml").runs_here()


def test_unknown_and_duplicate_backends_are_clear_errors():
    with pytest.raises(ValueError, match="unknown backend 'tflite'; registered backends: onnx, openvino"):
        get_backend("tflite")
    with pytest.raises(ValueError, match="'onnx' is registered already"):
        register(get_backend("onnx"))


def test_a_registered_backend_shows_in_every_verb_and_stage(fake_backend, capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert "fakert" in capsys.readouterr().out
    assert main(["quantize", "--list-recipes"]) == 0
    assert any(line.split()[:2] == ["fakert", "fp32"] for line in capsys.readouterr().out.splitlines())
    assert main(["bench", "--list-profiles"]) == 0
    x86 = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("x86-cpu"))
    assert "fakert" in x86
    assert "fakert" in get_profile("x86-cpu").bench_backends() and "fakert" in runnable_backends()
    assert get_profile("x86-cpu").runtime("fakert").options == {}
    # quantization validates recipes against it, and its handler speaks the protocol
    assert Recipe("mine", "fakert", default=Float32()).backend == "fakert"
    with pytest.raises(ValueError, match="not supported by 'fakert'; supported: fp32"):
        Recipe("mine", "fakert", graphs={"llm": _w8()})
    handler = fake_backend.quantize_handler()
    assert handler.schemes == ("fp32",) and handler.graphs["llm"] == ("llm_kvio_prefill", "llm_kvio_decode")


def _w8():
    from xsam_edge.quantization.schemes import Int8WeightOnly

    return Int8WeightOnly()
