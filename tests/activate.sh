#!/bin/sh
# Socket activation: `listen` and `tunnel server` take the listening
# socket passed as descriptor 3 (LISTEN_FDS=1, LISTEN_PID = their pid)
# instead of binding --bind/--listen; the variables meant for another
# process are ignored; a descriptor that is not a listening socket is
# refused with a clear line. Passed by tests/activate.py, and by
# systemd-socket-activate when it is installed.
set -u
. "$(dirname "$0")/lib.sh"
t_init activate
t_bolt8_keys
skey="file:$tmp/server.key"
wrap="$srcdir/tests/activate.py"

# wait_log FILE: waits for "listening on" in FILE; $port is its port.
wait_log() {
    for _ in $(seq 100); do
        port=$(sed -n 's/.*listening on [^ ]*:\([0-9][0-9]*\) .*/\1/p' "$1" | head -1)
        [ -n "$port" ] && return 0
        sleep 0.1
    done
    t_fail "nothing listening: $(cat "$1")"
    return 1
}

# echo_ok PORT: one line through the echo listener and back.
echo_ok() {
    [ "$(echo ping | timeout 30 "$tool" connect --key "file:$tmp/client.key" \
        --peers "$tmp/client.peers" --peer server "127.0.0.1:$1" 2> "$tmp/echo.err")" = ping ]
}

# --bind names port 1, which an unprivileged process cannot bind: the
# listener works only if it used the passed socket.
t_bg python3 "$wrap" "$tmp/l.port" "$tool" listen --key "$skey" --peers "$tmp/server.peers" \
    --bind 127.0.0.1:1 --echo 2> "$tmp/l.log" > /dev/null
wait_log "$tmp/l.log" || t_done
t_check "listen uses the passed socket (its port, not --bind's)" \
    '[ "$port" = "$(cat "$tmp/l.port")" ]'
t_check "a message goes through the passed socket and back" 'echo_ok "$port"'

# Variables naming another process (a parent's) are not ours: bind.
LISTEN_FDS=1 LISTEN_PID=1 t_bg "$tool" listen --key "$skey" --peers "$tmp/server.peers" \
    --bind 127.0.0.1:0 --echo 2> "$tmp/o.log" > /dev/null
wait_log "$tmp/o.log" || t_done
t_check "LISTEN_PID of another process: --bind is used" 'echo_ok "$port"'

# A bound socket that does not listen: refused, nothing half-started.
st=0
timeout 30 python3 "$wrap" --not-listening "$tmp/n.port" "$tool" listen --key "$skey" \
    --peers "$tmp/server.peers" --bind 127.0.0.1:0 > /dev/null 2> "$tmp/n.log" || st=$?
t_check "a passed socket that does not listen: usage status 2" '[ "$st" -eq 2 ]'
t_check "... and a line saying why" \
    'grep -q "socket activation.*not a listening stream socket\|passed by socket activation" "$tmp/n.log"'

# tunnel server: the same, to a plain target (itself an echo listener
# would need a Noise client; the log line is what is checked here).
t_bg python3 "$wrap" "$tmp/t.port" "$tool" tunnel server --key "$skey" \
    --peers "$tmp/server.peers" --listen 127.0.0.1:1 --target 127.0.0.1:9 2> "$tmp/t.log"
wait_log "$tmp/t.log" || t_done
t_check "tunnel server uses the passed socket" '[ "$port" = "$(cat "$tmp/t.port")" ]'

if command -v systemd-socket-activate > /dev/null; then
    p=$(t_free_port)
    t_bg systemd-socket-activate -l "127.0.0.1:$p" "$tool" listen --key "$skey" \
        --peers "$tmp/server.peers" --bind 127.0.0.1:1 --echo 2> "$tmp/s.log" > /dev/null
    # It accepts nothing itself: the listener logs once the first client
    # makes systemd-socket-activate start it.
    sleep 0.5
    t_check "systemd-socket-activate: a message goes through" 'echo_ok "$p"'
    t_check "... on the passed socket" 'grep -q "listening on 127.0.0.1:$p " "$tmp/s.log"'
else
    echo "systemd-socket-activate not installed: checked with tests/activate.py only"
fi
t_done
