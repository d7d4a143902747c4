#!/usr/bin/env bash
# Install what the app demos' tests need (tests/test_android_demo.py, tests/test_ios_demo.py):
#   - Debian packages: a JDK (jni.h for native/jni, java), kotlin (kotlinc 1.3), junit4 (+ hamcrest),
#     libandroid-json-org-java (org.json as Android ships it), nodejs + npm (the Swift syntax check), g++.
#     Skipped when everything is there; needs root (apt-get) otherwise.
#   - npm: tree-sitter (node bindings) with its Swift and Kotlin grammars, pinned, installed with
#     --ignore-scripts into $XSAM_NATIVE_CACHE/tree-sitter (all three ship prebuilt node addons for linux-x64 /
#     arm64, so nothing is compiled or downloaded at install time); scripts/check-syntax.js uses them.
# Idempotent; safe to run on every CI run. Prints the tree-sitter folder (its node_modules' parent) last.
set -euo pipefail
. "$(dirname "$0")/apt-install.sh"

cache="${XSAM_NATIVE_CACHE:-$HOME/.cache/xsam_edge/native}"
tree_sitter_version="0.22.4"
tree_sitter_swift_version="0.7.1"
tree_sitter_kotlin_version="1.1.0"

need=()
for item in javac:default-jdk-headless kotlinc:kotlin node:nodejs npm:npm g++:g++; do
  command -v "${item%%:*}" >/dev/null 2>&1 || need+=("${item##*:}")
done
for item in junit4.jar:junit4 hamcrest-core.jar:libhamcrest-java json-android.jar:libandroid-json-org-java; do
  [ -f "/usr/share/java/${item%%:*}" ] || need+=("${item##*:}")
done
apt_install_missing install-app-deps "${need[@]}"

target="$cache/tree-sitter"
packages=("tree-sitter@$tree_sitter_version" "tree-sitter-swift@$tree_sitter_swift_version"
  "@tree-sitter-grammars/tree-sitter-kotlin@$tree_sitter_kotlin_version")
stamp="$target/installed-$tree_sitter_version-$tree_sitter_swift_version-$tree_sitter_kotlin_version"
if [ ! -f "$stamp" ]; then
  rm -rf "$target"
  mkdir -p "$target"
  echo "install-app-deps: npm install ${packages[*]}" >&2
  (cd "$target" && echo '{"private": true}' > package.json \
    && npm install --ignore-scripts --no-audit --no-fund --loglevel=error "${packages[@]}" >&2)
  touch "$stamp"
fi
echo "$target"
