"""Quantization that checks itself, for any model: worst-sample fidelity, held-out data, layer fallback,
SmoothQuant by measurement, mixed INT4/INT8, and files of old opsets (``quantization/any_model.py``)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from xsam_edge.backends.openvino.quantize import SATURATION_NOTE
from xsam_edge.quantization.any_model import load_samples, quantize_model, split_holdout
from xsam_edge.quantization.fidelity import (
    host_int8_saturates,
    int8_saturates,
    measure_outputs,
    sample_cosine,
)
from xsam_edge.quantization.schemes import Int4WeightOnly, Int8Static, scheme_from_dict


class _OutlierMlp(nn.Module):
    """Token features through two MLP blocks; one input channel of ``b.up`` carries 1000× outliers.

    Float is unchanged by the plant (the weight column shrinks as the activation grows), but per-tensor
    INT8 activations of ``b.up`` then spend their range on one channel: the classic LLM/ViT outlier.
    """

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Linear(width, width * 2), nn.GELU(), nn.Linear(width * 2, width))
        self.scale = nn.Parameter(torch.ones(width))
        self.b_up = nn.Linear(width, width * 2)
        self.b_down = nn.Linear(width * 2, width)
        with torch.no_grad():
            self.scale[5] = 1000.0
            self.b_up.weight[:, 5] /= 1000.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x + self.a(x)
        return h + self.b_down(torch.relu(self.b_up(h * self.scale)))


def _samples(n: int, seed: int = 0, width: int = 64) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal((1, 16, width)).astype(np.float32)] for _ in range(n)]


def test_fidelity_reports_the_worst_sample_not_the_pool():
    rng = np.random.default_rng(0)
    ref = [[rng.standard_normal((1, 10, 32))] for _ in range(6)]
    test = [[r[0] + 1e-3 * rng.standard_normal(r[0].shape)] for r in ref]
    test[4] = [-ref[4][0]]  # one sample collapses
    f = measure_outputs(["y"], ref, test)["y"]
    assert f.samples == 6 and f.worst_sample == 4 and f.worst_cosine < -0.99
    assert f.worst_psnr_db < f.psnr_db
    assert sample_cosine(np.zeros((2, 16)), np.zeros((2, 16))) == 1.0
    assert sample_cosine(np.ones(4), np.zeros(4)) == 0.0


def test_int8_saturation_is_read_off_the_cpu_flags():
    """x86 without VNNI or AMX saturates U8×S8 pair sums (ORT, oneDNN); ARM and VNNI CPUs do not."""
    assert int8_saturates("x86_64", {"sse4_2", "avx", "avx2", "fma"})
    assert not int8_saturates("x86_64", {"avx2", "avx512f", "avx512_vnni"})
    assert not int8_saturates("x86_64", {"avx2", "avx_vnni"})
    assert not int8_saturates("AMD64", {"amx_int8"})
    assert not int8_saturates("aarch64", {"asimd"})
    assert not int8_saturates("arm64", set())
    assert not int8_saturates("x86_64", None)  # no /proc/cpuinfo (macOS, Windows)


def test_split_holdout_and_sample_files(tmp_path):
    calib, held = split_holdout(_samples(10))
    assert (len(calib), len(held)) == (8, 2)
    calib, held = split_holdout(_samples(2))
    assert (len(calib), len(held)) == (1, 1)
    with pytest.raises(ValueError, match="at least 2"):
        split_holdout(_samples(1))
    np.savez(tmp_path / "ok.npz", x=np.zeros((3, 1, 4), np.float32), ids=np.zeros((3, 2), np.int64))
    assert [[a.shape for a in s] for s in load_samples(tmp_path / "ok.npz")] == [[(1, 4), (2,)]] * 3
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 4)), y=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="same count"):
        load_samples(tmp_path / "bad.npz")
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="plain arrays"):
        load_samples(tmp_path / "obj.npz")
    with pytest.raises(FileNotFoundError):
        load_samples(tmp_path / "missing.npz")


def test_scheme_settings_are_validated():
    s = scheme_from_dict(
        {"scheme": "w8a8", "smooth_quant": "off", "symmetric_activations": False, "op_types": ["MatMul"]}
    )
    assert s.op_types == ("MatMul",) and s.smooth_quant == "off"
    assert Int4WeightOnly(ratio=0.8).label() == "w4-g32-r80"
    for bad in ({"smooth_quant": "maybe"}, {"smooth_quant_alpha": 2}, {"op_types": "MatMul"}):
        with pytest.raises(ValueError, match="w8a8"):
            scheme_from_dict({"scheme": "w8a8", **bad})
    with pytest.raises(ValueError, match="ratio"):
        Int4WeightOnly(ratio=0)
    assert scheme_from_dict({"scheme": "w4", "head_bits": 4}).label() == "w4-g32-h4"
    assert Int4WeightOnly().head_bits == 8 and Int4WeightOnly().label() == "w4-g32"
    assert scheme_from_dict({"scheme": "8da4w", "head_bits": 8}).label() == "8da4w-g32-h8"
    for bad in (6, True, "8"):
        for scheme in ("w4", "8da4w"):
            with pytest.raises(ValueError, match=f"{scheme}: head_bits"):
                scheme_from_dict({"scheme": scheme, "head_bits": bad})


def test_fallback_reaches_the_target_by_keeping_the_outlier_layer_float(tmp_path):
    """ONNX W8A8 loses the planted outlier; the QDQ ranking puts ``b_up`` first; it alone float fixes it."""
    torch.manual_seed(0)
    net = _OutlierMlp()
    data = _samples(10)
    scheme = Int8Static(smooth_quant="off")
    whole = quantize_model(net, "onnx", scheme, tmp_path / "whole", name="mlp", calibration=data)
    assert "held back" in whole.report.measured_on and whole.target_met is None
    assert whole.report.worst_cosine < 0.999
    fixed = quantize_model(
        net, "onnx", scheme, tmp_path / "fixed", name="mlp", calibration=data, target_cosine=0.999
    )
    print(fixed.report.notes, fixed.report.kept_float)
    assert fixed.target_met and fixed.report.worst_cosine >= 0.999
    fallback = [k for k in fixed.report.kept_float if "fallback" in k]
    assert fallback and "b_up" in fallback[0] and "rank 1 of" in fallback[0]
    assert sorted(p.name for p in (tmp_path / "fixed").iterdir()) == ["mlp.onnx"]  # no trials left
    assert any("reached" in n for n in fixed.report.notes)
    # an x86 CPU without VNNI scores the file's own arithmetic and notes its saturating kernels' figure
    assert any("U8S8 kernels saturate" in n for n in fixed.report.notes) == host_int8_saturates()


def test_smooth_quant_auto_keeps_the_closer_run_on_openvino(tmp_path):
    torch.manual_seed(0)
    result = quantize_model(
        _OutlierMlp(),
        "openvino",
        "w8a8",
        tmp_path,
        name="mlp",
        calibration=_samples(6),
        holdout=_samples(3, 1),
    )
    note = next(n for n in result.report.notes if n.startswith("smooth_quant auto"))
    off, on = (float(x.split()[-1].rstrip(",)")) for x in note.split("worst cosine ")[1].split(", "))
    assert ("on (" in note) == (on > off), note
    assert result.report.measured_on.startswith("3 held-out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.bin", "mlp.xml"]


def test_smooth_quant_auto_quantizes_a_graph_without_weighted_matmuls_once_on_openvino(tmp_path):
    """NNCF smooths only MatMuls with weights here (its convolution alpha is off): a conv net quantized with
    and without SmoothQuant came out the same, at twice the time (ISNet: 90 s a quantization)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    data = [[np.random.default_rng(i).standard_normal((1, 3, 16, 16)).astype(np.float32)] for i in range(6)]
    result = quantize_model(
        net, "openvino", "w8a8", tmp_path, name="conv", calibration=data[:4], holdout=data[4:]
    )
    note = next(n for n in result.report.notes if n.startswith("smooth_quant auto"))
    assert (
        note
        == "smooth_quant auto: off (no MatMul with weights to smooth; SmoothQuant is off for convolutions)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conv.bin", "conv.xml"]


