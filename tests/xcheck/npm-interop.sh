#!/bin/sh
# BOLT #8 interop between p11noise and @node-lightning/noise, the BOLT #8
# package most used from npm. Not part of `make check` (it installs from the
# npm registry); run from a build directory after `make tools/p11noise`:
#
#     sh ../tests/xcheck/npm-interop.sh          (P11N_SRCDIR, P11N_BUILDDIR
#                                                 default to .. and .)
#
# The package keeps one chaining key for both directions (NoiseState.ck,
# overwritten by _rotateSendingKeys and _rotateRecievingKeys alike), where
# BOLT #8 keeps sck and rck. Its first rotation, in either direction, is
# right; the first rotation in the other direction then derives its key
# from the wrong chaining key. With an echo peer that is message 501: 500
# messages interoperate, the 501st fails. This script checks that exact
# signature against p11noise (both roles) and against the independent
# Python peer (tests/xcheck/bolt8_ref.py), which fails identically; and
# that with the two rotation methods replaced by per-direction ones
# (bolt8_peer.js --fix-rotation) thousands of messages go through.
set -u
srcdir="${P11N_SRCDIR:-..}"
builddir="${P11N_BUILDDIR:-.}"
tool="$builddir/tools/p11noise"
peer="$srcdir/tests/xcheck/bolt8_peer.js"
ref="$srcdir/tests/xcheck/bolt8_ref.py"
pkg="@node-lightning/noise@0.26.1"
npmdir="$builddir/xcheck-npm"
mkdir -p "$npmdir"
if [ ! -d "$npmdir/node_modules/@node-lightning/noise" ]; then
    (cd "$npmdir" && npm install --no-audit --no-fund --silent "$pkg") || {
        echo "cannot install $pkg"
        exit 1
    }
fi
NODE_PATH=$(cd "$npmdir/node_modules" && pwd)
export NODE_PATH
# Key files must be private: the tool refuses them otherwise.
umask 077
tmp=$(mktemp -d)
pids=""
passed=0
failed=0
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
check() {   # check NAME GOT WANT
    if [ "$2" = "$3" ]; then
        echo "ok: $1: $2"
        passed=$((passed + 1))
    else
        echo "FAIL: $1: got '$2', want '$3'"
        failed=$((failed + 1))
    fi
}
wait_for() {
    for _ in $(seq 200); do
        v=$(sed -n "$2" "$1" | head -1)
        [ -n "$v" ] && { echo "$v"; return 0; }
        sleep 0.1
    done
    return 1
}

server_priv=2121212121212121212121212121212121212121212121212121212121212121
server_pub=028d7500dd4c12685d1f568b4c2b5048e8534b873319f3a8daa612b469132ec7f7
client_priv=1111111111111111111111111111111111111111111111111111111111111111
client_pub=034f355bdcb7cc0af728ef3cceb9615d90684bb5b2ca5f859ab0f0b704075871aa
echo "$server_priv" > "$tmp/server.key"
echo "$client_priv" > "$tmp/client.key"
echo "client $client_pub" > "$tmp/server.peers"
echo "server $server_pub" > "$tmp/client.peers"
bad_tag="Unsupported state or unable to authenticate data"

# --- the package as initiator, p11noise listen --echo as responder
"$tool" listen --key "file:$tmp/server.key" --peers "$tmp/server.peers" --pattern XK \
    --prologue lightning --echo --bind 127.0.0.1:0 2> "$tmp/listen.log" &
pids="$pids $!"
port=$(wait_for "$tmp/listen.log" 's/.*listening on .*:\([0-9]*\) (.*/\1/p') || {
    echo "p11noise listen did not start"; cat "$tmp/listen.log"; exit 1; }
npm_connect() {   # npm_connect PORT [peer options]: the peer's last line
    p="$1"; shift
    timeout 300 node "$peer" connect "127.0.0.1:$p" --key "$client_priv" --peer "$server_pub" \
        "$@" 2>&1 | tail -1
}
check "npm -> p11noise, 500 messages" "$(npm_connect "$port" --count 500)" \
    "ok: 500 messages each way"
check "npm -> p11noise, 3000 messages (known defect)" "$(npm_connect "$port" --count 3000)" \
    "FAIL: 500 echoes verified, echo 501: $bad_tag"
check "npm with per-direction chaining keys -> p11noise, 5000 messages" \
    "$(npm_connect "$port" --count 5000 --fix-rotation)" "ok: 5000 messages each way"

# --- the same against the independent Python peer: the same failure
python3 "$ref" listen 127.0.0.1:0 --key "$server_priv" --max-conns 3 > "$tmp/ref.log" 2>&1 &
pids="$pids $!"
rport=$(wait_for "$tmp/ref.log" 's/^listening on \([0-9]*\)$/\1/p') || {
    echo "reference listener did not start"; exit 1; }
check "npm -> python reference, 500 messages" "$(npm_connect "$rport" --count 500)" \
    "ok: 500 messages each way"
check "npm -> python reference, 3000 messages (known defect)" \
    "$(npm_connect "$rport" --count 3000)" "FAIL: 500 echoes verified, echo 501: $bad_tag"
check "npm with per-direction chaining keys -> python reference, 5000 messages" \
    "$(npm_connect "$rport" --count 5000 --fix-rotation)" "ok: 5000 messages each way"

# --- p11noise connect as initiator, the package as echoing responder
awk 'BEGIN { for (i = 0; i < 3000; i++) {
        n = (i * 7919) % 1500; if (i % 97 == 5) n = 60000
        c = sprintf("%c", 97 + i % 26); s = c
        while (length(s) < n) s = s s
        print substr(s, 1, n) " " i } }' > "$tmp/in3000.txt"
head -n 500 "$tmp/in3000.txt" > "$tmp/in500.txt"
p11n_to_npm() {   # p11n_to_npm INPUT [peer options]: prints "rc=N lines=N"
    input="$1"; shift
    node "$peer" listen 127.0.0.1:0 --key "$server_priv" "$@" > "$tmp/npm.log" 2>&1 &
    npid=$!
    pids="$pids $npid"
    nport=$(wait_for "$tmp/npm.log" 's/^listening on \([0-9]*\)$/\1/p') || {
        echo "npm listener did not start"; return; }
    timeout 300 "$tool" connect --key "file:$tmp/client.key" --peers "$tmp/client.peers" \
        --pattern XK --prologue lightning --peer server "127.0.0.1:$nport" \
        < "$input" > "$tmp/out.txt" 2> "$tmp/connect.log"
    rc=$?
    cmp -s "$tmp/out.txt" "$(printf '%s' "$input")" && same=same || same=differs
    echo "rc=$rc lines=$(wc -l < "$tmp/out.txt") $same"
    grep -q 'authentication tag mismatch' "$tmp/connect.log" && echo "(bad tag)"
    kill "$npid" 2>/dev/null
}
check "p11noise -> npm, 500 messages" "$(p11n_to_npm "$tmp/in500.txt" | tr '\n' ' ')" \
    "rc=0 lines=500 same "
check "p11noise -> npm, 3000 messages (known defect)" \
    "$(p11n_to_npm "$tmp/in3000.txt" | tr '\n' ' ')" "rc=1 lines=500 differs (bad tag) "
check "p11noise -> npm with per-direction chaining keys, 3000 messages" \
    "$(p11n_to_npm "$tmp/in3000.txt" --fix-rotation | tr '\n' ' ')" "rc=0 lines=3000 same "

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
