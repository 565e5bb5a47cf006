#!/bin/sh
# p11noise tunnel end to end over loopback: plain peers (tests/tunnelpeer.py)
# on both sides of a `tunnel client` and a `tunnel server`, random bytes
# checked by SHA-256 at both ends.
#
# Sizes: 50 MB each way at once for KK with file: keys directly and for XK
# with SoftHSM2 keys through microsocks; 5 MB each way for the two other
# combinations (KK with SoftHSM2 keys directly, XK with file: keys through
# microsocks), which exercise the same pump.
set -u
. "$(dirname "$0")/lib.sh"
t_init tunnel
peer="$srcdir/tests/tunnelpeer.py"
MB=1000000

server_pub=028d7500dd4c12685d1f568b4c2b5048e8534b873319f3a8daa612b469132ec7f7
client_pub=034f355bdcb7cc0af728ef3cceb9615d90684bb5b2ca5f859ab0f0b704075871aa
umask 077
echo 2121212121212121212121212121212121212121212121212121212121212121 > "$tmp/server.key"
echo 1111111111111111111111111111111111111111111111111111111111111111 > "$tmp/client.key"
printf 'client %s\n' "$client_pub" > "$tmp/server.peers"
printf 'server %s\n' "$server_pub" > "$tmp/client.peers"
SKEY="--key file:$tmp/server.key --peers $tmp/server.peers"
CKEY="--key file:$tmp/client.key --peers $tmp/client.peers"

# wait_port FILE: waits for a "listening on ADDR" line in FILE; $port is
# ADDR's port (empty for a Unix socket).
wait_port() {
    for _ in $(seq 100); do
        if grep -q "listening on" "$1"; then
            port=$(sed -n 's/.*listening on [^ ]*:\([0-9][0-9]*\).*/\1/p' "$1" | head -1)
            return 0
        fi
        sleep 0.1
    done
    t_fail "nothing listening: $(cat "$1")"
    return 1
}

# target NAME ADDR [tunnelpeer options]: a plain service; $tport, report in $tmp/NAME.rep.
target() {
    name="$1"; addr="$2"; shift 2
    : > "$tmp/$name.rep"
    t_bg python3 "$peer" serve "$addr" "$tmp/$name.rep" "$@" > "$tmp/$name.target" \
        2> "$tmp/$name.terr"
    wait_port "$tmp/$name.target"
    tport=$port
}

# tserver NAME TARGET [options]: a tunnel server on a free port, $sport, $spid.
tserver() {
    name="$1"; tgt="$2"; shift 2
    # shellcheck disable=SC2086
    t_bg "$tool" tunnel server $SKEY --listen 127.0.0.1:0 --target "$tgt" "$@" \
        2> "$tmp/$name.slog"
    spid=$t_pid
    wait_port "$tmp/$name.slog"
    sport=$port
}

# tclient NAME SERVERPORT [options]: a tunnel client on a free port, $cport, $cpid.
tclient() {
    name="$1"; srv="$2"; shift 2
    # shellcheck disable=SC2086
    t_bg "$tool" tunnel client $CKEY --peer server --listen 127.0.0.1:0 "$@" \
        "127.0.0.1:$srv" 2> "$tmp/$name.clog"
    cpid=$t_pid
    wait_port "$tmp/$name.clog"
    cport=$port
}

# same WHAT OUT REPORT: the target reported (REPORT, one line per
# connection) the mirror of the plain client's line (OUT): what one sent,
# the other received, both ways. Random bytes make each line unique.
same() {
    line=$(cat "$2")
    mirrored=$(echo "$line" | awk '{ print "sent", $5, $6, "received", $2, $3 }')
    if [ -n "$line" ] && grep -qF "$mirrored" "$3"; then
        t_ok "$1: $(echo "$line" | awk '{ print $3 " bytes out, " $6 " bytes back" }'), SHA-256 equal"
    else
        t_fail "$1: client '$line', target '$(tail -1 "$3")'"
    fi
}

