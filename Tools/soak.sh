#!/usr/bin/env bash
# The soak (issue 16): 1,000 generations in one process through the library, alternating memory
# caps (a new plan and streamer each time) and block masks, half of them through the async
# stream; prints resident memory and open file descriptors at generation 100, every 250th and
# the last, and fails when either grew (SoakTests). Runs on the synthetic fixture model unless
# FLEXRUN_SOAK_MODEL names another; FLEXRUN_SOAK_GENERATIONS changes the count.
set -euo pipefail
cd "$(dirname "$0")/.."
source Tools/env.sh
swift build -c release -Xswiftc -enable-testing --build-tests
FLEXRUN_SOAK=1 swift test -c release -Xswiftc -enable-testing --skip-build --filter SoakTests 2>&1 \
  | grep -E '^soak:|^  generation|✔|✘|error' 
