#!/bin/sh
# What an operator reads, from the command line with real processes:
# `status` shows each connection's key rotations, the time of the last
# one and the handshake hash; `--log-format json` names peer, addr and
# reason on connection events; a KK listener that cannot verify an act 1
# says what that may be, not that the key is unknown; token errors show
# the URI decoded, without its PIN, control bytes escaped; SIGHUP moves
# the control socket when the configuration file names another path.
set -u
. "$(dirname "$0")/lib.sh"
t_init diag
t_bolt8_keys
echo 3333333333333333333333333333333333333333333333333333333333333333 > "$tmp/stranger.key"
skey="file:$tmp/server.key"

# ---- status: rotations and the handshake hash of a held connection ----
t_listen "$tmp/l.log" /dev/null --key "$skey" --peers "$tmp/server.peers" --bind 127.0.0.1:0 \
    --echo --control "$tmp/ctl.sock" --log-format json || t_done
lpid=$t_pid
mkfifo "$tmp/in"
"$tool" connect --key "file:$tmp/client.key" --peers "$tmp/client.peers" --peer server \
    "127.0.0.1:$port" < "$tmp/in" > "$tmp/echo.out" 2> "$tmp/c.err" &
cpid=$!
# 600 messages each way: 1200 nonces, past the rotation at 1000; then the
# input stays open until the writer is killed.
(seq 600; sleep 60) > "$tmp/in" &
wpid=$!
t_pids="$t_pids $cpid $wpid"
t_check "600 lines echoed" 't_wait_lines "$tmp/echo.out" 600'
"$tool" status --control "$tmp/ctl.sock" > "$tmp/st.txt" 2> "$tmp/st.err"
t_check "status: one rotation each way, its time, and a 32-byte handshake hash" \
    'grep -Eq " msgs_in=600 .* rotations_in=1 rotations_out=1 last_rotation=20[0-9-]+T[0-9:.]+Z handshake_hash=[0-9a-f]{64}$" "$tmp/st.txt"'
