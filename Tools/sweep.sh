#!/usr/bin/env bash
# Throughput sweep under cgroup memory caps (see Tools/sweep.py). Run as root. With --peer it
# also runs llama.cpp (llama-cpp-python, mmap) under the same caps, installing it like
# Tools/peer-compare.sh does. Other arguments pass through:
#   bash Tools/sweep.sh [--peer] [--packed MODEL.flex] [--fractions 1,0.75,0.5,0.35,0.25] [--out docs/sweep]
set -euo pipefail
cd "$(dirname "$0")/.."
source Tools/env.sh
args=()
peer=0
for a in "$@"; do if [ "$a" = "--peer" ]; then peer=1; else args+=("$a"); fi; done
bash Tools/fetch-model.sh >/dev/null
swift build -c release --product flexrun 2>&1 | grep -E "error" >&2 || true
if [ "$peer" = 1 ]; then args+=(--peer-python "$(bash Tools/peer-venv.sh)"); fi
exec python3 Tools/sweep.py --flexrun .build/release/flexrun "${args[@]}"
