#!/usr/bin/env bash
# The test suite: makes sure the apt packages and the default model are present, then runs
# every test in an optimised build (numeric tests such as perplexity on the real model are
# far too slow unoptimised). FLEXRUN_REQUIRE_MODEL=1 turns a missing model into a failure
# instead of a skip, so a green run always means the real-model checks ran. Without arguments
# it also runs Tools/baseline-check.sh, Tools/consumer-check.sh and Tools/docs.sh (DocC, warnings
# as errors; a few minutes together).
set -euo pipefail
cd "$(dirname "$0")/.."
source Tools/env.sh
bash Tools/setup.sh
bash Tools/fetch-model.sh >/dev/null
bash Tools/fetch-model.sh gemma3 >/dev/null
# The `openai` client ServeChatTests runs against `flexrun serve` (a venv, seconds once).
bash Tools/serve-venv.sh >/dev/null
export FLEXRUN_REQUIRE_MODEL=1
# Before the suite, so that its summary stays the last thing printed: the baseline (no AVX)
# kernels under qemu's Nehalem, and FlexRun as a versioned dependency of a consumer package.
if [ $# -eq 0 ]; then
  swift build -c release -Xswiftc -enable-testing --build-tests
  bash Tools/baseline-check.sh
  bash Tools/consumer-check.sh
  bash Tools/docs.sh
fi
exec swift test -c release -Xswiftc -enable-testing "$@"
