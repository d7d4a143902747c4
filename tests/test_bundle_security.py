"""A bundle is untrusted input (issue #34): nothing outside it is read, nothing unlisted or unchecked is used.

Each case here was reproduced against the runtime before bundles were sealed: every one loaded, ran or
crashed late; now each is refused by ``load_bundle`` with a ``BundleError`` naming the problem.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import make_tiny_model, with_grid_sampler

pytest.importorskip("onnxruntime")

from xsam_edge.export.graphs import SlotConfig  # noqa: E402
from xsam_edge.export.to_bundle import export_bundle  # noqa: E402
from xsam_edge.runtime.session import EdgeSession  # noqa: E402
from xsam_edge.spec.bundle import MANIFEST_FILE, SCHEMA_VERSION, BundleError, load_bundle  # noqa: E402
from xsam_edge.spec.tokenizer import tiny_tokenizer  # noqa: E402

SLOTS = SlotConfig(max_regions=2, max_conditions=4, prefill_len=16)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    model = with_grid_sampler(make_tiny_model(seed=5))
    path, _ = export_bundle(
        model,
        tiny_tokenizer(),
        tmp_path_factory.mktemp("sealed") / "bundle",
        ("onnx",),
        SLOTS,
        progress=False,
    )
    return path


@pytest.fixture()
def copy(bundle, tmp_path) -> Path:
    """A copy of the bundle, with a file outside it that hostile manifests point at."""
    (tmp_path / "outside").mkdir()
    shutil.copy2(bundle / "onnx" / "segment.onnx", tmp_path / "outside" / "segment.onnx")
    (tmp_path / "outside" / "secret.txt").write_text("not yours")
    target = tmp_path / "b"
    shutil.copytree(bundle, target)
    return target


def _edit(root: Path, change) -> None:
    path = root / MANIFEST_FILE
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _graph(data: dict, name: str) -> dict:
    return next(g for g in data["graphs"] if g["name"] == name)


def test_the_exported_bundle_is_sealed(bundle):
    manifest = load_bundle(bundle)
    assert manifest.schema_version == SCHEMA_VERSION == 4
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {MANIFEST_FILE}
    assert set(manifest.files) == on_disk
    assert all(set(r) == {"sha256", "size"} for r in manifest.files.values())
    with pytest.raises(BundleError, match="not a file of this bundle"):
        manifest.path("../outside/secret.txt")


# -- paths that leave the bundle -------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["../outside/segment.onnx", "../../../outside/segment.onnx", "/etc/passwd"])
def test_graph_paths_may_not_leave_the_bundle(copy, bad):
    _edit(copy, lambda d: _graph(d, "segment").__setitem__("files", [bad]))
    with pytest.raises(BundleError, match="graphs"):
        load_bundle(copy)


@pytest.mark.parametrize(
    "bad", ["../../etc/hostname", "/etc/hostname", "onnx/../../outside/secret.txt", "a//b"]
)
def test_file_list_paths_may_not_leave_the_bundle(copy, bad):
    def change(d: dict) -> None:
        d["files"][bad] = {"sha256": "0" * 64, "size": 1}

    _edit(copy, change)
    with pytest.raises(BundleError, match="files"):
        load_bundle(copy)


def test_checksums_are_not_optional(copy):
    _edit(copy, lambda d: d.__setitem__("files", {}))
    path = copy / "onnx" / "segment.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="not listed"):
        load_bundle(copy)


@pytest.mark.parametrize("what", ["onnx/segment.onnx", "tokenizer.json", "onnx"])
def test_symlinks_out_of_the_bundle_are_refused(copy, what):
    target = copy / what
    outside = copy.parent / "outside" / ("segment.onnx" if what != "onnx" else "")
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    os.symlink(outside, target)
    with pytest.raises(BundleError, match="symlink"):
        load_bundle(copy)


def test_special_files_are_refused(copy):
    os.mkfifo(copy / "onnx" / "pipe")
    with pytest.raises(BundleError, match="not a regular file"):
        load_bundle(copy)


def test_sizes_are_checked_before_hashing_a_huge_file(copy):
    path = copy / "onnx" / "segment.onnx"
    with open(path, "r+b") as f:
        f.truncate(10 << 30)  # 10 GB, sparse: hashing it would take half a minute
    start = time.monotonic()
    with pytest.raises(BundleError, match="bytes, its manifest says"):
        load_bundle(copy)
    assert time.monotonic() - start < 5


def test_an_unlisted_file_is_refused(copy):
    (copy / "onnx" / "extra.onnx").write_bytes(b"not in the manifest")
    with pytest.raises(BundleError, match="does not list"):
        load_bundle(copy)


# -- manifests that used to load and fail later -------------------------------------------------------------
MUTATIONS = {
    "max_regions 0": lambda d: d["slots"].__setitem__("max_regions", 0),
    "a missing slot": lambda d: d["slots"].pop("max_conditions"),
    "no files for a graph": lambda d: _graph(d, "segment").__setitem__("files", []),
    "slots of 10^12": lambda d: d["slots"].__setitem__("max_seq", 10**12),
    "a NaN slot": lambda d: d["slots"].__setitem__("prefill_len", float("nan")),
    "a duplicated graph": lambda d: d["graphs"].append(_graph(d, "segment")),
    "no seg_size": lambda d: d["preprocess"].pop("seg_size"),
    "NaN pixel_mean": lambda d: d["preprocess"].__setitem__("pixel_mean", [float("nan"), 0.5, 0.5]),
    "schema version 0": lambda d: d.__setitem__("schema_version", 0),
    "schema version -7": lambda d: d.__setitem__("schema_version", -7),
    "schema version true": lambda d: d.__setitem__("schema_version", True),
    "a model config of []": lambda d: d.__setitem__("model", []),
    "a model config without llm": lambda d: d["model"].pop("llm"),
    "a full-size model config": lambda d: d["model"]["llm"].__setitem__("hidden_size", 3072),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_manifest_mutations_are_refused_at_load(copy, name):
    _edit(copy, MUTATIONS[name])
    with pytest.raises(BundleError):
        EdgeSession(copy, "onnx")


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xfe not utf-8", b"[]", b"[" * 100_000 + b"]" * 100_000, b'{"schema_version": NaN}', b"{"],
    ids=["non-utf8", "a list", "deep nesting", "NaN", "truncated"],
)
def test_unreadable_manifests_are_bundle_errors(copy, raw):
    (copy / MANIFEST_FILE).write_bytes(raw)
    with pytest.raises(BundleError):
        load_bundle(copy)


def test_golden_requests_cannot_point_outside(copy):
    """Even a re-sealed bundle (sizes and checksums made to match) cannot send the reader outside it."""
    from xsam_edge.spec.bundle import sha256_file

    requests = copy / "golden" / "requests.json"
    data = json.loads(requests.read_text())
    data["requests"][0]["image"] = "../../outside/secret.txt"
    requests.write_text(json.dumps(data))

    def reseal(d: dict) -> None:
        d["files"]["golden/requests.json"] = {
            "sha256": sha256_file(requests),
            "size": requests.stat().st_size,
        }

    _edit(copy, reseal)
    manifest = load_bundle(copy)
    with pytest.raises(BundleError, match="not a file of this bundle"):
        manifest.load_golden()


# -- signatures ----------------------------------------------------------------------------------------------
def test_a_signed_bundle_is_checked_against_the_public_key(copy, tmp_path):
    from xsam_edge.spec.signing import new_key_pair, sign_bundle

    private, public = new_key_pair(tmp_path / "keys")
    _, stranger = new_key_pair(tmp_path / "other")
    with pytest.raises(BundleError, match="not signed"):
        load_bundle(copy, public_key=public)
    sign_bundle(copy, private)
    assert load_bundle(copy, public_key=public).root == copy
    assert EdgeSession(copy, "onnx", public_key=public).manifest.root == copy
    with pytest.raises(BundleError, match="signature does not match"):
        load_bundle(copy, public_key=stranger)
    _edit(copy, lambda d: d.__setitem__("created", "later"))  # any change after signing
    with pytest.raises(BundleError, match="signature does not match"):
        load_bundle(copy, public_key=public)


def test_onnx_external_data_may_not_leave_the_bundle(copy):
    """A whole hostile bundle (hashes made to match) whose LLM graph takes its weights from a file outside.

    The manifest is fine, the graph file is not, and the runtime refuses it before any request."""
    import onnx

    from xsam_edge.spec.bundle import sha256_file

    graph = copy / "onnx" / "llm_kvio_prefill.onnx"
    shutil.copy2(copy / "onnx" / "llm_weights.bin", copy.parent / "outside" / "weights.bin")
    model = onnx.load(str(graph), load_external_data=False)
    for tensor in model.graph.initializer:
        for item in tensor.external_data:
            if item.key == "location":
                item.value = "../../outside/weights.bin"
    onnx.save(model, str(graph))
    relative = "onnx/llm_kvio_prefill.onnx"
    _edit(
        copy,
        lambda d: d["files"].__setitem__(
            relative, {"sha256": sha256_file(graph), "size": graph.stat().st_size}
        ),
    )
    load_bundle(copy)  # sealed: every listed file matches its hash
    with pytest.raises(BundleError, match="ONNX Runtime cannot load"):
        EdgeSession(copy, "onnx")
