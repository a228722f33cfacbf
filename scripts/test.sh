#!/usr/bin/env bash
# The whole test suite. Sets up the Python engines, the models and llama.cpp's build
# tools first (idempotent: seconds when the cache under
# ${LLM_HARNESS_CACHE:-~/.cache/llm-harness} is warm), runs every test once, then the
# real-engine tests that a plain `cargo test` reports as ignored (they need the venvs
# and the models: vLLM and HF in python_engines.rs, vLLM at TP=2 in distributed.rs,
# SGLang in sglang.rs, in its own venv, and the engine contract of every real engine
# in tests/contract), then the
# llama.cpp build (`--features llamacpp`: its unit tests and the
# real llama.cpp tests). Tests that need a GPU skip with a printed reason. Then
# TensorRT-LLM's bridge end to end against its test stand-in (tests/trtllm_standin.rs),
# when the Executor headers are there (TRTLLM_INCLUDE_DIR, default
# ../shared/trtllm-1.2/include); without them it says it skipped (CI fails).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --llamacpp
scripts/setup.sh sglang --venv-only
export LLM_HARNESS_REQUIRE_ENGINES=1
# ptxas, for the test that the calibration engine's spin kernel assembles (from the
# same PyPI CUDA wheels as the TensorRT-LLM shim's headers).
PTXAS="${PTXAS:-$(scripts/setup.d/cuda_headers.sh | tail -n1)/bin/ptxas}"
export PTXAS
cargo test --locked --all-targets "$@"
# The real-engine tests, the engine contract's real engines (tests/contract) among them.
cargo test --locked --test python_engines --test sglang --test distributed --test contract "$@" -- --ignored
cargo test --locked --features llamacpp --lib --test llamacpp "$@" -- --include-ignored
cargo test --locked --features llamacpp --test contract "$@" -- --ignored --exact llamacpp

headers="${TRTLLM_INCLUDE_DIR:-../shared/trtllm-1.2/include}"
if [ -f "$headers/tensorrt_llm/executor/executor.h" ]; then
  CUDA_HOME="$(scripts/setup.d/cuda_headers.sh | tail -n1)"
  TRTLLM_ROOT="$(scripts/setup.d/trtllm_standin.sh | tail -n1)"
  CUDA_HOME="$CUDA_HOME" TRTLLM_ROOT="$TRTLLM_ROOT" \
    cargo test --locked --no-default-features --features trtllm-standin --test trtllm_standin --test contract "$@"
elif [ "${CI:-}" = true ]; then
  echo "scripts/test.sh: no TensorRT-LLM Executor headers at $headers (set TRTLLM_INCLUDE_DIR); CI runs the stand-in tests" >&2
  exit 1
else
  echo "SKIPPED the TensorRT-LLM stand-in tests: no Executor headers at $headers (set TRTLLM_INCLUDE_DIR to TensorRT-LLM 1.2's cpp/include)" >&2
fi
