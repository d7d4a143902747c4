"""Shared by the app demos' tests: the tree-sitter syntax check (scripts/check-syntax.js) for sources that no
toolchain here compiles (the SwiftUI app, the Android app's Kotlin), and a proof that it rejects broken code.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_native import CACHE, ROOT, _missing, _run

INSTALL = "scripts/install-app-deps.sh"
GRAMMARS = ("tree-sitter", "tree-sitter-swift", "@tree-sitter-grammars/tree-sitter-kotlin")


@pytest.fixture(scope="module")
def syntax_checker() -> list[str]:
    """The command that syntax-checks Swift and Kotlin files (node and the install script's packages)."""
    if _missing(("node",)):
        pytest.skip(f"node is missing; run {INSTALL}")
    modules = CACHE / "tree-sitter" / "node_modules"
    absent = [g for g in GRAMMARS if not (modules / g).is_dir()]
    if absent:
        pytest.skip(f"{', '.join(absent)} not installed under {modules}; run {INSTALL}")
    return ["env", f"NODE_PATH={modules}", "node", str(ROOT / "scripts" / "check-syntax.js")]


def check_sources(checker: list[str], sources: list[Path]) -> None:
    """Every file parses (the checker's own count line must say so)."""
    assert sources
    proc = _run([*checker, *map(str, sources)], timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(sources)} files parsed, 0 with syntax errors" in proc.stdout


def check_rejects(checker: list[str], folder: Path, fine: str, broken: str, suffix: str, where: str) -> None:
    """A broken snippet is reported at the line [where] (":3:"), next to a correct file that is not."""
    good, bad = folder / f"Fine{suffix}", folder / f"Broken{suffix}"
    good.write_text(fine)
    bad.write_text(broken)
    proc = _run([*checker, str(good), str(bad)], timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "2 files parsed, 1 with syntax errors" in proc.stdout
    assert f"{bad}{where}" in proc.stdout and f"{good}:" not in proc.stdout
