#!/usr/bin/env bash
# libFuzzer over FlexRun's parsers: Tools/fuzz.sh TARGET SECONDS, or Tools/fuzz.sh all SECONDS.
# Targets: gguf blockfile tokenizer tokenizer-sp sizes profile policy (Tests/Fuzz/Sources).
# Builds Tests/Fuzz (a nested package) with -sanitize=fuzzer,address into .build-fuzz, starts
# from the committed seeds in Tests/Fuzz/corpus/TARGET and keeps what it finds in
# .build-fuzz/corpus/TARGET. One process, one job (the machine is shared). Crashes land in
# .build-fuzz/crashes/TARGET/ and the script exits non-zero; each becomes a regression test.
# The tokenizer targets read the vocabulary of the default model and of Gemma 3
# (Tools/fetch-model.sh [gemma3]); FLEXRUN_FUZZ_MODEL overrides the file.
set -euo pipefail
cd "$(dirname "$0")/.."
source Tools/env.sh
all=(gguf blockfile tokenizer tokenizer-sp sizes profile policy)
target=${1:?usage: Tools/fuzz.sh TARGET|all SECONDS [libFuzzer flags...]}
seconds=${2:?usage: Tools/fuzz.sh TARGET|all SECONDS [libFuzzer flags...]}
shift 2
scratch=.build-fuzz
flags=(-c release --package-path Tests/Fuzz --scratch-path "$scratch" -Xswiftc -sanitize=fuzzer,address)
swift build "${flags[@]}" 2>&1 | grep -E 'error|warning: unre|Compiling|Build complete' >&2 || true
bin="$(swift build "${flags[@]}" --show-bin-path)/FlexFuzz"

run() {
  local t=$1 work="$scratch/corpus/$1" crashes="$scratch/crashes/$1" log="$scratch/$1.log"
  shift
  mkdir -p "$work" "$crashes"
  echo "fuzz: $t for ${seconds}s" >&2
  local rc=0
  # SWIFT_BACKTRACE off: the Swift backtracer reading its own stack trips ASan after a trap.
  SWIFT_BACKTRACE=enable=no FLEXRUN_FUZZ_TARGET=$t "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
    -print_final_stats=1 -artifact_prefix="$crashes/" "$@" "$work" "Tests/Fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
  local execs cov ft
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1 || true)
  cov=$( (grep -o 'cov: [0-9]*' "$log" || true) | tail -1 | cut -d' ' -f2)
  ft=$( (grep -o 'ft: [0-9]*' "$log" || true) | tail -1 | cut -d' ' -f2)
  echo "fuzz: $t: ${execs:-?} executions, coverage ${cov:-?} edges, ${ft:-?} features, corpus $(ls "$work" | wc -l) files, exit $rc" >&2
  if [ "$rc" != 0 ]; then
    grep -m5 -E 'ERROR|Fatal error|property failed|SUMMARY' "$log" >&2 || true
    echo "fuzz: $t: see $log and $crashes" >&2
  fi
  return "$rc"
}

if [ "$target" = all ]; then
  failed=0
  for t in "${all[@]}"; do run "$t" "$@" || failed=1; done
  exit "$failed"
fi
run "$target" "$@"
