#!/usr/bin/env bash
# The sanitizer runs (issue 16): Tools/sanitize.sh [thread|address|all] (default all).
#   thread:  ThreadSanitizer over ConcurrencyStressTests (streaming generation while other
#            threads change the cap, read the plan and cancel) and the other suites that drive
#            an engine from several threads.
#   address: AddressSanitizer over the fast suites (everything that runs on the synthetic
#            fixtures and in-memory inputs; the real-model suites take hours unoptimised and
#            sanitized), with UndefinedBehaviorSanitizer on the C targets (CFlexShims,
#            CFlexKernels): swiftc has no -sanitize=undefined on Linux, and Swift code traps on
#            overflow and out-of-bounds access by itself. The ASan runtime carries UBSan's handlers.
# Each sanitizer builds into its own scratch path (.build-tsan, .build-asan), so the normal
# .build stays as it is. Any report fails the run (halt_on_error), as does any failing test.
set -euo pipefail
cd "$(dirname "$0")/.."
source Tools/env.sh
which=${1:-all}

thread_suites='ConcurrencyStressTests|ReadFaultTests|StageReaderTests|WorkerPoolTests'
fast_suites='FlexSystemTests\.|FlexFormatTests\.|FlexKernelsTests\.(DequantizeTests|InterleaveTests|WorkerPoolTests|VectorTests|AttentionTests|KQuantKernelTests|BatchInvarianceTests)'
fast_suites+='|FlexEngineTests\.(BlockMaskTests|SamplerTests|PreTokenizerTests|UTF8StreamDecoderTests|MemoryPlanTests|MemoryModelTests'
fast_suites+='|PruningTests|RAPTests|ReadFaultTests|StageReaderTests|ConcurrencyStressTests|FuzzRegressionTests|LogitTests/synthetic)'

if [ "$which" = thread ] || [ "$which" = all ]; then
  swift build --build-tests --sanitize=thread --scratch-path .build-tsan
  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
    swift test --skip-build --sanitize=thread --scratch-path .build-tsan --filter "$thread_suites"
fi
if [ "$which" = address ] || [ "$which" = all ]; then
  ubsan=(-Xcc -fsanitize=undefined -Xcc -fno-sanitize-recover=undefined)
  swift build --build-tests --sanitize=address "${ubsan[@]}" --scratch-path .build-asan
  # Leak checking is off: the Swift runtime's caches outlive main and would be reported; leaks
  # over time are what Tools/soak.sh measures (RSS and fds flat over 1,000 generations).
  ASAN_OPTIONS="halt_on_error=1 detect_leaks=0" UBSAN_OPTIONS="halt_on_error=1 print_stacktrace=1" \
    swift test --skip-build --sanitize=address "${ubsan[@]}" --scratch-path .build-asan --filter "$fast_suites"
fi
