#!/usr/bin/env bash
# FlexRun as a versioned dependency: clones this repository (its committed HEAD) into a temporary
# directory, tags the clone 0.1.0 (this repository's tags are not touched), writes a consumer
# package that depends on it with `.package(url: "file://CLONE", from: "0.1.0")`, and builds and
# runs the README's library example in it, in release and in debug. SwiftPM refuses unsafeFlags
# in such a dependency, so this also checks that Package.swift has none.
#
#   bash Tools/consumer-check.sh [MODEL]     # MODEL defaults to Tools/fetch-model.sh's path
#   FLEXRUN_CONSUMER_CONFIGS="release" ...   # only some configurations (default: "release debug";
#                                            # "debug-O" is a debug build with -Xswiftc -O -Xcc -O2)
#
# The consumer resolves swift-argument-parser as this package does: by its GitHub address, which
# git on these machines reads from the local package mirror (url.*.insteadOf in git's config), so
# nothing is fetched from the network. Takes ~5-10 minutes on 2 cores (two builds of FlexRun).
set -euo pipefail
cd "$(dirname "$0")/.."
source Tools/env.sh
repo="$PWD"
model="${1:-$(bash Tools/fetch-model.sh)}"
configs="${FLEXRUN_CONSUMER_CONFIGS:-release debug}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
git clone --quiet "$repo" "$tmp/FlexRun"
git -C "$tmp/FlexRun" tag -f 0.1.0 >/dev/null
mkdir -p "$tmp/consumer/Sources/Consumer"
cat > "$tmp/consumer/Package.swift" <<EOF
// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "Consumer",
    dependencies: [.package(url: "file://$tmp/FlexRun", from: "0.1.0")],
    targets: [.executableTarget(name: "Consumer", dependencies: [.product(name: "FlexEngine", package: "FlexRun")])]
)
EOF
# The first swift block of the README's "Library" section that imports FlexEngine, with the model path filled in.
awk '/^## Library/ {lib = 1} lib && /^```swift/ {code = 1; block = ""; next}
     code && /^```/ {code = 0; if (block ~ /import FlexEngine/) {printf "%s", block; exit}; next}
     code {block = block $0 "\n"}' README.md \
  | sed "s|/path/to/model.gguf|$model|" > "$tmp/consumer/Sources/Consumer/main.swift"
grep -q "import FlexEngine" "$tmp/consumer/Sources/Consumer/main.swift" || { echo "consumer-check: no library example found in README.md" >&2; exit 1; }

cd "$tmp/consumer"
for c in $configs; do
  # debug-O: a debug build with optimised code generation everywhere, the README's recipe for a
  # debuggable app (its own scratch directory, so it does not mix with the plain debug build).
  case "$c" in
    release|debug) args=(-c "$c") ;;
    debug-O) args=(-c debug --scratch-path .build-debug-O -Xswiftc -O -Xcc -O2) ;;
    *) echo "consumer-check: unknown configuration $c" >&2; exit 2 ;;
  esac
  echo "consumer-check: swift build ${args[*]}" >&2
  swift build "${args[@]}" 2>&1 | tail -3
  bin="$(swift build "${args[@]}" --show-bin-path)/Consumer"
  start=$(date +%s)
  out="$("$bin")"
  printf '%s\n' "$out" | tail -3
  printf '%s\n' "$out" | grep -q "tok/s" || { echo "consumer-check: the $c example printed no stats" >&2; exit 1; }
  echo "consumer-check: $c build ran the README example in $(( $(date +%s) - start )) s" >&2
done
echo "consumer-check: passed ($configs)" >&2
