#!/bin/sh
# The command line's promises: an argument it rejects is never repeated
# (a key URI can hold a PIN, a proxy spec a password); "--opt=value" works
# wherever "--opt value" does; `listen` escapes what a peer sends unless
# --raw; --show-peer names the sender; `connect` ends against a listener
# that does not echo.
set -u
. "$(dirname "$0")/lib.sh"
t_init cli
t_bolt8_keys

# ---- Rejected arguments: the option's name, never the secret ----
pin=80417
pw=Zq7secret
uri="pkcs11:token=nosuch;object=k?pin-value=$pin"
proxy="net:$pw@127.0.0.1:1080"
skey="file:$tmp/server.key"
ckey="file:$tmp/client.key"

# no_echo WHAT NAME ARG...: `p11noise ARG...` fails, and its output holds
# NAME and neither the PIN nor the password.
no_echo() {
    what="$1"; name="$2"; shift 2
    if "$tool" "$@" < /dev/null > "$tmp/ne.out" 2> "$tmp/ne.err"; then
        t_fail "$what: exited 0"
    elif grep -q -e "$pin" -e "$pw" "$tmp/ne.out" "$tmp/ne.err"; then
        t_fail "$what: the secret was echoed: $(cat "$tmp/ne.err")"
    elif ! grep -qF -e "$name" "$tmp/ne.err"; then
        t_fail "$what: '$name' not named: $(cat "$tmp/ne.err")"
    else
        t_ok "$what: $(head -1 "$tmp/ne.err")"
    fi
}
no_echo "unknown --opt=URI" "'--kye'" listen "--kye=$uri" --bind 127.0.0.1:0
no_echo "unknown --opt URI" "'--kye'" listen --kye "$uri" --bind 127.0.0.1:0
no_echo "unknown -oURI" "'-kpkcs11...'" listen "-k$uri"
no_echo "unknown --opt=PROXY" "'--sock5'" connect "--sock5=$proxy" --key "$ckey" \
    --peer server 127.0.0.1:1
no_echo "unknown --opt PROXY" "'--sock5'" connect --sock5 "$proxy" --key "$ckey" \
    --peer server 127.0.0.1:1
no_echo "another command's option" "'--socks5'" listen "--socks5=$proxy"
no_echo "keygen --key URI" "--key" keygen --key "$uri" --label x
no_echo "keygen --kye=URI" "'--kye'" keygen "--kye=$uri" --label x
no_echo "pubkey --token=URI" "--token" pubkey "--token=$uri"
no_echo "ceremony list --key URI" "--key" ceremony list --key "$uri"
no_echo "ceremony --token=URI first" "unknown subcommand" ceremony "--token=$uri" list
no_echo "ceremony import URI as the file" "cannot read" ceremony import --token "$tmp/x" "$uri"
no_echo "bench --kye=URI" "'--kye'" bench "--kye=$uri"
no_echo "vectors --kye=URI" "'--kye'" vectors "--kye=$uri"
no_echo "no command" "unknown command" "--key=$uri"
no_echo "flag given a value" "--echo" listen "--echo=$pin"
no_echo "proxy in the target's place" "HOST:PORT" connect --key "$ckey" --peer server "$proxy"
no_echo "extra argument" "unexpected" connect --key "$ckey" --peer server 127.0.0.1:1 "$proxy"
no_echo "URI as a peer" "peer" connect --key "$ckey" --peers "$tmp/client.peers" \
    --peer "$uri" 127.0.0.1:1
no_echo "URI as a peers file" "peers file" listen --key "$skey" --peers "$uri" \
    --bind 127.0.0.1:0
no_echo "URI as --bind" "--bind" listen --key "$skey" --bind "$uri"
no_echo "bad proxy spec" "--socks5" connect --key "$ckey" --peers "$tmp/client.peers" \
    --peer server --socks5 "net:$pw@" 127.0.0.1:1
no_echo "key on no token" "key" connect --key "$uri" --peer server 127.0.0.1:1
no_echo "bad --linger" "--linger" connect --key "$ckey" --peer server --linger "x$pin" \
    127.0.0.1:1
