"""The iOS demo (ios_demo/) where Linux can reach it: Swift syntax and the bridge's C++ side.

There is no Swift toolchain or Xcode here, so the SwiftUI sources are syntax-checked with tree-sitter-swift
(``ios_demo/tools/check_swift_syntax.js``; the checker is shown to reject broken Swift), and the C++ that
XSamBridge.mm calls (``native/apple``: BridgeSession over the C API, drawing maths, gestures) is built with
native/ by tests/test_native.py's fixture and run against the tiny reference bundle and spec/image_io.py's
palette. XSamBridge.mm itself (Objective-C++) and the app are not compiled here. Tests skip, saying what is
missing, without the toolchain; ``scripts/install-app-deps.sh`` installs it (CI runs it before pytest).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_native import CACHE, ROOT, _missing, _run, reference, x86_build  # noqa: F401  (fixtures, used by name)

from xsam_edge.spec.image_io import palette

IOS = ROOT / "ios_demo"
CHECKER = IOS / "tools" / "check_swift_syntax.js"
INSTALL = "scripts/install-app-deps.sh"


@pytest.fixture(scope="module")
def swift_checker() -> list[str]:
    """The command that syntax-checks Swift files (node and the packages the install script adds)."""
    if _missing(("node",)):
        pytest.skip(f"node is missing; run {INSTALL}")
    modules = CACHE / "tree-sitter-swift" / "node_modules"
    if not (modules / "tree-sitter-swift").is_dir() or not (modules / "tree-sitter").is_dir():
        pytest.skip(f"tree-sitter-swift is not installed under {modules}; run {INSTALL}")
    return ["env", f"NODE_PATH={modules}", "node", str(CHECKER)]


def test_every_swift_source_parses(swift_checker: list[str]) -> None:
    sources = sorted(IOS.rglob("*.swift"))
    assert len(sources) >= 5, sources
    proc = _run([*swift_checker, *map(str, sources)], timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(sources)} files parsed, 0 with syntax errors" in proc.stdout


@pytest.mark.parametrize(
    ("snippet", "where"),
    [
        ('struct A: View {\n    var body: some View {\n        Text("x"\n    }\n}\n', ":3:"),
        ("func f( {\n}\n", ":1:"),
        ("let x = = 1\n", ":1:"),
    ],
)
def test_the_checker_rejects_broken_swift(swift_checker: list[str], tmp_path: Path, snippet: str, where: str):
    broken = tmp_path / "Broken.swift"
    broken.write_text(snippet)
    fine = tmp_path / "Fine.swift"
    fine.write_text('import SwiftUI\nstruct A: View {\n    var body: some View { Text("x") }\n}\n')
    proc = _run([*swift_checker, str(fine), str(broken)], timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "2 files parsed, 1 with syntax errors" in proc.stdout
    assert f"{broken}{where}" in proc.stdout and str(fine) not in proc.stdout.replace(str(broken), "")


def _bridge_test(build: Path, reference: Path, tmp_path: Path, colours: str):  # noqa: F811
    """native/apple's test program on the reference bundle, with a palette file of "r g b" lines."""
    program = build / "apple" / "test_apple_bridge"
    assert program.is_file(), "native/CMakeLists.txt builds native/apple's test program"
    (tmp_path / "palette.txt").write_text(colours)
    args = [str(program), str(reference / "bundle"), str(reference / "parity"), str(tmp_path / "palette.txt")]
    return _run(args, timeout=300)


@pytest.mark.slow
def test_bridge_cpp_side_against_the_core(x86_build: Path, reference: Path, tmp_path: Path) -> None:  # noqa: F811
    colours = "\n".join(" ".join(map(str, c)) for c in palette(12).tolist()) + "\n"
    proc = _bridge_test(x86_build, reference, tmp_path, colours)
    assert proc.returncode == 0 and "apple_bridge: passed (0 failures)" in proc.stdout, proc.stdout[-4000:]
    # every reference request the demo can express (all but the one with a mask prompt) is compared
    assert "bridge vs core: 12 requests identical" in proc.stdout


@pytest.mark.slow
def test_bridge_test_fails_on_a_wrong_palette(x86_build: Path, reference: Path, tmp_path: Path) -> None:  # noqa: F811
    proc = _bridge_test(x86_build, reference, tmp_path, "0 0 0\n" * 12)
    assert proc.returncode == 1 and "FAIL" in proc.stdout and "palette colour 0" in proc.stdout


def test_xcodegen_project_names_real_paths() -> None:
    """project.yml's paths exist; the .mm includes only what native/apple has."""
    project = (IOS / "project.yml").read_text()
    for path in re.findall(r"^\s+- path: (\S+)$", project, re.MULTILINE):
        if path != "bundle":  # optional: a bundle shipped inside the app
            assert (IOS / path).is_dir(), path
    (header,) = re.findall(r"SWIFT_OBJC_BRIDGING_HEADER: (\S+)", project)
    assert (IOS / header).is_file()
    for folder in re.findall(r"\$\(SRCROOT\)/(\S+)", project):
        assert (IOS / folder).is_dir(), folder
    bridge = (IOS / "XSamDemo" / "Bridge" / "XSamBridge.mm").read_text()
    for include in re.findall(r'#include "(\S+)"', bridge):
        assert (ROOT / "native" / "apple" / include).is_file(), include