def test_onnx_file_of_opset_11_is_converted_and_quantized(tmp_path):
    """Regression: quantizing an opset-11 file wrote a per-channel DequantizeLinear it cannot hold."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    path = tmp_path / "old.onnx"
    torch.onnx.export(net, (torch.randn(1, 3, 16, 16),), str(path), opset_version=11, dynamo=False)
    assert onnx.load(str(path)).opset_import[0].version == 11
    data = [[np.random.default_rng(i).standard_normal((1, 3, 16, 16)).astype(np.float32)] for i in range(6)]
    result = quantize_model(path, "onnx", "w8a8", tmp_path / "out", name="old", calibration=data)
    assert any("opset 11 converted to 13" in n for n in result.report.notes)
    session = ort.InferenceSession(str(result.files[0]), providers=["CPUExecutionProvider"])
    assert session.run(None, {session.get_inputs()[0].name: data[0][0]})[0].shape == (1, 4, 14, 14)
    assert result.report.worst_cosine > 0.99


def test_mixed_int4_int8_on_onnx_packs_the_worst_layers_at_8_bits(tmp_path):
    torch.manual_seed(0)
    net = _OutlierMlp()
    result = quantize_model(
        net, "onnx", Int4WeightOnly(ratio=0.5), tmp_path, name="mlp", calibration=_samples(4)
    )
    model = onnx.load(str(result.files[0]))
    bits = sorted(
        next(a.i for a in n.attribute if a.name == "bits")
        for n in model.graph.node
        if n.op_type == "MatMulNBits"
    )
    assert 4 in bits and 8 in bits, bits
    assert any("kept at INT8" in n for n in result.report.notes)


def test_cli_quantizes_an_onnx_file_to_a_target(tmp_path, capsys):
    from xsam_edge.cli import EXIT_USER_ERROR, main

    torch.manual_seed(0)
    path = tmp_path / "mlp.onnx"
    torch.onnx.export(_OutlierMlp().eval(), (torch.randn(1, 16, 64),), str(path), dynamo=False)
    np.savez(tmp_path / "calib.npz", x=np.stack([s[0] for s in _samples(8)]))
    np.savez(tmp_path / "held.npz", x=np.stack([s[0] for s in _samples(3, 1)]))
    base = ["quantize", "--model-file", path, "--backend", "onnx", "--out", tmp_path / "out"]
    data = ["--calibration", tmp_path / "calib.npz", "--holdout", tmp_path / "held.npz"]
    scheme = ["--scheme", '{"scheme": "w8a8", "smooth_quant": "off"}']
    code = main([str(a) for a in [*base, *scheme, *data, "--target-cosine", "0.999"]])
    out = capsys.readouterr().out
    assert code == 0 and "worst cos" in out and "3 held-out sample(s)" in out, out
    assert "fallback: sensitivity rank 1" in out
    code = main(
        [str(a) for a in [*base, *scheme, *data, "--target-cosine", "1.0", "--keep-float", "nothing"]]
    )
    assert code == 1 and "MISSES the target 1.0" in capsys.readouterr().out
    code = main([str(a) for a in [*base, "--scheme", '{"scheme": "w9"}', *data]])
    assert code == EXIT_USER_ERROR and "unknown scheme 'w9'" in capsys.readouterr().err


def test_executorch_channels_last_example_runs_right(tmp_path):
    """Regression: a channels-last example input made the program read contiguous inputs in the wrong
    order (worst held-out cosine 0.70, or ``execute() failed with error 0x1``)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    example = torch.randn(1, 3, 16, 16).to(memory_format=torch.channels_last)
    data = [[np.random.default_rng(i).standard_normal((1, 3, 16, 16)).astype(np.float32)] for i in range(6)]
    result = quantize_model(
        net, "executorch", "w8a8", tmp_path, name="cl", example_inputs=(example,), calibration=data
    )
    assert result.report.worst_cosine > 0.99, result.report.fidelity