# transfer WHAT BYTES ADDR REPORT [client options]: one connection;
# the target reports once it has read to the end, which may come after the
# client is done.
transfer() {
    what="$1"; n="$2"; p="$3"; rep="$4"; shift 4
    lines=$(wc -l < "$rep")
    python3 "$peer" connect "$p" --send "$n" "$@" > "$tmp/out" 2> "$tmp/err" \
        || t_fail "$what: plain client failed: $(cat "$tmp/err")"
    for _ in $(seq 300); do
        [ "$(wc -l < "$rep")" -gt "$lines" ] && break
        sleep 0.1
    done
    same "$what" "$tmp/out" "$rep"
}

# ---- both directions at once, each key kind and pattern, with and without the proxy

target bulk 127.0.0.1:0 --send $((50 * MB))
tserver kk "127.0.0.1:$tport" --peer client
tclient kk "$sport"
transfer "KK, file: keys, direct, 50 MB each way" $((50 * MB)) "127.0.0.1:$cport" "$tmp/bulk.rep"
grep -q "peer client, connecting to 127.0.0.1:$tport" "$tmp/kk.slog" \
    || t_fail "kk: the server did not log the peer and the target"
kk_spid=$spid

t_token srv && t_token cli || exit 1
for side in srv cli; do
    "$tool" keygen --token "pkcs11:token=$side?pin-value=1234" --label k > "$tmp/$side.pub" \
        || t_fail "keygen on the $side token"
done
printf 'client %s\n' "$(cut -d' ' -f2 "$tmp/cli.pub")" \
    | "$tool" ceremony import --token "pkcs11:token=srv?pin-value=1234" - || t_fail "ceremony srv"
printf 'server %s\n' "$(cut -d' ' -f2 "$tmp/srv.pub")" \
    | "$tool" ceremony import --token "pkcs11:token=cli?pin-value=1234" - || t_fail "ceremony cli"
TSKEY="--key pkcs11:token=srv;object=k?pin-value=1234"
TCKEY="--key pkcs11:token=cli;object=k?pin-value=1234"

target bulk5 127.0.0.1:0 --send $((5 * MB))
bulk5_port=$tport
SKEY=$TSKEY CKEY=$TCKEY tserver tkk "127.0.0.1:$tport"
SKEY=$TSKEY CKEY=$TCKEY tclient tkk "$sport"
transfer "KK, SoftHSM2 keys, direct, 5 MB each way" $((5 * MB)) "127.0.0.1:$cport" "$tmp/bulk5.rep"

if command -v "${MICROSOCKS:-microsocks}" > /dev/null 2>&1; then
    pport=$(t_free_port)
    t_bg "${MICROSOCKS:-microsocks}" -i 127.0.0.1 -p "$pport" -u tun -P sh-pass > /dev/null 2>&1
    sleep 0.3
    proxy="--socks5 tun:sh-pass@127.0.0.1:$pport"
    target bulkx 127.0.0.1:0 --send $((50 * MB))
    SKEY=$TSKEY tserver txk "127.0.0.1:$tport" --pattern XK
    # shellcheck disable=SC2086
    CKEY=$TCKEY tclient txk "$sport" --pattern XK $proxy
    transfer "XK, SoftHSM2 keys, SOCKS5 proxy, 50 MB each way" $((50 * MB)) "127.0.0.1:$cport" \
        "$tmp/bulkx.rep"
    grep -q "via SOCKS5 proxy 127.0.0.1:$pport" "$tmp/txk.clog" \
        || t_fail "txk: the client did not log the proxy"
    grep -q "sh-pass" "$tmp/txk.clog" && t_fail "txk: the proxy password appears in the log"
    tserver fxk "127.0.0.1:$bulk5_port" --pattern XK
    # shellcheck disable=SC2086
    tclient fxk "$sport" --pattern XK $proxy
    transfer "XK, file: keys, SOCKS5 proxy, 5 MB each way" $((5 * MB)) "127.0.0.1:$cport" \
        "$tmp/bulk5.rep"
    # The proxy refuses the client's password: that connection is reset
    # with the reason logged, and the tunnel client goes on.
    tclient badproxy "$sport" --pattern XK --socks5 "tun:wrong@127.0.0.1:$pport"
    python3 "$peer" connect "127.0.0.1:$cport" --send 1000 > "$tmp/badproxy.out" 2>&1
    t_check "proxy refuses: the plain connection is reset" \
        "grep -q 'Connection reset' '$tmp/badproxy.out'"
    t_check "proxy refuses: the reason is logged" \
        "grep -q 'channel failed: .*SOCKS' '$tmp/badproxy.clog'"
    t_check "proxy refuses: the tunnel client still runs" "kill -0 $cpid"
