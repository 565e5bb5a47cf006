#!/bin/sh
# `listen` and `tunnel server` as services, with real processes: SIGHUP
# reloads the peers (a removed peer's connection closes with "peer key
# revoked" and it cannot come back, while another peer keeps working; a
# bad file keeps the old set and says why), SIGTERM stops within the bound
# and exits 0, and systemd hears READY=1, RELOADING=1, STOPPING=1 through
# its notify socket (a Unix datagram socket of the test's own).
set -u
. "$(dirname "$0")/lib.sh"
t_init service
t_bolt8_keys
umask 077
echo 3333333333333333333333333333333333333333333333333333333333333333 > "$tmp/client2.key"
client2_pub=$("$tool" pubkey --key "file:$tmp/client2.key")
printf 'client %s\nclient2 %s\n' "$client_pub" "$client2_pub" > "$tmp/two.peers"
skey="file:$tmp/server.key"

# hold NAME KEY: a `connect` that stays connected (its input, a fifo, is
# held open for 60 s) in the background; $hpid is its pid, its stderr
# $tmp/NAME.err.
hold() {
    mkfifo "$tmp/$1.in"
    # Both open the fifo in the background: each open waits for the other.
    "$tool" connect --key "file:$tmp/$2" --peers "$tmp/client.peers" \
        --peer server "127.0.0.1:$port" < "$tmp/$1.in" > /dev/null 2> "$tmp/$1.err" &
    hpid=$!
    sleep 60 > "$tmp/$1.in" &
    t_pids="$t_pids $hpid $!"
}

# echo_ok KEY: one line through the echo listener and back.
echo_ok() {
    [ "$(echo ping | timeout 30 "$tool" connect --key "file:$tmp/$1" \
        --peers "$tmp/client.peers" --peer server "127.0.0.1:$port" 2> "$tmp/echo.err")" = ping ]
}

# wait_for FILE PATTERN: at most 10 s.
wait_for() {
    for _ in $(seq 100); do
        grep -q "$2" "$1" 2> /dev/null && return 0
        sleep 0.1
    done
    return 1
}

# wait_gone PID SECONDS: whether PID exits within SECONDS.
wait_gone() {
    for _ in $(seq $(($2 * 10))); do
        kill -0 "$1" 2> /dev/null || return 0
        sleep 0.1
    done
    return 1
}

# systemd's notify messages only when built with libsystemd.
if ldd "$builddir/tools/.libs/p11noise" 2> /dev/null | grep -q libsystemd; then
    notifies=1
else
    notifies=0
    echo "built without libsystemd: the notify messages are not checked"
fi
# t_notify WHAT CONDITION: t_check when the command notifies.
t_notify() { [ "$notifies" -eq 1 ] && t_check "$@"; }

# ---- listen --peers FILE: reload, revoke, bad file, stop ----
cp "$tmp/two.peers" "$tmp/live.peers"
notify="$tmp/notify.sock"
t_bg python3 "$srcdir/tests/notifysock.py" "$notify" "$tmp/notify.log" 60
wait_for "$tmp/notify.log" bound || t_fail "the notify socket did not start"
NOTIFY_SOCKET="$notify" t_listen "$tmp/l.log" "$tmp/l.out" --key "$skey" \
    --peers "$tmp/live.peers" --bind 127.0.0.1:0 --echo --control "$tmp/ctl.sock" || t_done
lpid=$t_pid
t_notify "READY=1 once listening" 'wait_for "$tmp/notify.log" "^READY=1"'
t_check "both peers get in" 'echo_ok client.key && echo_ok client2.key'
hold one client.key
one=$hpid
hold two client2.key
two=$hpid
t_check "both held connections are up" \
    'sleep 0.5 &&
     [ "$(grep -c "handshake complete" "$tmp/l.log")" -ge 4 ]'

