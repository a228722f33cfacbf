#!/usr/bin/env bash
# The whole test suite. Sets up the Python engines and the models first (idempotent:
# seconds when the cache under ${LLM_HARNESS_CACHE:-~/.cache/llm-harness} is warm),
# runs every test once, then the real-engine tests that a plain `cargo test` reports
# as ignored (they need the venv and the models). Tests that need a GPU skip with a
# printed reason.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export LLM_HARNESS_REQUIRE_ENGINES=1
cargo test --locked --all-targets "$@"
cargo test --locked --test python_engines "$@" -- --ignored
