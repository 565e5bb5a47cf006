#!/bin/sh
# The token commands end to end, as the README shows them: keygen, pubkey,
# ceremony import/list/remove on a fresh SoftHSM2 token found through
# p11-kit's configured modules, the objects seen by pkcs11-tool, and each
# error as one line with a non-zero exit.
set -u
. "$(dirname "$0")/lib.sh"
t_init token
MODULE="${SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}"
t_token cli || exit 1

TOKEN="pkcs11:token=cli?pin-value=1234"
# stdin is not a terminal here: no PIN prompt can hang the test.
run() { "$tool" "$@" </dev/null >"$tmp/out" 2>"$tmp/err"; }
one_error_line() { [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q '^p11noise: ' "$tmp/err"; }

run keygen --token "$TOKEN" --label machine
t_check "keygen prints NAME PUBHEX" "grep -Eq '^machine 0[23][0-9a-f]{64}\$' '$tmp/out'"
pub=$(cut -d' ' -f2 "$tmp/out")
run keygen --token "$TOKEN" --label machine
t_check "second keygen with the label refused" "[ \$? -ne 0 ] && one_error_line && grep -q 'already' '$tmp/err'"

run pubkey --key "pkcs11:token=cli;object=machine?pin-value=1234"
t_check "pubkey of the token key" "[ \"\$(cat '$tmp/out')\" = '$pub' ]"
echo 1111111111111111111111111111111111111111111111111111111111111111 > "$tmp/k.hex"
run pubkey --key "file:$tmp/k.hex"
t_check "pubkey of a file: key" \
    "[ \"\$(cat '$tmp/out')\" = 034f355bdcb7cc0af728ef3cceb9615d90684bb5b2ca5f859ab0f0b704075871aa ]"

A=036360e856310ce5d294e8be33fc807077dc56ac80d95d9cd4ddbd21325eff73f7
C=028d7500dd4c12685d1f568b4c2b5048e8534b873319f3a8daa612b469132ec7f7
printf '# peers\n\nwatchtower %s\nalice %s  # cosigner\n' "$C" "$A" > "$tmp/peers"
run ceremony import --token "$TOKEN" "$tmp/peers"
t_check "ceremony import" "[ \$? -eq 0 ]"
run ceremony list --token "$TOKEN"
printf 'alice %s\nwatchtower %s\n' "$A" "$C" > "$tmp/want"
t_check "ceremony list, sorted" "cmp -s '$tmp/out' '$tmp/want'"

printf 'bob %s\nbad/name %s\n' "$A" "$C" > "$tmp/bad"
run ceremony import --token "$TOKEN" "$tmp/bad"
t_check "bad identifier: line number, nothing written" \
    "[ \$? -ne 0 ] && one_error_line && grep -q ':2: invalid identifier' '$tmp/err'"
printf 'bob %s\nalice %s\n' "$A" "$C" > "$tmp/conflict"
run ceremony import --token "$TOKEN" "$tmp/conflict"
t_check "identifier with another key: line number" \
    "[ \$? -ne 0 ] && one_error_line && grep -q 'conflict:2:' '$tmp/err'"
run ceremony list --token "$TOKEN"
t_check "token unchanged after refused imports" "cmp -s '$tmp/out' '$tmp/want'"
run ceremony import --token "$TOKEN" --replace "$tmp/conflict"
run ceremony list --token "$TOKEN"
printf 'alice %s\nbob %s\nwatchtower %s\n' "$C" "$A" "$C" > "$tmp/want"
t_check "--replace" "cmp -s '$tmp/out' '$tmp/want'"

printf 'carol %s\n' "$A" | "$tool" ceremony import --token "$TOKEN" - 2>"$tmp/err"
t_check "import from stdin" "[ \$? -eq 0 ]"
run ceremony remove --token "$TOKEN" carol
run ceremony list --token "$TOKEN"
t_check "ceremony remove" "[ \$? -eq 0 ] && cmp -s '$tmp/out' '$tmp/want'"
run ceremony remove --token "$TOKEN" carol
t_check "removing a missing peer fails" "[ \$? -ne 0 ] && one_error_line"

if command -v pkcs11-tool >/dev/null 2>&1; then
    pkcs11-tool --module "$MODULE" --token-label cli --login --pin 1234 --list-objects \
        --type pubkey >"$tmp/out" 2>/dev/null
    t_check "pkcs11-tool sees the ceremony objects" \
        "grep -q 'label: *watchtower' '$tmp/out' && grep -q 'ID: *7031316e6f6973652d706565723a' '$tmp/out'"
fi

run ceremony list --token "pkcs11:token=cli?pin-value=9999"
t_check "wrong PIN: one line, CKR name, no PIN" \
    "[ \$? -ne 0 ] && one_error_line && grep -q CKR_PIN_INCORRECT '$tmp/err' && ! grep -q 9999 '$tmp/err'"
run ceremony list --token "pkcs11:token=nosuch?pin-value=1234"
t_check "missing token" "[ \$? -ne 0 ] && one_error_line && grep -q 'token=nosuch' '$tmp/err'"
run pubkey --key "pkcs11:token=cli;object=nosuch?pin-value=1234"
t_check "missing key" "[ \$? -ne 0 ] && one_error_line && grep -q 'no private key' '$tmp/err'"
# setsid: no controlling terminal, so the PIN prompt cannot open /dev/tty.
setsid -w "$tool" ceremony list --token "pkcs11:token=cli" </dev/null >"$tmp/out" 2>"$tmp/err"
t_check "no PIN and no terminal" "[ \$? -ne 0 ] && one_error_line && grep -qi 'PIN' '$tmp/err'"

t_help keygen
t_help pubkey
t_help ceremony
t_help ceremony import

t_done
