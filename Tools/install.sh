#!/usr/bin/env bash
# Installs FlexRun for use outside this checkout: the `flexrun` CLI, the C library
# `libflexrun.so`, its header `flexrun.h` and a pkg-config file, so that an app builds with
#   cc app.c $(pkg-config --cflags --libs flexrun)
#
#   bash Tools/install.sh [--prefix DIR] [--build-dir DIR] [--strip] [--bundle-runtime]
#
#   --prefix DIR       where to install (default /usr/local): DIR/bin, DIR/lib, DIR/include,
#                      DIR/lib/pkgconfig
#   --build-dir DIR    install what an earlier release build left in DIR (the tests pass their own
#                      products directory) instead of running `swift build -c release`
#   --strip            remove debug info (smaller; valgrind 3.19 cannot read the toolchain's DWARF 5
#                      and gives up on an unstripped library)
#   --bundle-runtime   also copy the Swift runtime libraries the library needs into DIR/lib, for a
#                      machine without the Swift toolchain (libflexrun.so finds them through the
#                      $ORIGIN in its runpath; the CLI then needs LD_LIBRARY_PATH=DIR/lib)
#
# The library is always a release build: a debug build of the engine is many times slower.
# Without --bundle-runtime it finds the Swift runtime in the toolchain that built it (its runpath
# names the toolchain's lib/swift/linux), so that toolchain must stay installed.
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=/usr/local
build_dir=""
strip_debug=0
bundle=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
    --build-dir) build_dir="${2:?--build-dir needs a directory}"; shift 2 ;;
    --strip) strip_debug=1; shift ;;
    --bundle-runtime) bundle=1; shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done

if [ -z "$build_dir" ]; then
  source Tools/env.sh
  swift build -c release --product flexrun >&2
  swift build -c release --product FlexRunC >&2
  build_dir="$(swift build -c release --show-bin-path)"
fi
for f in flexrun libFlexRunC.so; do
  [ -f "$build_dir/$f" ] || { echo "install: $build_dir/$f is missing (build with: swift build -c release)" >&2; exit 1; }
done
header=Sources/CFlexRun/include/flexrun.h
version="$(sed -n 's/^#define FLEXRUN_VERSION_STRING "\(.*\)"$/\1/p' Sources/CFlexRun/flexrun_abi.c)"
[ -n "$version" ] || { echo "install: cannot read the version from Sources/CFlexRun/flexrun_abi.c" >&2; exit 1; }

mkdir -p "$prefix/bin" "$prefix/lib/pkgconfig" "$prefix/include"
prefix="$(cd "$prefix" && pwd)"
install -m 755 "$build_dir/flexrun" "$prefix/bin/flexrun"
# Built as libFlexRunC.so (the product name `flexrun` is the CLI's). It has no SONAME, so an app
# linked with -lflexrun records libflexrun.so, the installed name.
install -m 755 "$build_dir/libFlexRunC.so" "$prefix/lib/libflexrun.so"
install -m 644 "$header" "$prefix/include/flexrun.h"
if [ "$strip_debug" = 1 ]; then
  strip --strip-debug "$prefix/bin/flexrun" "$prefix/lib/libflexrun.so"
fi

if [ "$bundle" = 1 ]; then
  # Every library ldd resolves into the Swift toolchain (libswiftCore, Foundation, dispatch, ...).
  toolchain_lib="$(readelf -d "$prefix/lib/libflexrun.so" | sed -n 's/.*RUNPATH.*\[\([^:]*\).*/\1/p')"
  [ -n "$toolchain_lib" ] || { echo "install: libflexrun.so has no runpath to find the Swift runtime in" >&2; exit 1; }
  ldd "$prefix/lib/libflexrun.so" | awk -v dir="$toolchain_lib/" 'index($3, dir) == 1 { print $3 }' | while read -r lib; do
    install -m 644 "$lib" "$prefix/lib/"
  done
fi

# -Wl,-rpath so that a program built with these flags runs without LD_LIBRARY_PATH, wherever the prefix is.
cat > "$prefix/lib/pkgconfig/flexrun.pc" <<EOF
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: flexrun
Description: FlexRun on-device LLM inference engine (C API)
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -Wl,-rpath,\${libdir} -lflexrun
EOF

echo "install: flexrun $version in $prefix (bin/flexrun, lib/libflexrun.so, include/flexrun.h, lib/pkgconfig/flexrun.pc)" >&2
case ":${PKG_CONFIG_PATH:-}:$(pkg-config --variable pc_path pkg-config 2>/dev/null || true):" in
  *":$prefix/lib/pkgconfig:"*) ;;
  *) echo "install: for pkg-config: export PKG_CONFIG_PATH=$prefix/lib/pkgconfig" >&2 ;;
esac