# ---- status through the control socket ----
t_check "the control socket is the owner's alone (0600)" \
    '[ "$(stat -c %a "$tmp/ctl.sock")" = 600 ]'
"$tool" status --control "$tmp/ctl.sock" > "$tmp/st.txt" 2> "$tmp/st.err"
t_check "status: one line per held connection, each peer by its identifier" \
    '[ "$(wc -l < "$tmp/st.txt")" -eq 2 ] && grep -q " peer=client remote=127.0.0.1:[0-9]* direction=in state=established " "$tmp/st.txt" &&
     grep -q " peer=client2 remote=127.0.0.1:[0-9]* direction=in state=established " "$tmp/st.txt"'
echo ping | timeout 30 "$tool" connect --key "file:$tmp/client.key" --peers "$tmp/client.peers" \
    --peer server "127.0.0.1:$port" > /dev/null 2>&1
"$tool" status --control "$tmp/ctl.sock" --json > "$tmp/st.json" 2> "$tmp/st.err"
t_check "status --json: JSON lines with both identifiers, direction and counters" \
    'python3 - "$tmp/st.json" <<"PY"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
peers = sorted(r["peer_id"] for r in rows)
assert peers == ["client", "client2"], peers
for r in rows:
    assert r["direction"] == "in" and r["state"] == "established", r
    assert r["remote"].startswith("127.0.0.1:") and r["since_ms"] >= 0, r
    assert r["msgs_in"] == 0 and r["bytes_out"] == 0, r  # held: nothing sent
PY'
t_exit "status without --control: usage" 2 status
echo keep > "$tmp/plain"
t_exit "--control on a regular file: refused" 2 listen --key "$skey" --peers "$tmp/two.peers" \
    --bind 127.0.0.1:0 --control "$tmp/plain"
t_check "... naming why, the file intact" \
    'grep -q "exists and is not a socket" "$tmp/exit.err" && [ "$(cat "$tmp/plain")" = keep ]'
t_exit "--control on a running service's socket: refused" 2 listen --key "$skey" \
    --peers "$tmp/two.peers" --bind 127.0.0.1:0 --control "$tmp/ctl.sock"
t_check "... and that service still answers" \
    '"$tool" status --control "$tmp/ctl.sock" | grep -q "peer=client2"'
t_exit "status on a path nothing serves: network status" 5 status --control "$tmp/none.sock"

printf 'client2 %s\n' "$client2_pub" > "$tmp/live.peers"
kill -HUP "$lpid"
t_check "SIGHUP: the reload is logged with what changed" \
    'wait_for "$tmp/l.log" "reloaded peers file .*: 1 peers (0 added, 1 removed, 0 changed key)"'
t_check "the removed peer's connection closes with 'peer key revoked'" \
    'wait_for "$tmp/l.log" "peer key revoked"'
t_check "... and its connect ends" 'wait_gone "$one" 10'
t_check "the other peer's connection stays" 'kill -0 "$two"'
t_exit "the removed peer cannot reconnect" 4 connect --key "file:$tmp/client.key" \
    --peers "$tmp/client.peers" --peer server "127.0.0.1:$port"
t_check "the other peer still gets in" 'echo_ok client2.key'
t_notify "RELOADING=1 with MONOTONIC_USEC, then READY=1" \
    'wait_for "$tmp/notify.log" "^RELOADING=1|MONOTONIC_USEC=[0-9]*" &&
     [ "$(grep -c "^READY=1" "$tmp/notify.log")" -ge 2 ]'

# A bad file: the old set stays, the error names the line and the fault.
printf 'client2 %s\nclient %s\n' "$client2_pub" "04${client_pub#0?}${client_pub#0?}" \
    > "$tmp/live.peers"
kill -HUP "$lpid"
t_check "a bad file: the reload fails, naming the line and what is wrong" \
    'wait_for "$tmp/l.log" "reload failed, keeping the peers in use: peers file .*: line 2: .*: uncompressed key"'