def test_openvino_fallback_ranks_in_one_run_and_reaches_the_target(tmp_path):
    torch.manual_seed(0)
    scheme = {"scheme": "w8a8", "smooth_quant": "off", "symmetric_activations": True}
    kwargs = {"name": "mlp", "calibration": _samples(8), "holdout": _samples(3, 1)}
    whole = quantize_model(_OutlierMlp(), "openvino", scheme, tmp_path / "whole", **kwargs)
    # half the layers may stay float: on an x86 CPU without VNNI, OpenVINO's INT8 kernels saturate and the
    # outlier layer alone reaches 0.99896 (NNCF's overflow_fix on every layer: 0.99999)
    fixed = quantize_model(
        _OutlierMlp(), "openvino", scheme, tmp_path / "fixed", target_cosine=0.999, max_float=0.5, **kwargs
    )
    print(whole.report.worst_cosine, fixed.report.notes, fixed.report.kept_float)
    assert whole.report.worst_cosine < 0.999 <= fixed.report.worst_cosine and fixed.target_met
    fallback = [k for k in fixed.report.kept_float if "fallback" in k]
    assert any("rank 1 of" in k for k in fallback), fallback
    assert (SATURATION_NOTE in fixed.report.notes) == host_int8_saturates()
    assert sorted(p.name for p in (tmp_path / "fixed").iterdir()) == ["mlp.bin", "mlp.xml"]


