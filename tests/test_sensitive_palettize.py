"""Fisher-weighted palettization (benchmarks.real_weights.sensitive_palettize): the weighted k-means is the
optimum it claims, unseen rows still count, and the packed Core ML package decompresses to exactly the
weights scored in torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.real_weights import sensitive_palettize as sp


def _mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(128, 64), torch.nn.GELU(), torch.nn.Linear(64, 32)).eval()


def _loss(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module(x).square().mean()


def test_weighted_lut_keeps_the_heavy_values_and_beats_the_unweighted_table_on_its_objective():
    rng = np.random.default_rng(0)
    values = rng.standard_normal((16, 64)).astype(np.float16)
    weights = np.ones(values.shape)
    weights[0, :8] = 1e6  # eight sensitive weights
    weighted = sp.weighted_lut(values, weights, 4)
    plain = sp.weighted_lut(values, np.ones(values.shape), 4)
    assert len(np.unique(weighted)) == 16 and len(np.unique(plain)) == 16
    np.testing.assert_allclose(weighted[0, :8], values[0, :8], atol=2e-3)  # each near its own centroid
    cost = lambda q: float((weights * (q.astype(np.float64) - values) ** 2).sum())  # noqa: E731
    assert cost(weighted) < cost(plain)
    few = np.array([[1.0, 2.0, 1.0, 2.0]], dtype=np.float16)
    np.testing.assert_array_equal(sp.weighted_lut(few, np.ones(few.shape), 4), few)  # ≤ 16 values: kept


def test_rows_without_gradient_count_as_an_average_row():
    fisher = torch.tensor([[0.0, 0.0], [1.0, 3.0], [0.0, 0.0]])
    np.testing.assert_allclose(sp._row_weights(fisher), [[2.0, 2.0], [1.0, 3.0], [2.0, 2.0]])
    np.testing.assert_array_equal(sp._row_weights(torch.zeros(2, 2)), np.ones((2, 2)))


def test_palettize_in_place_leaves_16_values_per_16_rows_and_skips_small_tensors():
    module = _mlp()
    samples = [torch.randn(4, 128) for _ in range(3)]
    fisher = sp.fisher_diagonal(module, samples, _loss)
    params = dict(module.named_parameters())
    assert fisher.keys() == params.keys()
    assert all(f.shape == params[n].shape and (f >= 0).all() for n, f in fisher.items())
    assert all(p.grad is None for p in module.parameters())  # nothing left behind
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    changed = sp.palettize_in_place(module, fisher, nbits=4, group_size=16)
    assert changed == ["0.weight"]  # the 32 × 64 head has 2,048 elements: coremltools' threshold keeps it
    weight = module.get_parameter("0.weight").detach()
    for row in range(0, 64, 16):
        assert len(torch.unique(weight[row : row + 16])) <= 16
    assert torch.equal(module.get_parameter("2.weight"), before["2.weight"])
    error = (weight - before["0.weight"]).abs().max() / before["0.weight"].abs().max()
    assert 0 < error < 0.1


def test_the_packed_package_decompresses_to_the_palettized_weights(tmp_path):
    pytest.importorskip("coremltools")
    import coremltools as ct

    from xsam_edge.backends.coreml.export import mil_op_histogram
    from xsam_edge.backends.coreml.quantize import CoreMLQuantizer
    from xsam_edge.backends.coreml.weights import package_weights
    from xsam_edge.quantization.schemes import Float16

    module = _mlp(1)
    sp.palettize_in_place(module, None, nbits=4, group_size=16)
    CoreMLQuantizer().export_float(module, (torch.zeros(2, 128),), tmp_path / "float", "model", Float16())
    sp.pack_package(tmp_path / "float" / "model.mlpackage", tmp_path / "packed" / "model.mlpackage", 16)
    packed = tmp_path / "packed" / "model.mlpackage"
    spec = ct.models.MLModel(str(packed), skip_model_load=True).get_spec()
    assert mil_op_histogram(spec).get("constexpr_lut_to_dense") == 1
    weights = package_weights(packed)
    want = module.get_parameter("0.weight").detach().half().float().numpy()
    np.testing.assert_array_equal(np.asarray(weights["p_0_weight"], np.float32), want)
    assert not any(p.name.startswith(".staging") for p in (tmp_path / "packed").iterdir())
