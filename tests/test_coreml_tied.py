"""A tied table in a Core ML bundle is stored once: ``embed`` joins ``llm.mlpackage`` as a function
(``backends/coreml/pack.py``), where ``save_multifunction`` keeps the lookup's table and the head's weight as
one constant.

At real widths: the Qwen2 student's 151,936 × 896 table (272 MB in fp16), LLM at reduced depth; its three
packages convert in about a minute. Prediction needs macOS: the tiny tied bundle answers every task through
the joined function in ``test_runtime_coreml.py`` on a Mac.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("coremltools")

from test_students import shallow_student  # noqa: E402

from xsam_edge.backends.coreml.export import export_coreml, spec_signature  # noqa: E402
from xsam_edge.backends.coreml.pack import function_signatures, pack_llm  # noqa: E402
from xsam_edge.backends.coreml.weights import package_weights  # noqa: E402
from xsam_edge.export.graphs import SlotConfig, build_graph  # noqa: E402
from xsam_edge.export.to_bundle import graph_entry  # noqa: E402
from xsam_edge.quantization.replay import ReplayedGraph, load_package_weights  # noqa: E402

pytestmark = pytest.mark.slow


def _copies(rows: bytes, folder: Path) -> int:
    """How many times ``rows`` occur in the weight files under ``folder``."""
    return sum(f.read_bytes().count(rows) for f in folder.rglob("*.bin"))


def test_a_tied_table_is_stored_once_in_the_llm_package(tmp_path):
    import coremltools as ct

    model, _ = shallow_student("x-sam-student-qwen2-0.5b")
    assert model.config.llm.tie_word_embeddings
    folder = tmp_path / "coreml"
    sources = {}
    entries = []
    for name in ("embed", "llm_prefill", "llm_decode"):
        graph = export_coreml(model, name, SlotConfig(), folder)
        sources[name] = shutil.copytree(graph.file, tmp_path / "sources" / graph.file.name)
        entries.append(graph_entry(graph, tmp_path))
    table = model.llm.get_input_embeddings().weight.detach()
    rows = table[:64].half().numpy().tobytes()  # the fp16 table's first rows, wherever a copy is stored
    assert _copies(rows, folder) == 3  # embed's lookup, prefill's head, decode's head

    # apple-ane's lookup is weighed by the head's sensitivity, under the name its own package stores: the
    # LLM wrapper calls the table p_lm_lm_head_weight, the lookup's p_model_llm_lm_head_weight
    from xsam_edge.backends.coreml.quantize import CoreMLQuantizer
    from xsam_edge.export.graphs import example_inputs
    from xsam_edge.quantization.handler import GraphSource
    from xsam_edge.quantization.importance import source_importance

    slots = SlotConfig()
    prefill = [example_inputs(model.config, "llm_prefill", slots, seed=seed) for seed in (0, 1)]
    calibration = {"llm_prefill": [[x.numpy() for x in sample] for sample in prefill]}
    source = GraphSource("embed", model=model, slots=slots)
    weighed, _ = CoreMLQuantizer()._sensitivity(source, calibration)
    stored = package_weights(sources["embed"])
    assert set(weighed) & set(stored) == {"p_model_llm_lm_head_weight"}
    head = source_importance(GraphSource("llm", model=model, slots=slots), ("llm_prefill",), calibration)
    np.testing.assert_array_equal(weighed["p_model_llm_lm_head_weight"], head["p_lm_lm_head_weight"])
    assert weighed["p_model_llm_lm_head_weight"].shape == tuple(table.shape)

    packed = pack_llm(entries, tmp_path)
    embed, llm = packed
    assert (embed.name, llm.name) == ("embed", "llm")
    assert embed.files == llm.files == ["coreml/llm.mlpackage"]
    assert [m["name"] for m in embed.methods] == ["embed"] and embed.methods[0]["inputs"] == entries[0].inputs
    assert [m["name"] for m in llm.methods] == ["prefill", "decode"]
    assert sorted(p.name for p in folder.iterdir()) == ["llm.mlpackage"]  # no litter, no embed package
    assert _copies(rows, folder) == 1

    spec = ct.models.MLModel(str(tmp_path / llm.files[0]), skip_model_load=True).get_spec()
    assert spec.description.defaultFunctionName == "prefill"
    signatures = function_signatures(spec)
    for function, source in (("embed", "embed"), ("prefill", "llm_prefill"), ("decode", "llm_decode")):
        single = ct.models.MLModel(str(sources[source]), skip_model_load=True).get_spec()
        assert signatures[function] == spec_signature(single)
    saved = llm.placement["tied_embed_bytes_saved"]
    assert saved > 0.99 * table.numel() * 2, saved  # the whole fp16 table
    weights = 2 * sum(p.numel() for p in model.llm.parameters())
    package = sum(f.stat().st_size for f in (tmp_path / llm.files[0]).rglob("*") if f.is_file())
    print("llm.mlpackage", package, "fp16 weights", weights, "saved", saved)
    assert package < 1.05 * weights

    # read back on Linux (quantization.replay): the joined table is the model's in fp16, and every parameter
    # the prefill function stores lands in the eager wrapper; the few it does not store are too small to
    # compress (folded into other constants by the converter) and stay at the model's values
    ((table_name, stored_table),) = package_weights(tmp_path / llm.files[0], "embed").items()
    assert table_name == "p_model_llm_lm_head_weight"  # torch.export names a tied table after the head
    np.testing.assert_array_equal(stored_table, table.half().numpy())
    wrapper = build_graph(model, "llm_kvio_prefill", SlotConfig())
    stored = package_weights(tmp_path / llm.files[0], "prefill")
    record = ReplayedGraph("llm:prefill", llm.files[0])
    load_package_weights(wrapper, stored, record)
    left = {n: p.numel() for n, p in wrapper.named_parameters() if "p_" + n.replace(".", "_") not in stored}
    print("replayed", record, "left at the model's values", left)
    assert record.elements > 0.9999 * sum(p.numel() for p in wrapper.parameters())
    assert all(size <= 2048 for size in left.values()), left


@pytest.mark.parametrize("named", [None, "apple-ane", "apple-gpu"], ids=["palettized-g16", "ane", "gpu"])
def test_a_quantized_tied_table_compressed_alike_is_stored_once(tmp_path, named):
    """The embed and LLM parts are compressed apart; palettized alike, their tables are equal bytes, and the
    assembled bundle's pack joins them (per-block INT4 is not alike: coremltools blocks a gather's table
    along the other axis, and the two stay apart). apple-ane's tables are weighted by sensitivity: the
    lookup's take the head's, from the LLM graph, so they come out equal too; apple-gpu's lookup is INT8 per
    channel as its head. A float bundle of just those graphs, as ``test_quant_executorch_coreml.py`` builds
    one."""
    import dataclasses

    from conftest import make_tiny_model

    from xsam_edge.export.graphs import example_inputs
    from xsam_edge.export.to_bundle import bundle_manifest
    from xsam_edge.quantization.calibration import CalibrationSet
    from xsam_edge.quantization.quantize import _quantize_graph, _share_tied_table
    from xsam_edge.quantization.recipes import Recipe, get_recipe
    from xsam_edge.quantization.schemes import Float16, Palettize
    from xsam_edge.spec.bundle import finalize_bundle, load_bundle
    from xsam_edge.spec.tokenizer import tiny_tokenizer

    model, slots = make_tiny_model(seed=1, tied=True), SlotConfig()
    staging = tmp_path / "fp32-staging"
    graphs = ("embed", "llm_prefill", "llm_decode")
    entries = [graph_entry(export_coreml(model, g, slots, staging / "coreml"), staging) for g in graphs]
    tiny_tokenizer().save(staging)  # a sealed bundle always carries its tokenizer
    manifest = bundle_manifest(model, tiny_tokenizer(), slots, entries, source={"name": "tiny"})
    fp32 = load_bundle(finalize_bundle(staging, tmp_path / "fp32", manifest))
    recipe, calibration = (get_recipe(named), None) if named else (None, None)
    if named == "apple-ane":
        calibration = CalibrationSet(requests=4)
        for g in ("embed", "llm_prefill"):
            calibration.samples[g] = [
                [x.numpy() for x in example_inputs(model.config, g, slots, seed=i)] for i in range(4)
            ]
    if recipe is None:
        alike = {"llm": Palettize(4, 16), "embed": Palettize(4, 16)}
        recipe = Recipe("tied-palettized", "coreml", alike, default=Float16())
    parts = {
        g: _quantize_graph(model, fp32, recipe, g, recipe.scheme_for(g), calibration, slots, tmp_path / "w")
        for g in ("embed", "llm")
    }
    if named == "apple-ane":
        notes = parts["embed"].report.notes
        assert notes[0].startswith("embed: its table is the LLM's tied head, weighed by the head's")
        assert any("palettized with tables weighted" in n for n in notes)
    bundle, assembled = tmp_path / "b", []
    for part in parts.values():  # as assemble_bundle copies the parts
        for entry in part.entries:
            name = Path(entry.files[0]).name
            shutil.copytree(part.root / entry.files[0], bundle / "coreml" / name)
            assembled.append(dataclasses.replace(entry, files=[f"coreml/{name}"]))
    embed, llm = _share_tied_table("coreml", assembled, bundle, parts)
    assert embed.files == llm.files == ["coreml/llm.mlpackage"] and embed.methods[0]["name"] == "embed"
    assert sorted(p.name for p in (bundle / "coreml").iterdir()) == ["llm.mlpackage"]
    assert llm.placement["tied_embed_bytes_saved"] > 0
    report = parts["embed"].report
    assert report.bytes_quant == 0 and "stored once in coreml/llm.mlpackage" in report.notes[-1]


def test_an_untied_lookup_is_palettized_with_plain_tables(tmp_path):
    """Its own graph's output is the row it looks up: apple-ane's lookup has no sensitivity to weigh by."""
    from conftest import make_tiny_model

    from xsam_edge.backends import get_backend
    from xsam_edge.export.graphs import example_inputs
    from xsam_edge.quantization.handler import GraphSource
    from xsam_edge.quantization.recipes import get_recipe

    model, slots = make_tiny_model(seed=1, tied=False), SlotConfig()
    files = {"embed": [export_coreml(model, "embed", slots, tmp_path / "fp").file]}
    samples = [[x.numpy() for x in example_inputs(model.config, "embed", slots, seed=i)] for i in range(3)]
    source = GraphSource("embed", files=files, model=model, slots=slots)
    scheme = get_recipe("apple-ane").scheme_for("embed")
    handler = get_backend("coreml").quantize_handler()
    notes = handler.quantize(source, scheme, (), {"embed": samples}, {}, tmp_path / "q").report.notes
    print(notes)
    assert notes[0] == "embed: an untied lookup's own output is its row; its tables are unweighted"
    assert any("no sensitivity for" in n and "tables unweighted" in n for n in notes)
    assert not any("palettized with tables weighted" in n for n in notes)
