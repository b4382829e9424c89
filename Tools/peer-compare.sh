#!/usr/bin/env bash
# Side-by-side speed against llama.cpp on the same GGUF, prompt, threads and token counts.
# Installs llama-cpp-python (pinned; it builds llama.cpp from source, ~10 minutes once) into a
# private venv, builds flexrun optimised, then runs Tools/peer_compare.py. Arguments pass through:
#   bash Tools/peer-compare.sh [--pairs 5] [--threads 2] [--model PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
source Tools/env.sh
python="$(bash Tools/peer-venv.sh)"
bash Tools/fetch-model.sh >/dev/null
swift build -c release --product flexrun 2>&1 | grep -E "error" >&2 || true
exec "$python" Tools/peer_compare.py --flexrun .build/release/flexrun "$@"
