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