"$tool" status --control "$tmp/ctl.sock" --json > "$tmp/st.json" 2> "$tmp/st.err"
t_check "status --json: the same as fields" 'python3 - "$tmp/st.json" "$tmp/st.txt" <<"PY"
import json, re, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 1, rows
r = rows[0]
assert r["rotations_in"] == 1 and r["rotations_out"] == 1, r
assert re.fullmatch(r"20\d\d-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["last_rotation"]), r
text = open(sys.argv[2]).read()
assert re.fullmatch(r"[0-9a-f]{64}", r["handshake_hash"]) and r["handshake_hash"] in text, r
PY'

# A connection that has not rotated yet: no date, JSON null.
mkfifo "$tmp/in2"
"$tool" connect --key "file:$tmp/client.key" --peers "$tmp/client.peers" --peer server \
    "127.0.0.1:$port" < "$tmp/in2" > /dev/null 2> /dev/null &
c2pid=$!
sleep 60 > "$tmp/in2" &
t_pids="$t_pids $c2pid $!"
for _ in $(seq 100); do
    [ "$(grep -c '"event":"established"' "$tmp/l.log")" -ge 2 ] && break
    sleep 0.1
done
"$tool" status --control "$tmp/ctl.sock" --json > "$tmp/st2.json"
t_check "status --json: before any rotation, last_rotation is null and the counts 0" \
    'python3 - "$tmp/st2.json" <<"PY"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
fresh = [r for r in rows if r["msgs_in"] == 0]
assert len(rows) == 2 and len(fresh) == 1, rows
f = fresh[0]
assert f["last_rotation"] is None and f["rotations_in"] == 0 and f["rotations_out"] == 0, f
assert len(f["handshake_hash"]) == 64 and f["handshake_hash"] != [r for r in rows if r is not f][0]["handshake_hash"]
PY'
kill "$wpid"
t_check "the first connect ends" 'for _ in $(seq 100); do kill -0 $cpid 2>/dev/null || break; sleep 0.1; done; ! kill -0 $cpid 2>/dev/null'

# ---- KK: an initiator the listener cannot verify ----
timeout 30 "$tool" connect --key "file:$tmp/stranger.key" --peers "$tmp/client.peers" \
    --peer server "127.0.0.1:$port" < /dev/null > /dev/null 2>&1
for _ in $(seq 100); do
    grep -q '"event":"failed"' "$tmp/l.log" && break
    sleep 0.1
done
kill "$lpid"

t_check "--log-format json: established and closed name peer, addr and reason" \
    'python3 - "$tmp/l.log" <<"PY"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
up = [r for r in rows if r.get("event") == "established"]
down = [r for r in rows if r.get("event") == "closed"]
assert up and down, rows
assert all(r["peer"] == "client" and r["addr"].startswith("127.0.0.1:") and r["conn"] > 0
           for r in up), up
assert "reason" not in up[0], up[0]
d = [r for r in down if r["conn"] == up[0]["conn"]][0]
assert d["peer"] == "client" and d["addr"] == up[0]["addr"], d
assert d["reason"] == "closed by peer" and d["reason"] in d["text"], d
PY'
t_check "KK act 1 under no candidate: the reason lists what it may be, not 'unknown peer'" \
    'python3 - "$tmp/l.log" <<"PY"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
f = [r for r in rows if r.get("event") == "failed"]
assert len(f) == 1, f
want = ("act 1 did not verify under any of the 1 accepted initiator keys: an initiator "
        "not in our ceremony, a changed key, a different pattern or prologue, or a corrupted act")
assert want in f[0]["reason"] and want in f[0]["text"], f
assert "not a known peer" not in f[0]["text"] and "peer" not in f[0], f
PY'

# ---- token errors: the URI readable, the PIN gone, control bytes escaped ----
t_token diag || t_done
t_exit "a token that does not exist" 3 pubkey \
    --key "pkcs11:token=no%20such%2Ftoken;object=k%0Aey%1B?pin-value=987654&pin-source=file:/none"
t_check "... the URI shown decoded, with pin-source, escapes for control bytes" \
    'grep -qF "pkcs11:" "$tmp/exit.err" && grep -qF "token=no%20such/token" "$tmp/exit.err" &&
     grep -qF "object=k%0Aey%1B" "$tmp/exit.err" && grep -qF "pin-source=file:/none" "$tmp/exit.err"'
t_check "... never the PIN, one line, no raw escape byte" \
    '! grep -q "987654\|pin-value" "$tmp/exit.err" && [ "$(wc -l < "$tmp/exit.err")" -eq 1 ] &&
     ! grep -q "$(printf "\033")" "$tmp/exit.err"'
t_exit "a file: key that does not exist, a control byte in its name" 3 pubkey \
    --key "file:$tmp/no$(printf '\033')such"
t_check "... named with the byte escaped" \
    'grep -qF "no%1Bsuch" "$tmp/exit.err" && ! grep -q "$(printf "\033")" "$tmp/exit.err"'

# ---- KK through the token: the act 1 read runs on a worker, same account ----
tok="pkcs11:token=diag?pin-value=1234"
tpub=$("$tool" keygen --token "$tok" --label srv | cut -d" " -f2)
printf 'client %s\n' "$client_pub" | "$tool" ceremony import --token "$tok" - ||
    t_fail "ceremony import"
printf 'server %s\n' "$tpub" > "$tmp/tok.peers"
t_listen "$tmp/tok.log" /dev/null --key "pkcs11:token=diag;object=srv?pin-value=1234" \
    --bind 127.0.0.1:0 && {
    tpid=$t_pid
    timeout 30 "$tool" connect --key "file:$tmp/stranger.key" --peers "$tmp/tok.peers" \
        --peer server "127.0.0.1:$port" < /dev/null > /dev/null 2>&1
    t_check "token listener: the same account of an act 1 it cannot verify" \
        'for _ in $(seq 100); do grep -q "failed during" "$tmp/tok.log" && break; sleep 0.1; done;
         grep -q "act 1 did not verify under any of the 1 accepted initiator keys" "$tmp/tok.log" &&
         ! grep -q "not a known peer" "$tmp/tok.log"'
    kill "$tpid"
}

# ---- SIGHUP moves the control socket named in the configuration file ----
write_conf() {
    printf 'key = %s\npeers = %s\nbind = 127.0.0.1:0\ncontrol = %s\n' "$skey" \
        "$tmp/server.peers" "$1" > "$tmp/svc.conf"
}
# wait_log PATTERN: at most 10 s for a line of $tmp/svc.log.
wait_log() {
    for _ in $(seq 100); do
        grep -q "$1" "$tmp/svc.log" && return 0
        sleep 0.1
    done
    return 1
}
write_conf "$tmp/one.sock"
t_listen "$tmp/svc.log" /dev/null --config "$tmp/svc.conf" && {
    svc=$t_pid
    t_check "control socket from the file" '"$tool" status --control "$tmp/one.sock"'
    write_conf "$tmp/two.sock"
    kill -HUP "$svc"
    t_check "SIGHUP: the control socket moves to the file's new path, logged" \
        'wait_log "listen: control socket now at .*two.sock" &&
         "$tool" status --control "$tmp/two.sock" && [ ! -e "$tmp/one.sock" ]'
    echo keep > "$tmp/plain"
    write_conf "$tmp/plain"
    kill -HUP "$svc"
    t_check "a path that cannot serve: one line says why, the socket stays where it was" \
        'wait_log "exists and is not a socket; the control socket stays at .*two.sock" &&
         "$tool" status --control "$tmp/two.sock" && [ "$(cat "$tmp/plain")" = keep ]'
    kill -TERM "$svc"
    t_check "at the end, the socket in use is removed" \
        'for _ in $(seq 100); do kill -0 $svc 2>/dev/null || break; sleep 0.1; done;
         [ ! -e "$tmp/two.sock" ]'
}

t_done
