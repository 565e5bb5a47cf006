#!/bin/sh
# BOLT #8 interop over loopback with an independent peer
# (tests/xcheck/bolt8_ref.py, written from the BOLT #8 text):
#  - the peer passes BOLT #8 Appendix A;
#  - `p11noise listen --pattern XK --prologue lightning --echo` (BOLT #8)
#    echoes 5000 messages of 0..65535 bytes to it, up to 32 in flight each
#    way, across 10 key rotations in each direction; so does the default
#    KK listener (prologue p11noise/1, same framing and transport);
#  - `p11noise connect` (XK and KK) sends 3000 lines through the peer's
#    echo server and gets them back unchanged;
#  - an XK peer outside the listener's peer store, and a KK peer with
#    another prologue, get no session;
#  - with p11noise's key in a SoftHSM2 token (token ECDH with parity
#    recovery): 30 handshakes per pattern as responder, 3 as initiator.
# Skipped (77) without python3 and its cryptography module.
set -u
builddir="${P11N_BUILDDIR:-.}"
srcdir="${P11N_SRCDIR:-.}"
tool="$builddir/tools/p11noise"
ref="$srcdir/tests/xcheck/bolt8_ref.py"
# The first python3 that has the module: PATH's, else Debian's own.
py=""
for p in python3 /usr/bin/python3; do
    if "$p" -c 'import cryptography.hazmat.primitives.ciphers.aead' 2>/dev/null; then
        py="$p"
        break
    fi
done
if [ -z "$py" ]; then
    echo "SKIP: python3 with the cryptography module (Debian: python3-cryptography) is missing"
    exit 77
fi
# Key files must be private: the tool refuses them otherwise.
umask 077
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

out=$("$py" "$ref" selftest "$srcdir/tests/vectors/bolt8.json")
[ "$(printf '%s\n' "$out" | tail -n 1)" = "3 passed, 0 failed" ] \
    && echo "ok: reference peer passes BOLT #8 Appendix A" \
    || fail "reference peer self test: $out"

# start_listener LOG KEY [options]: p11noise listen --echo on a free port,
# peers from server.peers; sets $port.
start_listener() {
    log="$1"; key="$2"; shift 2
    "$tool" listen --key "$key" --peers "$tmp/server.peers" --echo \
        --bind 127.0.0.1:0 "$@" 2> "$log" &
    pids="$pids $!"
    port=$(wait_for "$log" 's/.*listening on .*:\([0-9]*\) (.*/\1/p') && return 0
    fail "p11noise listen $* did not start: $(cat "$log")"
    return 1
}

# p11noise as responder, the reference as initiator: 5000 messages.
# responder_case NAME REF-OPTIONS -- LISTEN-OPTIONS
responder_case() {
    name="$1"; shift
    ref_opts=""
    while [ "$1" != "--" ]; do ref_opts="$ref_opts $1"; shift; done
    shift
    start_listener "$tmp/$name.log" "file:$tmp/server.key" "$@" || return
    # shellcheck disable=SC2086
    out=$(timeout 300 "$py" "$ref" connect "127.0.0.1:$port" --key "$client_priv" \
        --peer "$server_pub" --count 5000 $ref_opts 2>&1)
    want="ok: 5000 messages each way, 10/10 key rotations sent/received"
    [ "$out" = "$want" ] && echo "$out ($name, p11noise responder)" \
        || fail "$name: reference initiator against p11noise listen: $out; $(tail -3 "$tmp/$name.log")"
}
responder_case XK -- --pattern XK --prologue lightning
responder_case KK --pattern KK -- --peer client

# An XK initiator outside the peer store completes no handshake.
if start_listener "$tmp/xk-stranger.log" "file:$tmp/server.key" --pattern XK --prologue lightning; then
    out=$(timeout 60 "$py" "$ref" connect "127.0.0.1:$port" --key "$stranger_priv" \
        --peer "$server_pub" --count 1 2>&1) && fail "a stranger was echoed: $out"
    wait_for "$tmp/xk-stranger.log" '/is not an accepted peer/p' > /dev/null \
        && echo "ok: an XK initiator outside the peer store is refused" \
        || fail "the listener did not say why it refused a stranger: $out"