no_echo "tunnel server --opt=PROXY" "'--sock5'" tunnel server "--sock5=$proxy"
no_echo "tunnel server, a client option" "'--socks5'" tunnel server "--socks5=$proxy"
no_echo "tunnel client --kye=URI" "'--kye'" tunnel client "--kye=$uri"
no_echo "tunnel client, URI as an argument" "unexpected" tunnel client --key "$ckey" \
    --peer server --listen 127.0.0.1:0 127.0.0.1:1 "$uri"
no_echo "tunnel server, URI as --listen" "--listen" tunnel server --key "$skey" \
    --listen "$uri" --target 127.0.0.1:1
no_echo "tunnel server, proxy as --target" "--target" tunnel server --key "$skey" \
    --listen 127.0.0.1:0 --target "$proxy"
no_echo "tunnel client, bad --mode" "--mode" tunnel client --mode "x$pin" --key "$ckey"

# ---- listen's output: escaped, raw, with the peer ----
# One message with a terminal escape (ESC [ 2 J clears the screen), a
# newline, 0xff, a backslash, a tab, DEL and a carriage return; one plain;
# one empty.
msg1=611b5b324a620a63ff5c097f0d7a
msg2=706c61696e2074657874
# listen_to NAME "OPTION..." MSG...: a KK listener with the options
# (split at spaces), rawsend sends it the messages (hex, "" for an empty
# one); the listener's stdout is $tmp/NAME.out once it has as many lines
# as messages.
listen_to() {
    name="$1"; opts="$2"; shift 2
    # shellcheck disable=SC2086
    t_listen "$tmp/$name.log" "$tmp/$name.out" --key "$skey" --peers "$tmp/server.peers" \
        --bind 127.0.0.1:0 --peer client $opts || return 1
    lpid=$t_pid
    "$builddir/tests/rawsend" "$ckey" "$server_pub" "$port" "$@" 2> "$tmp/$name.err" \
        || t_fail "$name: rawsend: $(cat "$tmp/$name.err")"
    t_wait_lines "$tmp/$name.out" $# \
        || t_fail "$name: the listener printed $(wc -l < "$tmp/$name.out") lines"
    kill "$lpid"
}

listen_to esc "" "$msg1" "$msg2" "" && {
    printf '%s\n' 'a\x1b[2Jb\nc\xff\\\t\x7f\rz' 'plain text' '' > "$tmp/esc.want"
    if cmp -s "$tmp/esc.want" "$tmp/esc.out"; then
        t_ok "listen escapes control bytes, one message per line"
    else
        t_fail "listen output: $(od -c "$tmp/esc.out" | head -5)"
    fi
}
listen_to raw --raw "$msg1" "$msg2" "" && {
    printf 'a\033[2Jb\nc\377\\\t\177\rz\nplain text\n\n' > "$tmp/raw.want"
    t_check "listen --raw writes the bytes as received" 'cmp -s "$tmp/raw.want" "$tmp/raw.out"'
}
listen_to peer --show-peer 6869 "$msg1" && {
    printf '%s\n' 'client: hi' 'client: a\x1b[2Jb\nc\xff\\\t\x7f\rz' > "$tmp/peer.want"
    t_check "listen --show-peer prefixes the peer" 'cmp -s "$tmp/peer.want" "$tmp/peer.out"'
}
no_echo "--echo with --raw" "--echo" listen --key "$skey" --bind 127.0.0.1:0 --echo --raw