def test_the_fallback_decides_smooth_quant_auto_once_on_the_whole_graph(tmp_path):
    """Each fallback trial quantized both ways again under ``auto``: twice the time of every step. The
    whole-graph trial decides; the kept trial says so, and holds no choice of its own."""
    torch.manual_seed(0)
    scheme = {"scheme": "w8a8", "symmetric_activations": True}  # smooth_quant: auto
    kwargs = {"name": "mlp", "calibration": _samples(8), "holdout": _samples(3, 1)}
    fixed = quantize_model(
        _OutlierMlp(), "openvino", scheme, tmp_path, target_cosine=0.9999, max_float=0.5, **kwargs
    )
    assert any("fallback" in k for k in fixed.report.kept_float), fixed.report.notes
    smooth = [n for n in fixed.report.notes if n.startswith("smooth_quant auto")]
    assert len(smooth) == 1 and smooth[0].endswith("; decided on the whole graph"), smooth


def test_executorch_takes_an_example_with_a_zero_stride(tmp_path):
    """Regression: a numpy ``a[None]`` view becomes a tensor with a 0 stride ("0 in strides is not supported
    for ExecuTorch" on a real BERT); ``contiguous()`` keeps it, so the handler copies examples outright."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    example = torch.from_numpy(np.random.default_rng(0).standard_normal((3, 16, 16)).astype(np.float32)[None])
    assert 0 in example.stride() and example.is_contiguous()
    data = [[np.random.default_rng(i).standard_normal((1, 3, 16, 16)).astype(np.float32)] for i in range(4)]
    result = quantize_model(
        net, "executorch", "w8a8", tmp_path, name="z", example_inputs=(example,), calibration=data
    )
    assert result.report.worst_cosine > 0.99


def test_a_hugging_face_folder_goes_in_offline(tmp_path):
    """A HF model folder (config + safetensors) is read offline, wrapped to tuple outputs and quantized."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    BertModel(config).eval().save_pretrained(tmp_path / "bert")
    ids = [[np.random.default_rng(i).integers(1, 100, (1, 12)).astype(np.int64)] for i in range(6)]
    result = quantize_model(
        tmp_path / "bert", "onnx", "w8a8-dyn", tmp_path / "out", name="bert", calibration=ids
    )
    assert result.files[0].suffix == ".onnx" and result.report.worst_cosine > 0.95, result.report.fidelity
    with pytest.raises(ValueError, match="Hugging Face model folder"):
        quantize_model(tmp_path, "onnx", "w8", tmp_path / "o2", calibration=ids)


# -- dynamic activations, the per-layer pass for user modules, cutting outputs ------------------------------
def test_openvino_dynamic_int8_asks_the_plugin_for_grouped_activation_scales(tmp_path):
    """``w8a8-dyn`` on OpenVINO: INT8 weights in the IR, the group size in its rt_info, INT8 compute; at
    ViT-S width (384) the outlier channel costs only its group of 32, so the MLP stays close to float."""
    import openvino as ov

    from xsam_edge.backends.openvino.quantize import DYNAMIC_GROUP

    torch.manual_seed(0)
    kwargs = {"name": "mlp", "calibration": _samples(4, 0, 384), "holdout": _samples(3, 1, 384)}
    result = quantize_model(_OutlierMlp(384), "openvino", "w8a8-dyn", tmp_path, **kwargs)
    model = ov.Core().read_model(str(result.files[0]))
    group = model.get_rt_info(["runtime_options", "DYNAMIC_QUANTIZATION_GROUP_SIZE"])
    assert int(group.astype(str)) == DYNAMIC_GROUP
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert compiled.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE") == DYNAMIC_GROUP
    ops = result.report.integer_ops
    assert ops.get("exec:FullyConnected[u8]", 0) + ops.get("exec:FullyConnected[i8]", 0) >= 4, ops
    assert result.report.quantized == 4 and result.report.worst_cosine > 0.995, result.report.fidelity
    per_tensor = quantize_model(_OutlierMlp(384), "onnx", "w8a8-dyn", tmp_path / "ort", **kwargs)
    assert per_tensor.report.worst_cosine < result.report.worst_cosine, "one scale per tensor loses more"


