"""The Android demo's platform-free Kotlin core (android_demo/core) on a desktop JVM, over libxsam_jni.

kotlinc compiles the core and its JUnit 4 tests; they run against the native build of tests/test_native.py
(native/build-host, which also builds native/jni when the JDK's headers are there) and its tiny reference
bundle: every reference request gives EdgeSession's answer through Kotlin -> JNI -> C API, errors come back
as exceptions, and the drawing maths equals spec/image_io.py's (palette, overlay). The Android app itself
(android_demo/app) needs the Android SDK / NDK and is not built here: its Kotlin and the Gradle scripts get a
tree-sitter syntax check (tests/app_syntax.py). Tests skip, saying what is missing,
without the toolchain; ``scripts/install-app-deps.sh`` installs it (CI runs it before pytest).
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
from app_syntax import check_rejects, check_sources, syntax_checker  # noqa: F401  (fixture, used by name)
from PIL import Image
from test_native import ROOT, _missing, _run, reference, x86_build  # noqa: F401  (fixtures, used by name)

from xsam_edge.spec.image_io import overlay, palette
from xsam_edge.spec.types import SegmentationResult

ANDROID = ROOT / "android_demo"
CORE = ANDROID / "core" / "src"
JARS = Path("/usr/share/java")  # Debian's junit4, hamcrest, libandroid-json-org-java (org.json), kotlin
CLASSPATH_JARS = ("junit4.jar", "hamcrest-core.jar", "json-android.jar", "kotlin-stdlib.jar")
INSTALL = "scripts/install-app-deps.sh"
TEST_CLASSES = ("NativeSessionTest", "OverlayTest", "ViewMappingTest", "DemoInputTest")
OVERLAY_REQUESTS = (0, 4)  # referring (one mask) and instance (ten overlapping masks)


def _classpath(*extra: Path) -> str:
    return ":".join([*(str(p) for p in extra), *(str(JARS / j) for j in CLASSPATH_JARS)])


def _unrle(runs: list[int], height: int, width: int) -> np.ndarray:
    """dump_reference.py's run lengths (first run background) back to an (H, W) bool mask."""
    flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
    return flat.reshape(height, width)


@pytest.fixture(scope="module")
def kotlin_classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = _missing(("kotlinc", "java"))
    missing += [j for j in CLASSPATH_JARS if not (JARS / j).is_file()]
    if missing:
        pytest.skip(f"Kotlin / JUnit toolchain missing ({', '.join(missing)}); run {INSTALL}")
    out = tmp_path_factory.mktemp("kotlin") / "classes"
    sources = [str(CORE / "main" / "kotlin"), str(CORE / "test" / "kotlin")]
    proc = _run(["kotlinc", "-cp", _classpath(), "-d", str(out), *sources], timeout=600)
    assert proc.returncode == 0 and (out / "org" / "xsam" / "edge").is_dir(), proc.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def jni_folder(x86_build: Path) -> Path:  # noqa: F811
    folder = x86_build / "jni"
    if not (folder / "libxsam_jni.so").is_file():
        pytest.skip(
            f"libxsam_jni.so was not built (no JDK headers when native/ was configured); run {INSTALL}"
        )
    return folder


def _spec_values(reference: Path, out: Path) -> Path:  # noqa: F811
    """spec.json: spec/image_io.py's palette and its overlays of EdgeSession's answers, for Kotlin."""
    parity = reference / "parity"
    image = np.asarray(Image.open(parity / "image.png").convert("RGB"))
    answers = json.loads((parity / "expected.json").read_text())["answers"]
    overlays = {}
    for i in OVERLAY_REQUESTS:
        a = answers[i]
        masks = np.stack([_unrle(r, a["height"], a["width"]) for r in a["rle"]])
        result = SegmentationResult(
            masks, a["labels"], np.asarray(a["scores"], np.float32), np.asarray(a["label_ids"])
        )
        overlays[str(i)] = base64.b64encode(overlay(image, result).tobytes()).decode()
    out.mkdir(parents=True, exist_ok=True)
    doc = {"palette": palette(12).tolist(), "overlays": overlays}
    (out / "spec.json").write_text(json.dumps(doc))
    return out


def _junit(classes: Path, jni: Path, properties: dict[str, Path], names: tuple[str, ...]):
    defines = [f"-D{k}={v}" for k, v in properties.items()]
    cmd = ["java", f"-Djava.library.path={jni}", *defines, "-cp", _classpath(classes)]
    return _run([*cmd, "org.xsam.edge.JvmTestMain", *(f"org.xsam.edge.{n}" for n in names)], timeout=300)


