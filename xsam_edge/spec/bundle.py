"""The bundle: one directory that a device needs to answer requests, checksummed and versioned.

Layout::

    manifest.json      schema version, model config, pre-processing spec, template, special-token ids, slot
                       sizes, every graph (backend, precision, files, inputs/outputs/states),
                       sha256 of every file
    <backend>/<graph>.<ext>
                       the graph files
    tokenizer.json
    golden/            requests.json + outputs.npz: a few requests with the PyTorch model's outputs

A bundle is staged in a temporary folder beside the target and renamed into place (never half written).

A bundle is untrusted input: it may come from anywhere. ``load_bundle`` opens nothing it has not checked.
The manifest is read with a size cap and strict UTF-8 / JSON (no NaN), validated against
``manifest.schema.json`` (types, ranges, required keys), then every file of the folder is matched with the
manifest's list: each listed path must be a relative path inside the folder, a regular file (no symlink, no
device, no FIFO), of the listed size (checked before hashing) and sha256; an unlisted file, a listed file
that is missing, or a graph, tokenizer or golden file that is not listed is refused. ``Manifest.path`` hands
out listed paths only. An optional Ed25519 signature (``spec.signing``) says who made the bundle.
No torch here.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xsam_edge.files import replace_dir
from xsam_edge.spec.config import XSamConfig
from xsam_edge.spec.prompts import TEMPLATES

# 2: graph methods and quantization reports; 3: source model, MACs per graph; 4: sealed (file sizes, every
# file listed and confined, the JSON schema)
SCHEMA_VERSION = 4
MANIFEST_MAX_BYTES = 64 << 20
SIGNATURE_FILE = "manifest.sig"
SCHEMA_FILE = Path(__file__).with_name("manifest.schema.json")
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
            and ``inputs`` / ``outputs`` are then the only method's. ``"dynamic_tokens": true`` on a method
            means its token axis takes 1 up to the listed size (a prefill run at its own length).
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
    files: dict[str, dict[str, Any]]  # relative path → {"sha256", "size"}
    created: str = ""
    producer: str = "xsam_edge"
    golden: list[str] = field(default_factory=list)
    # the recipe and per-graph reports of a quantized bundle (empty for a float export)
    quantization: dict = field(default_factory=dict)
    # the weights the graphs came from: name, fingerprint, teacher_fingerprint (distilled models)
    source: dict = field(default_factory=dict)
    root: Path | None = None
    # set by load_bundle: ``path`` then hands out listed files only (a manifest made in memory by this
    # process, for the eager graphs, has no file list to hold it to)
    sealed: bool = False

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
        """The file (or a graph's folder, a Core ML ``.mlpackage``) at ``relative``, if the manifest lists it.

        Raises:
            BundleError: the path is not listed (nothing outside the sealed list is ever opened).
        """
        assert self.root is not None, "manifest not loaded from a folder"
        if self.sealed and not _is_listed(relative, self.files):
            raise BundleError(f"{relative!r} is not a file of this bundle (not in its manifest)")
        return self.root / relative

    def load_golden(self) -> tuple[list, list]:
        """The golden requests and outputs, read through ``path`` (names outside the list are refused)."""
        from xsam_edge.spec.golden import load_golden

        return load_golden(self.path(GOLDEN_DIR), lambda name: self.path(f"{GOLDEN_DIR}/{name}"))

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("root")
        data.pop("sealed")
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _is_listed(relative: str, files: dict) -> bool:
    """A listed file, or a listed graph folder (a Core ML ``.mlpackage``: its files are listed)."""
    return relative in files or any(k.startswith(relative + "/") for k in files)


def sha256_file(path: str | os.PathLike, size: int | None = None) -> str:
    """sha256 of a file; with ``size``, of at most that many bytes plus one (a longer file then differs)."""
    digest = hashlib.sha256()
    left = None if size is None else size + 1
    with open(path, "rb") as f:
        while left is None or left > 0:
            block = f.read(1 << 20 if left is None else min(1 << 20, left))
            if not block:
                break
            digest.update(block)
            if left is not None:
                left -= len(block)
    return digest.hexdigest()


def seal_bundle(staging: Path, manifest: Manifest) -> None:
    """List every file under ``staging`` in ``manifest.files`` (sha256 and size); write the manifest there.

    Raises:
        BundleError: a graph names a file that is not in the folder, or the folder holds a symlink.
    """
    found = _tree(staging)
    manifest.files = {
        rel: {"sha256": sha256_file(staging / rel), "size": size} for rel, size in found.items()
    }
    text = manifest.to_json()
    _check_manifest(json.loads(text), staging / MANIFEST_FILE)
    (staging / MANIFEST_FILE).write_text(text)


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


def load_bundle(path: str | os.PathLike, verify: bool = True, public_key: Any = None) -> Manifest:
    """Read and check a bundle before any of its files is opened by anything else.

    Args:
        path (str | os.PathLike): the bundle folder.
        verify (bool): check every file's sha256 (sizes, paths and file types are always checked).
        public_key (Any): an Ed25519 public key (PEM bytes, a path to one, or a key object): the manifest
            must carry a valid signature by it (``spec.signing``).

    Returns:
        Manifest: with ``root`` set.

    Raises:
        BundleError: what is wrong and the fix (not a bundle, a malformed or unsafe manifest, a path leaving
            the folder, a symlink or special file, an unlisted, missing, resized or changed file, a bad
            signature).
    """
    from xsam_edge.files import recover_dir

    root = Path(path)
    recover_dir(root)  # a replace killed half way: the old bundle is put back
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleError(
            f"{root} is not an xsam_edge bundle: no {MANIFEST_FILE} (make one with xsam-edge export)"
        )
    raw = _read_manifest(manifest_path)
    data = _parse_manifest(raw, manifest_path)
    _check_manifest(data, manifest_path)
    graphs = [GraphEntry(**g) for g in data.pop("graphs")]
    manifest = Manifest(graphs=graphs, root=root, sealed=True, **data)
    _check_files(root, manifest, verify)
    if public_key is not None:
        from xsam_edge.spec.signing import verify_manifest

        verify_manifest(root, raw, public_key)
    return manifest


def _read_manifest(path: Path) -> bytes:
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode):
        raise BundleError(f"{path} is not a regular file (a symlink or special file); re-export the bundle")
    if info.st_size > MANIFEST_MAX_BYTES:
        raise BundleError(
            f"{path} is {info.st_size} bytes, more than a manifest can be ({MANIFEST_MAX_BYTES})"
        )
    return path.read_bytes()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _parse_manifest(raw: bytes, path: Path) -> Any:
    try:
        text = raw.decode("utf-8")
        return json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError as err:
        raise BundleError(f"{path} is not UTF-8 text: {err}") from None
    except RecursionError:
        raise BundleError(f"{path} is nested too deeply to be a manifest") from None
    except ValueError as err:  # json.JSONDecodeError and NaN / Infinity
        raise BundleError(f"{path} is not valid JSON: {err}") from None


def _check_manifest(data: Any, path: Path) -> None:
    """The JSON schema, then what a schema cannot say (unique graphs, listed files, a valid config)."""
    if not isinstance(data, dict):
        raise BundleError(f"{path} must hold a JSON object, not {type(data).__name__}")
    version = data.get("schema_version")
    if type(version) is int and version > SCHEMA_VERSION:
        raise BundleError(
            f"bundle schema version {version} is newer than this xsam_edge reads ({SCHEMA_VERSION}); "
            "upgrade xsam_edge or re-export the bundle with this version"
        )
    if type(version) is int and 1 <= version < SCHEMA_VERSION:
        raise BundleError(
            f"bundle schema version {version} predates sealed bundles (version {SCHEMA_VERSION}); "
            "re-export it with this xsam_edge"
        )
    error = _schema_error(data)
    if error is not None:
        raise BundleError(f"{path}: {error}")
    seen = set()
    for g in data["graphs"]:
        key = (g["backend"], g["name"])
        if key in seen:
            raise BundleError(f"{path}: graph {g['backend']}/{g['name']} is listed twice")
        seen.add(key)
        for f in g["files"]:
            if not _is_listed(f, data["files"]):
                raise BundleError(
                    f"{path}: graph {g['backend']}/{g['name']} names {f!r}, which is not listed"
                )
    for f in [TOKENIZER_FILE, *data.get("golden", [])]:
        if f not in data["files"]:
            raise BundleError(f"{path}: {f!r} is not listed in files")
    slots = data["slots"]
    if slots["prefill_len"] > slots["max_seq"]:
        raise BundleError(f"{path}: slots.prefill_len {slots['prefill_len']} > max_seq {slots['max_seq']}")
    try:
        config = XSamConfig.from_dict(data["model"])
    except (ValueError, TypeError) as err:
        raise BundleError(f"{path}: model: {err}") from None
    if data["template"] not in TEMPLATES or data["template"] != config.tokens.template:
        raise BundleError(
            f"{path}: template {data['template']!r} is not the model's ({config.tokens.template!r}) or not "
            f"one of {', '.join(TEMPLATES)}"
        )
    _check_graph_shapes(data, config, path)


def _check_graph_shapes(data: dict, config: XSamConfig, path: Path) -> None:
    """The graphs' fixed shapes agree with the model config, pre-processing and slots the host plans with.

    A config that does not describe the graphs (another model's, or one edited to ask for a full-size
    model) is refused here, before any graph is loaded or any buffer sized from it.
    """
    slots, pre = data["slots"], data["preprocess"]
    expected = {
        ("encode_image", "inputs", 0): {-1: pre["seg_size"]},
        ("encode_image", "outputs", 0): {1: config.num_image_tokens, 2: config.llm.hidden_size},
        ("embed", "outputs", 0): {2: config.llm.hidden_size},
        ("region", "inputs", 1): {1: slots["max_regions"]},
        ("segment", "outputs", 0): {1: config.decoder.num_queries},
    }
    for g in data["graphs"]:
        for (name, side, index), dims in expected.items():
            if g["name"] != name or len(g[side]) <= index:
                continue
            shape = g[side][index]["shape"]
            for axis, want in dims.items():
                if len(shape) > (axis if axis >= 0 else -axis - 1) and shape[axis] not in (want, -1):
                    raise BundleError(
                        f"{path}: graph {g['backend']}/{name} {side[:-1]} {index} has shape {shape}, but the "
                        f"manifest's model and slots make dimension {axis} {want}; the manifest does not "
                        "describe these graphs (re-export the bundle)"
                    )


@functools.cache
def _validator() -> Any:
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text())
    return jsonschema.Draft202012Validator(schema)


def _schema_error(data: Any) -> str | None:
    """The manifest schema's most relevant complaint, with its field path, or ``None``."""
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator().iter_errors(data))
    if error is None:
        return None
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    return f"{where}: {error.message[:300]}"


