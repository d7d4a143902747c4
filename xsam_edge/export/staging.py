"""Atomic writes for every converter: write into a temporary folder beside the target, then move into place.

One mechanism for ONNX files (with their external data), OpenVINO ``.xml`` + ``.bin`` pairs, ExecuTorch
``.pte`` files and Core ML ``.mlpackage`` folders: a failed export or quantization leaves nothing behind, and
a reader never sees a half-written file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

__all__ = ["write_atomically"]

T = TypeVar("T")
MODEL_SUFFIXES = (".onnx", ".xml", ".pte", ".mlpackage")  # listed first among the files moved


def write_atomically(out_dir: Path, write: Callable[[Path], T]) -> tuple[list[Path], T]:
    """Run ``write(tmp)`` in a fresh folder inside ``out_dir``, then move what it wrote into ``out_dir``.

    Args:
        out_dir (Path): destination folder (created); files or folders of the same names are replaced.
        write (Callable[[Path], T]): writes its files into the folder it is given.

    Returns:
        tuple[list[Path], T]: the moved files (model file first, then by name) and ``write``'s result.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir))
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
