#!/usr/bin/env bash
# Ensures llama-cpp-python (pinned; it builds llama.cpp from source, ~10 minutes once) in a
# private venv and prints the venv's python. Shared by peer-compare.sh and sweep.sh.
set -euo pipefail
PEER_VERSION="0.3.36"   # vendors llama.cpp 0c1e57098, the build the fixtures and DESIGN.md numbers use
venv="${FLEXRUN_PEER_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/flexrun/peer-venv}"
if ! "$venv/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$PEER_VERSION')" 2>/dev/null; then
  echo "peer-venv: installing llama-cpp-python==$PEER_VERSION into $venv (builds llama.cpp; takes a while)" >&2
  python3 -m venv "$venv" >&2
  CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON}" "$venv/bin/pip" install --quiet "llama-cpp-python==$PEER_VERSION" >&2
fi
echo "$venv/bin/python"
