#!/bin/sh
# The token commands end to end, as the README shows them: keygen, pubkey,
# ceremony import/list/remove on a fresh SoftHSM2 token found through
# p11-kit's configured modules, the objects seen by pkcs11-tool, and each
# error as one line with a non-zero exit.
set -u
B="${P11N_BUILDDIR:-.}"
P="$B/tools/p11noise"
MODULE="${SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}"
fails=0
ok() { echo "ok: $1"; }
bad() { echo "FAIL: $1"; fails=$((fails + 1)); }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/p11n-cli-XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT
mkdir "$dir/tokens"
cat > "$dir/softhsm2.conf" <<EOC
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
EOC
export SOFTHSM2_CONF="$dir/softhsm2.conf"
softhsm2-util --init-token --free --label cli --so-pin 5678 --pin 1234 >/dev/null || exit 1

TOKEN="pkcs11:token=cli?pin-value=1234"
# stdin is not a terminal here: no PIN prompt can hang the test.
run() { "$P" "$@" </dev/null >"$dir/out" 2>"$dir/err"; }
one_error_line() { [ "$(wc -l <"$dir/err")" -eq 1 ] && grep -q '^p11noise: ' "$dir/err"; }

run keygen --token "$TOKEN" --label machine
check "keygen prints NAME PUBHEX" "grep -Eq '^machine 0[23][0-9a-f]{64}\$' '$dir/out'"
pub=$(cut -d' ' -f2 "$dir/out")
run keygen --token "$TOKEN" --label machine
check "second keygen with the label refused" "[ \$? -ne 0 ] && one_error_line && grep -q 'already' '$dir/err'"

run pubkey --key "pkcs11:token=cli;object=machine?pin-value=1234"
check "pubkey of the token key" "[ \"\$(cat '$dir/out')\" = '$pub' ]"
echo 1111111111111111111111111111111111111111111111111111111111111111 > "$dir/k.hex"
run pubkey --key "file:$dir/k.hex"
check "pubkey of a file: key" \
    "[ \"\$(cat '$dir/out')\" = 034f355bdcb7cc0af728ef3cceb9615d90684bb5b2ca5f859ab0f0b704075871aa ]"

A=036360e856310ce5d294e8be33fc807077dc56ac80d95d9cd4ddbd21325eff73f7
C=028d7500dd4c12685d1f568b4c2b5048e8534b873319f3a8daa612b469132ec7f7
printf '# peers\n\nwatchtower %s\nalice %s  # cosigner\n' "$C" "$A" > "$dir/peers"
run ceremony import --token "$TOKEN" "$dir/peers"
check "ceremony import" "[ \$? -eq 0 ]"
run ceremony list --token "$TOKEN"
printf 'alice %s\nwatchtower %s\n' "$A" "$C" > "$dir/want"
check "ceremony list, sorted" "cmp -s '$dir/out' '$dir/want'"

printf 'bob %s\nbad/name %s\n' "$A" "$C" > "$dir/bad"
run ceremony import --token "$TOKEN" "$dir/bad"
check "bad identifier: line number, nothing written" \
    "[ \$? -ne 0 ] && one_error_line && grep -q ':2: invalid identifier' '$dir/err'"
printf 'bob %s\nalice %s\n' "$A" "$C" > "$dir/conflict"
run ceremony import --token "$TOKEN" "$dir/conflict"
check "identifier with another key: line number" \
    "[ \$? -ne 0 ] && one_error_line && grep -q 'conflict:2:' '$dir/err'"
run ceremony list --token "$TOKEN"
check "token unchanged after refused imports" "cmp -s '$dir/out' '$dir/want'"
run ceremony import --token "$TOKEN" --replace "$dir/conflict"
run ceremony list --token "$TOKEN"
printf 'alice %s\nbob %s\nwatchtower %s\n' "$C" "$A" "$C" > "$dir/want"
check "--replace" "cmp -s '$dir/out' '$dir/want'"

printf 'carol %s\n' "$A" | "$P" ceremony import --token "$TOKEN" - 2>"$dir/err"
check "import from stdin" "[ \$? -eq 0 ]"
run ceremony remove --token "$TOKEN" carol
run ceremony list --token "$TOKEN"
check "ceremony remove" "[ \$? -eq 0 ] && cmp -s '$dir/out' '$dir/want'"
run ceremony remove --token "$TOKEN" carol
check "removing a missing peer fails" "[ \$? -ne 0 ] && one_error_line"

if command -v pkcs11-tool >/dev/null 2>&1; then
    pkcs11-tool --module "$MODULE" --token-label cli --login --pin 1234 --list-objects \
        --type pubkey >"$dir/out" 2>/dev/null
    check "pkcs11-tool sees the ceremony objects" \
        "grep -q 'label: *watchtower' '$dir/out' && grep -q 'ID: *7031316e6f6973652d706565723a' '$dir/out'"
fi

run ceremony list --token "pkcs11:token=cli?pin-value=9999"
check "wrong PIN: one line, CKR name, no PIN" \
    "[ \$? -ne 0 ] && one_error_line && grep -q CKR_PIN_INCORRECT '$dir/err' && ! grep -q 9999 '$dir/err'"
run ceremony list --token "pkcs11:token=nosuch?pin-value=1234"
check "missing token" "[ \$? -ne 0 ] && one_error_line && grep -q 'token=nosuch' '$dir/err'"
run pubkey --key "pkcs11:token=cli;object=nosuch?pin-value=1234"
check "missing key" "[ \$? -ne 0 ] && one_error_line && grep -q 'no private key' '$dir/err'"
# setsid: no controlling terminal, so the PIN prompt cannot open /dev/tty.
setsid -w "$P" ceremony list --token "pkcs11:token=cli" </dev/null >"$dir/out" 2>"$dir/err"
check "no PIN and no terminal" "[ \$? -ne 0 ] && one_error_line && grep -qi 'PIN' '$dir/err'"

[ "$fails" -eq 0 ] && echo "token.sh: all passed" || echo "token.sh: $fails failed"
[ "$fails" -eq 0 ]
