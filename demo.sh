#!/bin/bash
# The p11noise demo: the whole flow of a deployment on one machine.
#
#   1. a fresh SoftHSM2 token store in ./build/demo (two tokens: a
#      co-signing server's and a wallet client's);
#   2. a secp256k1 static key generated inside each token;
#   3. the ceremony: each machine imports the other's public key as a
#      ceremony object on its own token (listed with p11noise and pkcs11-tool);
#   4. a SOCKS5 proxy (microsocks) on 127.0.0.1, as the sync server runs;
#   5. the server listening on 127.0.0.1, the client connecting through the
#      proxy, a Noise KK handshake with both static-key DHs done by the
#      tokens, and messages exchanged (the server echoes them);
#   6. both sides' log lines;
#   7. a tunnel: a web server (python3 -m http.server) behind
#      `p11noise tunnel server`, fetched with curl through
#      `p11noise tunnel client` and the proxy;
#   8. the wallet revoked on the cosigner by a reload (SIGHUP), then the
#      tunnel server stopped gracefully (SIGTERM, exit 0).
#
# Installs missing Debian packages (as root), builds, and is safe to run again.
set -eu
cd "$(dirname "$0")"
. tests/deps.sh
p11n_install_deps
p11n_build build

top=$(pwd)
P="$top/build/tools/p11noise"
MODULE=$(sed -n 's/^SOFTHSM_MODULE = //p' build/Makefile)
DEMO="$top/build/demo"

rm -rf "$DEMO"
mkdir -p "$DEMO/tokens"
cat > "$DEMO/softhsm2.conf" <<EOF
directories.tokendir = $DEMO/tokens
objectstore.backend = file
log.level = ERROR
EOF
export SOFTHSM2_CONF="$DEMO/softhsm2.conf"
# The user PIN sits in a file (mode 600) named by the URIs' pin-source, so it
# appears in no command line and no log.
umask 077
echo 2718 > "$DEMO/pin"

step() { printf '\n== %s\n' "$*"; }

# A port nothing listens on (ss is in iproute2, on every Debian system).
free_port() {
    local p
    while :; do
        p=$(shuf -i 20000-60000 -n 1)
        ss -Hltn "sport = :$p" | grep -q . || { echo "$p"; return; }
    done
}
# Waits until a command succeeds (at most 5 s).
wait_for() {
    for _ in $(seq 50); do "$@" 2>/dev/null && return 0; sleep 0.1; done
    echo "demo: timed out waiting for: $*" >&2; return 1
}
accepts() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

step "1. two tokens in $DEMO/tokens"
softhsm2-util --init-token --free --label cosigner --so-pin 31415926 --pin 2718 | sed 's/^/   /'
softhsm2-util --init-token --free --label wallet --so-pin 31415926 --pin 2718 | sed 's/^/   /'
Q="module-path=$MODULE&pin-source=file:$DEMO/pin"
SERVER_TOKEN="pkcs11:token=cosigner?$Q"
CLIENT_TOKEN="pkcs11:token=wallet?$Q"

step "2. a static key generated inside each token (the private key never leaves it)"
set -- $("$P" keygen --token "$SERVER_TOKEN" --label cosigner-key)
SERVER_PUB=$2
echo "   cosigner: $*"
set -- $("$P" keygen --token "$CLIENT_TOKEN" --label wallet-key)
CLIENT_PUB=$2
echo "   wallet:   $*"

step "3. the ceremony: each machine imports the other's public key"
echo "   fingerprints, read aloud between the operators before importing:"
echo "     cosigner-1: $("$P" pubkey --fingerprint "$SERVER_PUB")"
echo "     wallet-1:   $("$P" pubkey --fingerprint "$CLIENT_PUB")"
echo "wallet-1 $CLIENT_PUB" | "$P" ceremony import --token "$SERVER_TOKEN" -
echo "cosigner-1 $SERVER_PUB" | "$P" ceremony import --token "$CLIENT_TOKEN" -
echo "   p11noise ceremony list (cosigner's token):"
"$P" ceremony list --token "$SERVER_TOKEN" | sed 's/^/     /'
echo "   p11noise ceremony list (wallet's token):"
"$P" ceremony list --token "$CLIENT_TOKEN" | sed 's/^/     /'
echo "   pkcs11-tool --list-objects (cosigner's token):"
pkcs11-tool --module "$MODULE" --token-label cosigner --login --pin 2718 \
    --list-objects 2>/dev/null | sed 's/^/     /'

