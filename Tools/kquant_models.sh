#!/usr/bin/env bash
# K-quant test models under ~/.cache/flexrun/models (never committed): SmolLM2 Q4_K_M and a
# synthetic 7B-width llama in Q4_K_M and Q6_K, each made by llama.cpp's quantizer and by
# `flexrun pack --requant --gguf`, compared tensor by tensor and run by both engines.
# Options go to Tools/kquant_models.py (--skip-synth, --layers N, --no-run, …; --help).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .build/release/flexrun ] || { source Tools/env.sh; swift build -c release --product flexrun >&2; }
python="$(bash Tools/peer-venv.sh)"
exec "$python" Tools/kquant_models.py "$@"
