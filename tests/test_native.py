"""The native runtime (native/): builds it with CMake against the executorch wheel, runs its ctest suite on
x86-64 and, cross-built, on arm64 under qemu, and reads the runner's bench output into the report.

The reference data (a tiny ExecuTorch bundle, EdgeSession's answers on every task, tokenizer and
pre-processing cases) comes from ``native/tools/dump_reference.py`` and is cached by a fingerprint of the
Python sources that make it, as are the build folders (``native/build-*``, incremental). Tests skip, saying
what is missing, when the toolchain is not installed; ``scripts/install-native-deps.sh`` installs it (CI
runs it before pytest).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from xsam_edge.bench.imported import load_bench_results
from xsam_edge.bench.report import graph_table, markdown_table

ROOT = Path(__file__).resolve().parents[1]
NATIVE = ROOT / "native"
CACHE = Path(os.environ.get("XSAM_NATIVE_CACHE", Path.home() / ".cache" / "xsam_edge" / "native"))
INSTALL = "scripts/install-native-deps.sh"
CTEST_NAMES = (
    "tokenizer",
    "preprocess",
    "postprocess",
    "bundle",
    "parity",
    "selfcheck",
    "selfcheck_c_api",
    "run_cli",
    "bench_cli",
)


def _executorch_root() -> Path | None:
    spec = importlib.util.find_spec("executorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    return root if (root / "include" / "executorch").is_dir() and (root / "lib").is_dir() else None


def _missing(tools: tuple[str, ...]) -> list[str]:
    return [t for t in tools if shutil.which(t) is None]


@contextmanager
def _locked(name: str):
    """One process at a time builds or exports (xdist workers share the cache)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _fixture_key() -> str:
    """Fingerprint of what makes the reference data: package sources, dump script, test helpers."""
    digest = hashlib.sha256()
    files = sorted((ROOT / "xsam_edge").rglob("*.py")) + [NATIVE / "tools" / "dump_reference.py"]
    files += [ROOT / "tests" / "conftest.py", ROOT / "xsam_edge" / "assets" / "tiny_tokenizer.json"]
    for path in files:
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    for package in ("torch", "executorch", "tokenizers", "pillow", "numpy"):
        digest.update(importlib.metadata.version(package).encode())
    return digest.hexdigest()[:16]


def _run(cmd: list[str], cwd: Path = ROOT, timeout: int = 1200, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, **kw)


@pytest.fixture(scope="module")
def reference() -> Path:
    """native/tools/dump_reference.py's output: bundle, parity answers, tokenizer / pre-processing cases."""
    if _executorch_root() is None:
        pytest.skip("the executorch wheel with C++ headers is not installed (pip install -e '.[export]')")
    folder = CACHE / f"reference-{_fixture_key()}"
    with _locked("reference"):
        if not (folder / "done").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            proc = _run([sys.executable, str(NATIVE / "tools" / "dump_reference.py"), str(folder)])
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
            (folder / "done").write_text("")
    return folder


def _build(name: str, reference: Path, executorch: Path, toolchain: Path | None = None) -> Path:
    """Configure (once) and build native/ into native/build-<name>; ninja rebuilds only what changed."""
    build = NATIVE / f"build-{name}"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    cmd = [
        "cmake",
        "-S",
        str(NATIVE),
        "-B",
        str(build),
        *generator,
        f"-DEXECUTORCH_ROOT={executorch}",
        f"-DXSAM_FIXTURE_DIR={reference}",
        "-DCMAKE_BUILD_TYPE=Release",
    ]
    if toolchain is not None:
        cmd.append(f"-DCMAKE_TOOLCHAIN_FILE={toolchain}")
    with _locked(f"build-{name}"):
        cache = build / "CMakeCache.txt"
        if cache.is_file() and f"CMAKE_HOME_DIRECTORY:INTERNAL={NATIVE}\n" not in cache.read_text():
            shutil.rmtree(build)  # configured in another checkout (a copied tree): CMake refuses it
        configured = _run(cmd)
        assert configured.returncode == 0, configured.stdout[-3000:] + configured.stderr[-3000:]
        built = _run(["cmake", "--build", str(build), "-j", "2"], timeout=1800)
        assert built.returncode == 0, built.stdout[-5000:] + built.stderr[-5000:]
    return build