t_check "... the old set is kept: client2 gets in" 'echo_ok client2.key'
t_exit "... and client still does not" 4 connect --key "file:$tmp/client.key" \
    --peers "$tmp/client.peers" --peer server "127.0.0.1:$port"
t_check "... the held connection of client2 stays" 'kill -0 "$two"'

# Back with the good file: client is admitted again.
cp "$tmp/two.peers" "$tmp/live.peers"
kill -HUP "$lpid"
t_check "a peer added back is admitted after the next reload" \
    'wait_for "$tmp/l.log" "2 peers (1 added, 0 removed, 0 changed key)" && echo_ok client.key'

kill -TERM "$lpid"
if wait_gone "$lpid" 15; then
    wait "$lpid"
    rc=$?
    t_check "SIGTERM: exit 0 (got $rc)" '[ "$rc" -eq 0 ]'
else
    t_fail "SIGTERM: still running after 15 s"
fi
t_check "SIGTERM: one line says the held connection was closed gracefully" \
    '[ "$(grep -c "listen: stopped: 1 connection closed gracefully" "$tmp/l.log")" -eq 1 ]'
t_check "... and the peer saw the end of the stream, not a reset" \
    'wait_gone "$two" 10 && grep -q "connect: closed by peer" "$tmp/two.err"'
t_notify "STOPPING=1 after the reloads" 'wait_for "$tmp/notify.log" "^STOPPING=1"'
t_notify "STATUS= counts the connections" 'grep -q "STATUS=1 connection" "$tmp/notify.log"'

