#!/bin/sh
# BOLT #8 interop over loopback with an independent peer
# (tests/xcheck/bolt8_ref.py, written from the BOLT #8 text):
#  - the peer passes BOLT #8 Appendix A;
#  - `p11noise listen --pattern XK --prologue lightning --echo` echoes 5000
#    messages of 0..65535 bytes to it, up to 32 in flight each way, across
#    10 key rotations in each direction;
#  - `p11noise connect` sends 3000 lines through the peer's echo server;
#  - a peer whose key is not in the listener's peer store gets nothing.
# Skipped (77) without python3 and its cryptography module.
set -u
builddir="${P11N_BUILDDIR:-.}"
srcdir="${P11N_SRCDIR:-.}"
tool="$builddir/tools/p11noise"
ref="$srcdir/tests/xcheck/bolt8_ref.py"
if ! python3 -c 'import cryptography.hazmat.primitives.ciphers.aead' 2>/dev/null; then
    echo "SKIP: python3 with the cryptography module (Debian: python3-cryptography) is missing"
    exit 77
fi
tmp=$(mktemp -d)
pids=""
fails=0
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
fail() {
    echo "FAIL: $*"
    fails=$((fails + 1))
}

# BOLT #8 Appendix A keys: initiator 0x11.., responder 0x21..
server_priv=2121212121212121212121212121212121212121212121212121212121212121
server_pub=028d7500dd4c12685d1f568b4c2b5048e8534b873319f3a8daa612b469132ec7f7
client_priv=1111111111111111111111111111111111111111111111111111111111111111
client_pub=034f355bdcb7cc0af728ef3cceb9615d90684bb5b2ca5f859ab0f0b704075871aa
stranger_priv=3131313131313131313131313131313131313131313131313131313131313131
echo "$server_priv" > "$tmp/server.key"
echo "$client_priv" > "$tmp/client.key"
echo "client $client_pub" > "$tmp/server.peers"
echo "server $server_pub" > "$tmp/client.peers"

# wait_for FILE SED-EXPR: prints the first match once FILE has one.
wait_for() {
    for _ in $(seq 200); do
        v=$(sed -n "$2" "$1" | head -1)
        [ -n "$v" ] && { echo "$v"; return 0; }
        sleep 0.1
    done
    return 1
}

out=$(python3 "$ref" selftest "$srcdir/tests/vectors/bolt8.json")
[ "$(printf '%s\n' "$out" | tail -n 1)" = "3 passed, 0 failed" ] \
    && echo "ok: reference peer passes BOLT #8 Appendix A" \
    || fail "reference peer self test: $out"

# p11noise as responder, the reference as initiator.
"$tool" listen --key "file:$tmp/server.key" --peers "$tmp/server.peers" --pattern XK \
    --prologue lightning --echo --bind 127.0.0.1:0 2> "$tmp/listen.log" &
pids="$pids $!"
if port=$(wait_for "$tmp/listen.log" 's/.*listening on .*:\([0-9]*\) (.*/\1/p'); then
    out=$(timeout 300 python3 "$ref" connect "127.0.0.1:$port" --key "$client_priv" \
        --peer "$server_pub" --count 5000 2>&1)
    want="ok: 5000 messages each way, 10/10 key rotations sent/received"
    [ "$out" = "$want" ] && echo "$out (p11noise responder)" \
        || fail "reference initiator against p11noise listen: $out; $(tail -3 "$tmp/listen.log")"
    # An initiator the listener does not know completes no handshake.
    out=$(timeout 60 python3 "$ref" connect "127.0.0.1:$port" --key "$stranger_priv" \
        --peer "$server_pub" --count 1 2>&1) && fail "a stranger was echoed: $out"
    wait_for "$tmp/listen.log" '/is not an accepted peer/p' > /dev/null \
        && echo "ok: an initiator outside the peer store is refused" \
        || fail "the listener did not say why it refused a stranger: $out"
else
    fail "p11noise listen did not start: $(cat "$tmp/listen.log")"
fi

# p11noise as initiator, the reference as responder: 3000 lines of 0 to
# 60000 bytes come back unchanged.
awk 'BEGIN {
    for (i = 0; i < 3000; i++) {
        n = (i * 7919) % 1500
        if (i % 97 == 5) n = 60000
        c = sprintf("%c", 97 + i % 26); s = c
        while (length(s) < n) s = s s
        print substr(s, 1, n) " " i
    } }' > "$tmp/in.txt"
python3 "$ref" listen 127.0.0.1:0 --key "$server_priv" > "$tmp/ref.log" 2>&1 &
pids="$pids $!"
if rport=$(wait_for "$tmp/ref.log" 's/^listening on \([0-9]*\)$/\1/p'); then
    if timeout 300 "$tool" connect --key "file:$tmp/client.key" --peers "$tmp/client.peers" \
        --pattern XK --prologue lightning --peer server "127.0.0.1:$rport" \
        < "$tmp/in.txt" > "$tmp/out.txt" 2> "$tmp/connect.log"; then
        cmp -s "$tmp/in.txt" "$tmp/out.txt" \
            || fail "p11noise connect: the echo differs from the input"
    else
        fail "p11noise connect exited non-zero: $(tail -2 "$tmp/connect.log")"
    fi
    want="peer $client_pub: 3000 messages echoed, 6/6 key rotations received/sent"
    got=$(wait_for "$tmp/ref.log" '/^peer \|^FAIL/p')
    [ "$got" = "$want" ] && echo "ok: p11noise initiator: ${got#peer * }" \
        || fail "reference responder: '$got'"
else
    fail "reference listener did not start: $(cat "$tmp/ref.log")"
fi

[ "$fails" -eq 0 ] || exit 1
