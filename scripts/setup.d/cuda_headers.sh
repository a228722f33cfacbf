#!/usr/bin/env bash
# Installs the CUDA 13.1 headers (and libcudart) that TensorRT-LLM 1.2's Executor
# headers include, and ptxas (the test that the calibration engine's embedded spin
# kernel assembles for every current GPU), from PyPI, idempotently, into the cache
# outside the repo:
#   ${LLM_HARNESS_CACHE:-$HOME/.cache/llm-harness}/cuda-13.1/nvidia/cu13/{include,lib}
# and prints that CUDA_HOME on its last line. CUDA 13.1 is what TensorRT-LLM 1.2.1 is
# built on; only the headers matter for compiling the shim, and no GPU is needed.
# A second run checks the stamp and takes milliseconds.
#
# Usage: CUDA_HOME="$(scripts/setup.d/cuda_headers.sh | tail -n1)"
# Environment: LLM_HARNESS_CACHE (cache dir), PYTHON (interpreter with pip; default python3).
set -euo pipefail
CACHE="${LLM_HARNESS_CACHE:-$HOME/.cache/llm-harness}"
DEST="$CACHE/cuda-13.1"
PKGS=(nvidia-cuda-runtime==13.1.80 nvidia-cuda-crt==13.1.80 nvidia-cuda-cccl==13.1.78 nvidia-cuda-nvcc==13.1.80)
STAMP="$DEST/.stamp"
HOME_DIR="$DEST/nvidia/cu13"
want="${PKGS[*]}"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -f "$HOME_DIR/include/cuda_fp16.h" ] && [ -x "$HOME_DIR/bin/ptxas" ]; then
  echo "$HOME_DIR"
  exit 0
fi
echo "[cuda-headers] installing ${PKGS[*]} into $DEST" >&2
rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp"
# --no-deps: the four packages are the whole set (headers, crt headers, cccl headers,
# the compiler's binaries for ptxas).
"${PYTHON:-python3}" -m pip install --quiet --no-deps --target "$DEST.tmp" "${PKGS[@]}" >&2
for h in cuda_fp16.h cuda_bf16.h cuda_fp8.h cuda_runtime_api.h; do
  if [ ! -f "$DEST.tmp/nvidia/cu13/include/$h" ]; then
    echo "[cuda-headers] $h is missing after the install; the packages' layout changed" >&2
    exit 1
  fi
done
if [ ! -x "$DEST.tmp/nvidia/cu13/bin/ptxas" ]; then
  echo "[cuda-headers] bin/ptxas is missing after the install; the packages' layout changed" >&2
  exit 1
fi
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
# The wheels ship only the versioned runtime; a linker looking for -lcudart needs the
# plain name.
lib="$HOME_DIR/lib"
if [ ! -e "$lib/libcudart.so" ]; then
  so="$(cd "$lib" && ls libcudart.so.* 2>/dev/null | sort | tail -n1 || true)"
  if [ -n "$so" ]; then ln -s "$so" "$lib/libcudart.so"; fi
fi
echo "$want" > "$STAMP"
echo "$HOME_DIR"
