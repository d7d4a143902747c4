"""Data-aware palettization for Core ML: output sensitivity (quantization.importance) weighs each table's
k-means (backends.coreml.palettize), the handler writes those very tables, and a mixed scheme keeps the
weights the tables resolve worst, and the head, at INT8. One test runs at Phi-3-mini's MLP widths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY  # noqa: F401  (the tiny preset's registry entries)

from xsam_edge.backends.coreml.palettize import row_weights, tables_for, weighted_lut
from xsam_edge.quantization.importance import export_name, output_fisher
from xsam_edge.quantization.schemes import Palettize, scheme_from_dict

pytest.importorskip("coremltools")


def test_weighted_lut_keeps_the_heavy_values_and_beats_the_unweighted_table_on_its_objective():
    rng = np.random.default_rng(0)
    values = rng.standard_normal((16, 64)).astype(np.float16)
    weights = np.ones(values.shape)
    weights[0, :8] = 1e6  # eight sensitive weights
    lut, idx = weighted_lut(values, weights, 4)
    plain_lut, plain_idx = weighted_lut(values, np.ones(values.shape), 4)
    weighted, plain = lut[idx].reshape(values.shape), plain_lut[plain_idx].reshape(values.shape)
    assert lut.shape == (16,) and lut.dtype == np.float16 and idx.dtype == np.uint8
    np.testing.assert_allclose(weighted[0, :8], values[0, :8], atol=2e-3)  # each near its own centroid
    cost = lambda q: float((weights * (q.astype(np.float64) - values) ** 2).sum())  # noqa: E731
    assert cost(weighted) < cost(plain)
    few = np.array([[1.0, 2.0, 1.0, 2.0]], dtype=np.float16)
    lut, idx = weighted_lut(few, np.ones(few.shape), 4)
    np.testing.assert_array_equal(lut[idx].reshape(few.shape), few)  # ≤ 16 values: kept exactly


def test_tables_are_the_solver_wrappers_and_the_same_on_any_thread_count(monkeypatch):
    from coremltools._deps import _kmeans1d

    from xsam_edge.backends.coreml.palettize import _cluster

    rng = np.random.default_rng(1)
    points = np.unique(rng.standard_normal(3000))
    mass = rng.random(len(points)) ** 3
    reference = _kmeans1d.cluster(points, 16, weights=mass)  # coremltools' own wrapper of the C solver
    centroids, clusters = _cluster(points, mass, 16)
    np.testing.assert_array_equal(centroids, reference.centroids)
    np.testing.assert_array_equal(clusters, reference.clusters)
    weight = (rng.standard_normal((64, 512)) * 0.02).astype(np.float16)
    importance = rng.random(weight.shape) ** 4
    found = {}
    for threads in ("1", "3"):
        monkeypatch.setenv("XSAM_EDGE_THREADS", threads)
        found[threads] = tables_for(weight, importance, 4, 16)
    assert found["1"].error == found["3"].error and found["1"].by_group.keys() == found["3"].by_group.keys()
    for key, (lut, indices) in found["1"].by_group.items():
        np.testing.assert_array_equal(lut, found["3"].by_group[key][0])
        np.testing.assert_array_equal(indices, found["3"].by_group[key][1])


def test_rows_without_sensitivity_count_as_an_average_row():
    found = np.array([[0.0, 0.0], [1.0, 3.0], [0.0, 0.0]])
    np.testing.assert_allclose(row_weights(found, found.shape), [[2.0, 2.0], [1.0, 3.0], [2.0, 2.0]])
    np.testing.assert_array_equal(row_weights(np.zeros((2, 2)), (2, 2)), np.ones((2, 2)))
    np.testing.assert_array_equal(row_weights(None, (2, 3)), np.ones((2, 3)))


class _Cached(torch.nn.Module):
    """A linear whose forward writes a buffer, as an LLM graph writes its KV cache."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(6, 4)
        self.register_buffer("cache", torch.zeros(4))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.fc(x)
        self.cache.copy_(y[0])
        return y + self.cache.mean(), torch.arange(3)  # an integer output is not probed


def test_output_fisher_reads_only_what_the_outputs_depend_on_and_leaves_the_module_as_it_was():
    torch.manual_seed(0)
    module = _Cached().eval()
    module.fc.weight.requires_grad_(False)  # a user's frozen weight is measured all the same
    x = torch.randn(5, 6)
    x[:, 2] = 0  # input feature 2 never moves an output
    samples = [[x.numpy()], [x.numpy() * 2]]  # the second sample reads the cache the first one wrote
    found = output_fisher(module, samples)
    assert (
        set(found) == {"p_fc_weight", "p_fc_bias"} == {export_name(n) for n, _ in module.named_parameters()}
    )
    weight = found["p_fc_weight"]
    assert weight.shape == (4, 6) and (weight[:, 2] == 0).all() and (np.delete(weight, 2, axis=1) > 0).all()
    np.testing.assert_array_equal(output_fisher(module, samples)["p_fc_weight"], weight)  # seeded probes
    assert not module.fc.weight.requires_grad and module.fc.bias.requires_grad
    assert all(p.grad is None for p in module.parameters()) and module.cache.grad_fn is None
    with pytest.raises(ValueError, match="at least one"):
        output_fisher(module, [])


