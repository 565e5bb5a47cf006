#!/bin/sh
# --config FILE (doc/p11noise.conf.5): options and the library's limits in
# "key = value" lines; the command line wins; an unknown key or a bad
# value is an error naming the line.
set -u
. "$(dirname "$0")/lib.sh"
t_init config
t_bolt8_keys
skey="file:$tmp/server.key"
ckey="file:$tmp/client.key"

cat > "$tmp/listen.conf" <<EOC
# the listener of this test
key = $skey
peers = $tmp/server.peers
bind = 127.0.0.1:0
echo = yes
pattern = XK
log_format = json
idle_timeout_ms = 400
max_handshakes = 8
EOC
# The command line's --pattern KK wins over the file's XK.
t_listen "$tmp/l.log" "$tmp/l.out" --config "$tmp/listen.conf" --pattern KK && {
    lpid=$t_pid
    t_check "options from the file: an echo listener (KK from the command line)" \
        '[ "$(echo hi | timeout 30 "$tool" connect --key "$ckey" --peers "$tmp/client.peers" \
            --peer server "127.0.0.1:$port" 2> "$tmp/c.err")" = hi ]'
    t_check "log_format = json from the file" \
        'python3 -c "import json,sys; [json.loads(l) for l in open(sys.argv[1])]" "$tmp/l.log"'
    mkfifo "$tmp/in"
    "$tool" connect --key "$ckey" --peers "$tmp/client.peers" --peer server \
        "127.0.0.1:$port" < "$tmp/in" > /dev/null 2> "$tmp/idle.err" &
    cpid=$!
    sleep 5 > "$tmp/in" &
    t_pids="$t_pids $cpid $!"
    t_check "idle_timeout_ms = 400 from the file closes an idle connection" \
        'for _ in $(seq 50); do grep -q "idle for 400 ms" "$tmp/l.log" && break; sleep 0.1; done;
         grep -q "idle for 400 ms" "$tmp/l.log"'
    kill "$lpid"
}

# SIGHUP reads the file again: a new peers file is taken (the peer it
# leaves out is revoked), a bad file changes nothing, an option that
# needs a restart is named.
printf 'someone %s\n' 02466d7fcae563e5cb09a0d1870bb580344804617879a14949cf22285f1bae3f27 \
    > "$tmp/none.peers"
cat > "$tmp/re.conf" <<EOC
key = $skey
peers = $tmp/server.peers
bind = 127.0.0.1:0
echo = yes
EOC
t_listen "$tmp/re.log" /dev/null --config "$tmp/re.conf" && {
    rpid=$t_pid
    echo_ok() {
        [ "$(echo hi | timeout 30 "$tool" connect --key "$ckey" --peers "$tmp/client.peers" \
            --peer server "127.0.0.1:$port" 2> /dev/null)" = hi ]
    }
    t_check "reload: the client gets in first" echo_ok
    printf 'key = %s\npeers = %s\nbind = 127.0.0.1:0\necho = yes\nbogus = 1\n' "$skey" \
        "$tmp/none.peers" > "$tmp/re.conf"
    kill -HUP "$rpid"
    sleep 1
    t_check "reload: a bad file is named with its line and changes nothing" \
        'grep -q "line 5: unknown key .bogus." "$tmp/re.log" &&
         grep -q "configuration file is not applied" "$tmp/re.log" && echo_ok'
    printf 'key = %s\npeers = %s\nbind = 127.0.0.1:1\necho = yes\n' "$skey" \
        "$tmp/none.peers" > "$tmp/re.conf"
    kill -HUP "$rpid"
    sleep 1
    t_check "reload: the file's new peers file is taken, the client is out" \
        'grep -q "reloaded peers file .*none.peers.*1 added, 1 removed" "$tmp/re.log" && ! echo_ok'
    t_check "reload: a changed bind waits for a restart, said so" \
        'grep -q "bind changed in the configuration file: takes effect at the next start" "$tmp/re.log"'
    kill "$rpid"
}

