#!/bin/sh
# Runs `p11noise vectors` on both vector files and checks the summary lines:
# every snow vector in both roles and every BOLT #8 case must pass.
. "$(dirname "$0")/lib.sh"
t_init vectors

check() {
    file="$1"
    want="$2"
    out=$("$tool" vectors "$srcdir/tests/vectors/$file")
    rc=$?
    last=$(printf '%s\n' "$out" | tail -n 1)
    if [ "$rc" -ne 0 ] || [ "$last" != "$want" ]; then
        printf '%s\n' "$out"
        t_fail "p11noise vectors $file: exit $rc, last line '$last', want '$want'"
    else
        t_ok "$file: $last"
    fi
}

check snow.txt "408 passed, 0 failed, 0 skipped"
check bolt8.json "16 passed, 0 failed, 0 skipped"

# A failing vector must be reported and make the command fail.
sed '0,/"ciphertext": "f8/s//"ciphertext": "f9/' "$srcdir/tests/vectors/snow.txt" > "$tmp/v"
out=$("$tool" vectors "$tmp/v")
rc=$?
last=$(printf '%s\n' "$out" | tail -n 1)
if [ "$rc" -ne 1 ] || [ "$last" != "407 passed, 1 failed, 0 skipped" ] ||
    ! printf '%s\n' "$out" | grep -q '^FAIL Noise_N_25519_ChaChaPoly_BLAKE2s'; then
    printf '%s\n' "$out"
    t_fail "a corrupted vector was not reported (exit $rc, '$last')"
else
    t_ok "a corrupted vector is reported"
fi
# A protocol the library lacks is skipped, never passed.
sed '0,/"protocol_name": "Noise_N_25519_/s//"protocol_name": "Noise_N_25520_/' \
    "$srcdir/tests/vectors/snow.txt" > "$tmp/v"
last=$("$tool" vectors "$tmp/v" | tail -n 1)
if [ "$last" != "407 passed, 0 failed, 1 skipped" ]; then
    t_fail "an unsupported protocol was not skipped ('$last')"
else
    t_ok "an unsupported protocol is skipped"
fi
t_help vectors
t_done
