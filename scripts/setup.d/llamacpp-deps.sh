#!/usr/bin/env bash
# The system packages `--features llamacpp` builds with: cmake (llama.cpp's build) and
# libclang with clang's own headers (bindgen; without libclang-common-*-dev it fails on
# stdbool.h). Checks them; when one is missing and this runs as root with apt-get, it
# installs them (non-interactive); otherwise it prints the exact command and fails.
# scripts/setup.sh --llamacpp and .ci/run call it. Debian/Ubuntu package names.
# With --check it only checks: exit 0 when all are there, else 1 with what is missing
# (scripts/quickstart.sh builds llama.cpp in when they are there).
set -euo pipefail
PACKAGES="cmake libclang1-14 libclang-common-14-dev"
log() { echo "[setup] $*"; }

missing() {
  local m=""
  command -v cmake >/dev/null 2>&1 || m="$m cmake"
  # libclang itself (not libclang-cpp, a different library), where bindgen looks.
  local found="" d f
  for d in ${LIBCLANG_PATH:-} /usr/lib/llvm-*/lib /usr/lib/* /usr/lib64 /usr/local/lib; do
    for f in "$d"/libclang.so* "$d"/libclang-[0-9]*.so*; do
      if [ -e "$f" ]; then found=1; break 2; fi
    done
  done
  [ -n "$found" ] || m="$m libclang"
  ls /usr/lib/llvm-*/lib/clang/*/include/stdbool.h /usr/lib/clang/*/include/stdbool.h >/dev/null 2>&1 \
    || m="$m clang-headers"
  echo "$m"
}

m="$(missing)"
if [ "${1:-}" = --check ]; then
  [ -z "$m" ] || { echo "llama.cpp build tools missing:$m"; exit 1; }
  exit 0
fi
if [ -z "$m" ]; then
  log "llama.cpp build tools present (cmake $(cmake --version | head -1 | awk '{print $3}'), libclang)"
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  t=$(date +%s)
  log "installing llama.cpp build tools (missing:$m): apt-get install -y $PACKAGES"
  export DEBIAN_FRONTEND=noninteractive
  # The package lists may be empty on a fresh machine: update only when needed.
  # shellcheck disable=SC2086
  apt-get install -y -q --no-install-recommends $PACKAGES >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $PACKAGES >/dev/null; } \
    || { echo "scripts/setup.d/llamacpp-deps.sh: apt-get could not install $PACKAGES; install cmake and libclang yourself (LIBCLANG_PATH=DIR if it is not found)" >&2; exit 1; }
  m="$(missing)"
  if [ -n "$m" ]; then
    echo "scripts/setup.d/llamacpp-deps.sh: still missing after apt-get:$m" >&2
    exit 1
  fi
  log "llama.cpp build tools installed in $(( $(date +%s) - t )) s"
  exit 0
fi
echo "scripts/setup.d/llamacpp-deps.sh: --features llamacpp needs:$m. Install them with:" >&2
echo "  sudo apt-get install -y $PACKAGES" >&2
echo "(elsewhere: cmake, and libclang with its headers; LIBCLANG_PATH=DIR if it is not found)" >&2
exit 1