@pytest.mark.slow
def test_kotlin_core_on_the_jvm_matches_edge_session(
    kotlin_classes: Path,
    jni_folder: Path,
    reference: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    spec = _spec_values(reference, tmp_path / "spec")
    proc = _junit(kotlin_classes, jni_folder, {"xsam.reference": reference, "xsam.spec": spec}, TEST_CLASSES)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    match = re.search(r"^(\d+) passed, 0 failed, 0 skipped$", proc.stdout, re.MULTILINE)
    written = sum(p.read_text().count("@Test\n") for p in (CORE / "test").rglob("*Test.kt"))
    assert match and int(match.group(1)) == written, (written, output[-3000:])
    parity = re.search(r"13 requests, worst score diff (\S+), worst mask IoU (\S+)", proc.stdout)
    assert parity and float(parity.group(1)) < 1e-4 and float(parity.group(2)) == 1.0, output[-3000:]


def test_kotlin_runner_reports_failures_and_skips(kotlin_classes: Path, tmp_path: Path) -> None:
    """Without the reference folder the native tests count as skipped, not passed; a wrong spec fails."""
    spec = tmp_path / "spec"
    spec.mkdir()
    (spec / "spec.json").write_text(json.dumps({"palette": [[0, 0, 0]] * 12, "overlays": {}}))
    proc = _junit(kotlin_classes, tmp_path, {"xsam.spec": spec}, ("OverlayTest", "NativeSessionTest"))
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "FAILED paletteEqualsTheSpecPalette" in proc.stdout
    native_tests = (CORE / "test" / "kotlin" / "org" / "xsam" / "edge" / "NativeSessionTest.kt").read_text()
    skipped = native_tests.count("@Test\n")
    summary = rf"^\d+ passed, 1 failed, {skipped} skipped$"
    assert re.search(summary, proc.stdout, re.MULTILINE), proc.stdout[-3000:]


def test_core_is_platform_free_and_the_app_points_at_it() -> None:
    """The JVM-tested core imports nothing from android.*; the app's build files name real paths."""
    sources = sorted(CORE.rglob("*.kt"))
    assert sources
    for path in sources:
        imports = re.findall(r"^import\s+(\S+)", path.read_text(), re.MULTILINE)
        assert not [i for i in imports if i.startswith(("android.", "androidx."))], path
    app_gradle = (ANDROID / "app" / "build.gradle.kts").read_text()
    (cmake_path,) = re.findall(r'path = file\("([^"]+)"\)', app_gradle)
    cmake = (ANDROID / "app" / cmake_path).resolve()
    assert cmake.is_file(), cmake
    (native,) = re.findall(r"add_subdirectory\(\$\{CMAKE_CURRENT_SOURCE_DIR\}/(\S+) ", cmake.read_text())
    assert (cmake.parent / native / "jni" / "xsam_jni.cpp").is_file()
    settings = (ANDROID / "settings.gradle.kts").read_text()
    assert 'include(":core", ":app")' in settings
    jni = (ROOT / "native" / "jni" / "xsam_jni.cpp").read_text()
    native_kt = (CORE / "main" / "kotlin" / "org" / "xsam" / "edge" / "XSamNative.kt").read_text()
    exported = set(re.findall(r"XSAM_JNI\(\w+, (\w+)\)\(JNIEnv", jni))
    declared = set(re.findall(r"external fun (\w+)\(", native_kt))
    assert exported == declared and len(exported) == 23, exported ^ declared


def test_app_kotlin_and_gradle_scripts_parse(syntax_checker: list[str]) -> None:  # noqa: F811
    """android_demo/app is not compiled here (no Android SDK): its Kotlin and Gradle scripts are parsed."""
    sources = sorted([*ANDROID.rglob("*.kt"), *ANDROID.rglob("*.kts")])
    assert len([p for p in sources if "app" in p.parts and p.suffix == ".kt"]) >= 3, sources
    check_sources(syntax_checker, sources)


def test_the_checker_rejects_broken_kotlin(syntax_checker: list[str], tmp_path: Path) -> None:  # noqa: F811
    fine = "package a\n\nclass A {\n    fun f(x: Int): Int = x + 1\n}\n"
    broken = "package a\n\nclass A {\n    fun f(x: Int: Int = x + 1\n}\n"
    check_rejects(syntax_checker, tmp_path, fine, broken, ".kt", ":4:")
