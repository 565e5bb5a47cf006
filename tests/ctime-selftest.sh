#!/bin/sh
# The constant-time test must be able to fail: its self-test variant
# branches on a secret once (ctime_selftest_leak), and valgrind must
# report exactly that as a use of an uninitialised value and exit
# non-zero. Any other outcome (a clean run, a crash, valgrind unable to
# start) fails this test.
set -u
b=${P11N_BUILDDIR:-.}
# A temporary file, not one in the build tree: `make distcheck` wants
# nothing left behind after distclean.
log=$(mktemp) || exit 1
trap 'rm -f "$log"' EXIT
# shellcheck disable=SC2086
$LIBTOOL --mode=execute $CTIME_VALGRIND "$b/tests/test_ctime_selftest" > "$log" 2>&1
rc=$?
if [ "$rc" -eq 0 ]; then
    cat "$log"
    echo "ctime self-test: valgrind passed a secret-dependent branch" >&2
    exit 1
fi
if ! grep -q 'uninitialised value' "$log" || ! grep -q 'ctime_selftest_leak' "$log"; then
    cat "$log"
    echo "ctime self-test: valgrind failed (exit $rc) but not on the planted branch" >&2
    exit 1
fi
grep -A3 'uninitialised value' "$log" | head -4
echo "ctime self-test: the planted secret-dependent branch was caught (valgrind exit $rc)"