def _ctest(build: Path, timeout: int) -> str:
    # verbose: each test's own summary lines (parity numbers, selfcheck verdict) land in the pytest log
    proc = _run(["ctest", "--test-dir", str(build), "--verbose"], timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    summary = rf"100% tests passed, 0 tests failed out of {len(CTEST_NAMES)}\b"
    assert re.search(summary, output), output[-3000:]
    return output


@pytest.fixture(scope="module")
def x86_build(request: pytest.FixtureRequest) -> Path:
    missing = _missing(("cmake", "c++"))
    if missing:  # checked before the reference data, which takes minutes to make
        pytest.skip(f"native toolchain missing ({', '.join(missing)}); run {INSTALL}")
    return _build("host", request.getfixturevalue("reference"), _executorch_root())


def _arm64_executorch() -> Path | None:
    version = importlib.metadata.version("executorch").split("+")[0]
    root = CACHE / f"executorch-{version}-aarch64" / "executorch"
    return root if (root / "share" / "cmake" / "executorch-config.cmake").is_file() else None


@pytest.mark.slow
def test_ctest_x86_64(x86_build: Path) -> None:
    output = _ctest(x86_build, timeout=600)
    assert "parity vs EdgeSession: 13 requests" in output and "selfcheck PASS" in output
    # xsam_selfcheck through the C API: a pass on the bundle, a fail on a tampered golden copy
    assert "selfcheck C API: passed (0 failures)" in output and "tampered golden: passed 0" in output


@pytest.mark.slow
def test_ctest_arm64_under_qemu(request: pytest.FixtureRequest) -> None:
    missing = _missing(("cmake", "aarch64-linux-gnu-g++", "qemu-aarch64"))
    if missing:
        pytest.skip(f"arm64 cross toolchain missing ({', '.join(missing)}); run {INSTALL}")
    executorch = _arm64_executorch()
    if executorch is None:
        pytest.skip(f"the arm64 executorch wheel is not unpacked under {CACHE}; run {INSTALL}")
    reference = request.getfixturevalue("reference")
    build = _build("aarch64", reference, executorch, NATIVE / "cmake" / "aarch64-linux-gnu.cmake")
    output = _ctest(build, timeout=1500)
    assert "parity vs EdgeSession: 13 requests" in output and "selfcheck PASS" in output


@pytest.mark.slow
def test_selfcheck_and_parity_numbers(x86_build: Path, reference: Path) -> None:
    runner = str(x86_build / "xsam_runner")
    check = _run([runner, "selfcheck", "--bundle", str(reference / "bundle"), "--atol", "1e-4"])
    assert check.returncode == 0 and "selfcheck PASS" in check.stdout, check.stdout + check.stderr
    # a corrupted copy is refused with the file named, exit status 2, no crash
    broken = x86_build / "broken_bundle"
    shutil.rmtree(broken, ignore_errors=True)
    shutil.copytree(reference / "bundle", broken)
    tokenizer = broken / "tokenizer.json"
    text = tokenizer.read_bytes()
    tokenizer.write_bytes(text[:-1] + bytes([text[-1] ^ 0x01]))  # one byte changed, same size
    refused = _run([runner, "selfcheck", "--bundle", str(broken)])
    assert refused.returncode == 2 and "tokenizer.json does not match its checksum" in refused.stderr
    with open(tokenizer, "a") as f:  # a size the manifest does not list: refused before any hashing
        f.write(" ")
    refused = _run([runner, "selfcheck", "--bundle", str(broken)])
    assert (
        refused.returncode == 2
        and "tokenizer.json is" in refused.stderr
        and "its manifest says" in refused.stderr
    )


@pytest.mark.slow
def test_runner_bench_reads_into_the_report(x86_build: Path, reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "runner-bench.json"
    proc = _run(
        [
            str(x86_build / "xsam_runner"),
            "bench",
            "--bundle",
            str(reference / "bundle"),
            "--repeats",
            "2",
            "--label",
            "native-x86",
            "--out",
            str(out),
        ]
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = load_bench_results(out)
    (result,) = results
    assert result["backend"] == "executorch-native" and result["latency"]["first_query"]["n"] == 6
    assert {"encode_image", "embed", "llm_prefill", "segment"} <= set(result["latency"]["graphs"])
    assert result["accuracy"]["mask_agreement"]["matched_miou"] > 99
    table = markdown_table(results)
    assert "| native-x86 | executorch-native |" in table
    assert "| encode_image |" in graph_table(result)
    cli = _run(
        [
            str(Path(sys.executable).parent / "xsam-edge"),
            "bench",
            "--import",
            str(out),
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert "native-x86" in (tmp_path / "r" / "bench.md").read_text()


def test_bench_import_refuses_what_the_report_cannot_read(tmp_path: Path) -> None:
    doc = {"format": "xsam_edge-bench", "version": 1, "label": "phone", "backend": "executorch-native"}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"results": [doc]}))
    with pytest.raises(ValueError, match="lacks 'size'"):
        load_bench_results(path)
    path.write_text(json.dumps({"results": [{**doc, "format": "other"}]}))
    with pytest.raises(ValueError, match="not an xsam_edge-bench document"):
        load_bench_results(path)
    path.write_text(json.dumps({**doc, "version": 99}))
    with pytest.raises(ValueError, match="newer"):
        load_bench_results(path)
    path.write_text("{")
    with pytest.raises(ValueError, match="unreadable"):
        load_bench_results(path)
