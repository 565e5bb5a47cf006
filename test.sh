#!/bin/sh
# Build p11noise with AddressSanitizer + UndefinedBehaviorSanitizer and run
# every test, then `make distcheck` (a clean build and test run from the
# release tarball). Extra arguments go to configure (CI adds --enable-werror).
# Installs missing Debian packages first (as root); safe to run again.
set -eu
cd "$(dirname "$0")"
. tests/deps.sh
p11n_install_deps
p11n_build --enable-sanitizers "$@"
make -C build -j"$(nproc)" check || { cat build/test-suite.log 2>/dev/null | tail -100; exit 1; }
make -C build -j"$(nproc)" distcheck DISTCHECK_CONFIGURE_FLAGS="$*"
echo "test.sh: all tests passed"
