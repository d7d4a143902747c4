"""Atomic writes, the one module for them: a reader never sees a half-written file, a failure leaves nothing.

Everything the project writes goes through here: single text or byte files (a temporary file in the same
folder, fsync, ``os.replace``), what a converter library writes by itself (ONNX files with their external
data, OpenVINO ``.xml`` + ``.bin``, Core ML ``.mlpackage`` folders: ``write_atomically`` lets it write into a
fresh folder beside the target and moves the results into place), and whole folders (``staged_dir``,
``replace_dir``).

A kill at any point leaves the target whole: either the old one or the new one. Temporary files and folders
carry the writing process's id; the next write to the same place removes those of processes that are gone,
and ``recover_dir`` puts an old folder back when a kill fell between ``replace_dir``'s two renames.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_with",
    "replace_dir",
    "staged_dir",
    "write_atomically",
]

T = TypeVar("T")
MODEL_SUFFIXES = (".onnx", ".xml", ".pte", ".mlpackage")  # listed first among the files moved


def atomic_write_with(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Let ``write(tmp)`` write the file at a temporary path in ``path``'s folder, then move it into place.

    For libraries that write files themselves (``torch.save``, ``np.savez``, PIL, safetensors). The result
    is fsynced and made world-readable (a bundle's files must be readable by the app).
    """
    path = Path(path)
    _remove_stale(path.parent, f".{path.name}.")
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync and ``os.replace``."""
    atomic_write_with(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically, UTF-8 encoded."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_atomically(out_dir: Path, write: Callable[[Path], T]) -> tuple[list[Path], T]:
    """Run ``write(tmp)`` in a fresh folder inside ``out_dir``, then move what it wrote into ``out_dir``.

    Args:
        out_dir (Path): destination folder (created); files or folders of the same names are replaced.
        write (Callable[[Path], T]): writes its files into the folder it is given.

    Returns:
        tuple[list[Path], T]: the moved files (model file first, then by name) and ``write``'s result.
    """
    out_dir = Path(out_dir)
    _make_folder(out_dir)
    _remove_stale(out_dir, ".staging-")
    tmp = Path(tempfile.mkdtemp(prefix=f".staging-{os.getpid()}-", dir=out_dir))
    try:
        result = write(tmp)
        files = []
        for produced in sorted(tmp.iterdir(), key=lambda p: (p.suffix not in MODEL_SUFFIXES, p.name)):
            target = out_dir / produced.name
            if target.is_dir():  # os.replace cannot replace a non-empty folder (an .mlpackage)
                shutil.rmtree(target)
            os.replace(produced, target)
            files.append(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return files, result


@contextmanager
def staged_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """A fresh folder beside ``target`` to fill; a clean exit swaps it in whole, an error removes it.

    Yields:
        Path: the staging folder (same filesystem as ``target``, so the swap is a rename).
    """
    target = Path(target).resolve()
    _make_folder(target.parent)
    recover_dir(target)
    _remove_stale(target.parent, f".{target.name}.staging-")
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-{os.getpid()}-", dir=target.parent))
    try:
        yield staging
        replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def replace_dir(new: Path, target: Path) -> None:
    """Swap the folder ``new`` into ``target`` (same filesystem); an existing target is moved aside first.

    A kill between the two renames leaves ``target`` missing and the old folder as ``.<name>.old-<pid>``:
    ``recover_dir`` (run by the next write or ``load_bundle``) renames it back.
    """
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)


def recover_dir(target: str | os.PathLike[str]) -> None:
    """Undo a ``replace_dir`` that a kill interrupted, and drop old copies left by finished processes.

    If ``target`` is missing and an old copy of a process that is gone exists, the newest such copy is
    renamed back into place. With ``target`` present, old copies of processes that are gone are removed.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return
    olds = [p for p in target.parent.glob(f".{target.name}.old-*") if not _alive(_pid_of(p, ".old-"))]
    if not target.exists() and olds:
        newest = max(olds, key=lambda p: p.stat().st_mtime)
        os.replace(newest, target)
        olds.remove(newest)
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)


def _make_folder(folder: Path) -> None:
    """Create ``folder`` (and its parents), or say which part of its path is a file.

    Raises:
        NotADirectoryError: a component of the path is a file.
    """
    for part in (folder, *folder.parents):
        if part.exists() and not part.is_dir():
            raise NotADirectoryError(f"{part} is a file, not a folder; choose another output path")
    folder.mkdir(parents=True, exist_ok=True)


def _pid_of(path: Path, marker: str) -> int | None:
    """The process id written after ``marker`` in a temporary name (``None`` if there is none)."""
    tail = path.name.split(marker, 1)[-1]
    digits = tail.split("-", 1)[0].split(".", 1)[0]
    return int(digits) if digits.isdigit() else None


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove_stale(folder: Path, prefix: str) -> None:
    """Remove temporaries named ``<prefix><pid>-…`` in ``folder`` whose process is gone (a killed writer)."""
    if not folder.is_dir():
        return
    for path in folder.glob(f"{prefix}*"):
        pid = _pid_of(path, prefix)
        if pid is None or _alive(pid) or pid == os.getpid():
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
