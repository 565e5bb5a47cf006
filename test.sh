#!/bin/sh
# Build p11noise with AddressSanitizer + UndefinedBehaviorSanitizer and run
# every test, then `make distcheck` (a clean build and test run from the
# release tarball), then the layer tests under valgrind and the
# constant-time test (make check-ctime). Extra arguments go
# to configure (CI adds --enable-werror).
# Installs missing Debian packages first (as root); safe to run again.
set -eu
cd "$(dirname "$0")"
. tests/deps.sh
p11n_install_deps
p11n_build build-test --enable-sanitizers "$@"

if ! make -C build-test -j"$(nproc)" check; then
    for trs in $(find build-test -name '*.trs' -not -path 'build-test/p11noise-*'); do
        grep -qE '^:test-result: (FAIL|ERROR)' "$trs" && { echo "==== ${trs%.trs}.log"; tail -60 "${trs%.trs}.log"; }
    done
    exit 1
fi
# One summary line over every test program, in the form CI reads.
results=$(find build-test -name '*.trs' -not -path 'build-test/p11noise-*' -exec cat {} +)
pass=$(echo "$results" | grep -c '^:test-result: PASS' || true)
fail=$(echo "$results" | grep -c '^:test-result: FAIL' || true)

make -C build-test -j"$(nproc)" distcheck DISTCHECK_CONFIGURE_FLAGS="$*"
# The layer tests once more under valgrind, in a build without sanitizers.
p11n_build build-valgrind "$@"
make -C build-valgrind check-valgrind
# Constant-time evidence (SECURITY.md): secrets marked undefined for
# memcheck, any branch or index on one fails; then its self-test.
make -C build-valgrind check-ctime
echo "test programs: $pass passed, $fail failed"