def _tree(root: Path) -> dict[str, int]:
    """Every regular file under ``root`` (relative POSIX path → size), the manifest and signature excepted.

    Raises:
        BundleError: a symlink or a special file anywhere in the folder.
    """
    found: dict[str, int] = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in [*dirs, *files]:
            full = Path(folder) / name
            info = full.lstat()
            rel = full.relative_to(root).as_posix()
            if stat.S_ISLNK(info.st_mode):
                raise BundleError(f"bundle entry {rel} is a symlink; bundles hold regular files only")
            if stat.S_ISDIR(info.st_mode):
                continue
            if not stat.S_ISREG(info.st_mode):
                raise BundleError(f"bundle entry {rel} is not a regular file (a device, FIFO or socket)")
            if rel not in (MANIFEST_FILE, SIGNATURE_FILE):
                found[rel] = info.st_size
    return found


def _check_files(root: Path, manifest: Manifest, verify: bool) -> None:
    """The folder holds exactly the listed files, each of its listed size (and sha256 when ``verify``)."""
    if root.is_symlink():
        raise BundleError(f"{root} is a symlink; open the bundle folder itself")
    found = _tree(root)
    listed = manifest.files
    missing = sorted(set(listed) - set(found))
    if missing:
        raise BundleError(f"bundle file {missing[0]} is missing from {root}; re-export or copy it again")
    unlisted = sorted(set(found) - set(listed))
    if unlisted:
        raise BundleError(
            f"{root} holds {unlisted[0]}, which its manifest does not list; remove it (a sealed bundle holds "
            "its listed files only) or re-export"
        )
    for relative, record in listed.items():
        if found[relative] != record["size"]:
            raise BundleError(
                f"bundle file {relative} is {found[relative]} bytes, its manifest says {record['size']} "
                "(corrupted, truncated or replaced); re-export or copy the bundle again"
            )
    if verify:
        for relative, record in listed.items():
            if sha256_file(root / relative, record["size"]) != record["sha256"]:
                raise BundleError(
                    f"bundle file {relative} does not match its checksum (corrupted or edited); re-export or "
                    "copy the bundle again"
                )