else
    echo "microsocks not installed: proxy runs skipped"
fi

# ---- half-close: the other direction keeps flowing after one side ends

target hc1 127.0.0.1:0 --send $((2 * MB)) --order recv-first
tserver hc1 "127.0.0.1:$tport"
tclient hc1 "$sport"
transfer "client ends first; the target answers after its end" $((3 * MB)) "127.0.0.1:$cport" \
    "$tmp/hc1.rep" --order send-first
target hc2 127.0.0.1:0 --send $((2 * MB)) --order send-first
tserver hc2 "127.0.0.1:$tport"
tclient hc2 "$sport"
transfer "target ends first; the client answers after its end" $((3 * MB)) "127.0.0.1:$cport" \
    "$tmp/hc2.rep" --order recv-first

# ---- many connections at once; one reset among them leaves the others

target echo 127.0.0.1:0 --echo
tserver echo "127.0.0.1:$tport"
tclient echo "$sport"
python3 "$peer" many "127.0.0.1:$cport" 100 --send 200000 > "$tmp/many.out" 2>&1
t_check "100 concurrent tunnelled connections, each echoed whole: $(head -1 "$tmp/many.out")" \
    "grep -q '^100 ok of 100\$' '$tmp/many.out'"
python3 "$peer" many "127.0.0.1:$cport" 8 --send $((4 * MB)) --reset-after 100000 \
    > "$tmp/reset.out" 2>&1
t_check "one of 8 connections reset midway, the 7 others whole: $(head -1 "$tmp/reset.out")" \
    "grep -q '^7 ok of 8\$' '$tmp/reset.out'"
t_check "the reset is logged on the client side" \
    "grep -q -e 'the plain side: Connection reset by peer; closing' \
        -e 'writing to the plain side: Broken pipe; closing' '$tmp/echo.clog'"
t_check "... and ends the target's connection on the server side" \
    "grep -q 'channel ended before its end of stream' '$tmp/echo.slog'"
python3 "$peer" many "127.0.0.1:$cport" 1 --send 100000 > "$tmp/after.out" 2>&1
t_check "a new connection after the reset" "grep -q '^1 ok of 1\$' '$tmp/after.out'"

# Out of file descriptors: 40 idle connections need 80 fds under a limit
# of 48. The client stops accepting for a moment rather than spinning on
# its listening socket (each spin would log a line); connections it cannot
# serve are reset; it serves again once they are gone.
# shellcheck disable=SC2086,SC3045 # dash and bash both have ulimit -n
(ulimit -n 48; exec "$tool" tunnel client $CKEY --peer server --listen 127.0.0.1:0 \
    "127.0.0.1:$sport" 2> "$tmp/fds.clog") &
fds_pid=$!
t_pids="$t_pids $fds_pid"
wait_port "$tmp/fds.clog"
python3 "$peer" hold "127.0.0.1:$port" 40 1.5 > "$tmp/fds.out" 2>&1
errors=$(grep -c "accept: Too many open files" "$tmp/fds.clog")
t_check "out of fds: $errors accept errors, each pausing accepting for 100 ms" \
    "[ $errors -ge 1 ] && [ $errors -lt 40 ] \
     && [ $errors -eq \$(grep -c 'not accepting for 100 ms' '$tmp/fds.clog') ]"
python3 "$peer" many "127.0.0.1:$port" 1 --send 100000 > "$tmp/fds2.out" 2>&1
t_check "out of fds: served again afterwards" "grep -q '^1 ok of 1\$' '$tmp/fds2.out'"

# ---- a target that does not read for 3 s, then reads slowly: the tunnel
# holds the sender back instead of buffering; its memory stays bounded.

rss() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
hwm() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status"; }
target slow 127.0.0.1:0 --pause 3 --slow 0.001
tserver slow "127.0.0.1:$tport"
slow_spid=$spid
tclient slow "$sport"
slow_cpid=$cpid
base_server=$(rss "$slow_spid") base_client=$(rss "$slow_cpid")
transfer "a slow reader gets every byte" $((40 * MB)) "127.0.0.1:$cport" "$tmp/slow.rep"
# 40 MB went through; what either end held at its worst stays far below.
grow=$(( $(hwm "$slow_spid") - base_server ))
t_check "slow reader: the tunnel server's peak memory grew by $grow kB (bound 16000 kB)" \
    "[ $grow -lt 16000 ]"
