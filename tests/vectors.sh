#!/bin/sh
# Runs `p11noise vectors` on both vector files and checks the summary lines:
# every snow vector in both roles and every BOLT #8 case must pass.
builddir="${P11N_BUILDDIR:-.}"
srcdir="${P11N_SRCDIR:-.}"
tool="$builddir/tools/p11noise"
status=0

check() {
    file="$1"
    want="$2"
    out=$("$tool" vectors "$srcdir/tests/vectors/$file")
    rc=$?
    last=$(printf '%s\n' "$out" | tail -n 1)
    if [ "$rc" -ne 0 ] || [ "$last" != "$want" ]; then
        printf '%s\n' "$out"
        echo "FAIL: p11noise vectors $file: exit $rc, last line '$last', want '$want'"
        status=1
    else
        echo "ok: $file: $last"
    fi
}

check snow.txt "408 passed, 0 failed, 0 skipped"
check bolt8.json "16 passed, 0 failed, 0 skipped"

# A failing vector must be reported and make the command fail.
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
sed '0,/"ciphertext": "f8/s//"ciphertext": "f9/' "$srcdir/tests/vectors/snow.txt" > "$tmp"
out=$("$tool" vectors "$tmp")
rc=$?
last=$(printf '%s\n' "$out" | tail -n 1)
if [ "$rc" -ne 1 ] || [ "$last" != "407 passed, 1 failed, 0 skipped" ] ||
    ! printf '%s\n' "$out" | grep -q '^FAIL Noise_N_25519_ChaChaPoly_BLAKE2s'; then
    printf '%s\n' "$out"
    echo "FAIL: a corrupted vector was not reported (exit $rc, '$last')"
    status=1
else
    echo "ok: a corrupted vector is reported"
fi
# A protocol the library lacks is skipped, never passed.
sed '0,/"protocol_name": "Noise_N_25519_/s//"protocol_name": "Noise_N_25520_/' \
    "$srcdir/tests/vectors/snow.txt" > "$tmp"
last=$("$tool" vectors "$tmp" | tail -n 1)
if [ "$last" != "407 passed, 0 failed, 1 skipped" ]; then
    echo "FAIL: an unsupported protocol was not skipped ('$last')"
    status=1
else
    echo "ok: an unsupported protocol is skipped"
fi
exit $status
