"""The iOS demo (ios_demo/) where Linux can reach it: Swift syntax and the bridge's C++ side.

There is no Swift toolchain or Xcode here, so the SwiftUI sources are syntax-checked with tree-sitter-swift
(``scripts/check-syntax.js``; the checker is shown to reject broken Swift), and the C++ that
XSamBridge.mm calls (``native/apple``: BridgeSession over the C API, drawing maths, gestures) is built with
native/ by tests/test_native.py's fixture and run against the tiny reference bundle and spec/image_io.py's
palette. XSamBridge.mm itself (Objective-C++) and the app are not compiled here. Tests skip, saying what is
missing, without the toolchain; ``scripts/install-app-deps.sh`` installs it (CI runs it before pytest).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from app_syntax import check_rejects, check_sources, syntax_checker  # noqa: F401  (fixture, used by name)
from test_native import ROOT, _run, reference, x86_build  # noqa: F401  (fixtures, used by name)

from xsam_edge.spec.image_io import palette

IOS = ROOT / "ios_demo"


def test_every_swift_source_parses(syntax_checker: list[str]) -> None:  # noqa: F811
    sources = sorted(IOS.rglob("*.swift"))
    assert len(sources) >= 5, sources
    check_sources(syntax_checker, sources)


@pytest.mark.parametrize(
    ("snippet", "where"),
    [
        ('struct A: View {\n    var body: some View {\n        Text("x"\n    }\n}\n', ":3:"),
        ("func f( {\n}\n", ":1:"),
        ("let x = = 1\n", ":1:"),
    ],
)
def test_the_checker_rejects_broken_swift(
    syntax_checker: list[str],  # noqa: F811
    tmp_path: Path,
    snippet: str,
    where: str,
) -> None:
    fine = 'import SwiftUI\nstruct A: View {\n    var body: some View { Text("x") }\n}\n'
    check_rejects(syntax_checker, tmp_path, fine, snippet, ".swift", where)


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
    assert "bridge selfcheck: PASS, 3 golden requests" in proc.stdout, proc.stdout[-4000:]


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
