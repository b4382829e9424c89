#!/usr/bin/env bash
# The FlexEngine library's DocC documentation: symbol graphs from a build of the FlexEngine target
# (public API only), then `docc convert` of Sources/FlexEngine/FlexEngine.docc with them, with
# warnings as errors (a broken ``symbol`` link in a doc comment fails it). The archive lands in
# .build-docs/FlexEngine.doccarchive; `docc preview` on the catalog serves it while writing.
# Run by Tools/test.sh. Why not swift-docc-plugin: a package plugin would be a dependency of every
# app that depends on FlexRun; the toolchain's own `docc` needs none.
set -euo pipefail
cd "$(dirname "$0")/.."
source Tools/env.sh
scratch=.build-docs
graphs="$PWD/$scratch/symbol-graphs"
rm -rf "$graphs" "$scratch/FlexEngine.doccarchive"
mkdir -p "$graphs/all" "$graphs/FlexEngine"
echo "docs: building FlexEngine's symbol graphs" >&2
swift build --scratch-path "$scratch" --target FlexEngine -Xswiftc -emit-symbol-graph \
  -Xswiftc -emit-symbol-graph-dir -Xswiftc "$graphs/all" \
  -Xswiftc -symbol-graph-minimum-access-level -Xswiftc public >&2
# Only FlexEngine's graphs (and its extensions of other modules): docc documents one module.
cp "$graphs"/all/FlexEngine.symbols.json "$graphs/FlexEngine/"
cp "$graphs"/all/FlexEngine@*.symbols.json "$graphs/FlexEngine/" 2>/dev/null || true
docc convert Sources/FlexEngine/FlexEngine.docc --additional-symbol-graph-dir "$graphs/FlexEngine" \
  --fallback-display-name FlexEngine --fallback-bundle-identifier org.flexrun.FlexEngine \
  --output-path "$scratch/FlexEngine.doccarchive" --warnings-as-errors
echo "docs: $scratch/FlexEngine.doccarchive (no warnings)" >&2
