# Sourced by the other scripts: puts the Swift toolchain on PATH if the shell lacks it
# (this image installs it under /opt/swift).
if ! command -v swift >/dev/null 2>&1; then
  for d in /opt/swift/usr/bin /usr/share/swift/usr/bin; do
    [ -x "$d/swift" ] && export PATH="$d:$PATH" && break
  done
fi
command -v swift >/dev/null 2>&1 || { echo "error: no Swift toolchain found (need Swift 6.1 or later on PATH)" >&2; exit 1; }
