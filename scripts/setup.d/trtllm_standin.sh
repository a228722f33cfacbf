#!/usr/bin/env bash
# Builds the llm-harness TEST STAND-IN for TensorRT-LLM's C++ Executor (NOT
# TensorRT-LLM) from tests/trtllm_standin/, idempotently, into a TRTLLM_ROOT-shaped tree
# in the cache, and prints that root on its last line:
#   ${LLM_HARNESS_CACHE:-$HOME/.cache/llm-harness}/trtllm-standin/
#     include -> the Executor headers it was compiled against
#     lib/libtensorrt_llm.so, lib/libnvinfer_plugin_tensorrt_llm.so, lib/LLM_HARNESS_STANDIN
# The stand-in defines the tensorrt_llm::executor symbols ffi/trtllm/shim.cpp uses against
# TensorRT-LLM 1.2's own headers, so `cargo test --features trtllm-standin` runs the real
# shim, bridge and engine on a machine without TensorRT-LLM or a GPU.
#
# Usage: TRTLLM_ROOT="$(scripts/setup.d/trtllm_standin.sh | tail -n1)"
# Environment:
#   TRTLLM_INCLUDE_DIR  the Executor headers (default: ../shared/trtllm-1.2/include
#                       beside the repository)
#   CUDA_HOME           CUDA headers (default: what scripts/setup.d/cuda_headers.sh installs)
#   CXX                 the C++ compiler (default c++)
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${LLM_HARNESS_CACHE:-$HOME/.cache/llm-harness}"
OUT="$CACHE/trtllm-standin"
headers="${TRTLLM_INCLUDE_DIR:-$repo/../shared/trtllm-1.2/include}"
if [ ! -f "$headers/tensorrt_llm/executor/executor.h" ]; then
  echo "scripts/setup.d/trtllm_standin.sh: no tensorrt_llm/executor/executor.h under $headers; set TRTLLM_INCLUDE_DIR to TensorRT-LLM 1.2's cpp/include" >&2
  exit 2
fi
headers="$(cd "$headers" && pwd)"
cuda="${CUDA_HOME:-$("$repo/scripts/setup.d/cuda_headers.sh" | tail -n1)}"
CXX="${CXX:-c++}"
src="$repo/tests/trtllm_standin"

# Rebuilt when the sources, the headers' location, the compiler or this script change.
key="$( { cat "$src"/*.cpp "$0"; echo "$headers $cuda"; "$CXX" --version; } | sha256sum | cut -c1-16)"
if [ -f "$OUT/lib/LLM_HARNESS_STANDIN" ] && [ "$(cat "$OUT/.key" 2>/dev/null)" = "$key" ]; then
  echo "$OUT"
  exit 0
fi
echo "[trtllm-standin] building the test stand-in of tensorrt_llm::executor into $OUT" >&2
rm -rf "$OUT.tmp"
mkdir -p "$OUT.tmp/lib"
flags=(-std=c++17 -O2 -g -fPIC -shared -Wall -Wextra -Wno-unused-parameter -DENABLE_BF16 -DENABLE_FP8
       -I "$headers" -I "$cuda/include" -Wl,--no-undefined -pthread)
"$CXX" "${flags[@]}" -Wl,-soname,libtensorrt_llm.so "$src/executor.cpp" -o "$OUT.tmp/lib/libtensorrt_llm.so"
"$CXX" "${flags[@]}" -Wl,-soname,libnvinfer_plugin_tensorrt_llm.so "$src/plugin.cpp" \
  -o "$OUT.tmp/lib/libnvinfer_plugin_tensorrt_llm.so"
ln -s "$headers" "$OUT.tmp/include"
echo "llm-harness test stand-in of tensorrt_llm::executor, built from $src: NOT TensorRT-LLM" \
  > "$OUT.tmp/lib/LLM_HARNESS_STANDIN"
echo "$key" > "$OUT.tmp/.key"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
echo "$OUT"