def test_onnx_dynamic_fallback_ranks_in_one_run(tmp_path):
    """ORT's dynamic INT8 scales a whole tensor at once, so the planted outlier still costs ``b_up``; the
    one-run ranking reads ``quantize_dynamic``'s file by the float names and puts ``b_up`` first."""
    from xsam_edge.backends.onnx.ranking import rank_quantized_nodes

    calls = []

    def spy(*args, **kwargs):
        calls.append(args)
        return rank_quantized_nodes(*args, **kwargs)

    torch.manual_seed(0)
    kwargs = {"name": "mlp", "calibration": _samples(6), "holdout": _samples(3, 1)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("xsam_edge.backends.onnx.quantize.rank_quantized_nodes", spy)
        result = quantize_model(_OutlierMlp(), "onnx", "w8a8-dyn", tmp_path, target_cosine=0.9999, **kwargs)
    print(result.report.notes, result.report.kept_float)
    assert len(calls) == 1, "ranked from one run of each file, not one quantization per layer"
    fallback = [k for k in result.report.kept_float if "fallback" in k]
    assert fallback and "b_up" in fallback[0] and "rank 1 of" in fallback[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.onnx"]


def test_per_layer_fallback_runs_on_a_user_module(tmp_path):
    """Regression: a scheme without a one-run ranking (OpenVINO ``w8``) on a user's module gave "per-layer
    sensitivity needs held-out samples" (the pass looked for X-SAM graph files); now it ranks every layer."""
    torch.manual_seed(0)
    kwargs = {"name": "mlp", "calibration": _samples(4), "holdout": _samples(2, 1)}
    result = quantize_model(_OutlierMlp(), "openvino", "w8", tmp_path, target_cosine=1.0, **kwargs)
    print(result.report.notes, result.report.kept_float)
    assert result.target_met is False and not any("no layer ranking" in n for n in result.report.notes)
    assert any("MISSED" in n and "ranked layer(s) float" in n for n in result.report.notes)
    assert [k for k in result.report.kept_float if "rank 1 of 4" in k]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.bin", "mlp.xml"]


class _TwoHeads(nn.Module):
    """A trunk, the head an app reads, and a side head only training reads."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Conv2d(3, 8, 3, padding=1)
        self.main = nn.Conv2d(8, 1, 1)
        self.side = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.trunk(x))
        return torch.sigmoid(self.main(h)), self.side(h)


def test_outputs_cut_an_onnx_file_to_what_is_deployed(tmp_path, capsys):
    from xsam_edge.cli import EXIT_USER_ERROR, main
    from xsam_edge.quantization.any_model import keep_outputs

    torch.manual_seed(0)
    path = tmp_path / "two.onnx"
    torch.onnx.export(
        _TwoHeads().eval(),
        (torch.randn(1, 3, 16, 16),),
        str(path),
        output_names=["mask", "aux"],
        dynamo=False,
    )
    cut = keep_outputs(path, ["mask"], tmp_path / "cut" / "one.onnx")
    graph = onnx.load(str(cut)).graph
    assert [o.name for o in graph.output] == ["mask"]
    assert len(graph.node) < len(onnx.load(str(path)).graph.node) and len(graph.initializer) == 4
    model = onnx.load(str(path))  # a converter's file may list producers after their consumers
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(reversed(nodes))
    onnx.save(model, str(tmp_path / "unsorted.onnx"))
    resorted = keep_outputs(tmp_path / "unsorted.onnx", ["mask"], tmp_path / "sorted.onnx")
    onnx.checker.check_model(str(resorted))
    with pytest.raises(ValueError, match="no output.*'logits'.*it has mask, aux"):
        keep_outputs(path, ["logits"], tmp_path / "x.onnx")
    data = [[np.random.default_rng(i).standard_normal((1, 3, 16, 16)).astype(np.float32)] for i in range(6)]
    result = quantize_model(
        path, "onnx", "w8a8", tmp_path / "q", name="two", calibration=data, outputs=["mask"]
    )
    session = ort.InferenceSession(str(result.files[0]), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["mask"] and list(result.report.fidelity) == ["mask"]
    with pytest.raises(ValueError, match="outputs cuts an .onnx file"):
        quantize_model(_TwoHeads(), "onnx", "w8a8", tmp_path / "m", calibration=data, outputs=["mask"])
    np.savez(tmp_path / "calib.npz", x=np.stack([s[0] for s in data]))
    base = [
        "quantize",
        "--model-file",
        path,
        "--backend",
        "openvino",
        "--scheme",
        "w8a8",
        "--out",
        tmp_path / "o",
    ]
    assert main([str(a) for a in [*base, "--calibration", tmp_path / "calib.npz", "--output", "mask"]]) == 0
    capsys.readouterr()
    import openvino as ov

    ir = ov.Core().read_model(str(tmp_path / "o" / "two.xml"))
    assert [o.get_any_name() for o in ir.outputs] == ["mask"]
    assert main([str(a) for a in [*base, "--output", "nope"]]) == EXIT_USER_ERROR
    assert "no output(s) ['nope']" in capsys.readouterr().err


class _ViTPatchStem(nn.Module):
    """A ViT stem whose learned position table is resized bicubic to the patch grid, as timm / SigLIP do."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 16, 4, 4)
        self.pos = nn.Parameter(torch.randn(1, 16, 7, 7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.patch(x)
        pos = nn.functional.interpolate(self.pos, size=grid.shape[-2:], mode="bicubic", align_corners=False)
        return grid + pos


@pytest.mark.parametrize("channels_last", [False, True])
def test_coreml_converts_bicubic_resizing_and_any_dim_order(tmp_path, channels_last):
    """Regressions: ``upsample_bicubic2d`` had no Core ML translation (NotImplementedError), and a
    channels-last example was refused. Linux cannot run the package: its ops are checked."""
    ct = pytest.importorskip("coremltools")
    from xsam_edge.backends.coreml.export import mil_op_histogram

    torch.manual_seed(0)
    example = torch.randn(1, 3, 32, 32)
    if channels_last:
        example = example.to(memory_format=torch.channels_last)
    stem = _ViTPatchStem().eval()
    result = quantize_model(stem, "coreml", "w8", tmp_path, name="stem", example_inputs=(example,))
    package = result.report.files[0]
    ops = mil_op_histogram(ct.models.MLModel(str(package), skip_model_load=True).get_spec())
    assert "matmul" in ops and not any("resize" in op or "upsample" in op for op in ops), ops


@settings(max_examples=40, deadline=None)
@given(
    size_in=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    size_out=st.tuples(st.integers(1, 20), st.integers(1, 20)),
    align_corners=st.booleans(),
)
def test_coreml_bicubic_as_matmuls_equals_torch(size_in, size_out, align_corners):
    """The Core ML rewrite of ``upsample_bicubic2d`` gives torch's values (A = -0.75, clamped edges)."""
    from xsam_edge.backends.coreml.export import COREML_DECOMPOSITIONS

    x = torch.randn(2, 3, *size_in, generator=torch.Generator().manual_seed(sum(size_in) + sum(size_out)))
    want = nn.functional.interpolate(x, size=size_out, mode="bicubic", align_corners=align_corners)
    rewrite = COREML_DECOMPOSITIONS[torch.ops.aten.upsample_bicubic2d.vec]
    got = rewrite(x, list(size_out), align_corners, None)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_executorch_fallback_ranks_a_user_module_and_reaches_the_target(tmp_path):
    """ExecuTorch ranked layers only for X-SAM graphs (its pass rebuilt the graph from the model): a user's
    module got "no layer ranking: unknown graph". Now the per-layer pass runs on the module in PyTorch."""
    pytest.importorskip("executorch")
    torch.manual_seed(0)
    kwargs = {"name": "mlp", "calibration": _samples(6), "holdout": _samples(2, 1)}
    result = quantize_model(_OutlierMlp(), "executorch", "w8a8-dyn", tmp_path, target_cosine=0.999, **kwargs)
    print(result.report.notes, result.report.kept_float)
    assert not any("no layer ranking" in n for n in result.report.notes)
    assert result.target_met and result.report.worst_cosine >= 0.999
    fallback = [k for k in result.report.kept_float if "fallback" in k]
    assert fallback and "b_up" in fallback[0] and "rank 1 of" in fallback[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.pte"]
