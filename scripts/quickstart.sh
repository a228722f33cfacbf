#!/usr/bin/env bash
# The main job on a fresh machine: set up vLLM (CPU build) and the real Gemma 3 270M
# model, build the harness, and sweep batch 1..64 on ONE loaded vLLM engine, printing
# the table. Each point runs at least 3 whole batches and 10 s after a one-batch
# warmup (the defaults); vLLM's own log goes to engine.log in the result directory.
# Results land in results/. Extra flags go to `harness sweep`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh vllm
cargo build --release --locked
CACHE="${LLM_HARNESS_CACHE:-$HOME/.cache/llm-harness}"
exec target/release/harness sweep --engine vllm --model "$CACHE/models/gemma-3-270m" \
  --batch 1,2,4,8,16,32,64 --input-len 64 --output-len 16 --ignore-eos \
  --engine-arg max_num_seqs=64 "$@"
