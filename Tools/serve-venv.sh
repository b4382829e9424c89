#!/usr/bin/env bash
# Ensures the `openai` client (pinned) in a private venv and prints the venv's python: the real
# client that ServeTests runs against `flexrun serve` (Tools/serve_check.py). A few seconds once.
set -euo pipefail
OPENAI_VERSION="1.109.1"
venv="${FLEXRUN_SERVE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/flexrun/serve-venv}"
if ! "$venv/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_VERSION')" 2>/dev/null; then
  echo "serve-venv: installing openai==$OPENAI_VERSION into $venv" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "openai==$OPENAI_VERSION" >&2
fi
echo "$venv/bin/python"