# bad NAME WHAT LINE-TEXT...: a file with one good line, then the lines
# given; `listen --config` exits 2 naming line 2 and WHAT.
bad() {
    name="$1"; what="$2"; shift 2
    { echo "key = $skey"; printf '%s\n' "$@"; } > "$tmp/$name.conf"
    t_exit "$name" 2 listen --config "$tmp/$name.conf" --bind 127.0.0.1:0
    cf_what="$what"
    t_check "$name: names line 2 and says '$what'" \
        'grep -q "line 2: " "$tmp/exit.err" && grep -qF "$cf_what" "$tmp/exit.err"'
}
bad unknown-key "unknown key 'bnid' for listen" "bnid = 127.0.0.1:0"
bad other-command-key "unknown key 'socks5' for listen" "socks5 = 127.0.0.1:1080"
bad bad-number "max_handshakes wants a whole number from 1 to" "max_handshakes = lots"
bad zero "workers wants a whole number from 1 to 64" "workers = 0"
bad bad-flag "echo wants yes or no" "echo = maybe"
bad no-equals '"key = value" expected' "bind 127.0.0.1:0"
bad log-level "log_level must be error, warn, info or debug" "log_level = loud"
bad empty-value "bind needs a value" "bind ="
bad keepalive-negative "keepalive_idle_s wants a whole number from 1 to 32767, or off" \
    "keepalive_idle_s = -1"
bad keepalive-count "keepalive_count wants a whole number from 1 to 127" "keepalive_count = 128"
bad max-established "max_established wants a whole number from 1 to" "max_established = 0"
bad log-refusals "log_refusals_per_s wants a whole number" "log_refusals_per_s = 2.5"
t_exit "a missing config file" 2 listen --config "$tmp/nosuch.conf"

# Every limit of hostile load as a key, and each also as an option that
# wins over the file: --act1-timeout 700 over act1_timeout_ms = 1500.
cat > "$tmp/limits.conf" <<EOC
key = $skey
peers = $tmp/server.peers
bind = 127.0.0.1:0
act1_timeout_ms = 1500
max_established = 3
max_unauth_token_ops = 64
unauth_workers = 1
workers = 2
max_token_ops = 32
keepalive_idle_s = off
keepalive_interval_s = 5
keepalive_count = 3
log_refusals_per_s = 2
EOC
t_listen "$tmp/lim.log" /dev/null --config "$tmp/limits.conf" --act1-timeout 700 \
    --idle-timeout=900 && {
    lpid=$t_pid
    # A socket that sends nothing meets the first act's deadline.
    python3 -c 'import socket,sys; s=socket.create_connection(("127.0.0.1", int(sys.argv[1])));
s.settimeout(20); s.recv(1)' "$port"
    t_check "--act1-timeout on the command line wins over the file" \
        'grep -q "handshake act not received within 700 ms (0 of 50 bytes); first act" \
            "$tmp/lim.log"'
    kill "$lpid"
}
t_exit "a bad limit option" 2 listen --key "$skey" --bind 127.0.0.1:0 --max-established 0
t_check "... named, value not repeated" \
    'grep -q "listen: --max-established wants a whole number from 1 to 10000000" "$tmp/exit.err"'
t_exit "a limit option without its value" 2 connect --key "$ckey" --peer x --keepalive-idle
t_check "... named" 'grep -q "connect: --keepalive-idle needs a value" "$tmp/exit.err"'
t_exit "keepalive off on the command line" 2 listen --keepalive-idle off --bind 127.0.0.1:0
t_check "... is accepted (the missing --key is what fails)" \
    'grep -q "key URI is required" "$tmp/exit.err"'

# The tunnel: its own keys per side.
cat > "$tmp/ts.conf" <<EOC
key = $skey
peers = $tmp/server.peers
listen = 127.0.0.1:0
target = 127.0.0.1:1
connect_timeout = 500
EOC
t_bg "$tool" tunnel server --config="$tmp/ts.conf" 2> "$tmp/ts.log"
tpid=$t_pid
for _ in $(seq 100); do grep -q "listening on" "$tmp/ts.log" && break; sleep 0.1; done
t_check "tunnel server from a config file" 'grep -q "listening on" "$tmp/ts.log"'
sed -i "s|^peers = .*|peers = $tmp/none.peers|" "$tmp/ts.conf"
kill -HUP "$tpid"
sleep 1
t_check "tunnel server: SIGHUP takes the file's new peers file" \
    'grep -q "tunnel server: reloaded peers file .*none.peers.*1 added, 1 removed" "$tmp/ts.log"'
kill "$tpid"
sed -i "s|^peers = .*|peers = $tmp/server.peers|" "$tmp/ts.conf"
echo "socks5 = 127.0.0.1:1080" >> "$tmp/ts.conf"
t_exit "tunnel server: a client-only key" 2 tunnel server --config "$tmp/ts.conf"
t_check "... named" 'grep -q "line 6: unknown key .socks5. for tunnel server" "$tmp/exit.err"'

t_done
