#!/usr/bin/env bash
# Install what the native runtime's build and tests need (tests/test_native.py, native/README.md):
#   - Debian packages: cmake, ninja, g++ (x86-64 build), g++-aarch64-linux-gnu + qemu-user (arm64 build, run
#     under qemu). Skipped when every tool is already there; needs root (apt-get) otherwise.
#   - the manylinux_2_28_aarch64 executorch wheel (same version as the venv's), fetched with pip and unpacked
#     (headers, libraries, CMake config only) into $XSAM_NATIVE_CACHE/executorch-<version>-aarch64.
# Idempotent; safe to run on every CI run. Prints the arm64 ExecuTorch folder on its last line.
set -euo pipefail
. "$(dirname "$0")/apt-install.sh"

cache="${XSAM_NATIVE_CACHE:-$HOME/.cache/xsam_edge/native}"
python="${PYTHON:-python}"

need=()
for tool in cmake:cmake ninja:ninja-build g++:g++ aarch64-linux-gnu-g++:g++-aarch64-linux-gnu qemu-aarch64:qemu-user; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool##*:}")
done
apt_install_missing install-native-deps "${need[@]}"

version="$("$python" -c 'import importlib.metadata as m; print(m.version("executorch"))' 2>/dev/null || true)"
if [ -z "$version" ]; then
  echo "install-native-deps: executorch is not installed in $python's environment (pip install -e '.[export]')" >&2
  exit 1
fi
version="${version%%+*}"
target="$cache/executorch-$version-aarch64"
if [ ! -f "$target/executorch/share/cmake/executorch-config.cmake" ]; then
  mkdir -p "$cache"
  tmp="$(mktemp -d "$cache/.download.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  echo "install-native-deps: fetching the executorch $version manylinux_2_28_aarch64 wheel" >&2
  "$python" -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_28_aarch64 \
    --python-version 3.11 "executorch==$version" -d "$tmp" 2>&1 | grep -v "^WARNING" >&2 || true
  wheel="$(ls "$tmp"/executorch-*aarch64*.whl 2>/dev/null || true)"
  if [ -z "$wheel" ]; then
    echo "install-native-deps: pip could not download executorch==$version for manylinux_2_28_aarch64" >&2
    exit 1
  fi
  "$python" - "$wheel" "$tmp/unpacked" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
keep = ("executorch/include/", "executorch/lib/", "executorch/share/")
with zipfile.ZipFile(wheel) as z:
    z.extractall(out, [n for n in z.namelist() if n.startswith(keep)])
PY
  rm -rf "$target"
  mv "$tmp/unpacked" "$target"  # whole or not at all: a killed run leaves only the temporary folder
fi
echo "$target/executorch"
