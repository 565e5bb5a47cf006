#!/bin/sh
# The token commands end to end, as the README shows them: keygen, pubkey,
# ceremony import/list/remove on a fresh SoftHSM2 token found through
# p11-kit's configured modules, the objects seen by pkcs11-tool, objects
# planted without the PIN ignored with a warning, files holding secrets
# refused unless private, and each error as one line with a non-zero exit.
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
chmod 644 "$tmp/k.hex"
run pubkey --key "file:$tmp/k.hex"
t_check "file: key readable by others refused, with the fix" \
    "[ \$? -ne 0 ] && one_error_line && grep -q 'chmod 600' '$tmp/err' && [ ! -s '$tmp/out' ]"
chmod 600 "$tmp/k.hex"
run pubkey --key "file:$tmp/k.hex"
t_check "pubkey of a file: key" \
    "[ \"\$(cat '$tmp/out')\" = 034f355bdcb7cc0af728ef3cceb9615d90684bb5b2ca5f859ab0f0b704075871aa ]"

A=036360e856310ce5d294e8be33fc807077dc56ac80d95d9cd4ddbd21325eff73f7
C=028d7500dd4c12685d1f568b4c2b5048e8534b873319f3a8daa612b469132ec7f7
D=023c72addb4fdf09af94f0c94d7fe92a386a7e70cf8a1d85916386bb2535c7b1b1
E=032c0b7cf95324a07d05398b240174dc0c2be444d96b159aa6c7f7b1e668680991
printf '# peers\n\nwatchtower %s\nalice %s  # cosigner\n' "$C" "$A" > "$tmp/peers"
run ceremony import --token "$TOKEN" "$tmp/peers"
t_check "ceremony import" "[ \$? -eq 0 ]"
run ceremony list --token "$TOKEN"
printf 'alice %s\nwatchtower %s\n' "$A" "$C" > "$tmp/want"
t_check "ceremony list, sorted" "cmp -s '$tmp/out' '$tmp/want'"

printf 'bob %s\nbad/name %s\n' "$D" "$C" > "$tmp/bad"
run ceremony import --token "$TOKEN" "$tmp/bad"
t_check "bad identifier: line number, nothing written" \
    "[ \$? -ne 0 ] && one_error_line && grep -q ':2: invalid identifier' '$tmp/err'"
printf 'bob %s\nalice %s\n' "$D" "$E" > "$tmp/conflict"
run ceremony import --token "$TOKEN" "$tmp/conflict"
t_check "identifier with another key: line number" \
    "[ \$? -ne 0 ] && one_error_line && grep -q 'conflict:2:' '$tmp/err'"
run ceremony list --token "$TOKEN"
t_check "token unchanged after refused imports" "cmp -s '$tmp/out' '$tmp/want'"
run ceremony import --token "$TOKEN" --replace "$tmp/conflict"
run ceremony list --token "$TOKEN"
printf 'alice %s\nbob %s\nwatchtower %s\n' "$E" "$D" "$C" > "$tmp/want"
t_check "--replace" "cmp -s '$tmp/out' '$tmp/want'"

printf 'carol %s\n' "$A" | "$tool" ceremony import --token "$TOKEN" - 2>"$tmp/err"
t_check "import from stdin" "[ \$? -eq 0 ]"
run ceremony remove --token "$TOKEN" carol
run ceremony list --token "$TOKEN"
t_check "ceremony remove" "[ \$? -eq 0 ] && cmp -s '$tmp/out' '$tmp/want'"
run ceremony remove --token "$TOKEN" carol
t_check "removing a missing peer fails" "[ \$? -ne 0 ] && one_error_line"

# One key under two identifiers: refused, with the line and the other name.
printf 'dup %s\n' "$C" > "$tmp/dupkey"
run ceremony import --token "$TOKEN" "$tmp/dupkey"
t_check "key already on the token under another identifier refused" \
    "[ \$? -ne 0 ] && one_error_line && grep -q 'dupkey:1: .*under watchtower; nothing imported' '$tmp/err'"
printf 'x1 %s\nx2 %s\n' "$A" "$A" > "$tmp/dupkey"
run ceremony import --token "$TOKEN" "$tmp/dupkey"
t_check "one key twice in the input refused" \
    "[ \$? -ne 0 ] && one_error_line && grep -q 'dupkey:2: .*same public key as x1' '$tmp/err'"
run ceremony list --token "$TOKEN"
t_check "token unchanged after duplicate keys" "cmp -s '$tmp/out' '$tmp/want'"

command -v pkcs11-tool >/dev/null 2>&1 || t_fail "pkcs11-tool (opensc) is needed"
p11tool() { pkcs11-tool --module "$MODULE" --token-label cli "$@" 2>/dev/null; }

