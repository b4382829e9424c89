#!/usr/bin/env bash
# Quick start: installs what FlexRun needs (apt packages, the default model), builds it
# optimised, and runs it on the default model under a 512 MiB memory limit.
# Extra arguments are passed to flexrun (e.g. --stats, -n 32, or another prompt file).
set -euo pipefail
cd "$(dirname "$0")/.."
source Tools/env.sh
bash Tools/setup.sh
bash Tools/fetch-model.sh >/dev/null
echo "quickstart: building flexrun (release)" >&2
swift build -c release --product flexrun 2>&1 | grep -E "error|warning: unre|Compiling flexrun|Build complete" >&2 || true
[ -x .build/release/flexrun ] || { echo "quickstart: build failed; run: swift build -c release" >&2; exit 1; }
if [ $# -eq 0 ]; then set -- --chat -n 128 --stats docs/examples/prompt.txt; fi
echo "quickstart: .build/release/flexrun --mem-limit 100M $*" >&2
exec .build/release/flexrun --mem-limit 100M "$@"