# ---- connect against a listener that does not echo ----
# linger NAME OPTION...: two lines to a printing listener; connect must
# exit 0 (bounded by `timeout`: without the fix it waits forever), the
# listener must print both lines and see a graceful close. $dev is "dev"
# when OPTION... holds --dev-allow-extractable-key.
linger() {
    name="$1"; shift
    t_listen "$tmp/$name.log" "$tmp/$name.out" --key "$skey" --peers "$tmp/server.peers" \
        --bind 127.0.0.1:0 --peer client || return 1
    if printf 'one\ntwo\n' | timeout 30 "$tool" connect --key "$ckey" \
        --peers "$tmp/client.peers" --peer server "$@" "127.0.0.1:$port" \
        > "$tmp/$name.cout" 2> "$tmp/$name.cerr"; then
        t_ok "$name: connect exits 0 against a silent listener"
    else
        t_fail "$name: connect exited $?: $(cat "$tmp/$name.cerr")"
    fi
    t_wait_lines "$tmp/$name.out" 2
    t_check "$name: the listener printed both lines" \
        '[ "$(cat "$tmp/$name.out")" = "$(printf "one\ntwo")" ]'
    sleep 0.3
    t_check "$name: closed gracefully" \
        'grep -q "closed: .*received 2 msgs" "$tmp/$name.log"'
    # The key's warning (if the library has one for it) exactly once.
    want=$("$builddir/tests/keywarn" "$ckey" $dev)
    warned=$(grep -c "^p11noise: warning: " "$tmp/$name.cerr")
    if [ -n "$want" ]; then
        t_check "$name: the key's warning once" \
            '[ "$warned" -eq 1 ] && grep -qxF "p11noise: warning: $want" "$tmp/$name.cerr"'
    else
        t_check "$name: no warning for a key without one" '[ "$warned" -eq 0 ]'
    fi
}
dev=""
linger linger300 --linger 300
linger linger-default
dev=dev
linger linger-dev --linger=200 --dev-allow-extractable-key

# ---- "--opt=value" for every option that takes a value ----
t_listen "$tmp/eq.log" "$tmp/eq.out" "--key=$skey" "--peers=$tmp/server.peers" \
    --bind=127.0.0.1:0 --peer=client --pattern=XK --prologue=cli-test && {
    if echo hello | timeout 30 "$tool" connect "--key=$ckey" "--peers=$tmp/client.peers" \
        --peer=server --pattern=XK --prologue=cli-test --linger=200 "127.0.0.1:$port" \
        2> "$tmp/eq.err"; then
        t_ok "connect --opt=value"
    else
        t_fail "connect --opt=value: $(cat "$tmp/eq.err")"
    fi
    t_wait_lines "$tmp/eq.out" 1
    t_check "listen --opt=value" '[ "$(cat "$tmp/eq.out")" = hello ]'
    # The prologue given as --prologue=S is the one used: another fails.
    if echo x | timeout 30 "$tool" connect "--key=$ckey" "--peers=$tmp/client.peers" \
        --peer=server --pattern=XK --prologue=other "127.0.0.1:$port" 2> /dev/null; then
        t_fail "a different --prologue= still completed the handshake"
    fi
    if command -v "${MICROSOCKS:-microsocks}" > /dev/null 2>&1; then
        pport=$(t_free_port)
        t_bg "${MICROSOCKS:-microsocks}" -i 127.0.0.1 -p "$pport" -u net -P "$pw" \
            > /dev/null 2>&1
        sleep 0.3
        if echo proxied | timeout 30 "$tool" connect "--key=$ckey" \
            "--peers=$tmp/client.peers" --peer=server --pattern=XK --prologue=cli-test \
            "--socks5=net:$pw@127.0.0.1:$pport" "localhost:$port" 2> "$tmp/eqp.err"; then
            t_ok "connect --socks5=value"
        else
            t_fail "connect --socks5=value: $(cat "$tmp/eqp.err")"
        fi
        grep -q "$pw" "$tmp/eqp.err" && t_fail "--socks5=: the password is in the log"
    else
        echo "microsocks not installed: --socks5= run skipped"
    fi
}
t_check "pubkey --key=URI" '[ "$("$tool" pubkey "--key=$skey")" = "$server_pub" ]'
t_token cli || exit 1
tok="pkcs11:token=cli?pin-value=1234"
t_check "keygen --token=URI --label=NAME" \
    '"$tool" keygen "--token=$tok" --label=k1 | grep -q "^k1 0[23][0-9a-f]\{64\}$"'
