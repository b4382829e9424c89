#!/usr/bin/env bash
# Installs the Debian packages FlexRun builds against, only if they are missing.
# Idempotent: a machine that already has them is left alone and nothing is printed but a summary.
set -euo pipefail

# valgrind: CABITests runs the C test program of the C interface under memcheck.
# qemu-user: Tools/baseline-check.sh runs the logit tests on an emulated CPU without AVX.
# tmux: ServeChatTests types into `flexrun chat` in a real terminal.
PKGS=(liburing-dev libzstd-dev liblz4-dev pkg-config unzip python3-pip valgrind qemu-user tmux)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# python3-pip is only needed when no pip is on PATH (this image ships pip via pyenv).
if command -v pip3 >/dev/null 2>&1 || python3 -m pip --version >/dev/null 2>&1; then
  missing=("${missing[@]/python3-pip}")
fi
todo=()
for p in "${missing[@]}"; do [ -n "$p" ] && todo+=("$p"); done

if [ ${#todo[@]} -eq 0 ]; then
  echo "setup: all packages present (${PKGS[*]})" >&2
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "setup: missing packages: ${todo[*]}; run as root or: sudo apt-get install -y ${todo[*]}" >&2
  exit 1
fi
echo "setup: installing ${todo[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq "${todo[@]}" >/dev/null
echo "setup: done" >&2