def test_palettize_scheme_fields_labels_and_bad_values():
    scheme = scheme_from_dict({"scheme": "palettize", "data_aware": True, "ratio": 0.9, "head_bits": 8})
    assert scheme == Palettize(4, 16, data_aware=True, ratio=0.9, head_bits=8)
    assert scheme.label() == "pal4-g16-fisher-r90-h8" and scheme.calibrated and scheme.bits == 4
    assert Palettize().label() == "pal4-g16" and not Palettize().calibrated
    for bad in ({"head_bits": 4}, {"ratio": 0}, {"data_aware": "yes"}):
        with pytest.raises(ValueError, match="palettize"):
            scheme_from_dict({"scheme": "palettize", **bad})


class _Mlp(torch.nn.Module):
    """Phi-3-mini's MLP at its real widths (3072 → 8192 → 3072), ungated."""

    def __init__(self, hidden: int = 3072, inner: int = 8192) -> None:
        super().__init__()
        self.up_proj = torch.nn.Linear(hidden, inner, bias=False)
        self.down_proj = torch.nn.Linear(inner, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(torch.nn.functional.silu(self.up_proj(x)))


def _most_values(weight: np.ndarray, rows: int = 1) -> int:
    """The most distinct values in a group of ``rows`` rows (counted in float32: numpy's float16 sort is
    unreliable)."""
    return max(len(np.unique(g.astype(np.float32))) for g in np.split(weight, len(weight) // rows))


def test_data_aware_palettization_at_phi3_widths_writes_a_weighted_table_per_row_and_an_int8_head(tmp_path):
    from xsam_edge.backends import get_backend
    from xsam_edge.backends.coreml.weights import package_weights

    torch.manual_seed(0)
    module = _Mlp().eval()
    with torch.no_grad():  # about 150 values a row, not 2,500: the solver time grows with them
        for linear in (module.up_proj, module.down_proj):
            linear.weight.copy_((linear.weight * 4096).round() / 4096)
    example = (torch.randn(1, 8, 3072),)
    rng = np.random.default_rng(1)
    scale = np.where(np.arange(3072) < 64, 8.0, 1.0).astype(np.float32)  # a few outlier channels
    calibration = [[(rng.standard_normal((1, 8, 3072)) * scale).astype(np.float32)] for _ in range(3)]
    scheme = Palettize(4, 1, data_aware=True, head_bits=8)  # apple-ane's tables, one per row
    report = (
        get_backend("coreml")
        .quantize_handler()
        .quantize_module(module, example, calibration, scheme, tmp_path, "mlp")
    )
    print(report.notes)
    assert report.scheme == "pal4-g1-fisher-h8"
    assert report.integer_ops == {"constexpr_blockwise_shift_scale": 1, "constexpr_lut_to_dense": 1}
    assert any("1 tensor(s) palettized with tables weighted" in n for n in report.notes)
    assert not any("no sensitivity" in n for n in report.notes)
    stored = package_weights(tmp_path / "mlp.mlpackage")
    up = stored["p_up_proj_weight"]
    assert up.shape == (8192, 3072) and _most_values(up) <= 16
    # the package holds the tables weighted by the handler's sensitivity (same probes: seeded), and they beat
    # the unweighted tables on the weighted error, checked on the first 256 rows
    weight = module.up_proj.weight.detach().numpy().astype(np.float16)[:256]
    found = output_fisher(module, calibration)["p_up_proj_weight"][:256]
    weighted, plain = tables_for(weight, found, 4, 1), tables_for(weight, None, 4, 1)
    expected = np.concatenate([lut[i] for lut, i in weighted.by_group.values()]).reshape(weight.shape)
    np.testing.assert_array_equal(up[:256], expected)
    unweighted = np.concatenate([lut[i] for lut, i in plain.by_group.values()]).reshape(weight.shape)
    w = row_weights(found, weight.shape)
    cost = lambda q: float((w * (q.astype(np.float64) - weight) ** 2).sum())  # noqa: E731
    assert cost(expected) < cost(unweighted)
    down = stored["p_down_proj_weight"].astype(np.float32)  # the output layer: INT8 per row
    steps = down / (np.abs(down).max(axis=1, keepdims=True) / 127)
    assert np.abs(steps - steps.round()).max() < 0.1


def test_mixed_palettization_keeps_the_largest_weighted_error_at_int8_and_needs_calibration(tmp_path):
    from xsam_edge.backends import get_backend
    from xsam_edge.backends.coreml.weights import package_weights

    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Linear(256, 256), torch.nn.GELU(), torch.nn.Linear(256, 256), torch.nn.GELU()
    )
    with torch.no_grad():
        module[2].weight[:, :4] *= 30  # outlier columns: one table per 16 rows resolves the rest coarsely
    example = (torch.randn(2, 256),)
    calibration = [[np.random.default_rng(i).standard_normal((2, 256)).astype(np.float32)] for i in range(3)]
    handler = get_backend("coreml").quantize_handler()
    scheme = Palettize(4, 16, data_aware=True, ratio=0.9)
    report = handler.quantize_module(module, example, calibration, scheme, tmp_path, "m")
    assert report.integer_ops == {"constexpr_blockwise_shift_scale": 1, "constexpr_lut_to_dense": 1}
    assert any("1 weight(s) at INT8 (ratio 0.9" in n for n in report.notes)
    stored = package_weights(tmp_path / "m.mlpackage")
    found = output_fisher(module, calibration)  # the handler's sensitivity (seeded probes)
    errors = {
        n: tables_for(stored_float, found[n], 4, 16).error
        for n in ("p_0_weight", "p_2_weight")
        for stored_float in [
            module.get_parameter(n[2:].replace("_", ".")).detach().numpy().astype(np.float16)
        ]
    }
    worst, other = sorted(errors, key=errors.get, reverse=True)
    # only the worst-resolved one at INT8
    assert _most_values(stored[other], 16) <= 16 < _most_values(stored[worst], 16)
    with pytest.raises(ValueError, match="calibration samples"):
        handler.quantize_module(module, example, [], scheme, tmp_path / "none", "m")


def test_xsam_llm_graph_is_weighted_by_its_own_parameters(tiny_model, tmp_path):
    """The LLM wrapper's parameters carry the names its packages store, so every large tensor is weighted."""
    from xsam_edge.backends import get_backend
    from xsam_edge.backends.coreml.export import export_coreml
    from xsam_edge.export.graphs import SlotConfig, example_inputs
    from xsam_edge.quantization.handler import GraphSource

    slots = SlotConfig(max_regions=2, max_conditions=4, prefill_len=16)
    files = {
        g: [export_coreml(tiny_model, g, slots, tmp_path / "fp").file] for g in ("llm_prefill", "llm_decode")
    }
    samples = [
        [x.numpy() for x in example_inputs(tiny_model.config, "llm_prefill", slots, seed=i)] for i in range(3)
    ]
    source = GraphSource("llm", files=files, model=tiny_model, slots=slots)
    handler = get_backend("coreml").quantize_handler()
    scheme = Palettize(4, 16, data_aware=True, head_bits=8)
    result = handler.quantize(source, scheme, (), {"llm_prefill": samples}, {}, tmp_path / "q")
    notes = result.report.notes
    print(notes)
    assert sum("palettized with tables weighted" in n for n in notes) == 2  # prefill and decode packages
    assert not any("no sensitivity" in n or "unweighted" in n for n in notes)
    assert result.report.integer_ops["constexpr_blockwise_shift_scale"] == 2  # the head, per package
    with pytest.raises(ValueError, match="recorded inputs of llm_prefill, llm_decode"):
        handler.quantize(source, scheme, (), {}, {}, tmp_path / "none")


def test_fisher_diagonal_of_a_loss_sums_squared_gradients_and_leaves_none_behind():
    from xsam_edge.quantization.importance import fisher_diagonal

    torch.manual_seed(0)
    module = torch.nn.Linear(4, 3)
    samples = [torch.randn(2, 4) for _ in range(3)]
    found = fisher_diagonal(module, samples, lambda m, x: m(x).square().mean())
    expected = torch.zeros(3, 4)
    for x in samples:
        (grad,) = torch.autograd.grad(module(x).square().mean(), [module.weight])
        expected += grad.square()
    torch.testing.assert_close(torch.from_numpy(found["p_weight"]), expected)
    assert all(p.grad is None for p in module.parameters())


def test_a_tied_table_is_weighed_under_the_name_torch_export_gives_it():
    """``named_parameters`` lists a tied table under the lookup's name, torch.export under the head's: the
    sensitivity carries both, or a tied head's tables were silently unweighted (the real 0.5 B tied LLM)."""

    class TiedLM(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(64, 16)
            self.head = torch.nn.Linear(16, 64, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(torch.tanh(self.embed(ids)))

    torch.manual_seed(0)
    module = TiedLM().eval()
    samples = [(torch.randint(0, 64, (1, 8)),) for _ in range(3)]
    found = output_fisher(module, samples)
    assert set(found) == {"p_embed_weight", "p_head_weight"}
    assert found["p_embed_weight"] is found["p_head_weight"]  # one array: the gradient of both roles
    exported = torch.export.export(module, samples[0], strict=False).graph_signature.parameters
    assert {export_name(n) for n in exported} <= set(found)