PROXY_PORT=$(free_port)
SERVER_PORT=$(free_port)
step "4. SOCKS5 proxy (microsocks) on 127.0.0.1:$PROXY_PORT"
microsocks -i 127.0.0.1 -p "$PROXY_PORT" >"$DEMO/proxy.log" 2>&1 &
pids="$pids $!"
wait_for accepts "$PROXY_PORT"

step "5. server listening on 127.0.0.1:$SERVER_PORT (KK, accepts wallet-1, echoes)"
"$P" listen --key "pkcs11:token=cosigner;object=cosigner-key?$Q" \
    --bind "127.0.0.1:$SERVER_PORT" --peer wallet-1 --echo 2>"$DEMO/server.log" &
pids="$pids $!"
wait_for grep -q "listening on" "$DEMO/server.log"

echo "   client connects through the proxy and sends three messages:"
printf 'PSBT for round 1\nsignature request: 2-of-3\nbye\n' |
    "$P" connect --key "pkcs11:token=wallet;object=wallet-key?$Q" --peer cosigner-1 \
        --socks5 "127.0.0.1:$PROXY_PORT" "127.0.0.1:$SERVER_PORT" \
        2>"$DEMO/client.log" | sed 's/^/   received: /'
sleep 0.3

step "6. logs"
echo "   client (stderr of p11noise connect):"
sed 's/^/     /' "$DEMO/client.log"
echo "   server (stderr of p11noise listen):"
sed 's/^/     /' "$DEMO/server.log"
WEB_PORT=$(free_port)
TUNNEL_PORT=$(free_port)
LOCAL_PORT=$(free_port)
step "7. a web server behind a tunnel: 127.0.0.1:$LOCAL_PORT -> proxy -> :$TUNNEL_PORT -> :$WEB_PORT"
mkdir -p "$DEMO/www"
echo "balance: 0.4 BTC, served from behind p11noise" > "$DEMO/www/index.html"
python3 -m http.server "$WEB_PORT" --bind 127.0.0.1 --directory "$DEMO/www" \
    >"$DEMO/web.log" 2>&1 &
pids="$pids $!"
"$P" tunnel server --key "pkcs11:token=cosigner;object=cosigner-key?$Q" --peer wallet-1 \
    --listen "127.0.0.1:$TUNNEL_PORT" --target "127.0.0.1:$WEB_PORT" 2>"$DEMO/tserver.log" &
TSERVER=$!
pids="$pids $!"
"$P" tunnel client --key "pkcs11:token=wallet;object=wallet-key?$Q" --peer cosigner-1 \
    --listen "127.0.0.1:$LOCAL_PORT" --socks5 "127.0.0.1:$PROXY_PORT" \
    "127.0.0.1:$TUNNEL_PORT" 2>"$DEMO/tclient.log" &
pids="$pids $!"
wait_for accepts "$WEB_PORT"
wait_for grep -q "listening on" "$DEMO/tserver.log"
wait_for grep -q "listening on" "$DEMO/tclient.log"
echo "   curl http://127.0.0.1:$LOCAL_PORT/ (a plain HTTP client, unchanged):"
# Python's urllib where curl is not installed.
fetch() {
    if command -v curl >/dev/null; then curl -sS "$1"; else
        python3 -c 'import sys, urllib.request as u; print(u.urlopen(sys.argv[1]).read().decode(), end="")' "$1"
    fi
}
fetch "http://127.0.0.1:$LOCAL_PORT/" | sed 's/^/   received: /'
sleep 0.3
echo "   tunnel client (stderr):"
sed 's/^/     /' "$DEMO/tclient.log"
echo "   tunnel server (stderr):"
sed 's/^/     /' "$DEMO/tserver.log"

step "8. revoking wallet-1 on the cosigner while the tunnel runs"
echo "   p11noise ceremony remove wallet-1; kill -HUP (systemctl reload under systemd)"
"$P" ceremony remove --token "$SERVER_TOKEN" wallet-1
kill -HUP "$TSERVER"
wait_for grep -q "reloaded the ceremony" "$DEMO/tserver.log"
if fetch "http://127.0.0.1:$LOCAL_PORT/" > /dev/null 2>&1; then
    echo "demo: wallet-1 still got through after its revocation" >&2
    exit 1
fi
echo "   the wallet's next request is refused; SIGTERM stops the tunnel server:"
kill -TERM "$TSERVER"
status=0
wait "$TSERVER" || status=$?
echo "   exit status $status"
grep -e "reloaded the ceremony" -e "stopped" "$DEMO/tserver.log" | sed 's/^/     /'

printf '\ndemo complete: keys and ceremony in %s\n' "$DEMO"
