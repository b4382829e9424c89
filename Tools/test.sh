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
# How long each step took, printed last (also when a step fails), so that a slow or stuck run
# shows where its time went.
times=()
t0=$(date +%s); t=$t0
step() { local now; now=$(date +%s); times+=("$1 $((now - t)) s"); t=$now; }
report() { echo "test.sh: ${times[*]/%/,} total $(( $(date +%s) - t0 )) s" >&2; }
trap report EXIT
bash Tools/setup.sh
bash Tools/fetch-model.sh >/dev/null
bash Tools/fetch-model.sh gemma3 >/dev/null
# The `openai` client ServeChatTests runs against `flexrun serve` (a venv, seconds once).
bash Tools/serve-venv.sh >/dev/null
step setup
export FLEXRUN_REQUIRE_MODEL=1
# One build for everything below: `swift test` would build the tests again from scratch with
# other settings (several minutes on 2 cores), so it runs what this built (--skip-build).
swift build -c release -Xswiftc -enable-testing --build-tests
step build
# Before the suite, so that its summary stays the last thing printed: the baseline (no AVX)
# kernels under qemu's Nehalem, and FlexRun as a versioned dependency of a consumer package.
if [ $# -eq 0 ]; then
  bash Tools/baseline-check.sh; step baseline
  bash Tools/consumer-check.sh; step consumer
  bash Tools/docs.sh; step docs
fi
swift test -c release -Xswiftc -enable-testing --skip-build "$@"
step suite
