#!/usr/bin/env bash
# Batched decoding side by side with llama.cpp, in memory: bash Tools/batch-compare.sh [--rounds 5] [--parallel 8] [-n 128]
set -euo pipefail
cd "$(dirname "$0")/.."
source Tools/env.sh
bash Tools/setup.sh
model="$(bash Tools/fetch-model.sh)"
python="$(bash Tools/peer-venv.sh)"
swift build -c release --product flexrun >&2
exec "$python" Tools/batch_compare.py --flexrun .build/release/flexrun --python "$python" --model "$model" "$@"
