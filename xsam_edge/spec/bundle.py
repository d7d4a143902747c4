"""The bundle: one directory that a device needs to answer requests, checksummed and versioned.

Layout::

    manifest.json      schema version, model config, pre-processing spec, template, special-token ids, slot
                       sizes, every graph (backend, precision, files, inputs/outputs/states),
                       sha256 of every file
    <backend>/<graph>.<ext>
                       the graph files
    tokenizer.json
    golden/            requests.json + outputs.npz: a few requests with the PyTorch model's outputs

A bundle is staged in a temporary folder beside the target and renamed into place (never half written);
``load_bundle`` checks the schema and every checksum and says precisely what is wrong. No torch here.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xsam_edge.files import replace_dir
from xsam_edge.spec.config import XSamConfig

SCHEMA_VERSION = 3  # 2: graph methods and quantization reports; 3: source model, MACs per graph
MANIFEST_FILE = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
GOLDEN_DIR = "golden"


class BundleError(ValueError):
    """A bundle that cannot be used: the message names the file and the fix."""


@dataclass
class GraphEntry:
    """One exported graph of the bundle.

    Attributes:
        name (str): graph name (``encode_image``, ``embed``, ``region``, ``llm_prefill`` …, ``segment``).
        backend (str): ``onnx``, ``openvino``, ``executorch`` or ``coreml``.
        precision (str): ``fp32``, ``fp16``, or a quantization recipe name.
        files (list[str]): paths relative to the bundle root (the first is the one to load).
        inputs (list[dict]): ``{"name", "shape", "dtype"}`` in call order.
        outputs (list[dict]): same, in return order.
        states (list[dict]): state tensors kept by the program between calls (stateful LLMs).
        methods (list[dict]): ``{"name", "inputs", "outputs"}`` per method of a multi-method program (the
            ExecuTorch ``llm``: ``prefill``, ``decode``, ``read_cache``, ``write_cache``); empty otherwise,
            and ``inputs`` / ``outputs`` are then the only method's.
        route (str): how it was produced (e.g. ``torch.onnx dynamo``).
        parity (list[dict]): per output ``{"name", "max_abs_diff", "psnr_db"}`` against eager PyTorch.
        placement (dict): op histogram / delegated vs fallback ops.
        macs (int | None): multiply-accumulates of one call (for the roofline); ``None`` if not counted.
    """

    name: str
    backend: str
    precision: str
    files: list[str]
    inputs: list[dict]
    outputs: list[dict]
    states: list[dict] = field(default_factory=list)
    methods: list[dict] = field(default_factory=list)
    route: str = ""
    parity: list[dict] = field(default_factory=list)
    placement: dict = field(default_factory=dict)
    macs: int | None = None


@dataclass
class Manifest:
    """The parsed ``manifest.json``."""

    schema_version: int
    model: dict
    preprocess: dict
    template: str
    tokens: dict
    slots: dict
    graphs: list[GraphEntry]
    files: dict[str, str]
    created: str = ""
    producer: str = "xsam_edge"
    golden: list[str] = field(default_factory=list)
    # the recipe and per-graph reports of a quantized bundle (empty for a float export)
    quantization: dict = field(default_factory=dict)
    # the weights the graphs came from: name, fingerprint, teacher_fingerprint (distilled models)
    source: dict = field(default_factory=dict)
    root: Path | None = None

    @property
    def config(self) -> XSamConfig:
        return XSamConfig.from_dict(self.model)

    @property
    def backends(self) -> list[str]:
        return sorted({g.backend for g in self.graphs})

    def graph(self, name: str, backend: str) -> GraphEntry:
        """The entry of graph ``name`` for ``backend``.

        Raises:
            BundleError: the bundle has no such graph; the message lists what it has.
        """
        for entry in self.graphs:
            if entry.name == name and entry.backend == backend:
                return entry
        have = sorted(f"{g.backend}/{g.name}" for g in self.graphs)
        raise BundleError(f"bundle has no {backend}/{name} graph; it has: {', '.join(have)}")

    def path(self, relative: str) -> Path:
        assert self.root is not None, "manifest not loaded from a folder"
        return self.root / relative

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("root")
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def seal_bundle(staging: Path, manifest: Manifest) -> None:
    """Checksum every file under ``staging`` into ``manifest.files`` and write the manifest there.

    Raises:
        BundleError: a graph names a file that is not in the folder.
    """
    manifest.files = {
        str(p.relative_to(staging)): sha256_file(p)
        for p in sorted(staging.rglob("*"))
        if p.is_file() and p.name != MANIFEST_FILE
    }
    for entry in manifest.graphs:
        # a graph file may be a folder (Core ML's .mlpackage): then its contents are the checksummed files
        missing = [
            f
            for f in entry.files
            if f not in manifest.files and not any(k.startswith(f + "/") for k in manifest.files)
        ]
        if missing:
            raise BundleError(f"graph {entry.backend}/{entry.name} names files not in the bundle: {missing}")
    (staging / MANIFEST_FILE).write_text(manifest.to_json())


def finalize_bundle(staging: Path, target: str | os.PathLike, manifest: Manifest) -> Path:
    """Seal ``staging`` as a bundle (``seal_bundle``) and rename the folder to ``target`` (replaced whole).

    Args:
        staging (Path): folder holding the graph files, tokenizer and golden vectors (same filesystem as
            ``target``; it is moved, not copied).
        target (str | os.PathLike): the bundle folder; an existing one is replaced.
        manifest (Manifest): everything but ``files``, which is filled here.

    Returns:
        Path: the bundle folder.
    """
    seal_bundle(staging, manifest)
    target = Path(target).resolve()
    replace_dir(staging, target)
    return target


def load_bundle(path: str | os.PathLike, verify: bool = True) -> Manifest:
    """Read and check a bundle.

    Args:
        path (str | os.PathLike): the bundle folder.
        verify (bool): check every file's sha256 (a few seconds for GB-size bundles).

    Returns:
        Manifest: with ``root`` set.

    Raises:
        BundleError: missing manifest or file, a changed byte, a newer schema, a malformed manifest.
    """
    root = Path(path)
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleError(
            f"{root} is not an xsam_edge bundle: no {MANIFEST_FILE} (make one with xsam-edge export)"
        )
    try:
        data: dict[str, Any] = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        raise BundleError(f"{manifest_path} is not valid JSON: {err}") from err
    version = data.get("schema_version")
    if not isinstance(version, int):
        raise BundleError(f"{manifest_path} has no integer schema_version")
    if version > SCHEMA_VERSION:
        raise BundleError(
            f"bundle schema version {version} is newer than this xsam_edge reads ({SCHEMA_VERSION}); "
            "upgrade xsam_edge or re-export the bundle with this version"
        )
    try:
        graphs = [GraphEntry(**g) for g in data.pop("graphs")]
        manifest = Manifest(graphs=graphs, root=root, **data)
    except (TypeError, KeyError) as err:
        raise BundleError(f"{manifest_path} is malformed: {err}") from err
    for relative, expected in manifest.files.items():
        file = root / relative
        if not file.is_file():
            raise BundleError(f"bundle file {relative} is missing from {root}; re-export or copy it again")
        if verify and sha256_file(file) != expected:
            raise BundleError(
                f"bundle file {relative} does not match its checksum (corrupted or edited); re-export or "
                "copy the bundle again"
            )
    return manifest
