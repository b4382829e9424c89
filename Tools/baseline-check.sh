#!/usr/bin/env bash
# The baseline x86-64 kernels (no AVX), checked with the release test binary's synthetic-model
# logit tests (against the fp64 reference fixtures in ../shared/fixtures/synth):
#   1. here, with FLEXRUN_KERNELS=baseline (the AVX2 variant switched off);
#   2. under `qemu-x86_64 -cpu Nehalem`, a CPU without AVX, where an AVX instruction anywhere in
#      the binary would die with SIGILL. Skipped, with a note, when qemu-user is not installed
#      (Tools/setup.sh installs it).
# Each run also checks that the variant it meant to test is the one that ran (KernelVariantTests).
# Then the CLI's greedy text on the real model must be the same natively, with
# FLEXRUN_KERNELS=baseline and under Nehalem. About 1.5 minutes.
# Needs the release test build: swift build -c release -Xswiftc -enable-testing --build-tests
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.build/release/FlexRunPackageTests.xctest
[ -x "$bin" ] || { echo "baseline-check: $bin is missing; build the release tests first" >&2; exit 1; }
filter='LogitTests/syntheticModels|KernelVariantTests|AttentionTests|VectorGateTests'
run() { "$@" --testing-library swift-testing --filter "$filter"; }

echo "baseline-check: FLEXRUN_KERNELS=baseline on this CPU" >&2
FLEXRUN_KERNELS=baseline FLEXRUN_EXPECT_KERNELS=baseline run "$bin"

if ! command -v qemu-x86_64 >/dev/null 2>&1; then
  echo "baseline-check: qemu-x86_64 not found (apt-get install qemu-user); the Nehalem runs are skipped" >&2
  exit 0
fi
echo "baseline-check: qemu-x86_64 -cpu Nehalem (no AVX)" >&2
start=$(date +%s)
FLEXRUN_EXPECT_KERNELS=baseline run qemu-x86_64 -cpu Nehalem "$bin"
echo "baseline-check: the Nehalem test run passed in $(( $(date +%s) - start )) s" >&2

# The CLI's greedy text from the real model: the baseline kernels give the AVX2 kernels' bits, so
# the text is the same here, with FLEXRUN_KERNELS=baseline, and under Nehalem (~40 s for 24 tokens).
model="$(bash Tools/fetch-model.sh)"
prompt="$(mktemp)"; trap 'rm -f "$prompt"' EXIT
echo "Explain what artificial intelligence is." > "$prompt"
gen() { "$@" .build/release/flexrun --model "$model" -n 24 --temp 0 "$prompt" 2>/dev/null; }
native="$(gen env)"
baseline="$(gen env FLEXRUN_KERNELS=baseline)"
nehalem="$(gen qemu-x86_64 -cpu Nehalem)"
[ -n "$native" ] && [ "$native" = "$baseline" ] && [ "$native" = "$nehalem" ] || {
  printf 'baseline-check: greedy texts differ\n  native:   %s\n  baseline: %s\n  nehalem:  %s\n' "$native" "$baseline" "$nehalem" >&2
  exit 1
}
echo "baseline-check: the same greedy text natively, on the baseline kernels and under Nehalem" >&2
echo "baseline-check: passed" >&2
