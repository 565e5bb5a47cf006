#!/bin/sh
# The SOCKS5 client against a second, widely deployed server: Dante
# (danted, no authentication; username/password is covered with microsocks,
# since Dante checks those against system accounts). A KK handshake and
# messages through it to an IPv4 target and to a name the proxy resolves,
# and a refused target reported as such by the proxy.
. "$(dirname "$0")/lib.sh"
t_init dante
command -v danted >/dev/null || { t_fail "danted not installed (Debian package dante-server)"; t_done; }

proxy_port=$(t_free_port)
cat > "$tmp/danted.conf" <<EOC
logoutput: $tmp/danted.log
internal: 127.0.0.1 port = $proxy_port
external: 127.0.0.1
clientmethod: none
socksmethod: none
user.privileged: root
user.unprivileged: nobody
client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }
socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 command: connect }
EOC
# -N 1: one process, so killing it on exit leaves no children behind
t_bg danted -f "$tmp/danted.conf" -N 1

echo 1111111111111111111111111111111111111111111111111111111111111111 > "$tmp/server.hex"
echo 2222222222222222222222222222222222222222222222222222222222222222 > "$tmp/client.hex"
server_pub=$("$tool" pubkey --key "file:$tmp/server.hex")
echo "client $("$tool" pubkey --key "file:$tmp/client.hex")" > "$tmp/peers"
port=$(t_free_port)
t_bg "$tool" listen --key "file:$tmp/server.hex" --bind "127.0.0.1:$port" \
    --peers "$tmp/peers" --peer client --echo 2> "$tmp/server.log"

# both accept connections
for _ in $(seq 50); do
    grep -q "listening on" "$tmp/server.log" 2>/dev/null &&
        ss -Hltn "sport = :$proxy_port" | grep -q . && break
    sleep 0.1
done

connect() {
    printf 'through dante\nsecond message\n' |
        "$tool" connect --key "file:$tmp/client.hex" --peer "$server_pub" \
            --socks5 "127.0.0.1:$proxy_port" "$1" > "$tmp/out" 2> "$tmp/err"
}
printf 'through dante\nsecond message\n' > "$tmp/want"

connect "127.0.0.1:$port"
t_check "KK through Dante to an IPv4 target, messages echoed" \
    "[ \$? -eq 0 ] && cmp -s '$tmp/out' '$tmp/want'"
connect "localhost:$port"
t_check "a name resolved by Dante (ATYP DOMAINNAME)" \
    "[ \$? -eq 0 ] && cmp -s '$tmp/out' '$tmp/want' && grep -q 'to localhost:$port open' '$tmp/err'"
closed=$(t_free_port)
connect "127.0.0.1:$closed"
t_check "a closed target port: refused, reported by the proxy" \
    "[ \$? -ne 0 ] && grep -q 'connection refused by target, reported by proxy' '$tmp/err'"
t_done