grow=$(( $(hwm "$slow_cpid") - base_client ))
t_check "slow reader: the tunnel client's peak memory grew by $grow kB (bound 16000 kB)" \
    "[ $grow -lt 16000 ]"

# ---- a target that refuses: that connection ends, the tunnel goes on

dead=$(t_free_port)
tserver refuse "127.0.0.1:$dead"
tclient refuse "$sport"
python3 "$peer" connect "127.0.0.1:$cport" --send 1000 > "$tmp/refused.out" 2>&1
t_check "refused: the plain client gets nothing back" \
    "grep -q -e 'received [0-9a-f]* 0\$' -e 'Connection reset' '$tmp/refused.out'"
t_check "refused: the reason is logged" \
    "grep -q 'target 127.0.0.1:$dead: Connection refused; closing' '$tmp/refuse.slog'"
target late "127.0.0.1:$dead" --send 1000
transfer "refused: the next connection works once the target is up" 1000 "127.0.0.1:$cport" \
    "$tmp/late.rep"

# A target that never answers: that connection gives up after
# --connect-timeout, the plain client sees a reset.
t_bg python3 "$peer" stall > "$tmp/stall.target"
wait_port "$tmp/stall.target"
stall_port=$port
tserver stall "127.0.0.1:$stall_port" --connect-timeout 500
tclient stall "$sport"
python3 "$peer" connect "127.0.0.1:$cport" --send 1000 > "$tmp/stall.out" 2>&1
t_check "a target that never answers: reset after the connect timeout" \
    "grep -q 'Connection reset' '$tmp/stall.out' \
     && grep -q 'target 127.0.0.1:$stall_port: no answer in 500 ms; closing' '$tmp/stall.slog'"

# A handshake that fails (the client names the wrong server key): that
# connection is reset; the server goes on serving the right client.
target small 127.0.0.1:0 --send 1000
tserver hs "127.0.0.1:$tport" --peer client
tclient wrongkey "$sport" --peer "$client_pub"
python3 "$peer" connect "127.0.0.1:$cport" --send 1000 > "$tmp/wrong.out" 2>&1
t_check "wrong server key: the plain connection is reset" \
    "grep -q 'Connection reset' '$tmp/wrong.out'"
t_check "wrong server key: the reason is logged" \
    "grep -q 'channel failed' '$tmp/wrongkey.clog'"
# A peer that sends bytes after its end of stream (here `connect`, whose
# empty line is a zero-length message) breaks the protocol: that
# connection ends, the server goes on.
# shellcheck disable=SC2086
# --linger: the client stays until the server answers (it closes the
# channel) even when a loaded machine makes the server slow to read.
printf 'hello\n\nafter the end\n' | timeout 20 "$tool" connect $CKEY --peer server \
    --linger 8000 "127.0.0.1:$sport" > /dev/null 2>&1
# The client may exit before the server has read the stray bytes: wait
# (at most 10 s) for the server's line rather than look once.
i=0
while [ $i -lt 100 ] && ! grep -q 'the peer sent bytes after its end of stream; closing' \
    "$tmp/hs.slog"; do
    sleep 0.1
    i=$((i + 1))
done
t_check "bytes after the end of stream end that connection" \
    "grep -q 'the peer sent bytes after its end of stream; closing' '$tmp/hs.slog'"
tclient rightkey "$sport"
transfer "after the failed handshake, the server serves the right client" 1000 "127.0.0.1:$cport" \
    "$tmp/small.rep"

# ---- Unix sockets on both sides

target ux "unix:$tmp/target.sock" --send $MB
tserver ux "unix:$tmp/target.sock"
# shellcheck disable=SC2086
t_bg "$tool" tunnel client $CKEY --peer server --listen "unix:$tmp/c.sock" "127.0.0.1:$sport" \
    2> "$tmp/ux.clog"
