#!/usr/bin/env bash
# Side-by-side speed against llama.cpp on the same GGUF, prompt, threads and token counts.
# Installs llama-cpp-python (pinned; it builds llama.cpp from source, ~10 minutes once) into a
# private venv, builds flexrun optimised, then runs Tools/peer_compare.py. Arguments pass through:
#   bash Tools/peer-compare.sh [--pairs 5] [--threads 2] [--model PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
source Tools/env.sh
PEER_VERSION="0.3.36"   # vendors llama.cpp 0c1e57098, the build the fixtures and DESIGN.md numbers use
venv="${FLEXRUN_PEER_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/flexrun/peer-venv}"
if ! "$venv/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$PEER_VERSION')" 2>/dev/null; then
  echo "peer-compare: installing llama-cpp-python==$PEER_VERSION into $venv (builds llama.cpp; takes a while)" >&2
  python3 -m venv "$venv"
  CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON}" "$venv/bin/pip" install --quiet "llama-cpp-python==$PEER_VERSION"
fi
bash Tools/fetch-model.sh >/dev/null
swift build -c release --product flexrun 2>&1 | grep -E "error" >&2 || true
exec "$venv/bin/python" Tools/peer_compare.py --flexrun .build/release/flexrun "$@"