pkcs11_id() { printf 'p11noise-peer:%s' "$1" | od -An -tx1 | tr -d ' \n'; }
# plant NAME SCALARHEX: what anyone who can open a session does without
# the PIN: write a public object with the ceremony's layout.
plant() {
    python3 -c '
import sys
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives import serialization as s
k = ec.derive_private_key(int(sys.argv[1], 16), ec.SECP256K1())
sys.stdout.buffer.write(k.public_key().public_bytes(s.Encoding.DER, s.PublicFormat.SubjectPublicKeyInfo))
' "$2" > "$tmp/planted.der" &&
    p11tool --write-object "$tmp/planted.der" --type pubkey --id "$(pkcs11_id "$1")" --label "$1" >/dev/null
}

p11tool --login --pin 1234 --list-objects --type pubkey >"$tmp/out"
t_check "pkcs11-tool sees the ceremony objects" \
    "grep -q 'label: *watchtower' '$tmp/out' && grep -q 'ID: *7031316e6f6973652d706565723a' '$tmp/out'"
p11tool --list-objects >"$tmp/out"
t_check "without the PIN, neither ceremony objects nor keygen's public key are seen" \
    "! grep -q 'label: *watchtower' '$tmp/out' && ! grep -q 'label: *machine' '$tmp/out'"
p11tool --login --pin 1234 --list-objects --type privkey >"$tmp/out"
t_check "keygen's private key: usage derive only, never extractable" \
    "grep -q 'label: *machine' '$tmp/out' && [ \"\$(grep 'Usage:' '$tmp/out')\" = '  Usage:      derive' ] &&
     grep -q 'never extractable' '$tmp/out'"

# A planted public object: ignored with a warning, the peers still listed.
plant mallory 5555555555555555555555555555555555555555555555555555555555555555
t_check "a public object is created without the PIN" "[ \$? -eq 0 ]"
run ceremony list --token "$TOKEN"
t_check "planted public object: not a peer, one warning line, exit 0" \
    "[ \$? -eq 0 ] && cmp -s '$tmp/out' '$tmp/want' && [ \"\$(wc -l <'$tmp/err')\" -eq 1 ] &&
     grep -q '^ignored: mallory: public object (CKA_PRIVATE false)' '$tmp/err'"

# Migration: a public object with the layout becomes a peer only when
# imported again with --replace (which needs the PIN).
L=035ab4689e400a4a160cf01cd44730845a54768df8547dcdf073d964f109f18c30
plant legacy 6666666666666666666666666666666666666666666666666666666666666666
printf 'legacy %s\n' "$L" > "$tmp/legacy"
run ceremony import --token "$TOKEN" "$tmp/legacy"
t_check "import over an ignored object needs --replace" \
    "[ \$? -ne 0 ] && one_error_line && grep -q 'legacy: an ignored ceremony object.*--replace' '$tmp/err'"
run ceremony import --token "$TOKEN" --replace "$tmp/legacy"
t_check "import --replace rewrites it" "[ \$? -eq 0 ]"
run ceremony list --token "$TOKEN"
printf 'alice %s\nbob %s\nlegacy %s\nwatchtower %s\n' "$E" "$D" "$L" "$C" > "$tmp/want2"
t_check "the rewritten object is a peer" \
    "cmp -s '$tmp/out' '$tmp/want2' && ! grep -q legacy '$tmp/err' && grep -q mallory '$tmp/err'"
p11tool --list-objects >"$tmp/out"
t_check "and private: not seen without the PIN" "! grep -q 'label: *legacy' '$tmp/out'"
run ceremony remove --token "$TOKEN" mallory
run ceremony remove --token "$TOKEN" legacy
run ceremony list --token "$TOKEN"
t_check "ignored objects can be removed" "cmp -s '$tmp/out' '$tmp/want' && [ ! -s '$tmp/err' ]"

# pin-source: a PIN file readable by others is refused with the fix.
echo 1234 > "$tmp/pin"
chmod 644 "$tmp/pin"
run ceremony list --token "pkcs11:token=cli?pin-source=file:$tmp/pin"
t_check "pin-source readable by others refused, PIN not shown" \
    "[ \$? -ne 0 ] && one_error_line && grep -q 'chmod 600 $tmp/pin' '$tmp/err' && ! grep -q 1234 '$tmp/err'"
chmod 600 "$tmp/pin"
run ceremony list --token "pkcs11:token=cli?pin-source=file:$tmp/pin"
t_check "pin-source with mode 600" "[ \$? -eq 0 ] && cmp -s '$tmp/out' '$tmp/want'"

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