wait_port "$tmp/ux.clog"
t_check "Unix listening socket has mode 600" "[ \"\$(stat -c %a '$tmp/c.sock')\" = 600 ]"
transfer "Unix socket client side and Unix socket target" $MB "unix:$tmp/c.sock" "$tmp/ux.rep"
# shellcheck disable=SC2086
t_bg "$tool" tunnel client $CKEY --peer server --listen "unix:$tmp/g.sock" --mode 0660 \
    "127.0.0.1:$sport" 2> "$tmp/ux2.clog"
wait_port "$tmp/ux2.clog"
t_check "--mode 0660" "[ \"\$(stat -c %a '$tmp/g.sock')\" = 660 ]"
echo precious > "$tmp/file"
# shellcheck disable=SC2086
"$tool" tunnel client $CKEY --peer server --listen "unix:$tmp/file" "127.0.0.1:$sport" \
    2> "$tmp/file.err" < /dev/null && t_fail "a non-socket file at the path: exited 0"
t_check "a non-socket file at the path is refused and kept" \
    "grep -q 'exists and is not a socket' '$tmp/file.err' && grep -q precious '$tmp/file'"
# shellcheck disable=SC2086
"$tool" tunnel client $CKEY --peer server --listen "unix:$tmp/c.sock" "127.0.0.1:$sport" \
    2> "$tmp/inuse.err" < /dev/null && t_fail "a live socket at the path: exited 0"
t_check "a socket in use is refused" "grep -q 'in use' '$tmp/inuse.err'"

# ---- PROXY protocol v2: the target learns who the peer is

target pp 127.0.0.1:0 --proxy --send 1000
tserver pp "127.0.0.1:$tport" --proxy-protocol
tclient pp "$sport"
transfer "PROXY protocol v2 header, then the bytes" 1000 "127.0.0.1:$cport" "$tmp/pp.rep"
t_check "PROXY protocol v2: TLV 0xE0 names the peer" "grep -q ' peer client\$' '$tmp/pp.rep'"

# ---- SIGTERM stops a tunnel with status 0

kill -TERM "$kk_spid"
wait "$kk_spid"
t_check "SIGTERM: exit status 0" "[ $? -eq 0 ]"

# ---- usage and errors: one line, non-zero exit

t_help tunnel server
t_help tunnel client
expect_error() {
    what="$1"; pattern="$2"; shift 2
    if "$tool" tunnel "$@" < /dev/null > /dev/null 2> "$tmp/err"; then
        t_fail "$what: exited 0"
    elif ! grep -q -e "$pattern" "$tmp/err"; then
        t_fail "$what: expected '$pattern', got: $(cat "$tmp/err")"
    else
        t_ok "$what"
    fi
}
expect_error "no target" "--target is required" server --key "file:$tmp/server.key" \
    --listen 127.0.0.1:0
expect_error "no remote" "HOST:PORT is required" client --key "file:$tmp/client.key" \
    --peer server --listen 127.0.0.1:0
expect_error "Unix remote" "the tunnel server wants HOST:PORT" client \
    --key "file:$tmp/client.key" --peer server --listen 127.0.0.1:0 unix:/x
expect_error "bad mode" "--mode wants an octal mode" client --key "file:$tmp/client.key" \
    --peer server --listen unix:/tmp/x --mode 0999 127.0.0.1:1
expect_error "bad connect timeout" "--connect-timeout wants milliseconds" server \
    --key "file:$tmp/server.key" --listen 127.0.0.1:0 --target 127.0.0.1:1 --connect-timeout 0
expect_error "bad pattern" "must be KK or XK" server --key "file:$tmp/server.key" \
    --listen 127.0.0.1:0 --target 127.0.0.1:1 --pattern NN
expect_error "neither server nor client" "say 'tunnel server' or 'tunnel client'" sideways

# A rejected argument is never repeated when it could hold a secret.
for args in "--kye=pkcs11:token=t?pin-value=80417" \
    "--key=file:k --listen=x?pin-value=80417 --target=127.0.0.1:1" \
    "--key=file:k --listen=127.0.0.1:0 --target=127.0.0.1:1 pin-value=80417"; do
    # shellcheck disable=SC2086
    "$tool" tunnel server $args > /dev/null 2> "$tmp/ne.err"
    t_check "tunnel server: the rejected argument is not repeated ($(head -1 "$tmp/ne.err"))" \
        '! grep -q 80417 "$tmp/ne.err" && [ -s "$tmp/ne.err" ]'
done

t_done