fi
# A KK initiator with another prologue completes no handshake either.
if start_listener "$tmp/kk-prologue.log" "file:$tmp/server.key" --peer client; then
    out=$(timeout 60 "$py" "$ref" connect "127.0.0.1:$port" --key "$client_priv" \
        --peer "$server_pub" --pattern KK --prologue lightning --count 1 2>&1) \
        && fail "KK with another prologue was echoed: $out"
    wait_for "$tmp/kk-prologue.log" '/failed during handshake/p' > /dev/null \
        && echo "ok: a KK initiator with another prologue is refused" \
        || fail "KK, other prologue: the listener did not log a failed handshake: $out"
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
# initiator_case NAME REF-OPTIONS -- CONNECT-OPTIONS
initiator_case() {
    name="$1"; shift
    ref_opts=""
    while [ "$1" != "--" ]; do ref_opts="$ref_opts $1"; shift; done
    shift
    # shellcheck disable=SC2086
    "$py" "$ref" listen 127.0.0.1:0 --key "$server_priv" $ref_opts > "$tmp/ref-$name.log" 2>&1 &
    pids="$pids $!"
    rport=$(wait_for "$tmp/ref-$name.log" 's/^listening on \([0-9]*\)$/\1/p') || {
        fail "$name: reference listener did not start: $(cat "$tmp/ref-$name.log")"
        return
    }
    if timeout 300 "$tool" connect --key "file:$tmp/client.key" --peers "$tmp/client.peers" \
        --peer server "$@" "127.0.0.1:$rport" \
        < "$tmp/in.txt" > "$tmp/out-$name.txt" 2> "$tmp/connect-$name.log"; then
        cmp -s "$tmp/in.txt" "$tmp/out-$name.txt" \
            || fail "$name: p11noise connect: the echo differs from the input"
    else
        fail "$name: p11noise connect exited non-zero: $(tail -2 "$tmp/connect-$name.log")"
    fi
    want="peer $client_pub: 3000 messages echoed, 6/6 key rotations received/sent"
    got=$(wait_for "$tmp/ref-$name.log" '/^peer \|^FAIL/p')
    [ "$got" = "$want" ] && echo "ok: $name, p11noise initiator: ${got#peer * }" \
        || fail "$name: reference responder: '$got'"
}
initiator_case XK -- --pattern XK --prologue lightning
initiator_case KK --pattern KK --peer "$client_pub" --

# The same with p11noise's static key inside a SoftHSM2 token: each
# handshake takes token ECDH with y-parity recovery, and the reference's
# random ephemerals give both parities over 30 handshakes per pattern.
mkdir "$tmp/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
    "$tmp/tokens" > "$tmp/softhsm2.conf"
SOFTHSM2_CONF="$tmp/softhsm2.conf"
export SOFTHSM2_CONF
token="pkcs11:token=xcheck?pin-value=1234"
if softhsm2-util --init-token --free --label xcheck --so-pin 5678 --pin 1234 > /dev/null &&
    tk_listen=$("$tool" keygen --token "$token" --label tk-listen < /dev/null | cut -d' ' -f2) &&
    tk_connect=$("$tool" keygen --token "$token" --label tk-connect < /dev/null | cut -d' ' -f2) &&
    printf 'client %s\nrefserver %s\n' "$client_pub" "$server_pub" |
        "$tool" ceremony import --token "$token" - > /dev/null; then
    for pat in XK KK; do
        opts="--pattern $pat"
        [ "$pat" = KK ] && opts="$opts --peer client"
        # shellcheck disable=SC2086
        start_listener "$tmp/token-$pat.log" "pkcs11:token=xcheck;object=tk-listen?pin-value=1234" \
            $opts || continue
        out=$(timeout 300 "$py" "$ref" connect "127.0.0.1:$port" --key "$client_priv" \
            --peer "$tk_listen" --pattern "$pat" --count 4 --repeat 30 2>&1)
        [ "$out" = "ok: 30 connections, 4 messages each way in each" ] \
            && echo "$out ($pat, token key, p11noise responder)" \
            || fail "$pat, token listener: $out; $(tail -3 "$tmp/token-$pat.log")"
        "$py" "$ref" listen 127.0.0.1:0 --key "$server_priv" --pattern "$pat" \
            --peer "$tk_connect" --max-conns 3 > "$tmp/ref-token-$pat.log" 2>&1 &
        pids="$pids $!"
        rport=$(wait_for "$tmp/ref-token-$pat.log" 's/^listening on \([0-9]*\)$/\1/p') || {
            fail "$pat: reference listener did not start"
            continue
        }
        head -n 20 "$tmp/in.txt" > "$tmp/in20.txt"
        good=0
        for _ in 1 2 3; do
            timeout 60 "$tool" connect --key "pkcs11:token=xcheck;object=tk-connect?pin-value=1234" \
                --pattern "$pat" --peer refserver "127.0.0.1:$rport" \
                < "$tmp/in20.txt" > "$tmp/out20.txt" 2> "$tmp/connect-token.log" &&
                cmp -s "$tmp/in20.txt" "$tmp/out20.txt" && good=$((good + 1))
        done
        [ "$good" -eq 3 ] && echo "ok: $pat, token key, p11noise initiator: 3 connections echoed" \
            || fail "$pat, token initiator: $good of 3 echoed; $(tail -2 "$tmp/connect-token.log")"
    done
else
    fail "cannot set up the SoftHSM2 token"
fi

[ "$fails" -eq 0 ] || exit 1