echo "peer1 $client_pub" > "$tmp/ceremony.txt"
echo "peer1 ${client_pub}00" > "$tmp/ceremony.bad"
(umask 022; echo "$client_priv" > "$tmp/open.key")
t_check "ceremony import/list --token=URI" \
    '"$tool" ceremony import "--token=$tok" "$tmp/ceremony.txt" &&
     [ "$("$tool" ceremony list "--token=$tok")" = "peer1 $client_pub" ]'
t_check "bench --rows=LIST is read as the value" \
    '! "$tool" bench --rows=nosuch 2>&1 | grep -q "unknown option" &&
     "$tool" bench --rows=nosuch 2>&1 | grep -q "unknown row group"'

# ---- The key's fingerprint: base32 of SHA-256 of the compressed key ----
fp_want=$(python3 -c '
import base64, hashlib, sys
d = base64.b32encode(hashlib.sha256(bytes.fromhex(sys.argv[1])).digest()[:20]).decode()
print("-".join(d[i:i + 4] for i in range(0, 32, 4)))' "$server_pub")
t_check "pubkey --fingerprint: eight groups of base32 of SHA-256 ($fp_want)" \
    '[ "$("$tool" pubkey --key "$skey" --fingerprint)" = "$fp_want" ] &&
     echo "$fp_want" | grep -qx "[A-Z2-7]\{4\}\(-[A-Z2-7]\{4\}\)\{7\}"'
t_check "pubkey --fingerprint PUBHEX: the same for the key in hex" \
    '[ "$("$tool" pubkey --fingerprint "$server_pub")" = "$fp_want" ]'
t_check "another key, another fingerprint" \
    '[ "$("$tool" pubkey --fingerprint "$client_pub")" != "$fp_want" ]'
t_exit "pubkey --fingerprint of a non-point" 2 pubkey --fingerprint "04${server_pub#??}"
t_exit "pubkey with neither --key nor PUBHEX" 2 pubkey --fingerprint

# ---- Exit status by class (doc/p11noise.1, EXIT STATUS) ----
t_exit "unknown option" 2 listen --kye x --bind 127.0.0.1:0
t_exit "missing value" 2 connect --key "$ckey" --peer
t_exit "malformed peers file" 2 listen --key "$skey" --peers "$tmp/ceremony.bad" \
    --bind 127.0.0.1:0
t_exit "wrong PIN" 3 connect --key "pkcs11:token=cli;object=k1?pin-value=9999" \
    --peer "$server_pub" 127.0.0.1:1
t_exit "no such token" 3 listen --key "pkcs11:token=nosuch;object=k1?pin-value=1234" \
    --bind 127.0.0.1:0
t_exit "key file readable by others" 3 pubkey --key "file:$tmp/open.key"
t_exit "unknown peer" 4 connect --key "$ckey" --peers "$tmp/client.peers" --peer nosuch \
    127.0.0.1:1
refused=$(t_free_port)
t_exit "refused connection" 5 connect --key "$ckey" --peers "$tmp/client.peers" \
    --peer server "127.0.0.1:$refused"
t_exit "unreachable proxy" 5 connect --key "$ckey" --peers "$tmp/client.peers" \
    --peer server --socks5 "127.0.0.1:$refused" 127.0.0.1:1
t_exit "tunnel: no such token" 3 tunnel server \
    --key "pkcs11:token=cli;object=k1?pin-value=9999" --listen 127.0.0.1:0 \
    --target 127.0.0.1:1

# A KK responder that does not know us: the initiator says what it can
# know, names the key it expected, once, and exits with the peer class.
other_pub=02466d7fcae563e5cb09a0d1870bb580344804617879a14949cf22285f1bae3f27
printf 'someone %s\n' "$other_pub" > "$tmp/other.peers"
t_listen "$tmp/rej.log" "$tmp/rej.out" --key "$skey" --peers "$tmp/other.peers" \
    --bind 127.0.0.1:0 && {
    t_exit "KK responder that does not know us" 4 connect --key "$ckey" \
        --peers "$tmp/client.peers" --peer server "127.0.0.1:$port"
    t_check "... says it was rejected or the key differs, naming the key, once" \
        '[ "$(grep -c "rejected us or is not the key we know as .server." "$tmp/exit.err")" -eq 1 ] &&
         grep -q "expected key $server_pub" "$tmp/exit.err" &&
         [ "$(grep -c "^p11noise: connect:" "$tmp/exit.err")" -eq 1 ]'
    # Its key changed: we hold another key for it.
    printf 'server %s\n' "$other_pub" > "$tmp/changed.peers"
    t_exit "KK responder whose key changed" 4 connect --key "$ckey" \
        --peers "$tmp/changed.peers" --peer server "127.0.0.1:$port"
    t_check "... names the key we expected" 'grep -q "expected key $other_pub" "$tmp/exit.err"'
    kill "$t_pid"
}

# A ceremony line the library refuses: the command says what is wrong.
# malformed NAME WHAT LINE: `ceremony import` of a file whose 2nd line is
# LINE fails naming line 2 and WHAT.
malformed() {
    printf 'ok1 %s\n%s\n' "$client_pub" "$3" > "$tmp/mal.txt"
    "$tool" ceremony import "--token=$tok" "$tmp/mal.txt" 2> "$tmp/mal.err"
    mal_what="$2"
    t_check "malformed ceremony line, $1: says '$2'" \
        'grep -qF "$mal_what" "$tmp/mal.err" && grep -q "mal.txt:2: .*nothing imported" "$tmp/mal.err"'
}
malformed "short key" "wrong length: the key has 64 hex digits, not 66" \
    "p2 ${client_pub%??}"
malformed "uncompressed key" "uncompressed key (130 hex digits)" \
    "p2 04${client_pub#??}${client_pub#??}"
malformed "bad character" "bad character 'g' in the key" "p2 g${client_pub#?}"
malformed "extra field" "extra field after the key" "p2 $client_pub extra"
malformed "bad identifier" "the identifier is not 1-64 characters" "p/2 $client_pub"
printf '\357\273\277p1 %s\n' "$client_pub" > "$tmp/bom.txt"
"$tool" ceremony import "--token=$tok" "$tmp/bom.txt" 2> "$tmp/bom.err"
t_check "malformed ceremony line, BOM: named" 'grep -q "bom.txt:1: .*byte order mark" "$tmp/bom.err"'

# A limit names itself and the option that sets it.
many=""
for i in $(seq 17); do many="$many --peer client"; done
# shellcheck disable=SC2086
t_exit "KK listener with 17 --peer" 2 listen --key "$skey" --peers "$tmp/server.peers" \
    --bind 127.0.0.1:0 $many
t_check "... names the limit (16) and --peer" \
    'grep -q "cannot listen on .*at most 16 initiator keys.*--peer" "$tmp/exit.err"'

# ---- The new options are in the usage ----
t_help listen
t_help connect
"$tool" listen --help > "$tmp/lh"
"$tool" connect --help > "$tmp/ch"
t_check "listen --help names --raw, --show-peer and the development-only key option" \
    'grep -q -- "--raw" "$tmp/lh" && grep -q -- "--show-peer" "$tmp/lh" &&
     grep -q -- "--dev-allow-extractable-key.*development" "$tmp/lh"'
t_check "connect --help names --linger" 'grep -q -- "--linger MS" "$tmp/ch"'
t_check "--version prints the package version" \
    '"$tool" --version | grep -qx "p11noise [0-9][0-9]*\.[0-9][0-9]*\.[0-9][0-9]* (library [0-9.]*, protocol version 0)"'
t_check "--version: the library linked is the package's version" \
    'v=$("$tool" --version); [ "$(echo "$v" | cut -d" " -f2)" = "$(echo "$v" | sed "s/.*library \([^,]*\),.*/\1/")" ]'

t_done
