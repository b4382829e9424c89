#!/usr/bin/env bash
# The pruning study of docs/PRUNING.md on SmolLM2: every method on calibration tokens of
# ../shared/fixtures/text/devtext.txt, then held-out perplexity on a disjoint part.
#   bash Tools/prune-study.sh [OUT_DIR]       (default docs/pruning; resumable: rerun to continue)
# Splits (tokens of the whole file, tokenized once):
#   calibration  [0, 512)    gsi, oneshot, bi, angular (4 chunks of 128)
#   EvoP pool    [0, 2048)   CCDS picks 4 chunks of 128 from 16 (and a variant picking 8)
#   held out     [2048, end) 256-token chunks, llama-perplexity procedure
set -euo pipefail
cd "$(dirname "$0")/.."
source Tools/env.sh
out=${1:-docs/pruning}
mkdir -p "$out"
bash Tools/fetch-model.sh >/dev/null
swift build -c release --product flexrun 2>&1 | grep -E "error" >&2 || true
bin=.build/release/flexrun
text=../shared/fixtures/text/devtext.txt
[ -f "$text" ] || text=${FLEXRUN_FIXTURES:-../shared/fixtures}/text/devtext.txt
for m in gsi oneshot bi angular; do
  [ -f "$out/$m.json" ] || "$bin" prune analyze --method "$m" --calib "$text" --first 0 --tokens 512 -o "$out/$m.json"
done
[ -f "$out/evop.json" ] || "$bin" prune analyze --method evop --calib "$text" --first 0 --tokens 2048 \
  --budgets 6,12,18 --seed-profile "$out/gsi.json" -o "$out/evop.json"
[ -f "$out/evop-8chunks.json" ] || "$bin" prune analyze --method evop --calib "$text" --first 0 --tokens 2048 \
  --select 8 --budgets 6,12,18 --seed-profile "$out/gsi.json" -o "$out/evop-8chunks.json"
"$bin" prune eval --text "$text" --first 2048 --budgets 6,12,18 --markdown "$out/evop-eval.md" \
  "$out/gsi.json" "$out/evop.json" "$out/evop-8chunks.json"
"$bin" prune eval --text "$text" --first 2048 --budgets 2,4,6,8,10,12,14,16,18,20,24 \
  --json "$out/eval.json" --markdown "$out/eval.md" --svg "$out/eval.svg" \
  "$out/gsi.json" "$out/oneshot.json" "$out/bi.json" "$out/angular.json" "$out/evop.json"
