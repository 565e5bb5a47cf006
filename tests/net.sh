#!/bin/sh
# Two p11noise processes over loopback: `listen --echo` and `connect`,
# KK over IPv4 and XK over IPv6, peers from files, and the errors a user
# meets first. Keys are the BOLT #8 test keys (file: keys), so their
# public keys are known here.
set -u
. "$(dirname "$0")/lib.sh"
t_init net

t_bolt8_keys
printf 'one\ntwo words\n\nfour: the last line has no newline' > "$tmp/in.txt"

# A listener that echoes (stdout unused); sets $port and adds the pid.
start_listener() {
    log="$1"; shift
    t_listen "$log" /dev/null --key "file:$tmp/server.key" --peers "$tmp/server.peers" --echo "$@"
}

# connect NAME TARGET [options]: stdin from in.txt, must echo it back.
run_client() {
    name="$1"; target="$2"; shift 2
    if ! "$tool" connect --key "file:$tmp/client.key" --peers "$tmp/client.peers" "$@" \
        "$target" < "$tmp/in.txt" > "$tmp/$name.out" 2> "$tmp/$name.err"; then
        t_fail "$name: connect exited non-zero: $(cat "$tmp/$name.err")"
        return
    fi
    # The echo has every line, the unterminated last one with a newline.
    { cat "$tmp/in.txt"; echo; } | cmp -s - "$tmp/$name.out" \
        || t_fail "$name: echo differs: $(od -c "$tmp/$name.out" | head -5)"
    grep -q "handshake complete (.* initiator), peer server" "$tmp/$name.err" \
        || t_fail "$name: no handshake line in the client log"
    grep -q "sent 4 msgs .* received 4 msgs" "$tmp/$name.err" \
        || t_fail "$name: no close line with the message counts"
}

# KK over IPv4, the responder listing its one accepted peer.
start_listener "$tmp/kk.log" --bind 127.0.0.1:0 --peer client && {
    run_client kk "127.0.0.1:$port" --peer server
    run_client kk-hex "127.0.0.1:$port" --peer "$server_pub"
    grep -q "incoming from 127.0.0.1:" "$tmp/kk.log" || t_fail "kk: no incoming line"
    grep -q "handshake complete (KK responder), peer client" "$tmp/kk.log" \
        || t_fail "kk: server did not log the peer"
}

# XK over IPv6 (any initiator in the peer store), hostname through c-ares
# left to test_net; here the address is literal.
start_listener "$tmp/xk.log" --bind "[::1]:0" --pattern XK && {
    run_client xk "[::1]:$port" --peer server --pattern XK
    grep -q "handshake complete (XK responder), peer client" "$tmp/xk.log" \
        || t_fail "xk: server did not log the peer"
}

# Through a SOCKS5 proxy with username/password, as deployed.
if command -v "${MICROSOCKS:-microsocks}" > /dev/null 2>&1; then
    pport=$(t_free_port)
    t_bg "${MICROSOCKS:-microsocks}" -i 127.0.0.1 -p "$pport" -u net -P sh-pass > /dev/null 2>&1
    sleep 0.3
    start_listener "$tmp/px.log" --bind 127.0.0.1:0 --peer client && {
        run_client px "localhost:$port" --peer server --socks5 "net:sh-pass@127.0.0.1:$pport"
        grep -q "via SOCKS5 proxy 127.0.0.1:$pport" "$tmp/px.err" \
            || t_fail "px: the client did not log the proxy"
        grep -q "sh-pass" "$tmp/px.err" && t_fail "px: the proxy password appears in the log"
    }
else
    echo "microsocks not installed: proxy run skipped"
fi

# A client that writes far faster than it reads: --echo holds it back
# (stops reading while its echoes cannot be queued) and loses nothing;
# it neither drops the connection at the queue's high-water mark nor lets
# the queue grow.
start_listener "$tmp/slow.log" --bind 127.0.0.1:0 --peer client && {
    if "$builddir/tests/slowpeer" "file:$tmp/client.key" "$server_pub" "$port" 16 1000 \
        > "$tmp/slow.out" 2> "$tmp/slow.err"; then
        t_ok "slow reader: $(cat "$tmp/slow.out")"
    else
        t_fail "slow reader lost echoes: $(cat "$tmp/slow.err")"
    fi
    grep -q "echo to .*; closing" "$tmp/slow.log" && t_fail "slow reader: the listener closed on it"
    grep -q "sent 256 msgs .* received 256 msgs" "$tmp/slow.log" \
        || t_fail "slow reader: no close line with 256 messages each way"
}

# Errors: one line, non-zero exit.
expect_error() {
    what="$1"; pattern="$2"; shift 2
    if "$tool" "$@" < /dev/null > /dev/null 2> "$tmp/err"; then
        t_fail "$what: exited 0"
    elif ! grep -q "$pattern" "$tmp/err"; then
        t_fail "$what: expected '$pattern', got: $(cat "$tmp/err")"
    fi
}
expect_error "unknown peer" "peer 'nobody'" connect --key "file:$tmp/client.key" \
    --peers "$tmp/client.peers" --peer nobody "127.0.0.1:1"
expect_error "missing target" "HOST:PORT is required" connect --key "file:$tmp/client.key" \
    --peer server
expect_error "bad pattern" "must be KK or XK" listen --key "file:$tmp/server.key" \
    --bind 127.0.0.1:0 --pattern NN
expect_error "refused" "every address of 127.0.0.1:1 failed" connect \
    --key "file:$tmp/client.key" --peers "$tmp/client.peers" --peer server "127.0.0.1:1"
# The wrong responder key: the KK listener drops the initiator.
start_listener "$tmp/kk2.log" --bind 127.0.0.1:0 --peer client && {
    expect_error "wrong responder key" "closed by peer during the handshake" connect \
        --key "file:$tmp/client.key" --peers "$tmp/client.peers" --peer "$client_pub" \
        "127.0.0.1:$port"
    sleep 0.2
    grep -q "act 1 did not verify under any of the 1 accepted initiator keys" "$tmp/kk2.log" \
        || t_fail "wrong key: the listener did not log why it dropped the initiator"
}

# No private key in any log.
if grep -q -e "$server_priv" -e "$client_priv" "$tmp"/*.log "$tmp"/*.err 2>/dev/null; then
    t_fail "a private key appears in a log"
fi

# Usage on stdout, exit 0.
t_help listen
t_help connect

t_done
