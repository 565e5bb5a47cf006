# Shared by the shell tests (sourced, not run): a temporary directory
# removed on exit with every background process started through t_bg,
# pass/fail bookkeeping, a free loopback port, and a fresh SoftHSM2 token.
#
#   . "$(dirname "$0")/lib.sh"
#   t_init net                  # sets $tool, $tmp
#   t_check "what" 'shell condition'   or   t_fail "what went wrong"
#   t_done                      # summary line; exit status 1 on any failure

t_init() {
    t_name="$1"
    # Key and PIN files must be private: the tool refuses them otherwise.
    umask 077
    builddir="${P11N_BUILDDIR:-.}"
    srcdir="${P11N_SRCDIR:-.}"
    tool="$builddir/tools/p11noise"
    t_fails=0
    t_pids=""
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/p11n-$t_name-XXXXXX") || exit 1
    trap t_cleanup EXIT
    trap 'exit 1' INT TERM
}

t_cleanup() {
    for p in $t_pids; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$tmp"
}

# Run "$@" in the background, killed on exit; its pid is in $t_pid.
t_bg() {
    "$@" &
    t_pid=$!
    t_pids="$t_pids $t_pid"
}

t_ok() { echo "ok: $*"; }
t_fail() {
    echo "FAIL: $*"
    t_fails=$((t_fails + 1))
}
# t_check WHAT CONDITION: CONDITION is evaluated by the shell.
t_check() { if eval "$2"; then t_ok "$1"; else t_fail "$1"; fi; }

t_done() {
    if [ "$t_fails" -ne 0 ]; then
        echo "$t_name.sh: $t_fails failure(s)"
        exit 1
    fi
    echo "$t_name.sh: all passed"
    exit 0
}

# A TCP port on 127.0.0.1 that nothing listens on right now.
t_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# t_token LABEL: a fresh SoftHSM2 token (SO PIN 5678, user PIN 1234) in
# $tmp/tokens; SOFTHSM2_CONF is exported.
t_token() {
    mkdir -p "$tmp/tokens"
    cat > "$tmp/softhsm2.conf" <<EOC
directories.tokendir = $tmp/tokens
objectstore.backend = file
log.level = ERROR
EOC
    export SOFTHSM2_CONF="$tmp/softhsm2.conf"
    softhsm2-util --init-token --free --label "$1" --so-pin 5678 --pin 1234 > /dev/null
}

# t_help CMD...: `p11noise CMD... --help` prints its usage on stdout,
# nothing on stderr, and exits 0.
t_help() {
    if ! "$tool" "$@" --help > "$tmp/help.out" 2> "$tmp/help.err"; then
        t_fail "$* --help exits non-zero: $(cat "$tmp/help.err")"
    elif ! grep -q "^usage: p11noise $1" "$tmp/help.out" || [ -s "$tmp/help.err" ]; then
        t_fail "$* --help: no usage on stdout, or output on stderr"
    else
        t_ok "$* --help"
    fi
}

# t_bolt8_keys: the BOLT #8 test keys as file: keys in $tmp (server.key,
# client.key, mode 0600) and each side's peers file naming the other
# (server.peers: "client", client.peers: "server"); sets $server_priv,
# $server_pub, $client_priv, $client_pub.
t_bolt8_keys() {
    server_priv=2121212121212121212121212121212121212121212121212121212121212121
    server_pub=028d7500dd4c12685d1f568b4c2b5048e8534b873319f3a8daa612b469132ec7f7
    client_priv=1111111111111111111111111111111111111111111111111111111111111111
    client_pub=034f355bdcb7cc0af728ef3cceb9615d90684bb5b2ca5f859ab0f0b704075871aa
    (umask 077
     echo "$server_priv" > "$tmp/server.key"
     echo "$client_priv" > "$tmp/client.key")
    printf '# server side\nclient %s\n' "$client_pub" > "$tmp/server.peers"
    printf 'server %s\n' "$server_pub" > "$tmp/client.peers"
}

# t_listen LOG OUT OPTION...: `p11noise listen OPTION...` in the
# background (stderr to LOG, stdout to OUT); waits for its "listening on"
# line and sets $port to the port it bound. Returns 1 after t_fail if it
# did not start.
t_listen() {
    log="$1"; out="$2"; shift 2
    t_bg "$tool" listen "$@" > "$out" 2> "$log"
    port=""
    for _ in $(seq 100); do
        port=$(sed -n 's/.*listening on .*:\([0-9]*\) (.*/\1/p' "$log" | head -1)
        [ -n "$port" ] && return 0
        sleep 0.1
    done
    t_fail "listener did not start: $(cat "$log")"
    return 1
}

# t_wait_lines FILE N: wait (at most 10 s) until FILE has N lines.
t_wait_lines() {
    for _ in $(seq 100); do
        [ "$(wc -l < "$1")" -ge "$2" ] && return 0
        sleep 0.1
    done
    return 1
}

# t_exit WHAT STATUS ARG...: `p11noise ARG...` (stdin empty, bounded to
# 30 s) exits with STATUS; its stderr is in $tmp/exit.err.
t_exit() {
    what="$1"; want="$2"; shift 2
    timeout 30 "$tool" "$@" < /dev/null > /dev/null 2> "$tmp/exit.err"
    got=$?
    if [ "$got" -eq "$want" ]; then
        t_ok "$what: exit $got"
    else
        t_fail "$what: exit $got, not $want: $(head -3 "$tmp/exit.err")"
    fi
}
