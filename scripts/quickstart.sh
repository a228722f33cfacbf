#!/usr/bin/env bash
# The main job on a fresh machine: set up vLLM (CPU build) and the real Gemma 3 270M
# model, build the harness, and sweep batch 1..64 on ONE loaded vLLM engine, printing
# the table. Each point runs at least 3 whole batches and 10 s after a one-batch
# warmup (the defaults); vLLM's own log goes to engine.log in the result directory.
# Results land in results/. Extra flags go to `harness sweep`.
# The binary also has every other engine whose build tools are here, so that
# `target/release/harness engines` lists what this machine can run: llama.cpp
# (`--features llamacpp`, built for this CPU's SIMD) when cmake and libclang are
# installed (scripts/setup.sh --llamacpp installs them; the first such build takes a
# few minutes more).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh vllm
features=()
if why="$(scripts/setup.d/llamacpp-deps.sh --check)"; then
  features=(--features llamacpp)
  echo "[quickstart] cmake and libclang found: building with --features llamacpp (llama.cpp for this CPU)"
else
  echo "[quickstart] $why: building without llama.cpp (scripts/setup.sh --llamacpp installs them, then run this again)"
fi
cargo build --release --locked ${features[@]+"${features[@]}"}
CACHE="${LLM_HARNESS_CACHE:-$HOME/.cache/llm-harness}"
exec target/release/harness sweep --engine vllm --model "$CACHE/models/gemma-3-270m" \
  --batch 1,2,4,8,16,32,64 --input-len 64 --output-len 16 --ignore-eos \
  --engine-arg max_num_seqs=64 "$@"