# ---- log forms: the journal's, JSON ----
: > "$tmp/j.log"
JOURNAL_STREAM=$(stat -c %d:%i "$tmp/j.log") t_listen "$tmp/j.log" /dev/null --key "$skey" \
    --peers "$tmp/two.peers" --bind 127.0.0.1:0 && {
    kill "$t_pid"
    t_check "JOURNAL_STREAM is stderr: '<N>' prefix, no time stamp" \
        'grep -q "^<6>listening on" "$tmp/j.log" && ! grep -q "^<[0-9]>20[0-9][0-9]-" "$tmp/j.log"'
}
JOURNAL_STREAM=1:1 t_listen "$tmp/nj.log" /dev/null --key "$skey" \
    --peers "$tmp/two.peers" --bind 127.0.0.1:0 && {
    kill "$t_pid"
    t_check "JOURNAL_STREAM of another stream: time-stamped text" \
        'grep -q "^20[0-9-]*T[0-9:.]*Z p11noise info: listening on" "$tmp/nj.log"'
}
t_listen "$tmp/js.log" /dev/null --key "$skey" --peers "$tmp/two.peers" --bind 127.0.0.1:0 \
    --echo --log-format json && {
    echo_ok client.key
    kill -TERM "$t_pid"
    wait_gone "$t_pid" 15
    t_check "--log-format json: every line an object with ts, level and text; events and conn named" \
        'python3 -c "
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert rows and all({\"ts\", \"level\", \"text\"} <= r.keys() for r in rows)
assert any(r.get(\"event\") == \"stop\" for r in rows)
assert any(r.get(\"event\") == \"established\" and r.get(\"conn\", 0) > 0 for r in rows)
assert any(r.get(\"event\") == \"listening\" for r in rows)
" "$tmp/js.log"'
}
t_exit "--log-format of no such form" 2 listen --key "$skey" --bind 127.0.0.1:0 \
    --log-format xml

# ---- a pkcs11: key without --peers: the token's ceremony is reloaded ----
t_token svc || t_done
tok="pkcs11:token=svc?pin-value=1234"
spub=$("$tool" keygen --token "$tok" --label srv | cut -d" " -f2)
printf 'client %s\nclient2 %s\n' "$client_pub" "$client2_pub" | "$tool" ceremony import \
    --token "$tok" - || t_fail "ceremony import"
printf 'server %s\n' "$spub" > "$tmp/client.peers"
t_listen "$tmp/t.log" "$tmp/t.out" --key "pkcs11:token=svc;object=srv?pin-value=1234" \
    --bind 127.0.0.1:0 --echo || t_done
lpid=$t_pid
hold tone client.key
tone=$hpid
t_check "token: client gets in" 'echo_ok client.key && wait_for "$tmp/t.log" "handshake complete"'
"$tool" ceremony remove --token "$tok" client || t_fail "ceremony remove"
kill -HUP "$lpid"
t_check "token: SIGHUP reloads the ceremony" \
    'wait_for "$tmp/t.log" "reloaded the ceremony of the key.s token: 1 peers"'
t_check "token: the removed peer's connection is revoked" \
    'wait_for "$tmp/t.log" "peer key revoked" && wait_gone "$tone" 10'
t_exit "token: the removed peer cannot reconnect" 4 connect --key "file:$tmp/client.key" \
    --peers "$tmp/client.peers" --peer server "127.0.0.1:$port"
t_check "token: the other peer gets in" 'echo_ok client2.key'
kill -TERM "$lpid"
t_check "token: SIGTERM exits" 'wait_gone "$lpid" 15'

# ---- tunnel server: reload and stop ----
printf 'server %s\n' "$server_pub" > "$tmp/client.peers"
cp "$tmp/two.peers" "$tmp/tun.peers"
t_bg "$tool" tunnel server --key "$skey" --peers "$tmp/tun.peers" --listen 127.0.0.1:0 \
    --target 127.0.0.1:1 --control "$tmp/tctl.sock" 2> "$tmp/ts.log"
tpid=$t_pid
wait_for "$tmp/ts.log" "listening on" || t_fail "tunnel server did not start: $(cat "$tmp/ts.log")"
t_check "tunnel server --control: status answers (no connection: no line)" \
    '"$tool" status --control "$tmp/tctl.sock" > "$tmp/tst.txt" && [ ! -s "$tmp/tst.txt" ]'
printf 'client2 %s\n' "$client2_pub" > "$tmp/tun.peers"
kill -HUP "$tpid"
t_check "tunnel server: SIGHUP reloads the peers file" \
    'wait_for "$tmp/ts.log" "tunnel server: reloaded peers file .*: 1 peers (0 added, 1 removed"'
kill -TERM "$tpid"
if wait_gone "$tpid" 15; then
    wait "$tpid"
    rc=$?
    t_check "tunnel server: SIGTERM exits 0 (got $rc)" '[ "$rc" -eq 0 ]'
else
    t_fail "tunnel server: still running 15 s after SIGTERM"
fi
t_check "tunnel server: one stop line" \
    '[ "$(grep -c "tunnel server: stopped: 0 connections closed gracefully" "$tmp/ts.log")" -eq 1 ]'
t_check "tunnel server: its control socket is removed" '[ ! -e "$tmp/tctl.sock" ]'

# The tunnel client stops the same way and removes its Unix socket.
t_bg "$tool" tunnel client --key "file:$tmp/client.key" --peers "$tmp/client.peers" \
    --peer server --listen "unix:$tmp/tc.sock" 127.0.0.1:1 2> "$tmp/tc.log"
tpid=$t_pid
wait_for "$tmp/tc.log" "listening on" || t_fail "tunnel client did not start: $(cat "$tmp/tc.log")"
kill -TERM "$tpid"
if wait_gone "$tpid" 15; then
    wait "$tpid"
    rc=$?
    t_check "tunnel client: SIGTERM exits 0 (got $rc), its socket removed" \
        '[ "$rc" -eq 0 ] && [ ! -e "$tmp/tc.sock" ] && grep -q "tunnel client: stopped" "$tmp/tc.log"'
else
    t_fail "tunnel client: still running 15 s after SIGTERM"
fi

t_done
