#!/bin/sh
# The README's walkthrough runs as written: its blocks marked
# "<!-- readme-test -->" are run in order, in one shell, in an empty
# directory, with the built command first on PATH; what they print is
# checked. The walkthrough uses fixed ports (as a reader would): when one
# is taken the test is skipped.
set -u
. "$(dirname "$0")/lib.sh"
t_init readme
# port_free PORT: nothing listens on it (a socket in TIME_WAIT is fine:
# the servers set SO_REUSEADDR, as this does).
port_free() {
    python3 -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2> /dev/null
}
for p in 1080 8000 8080 9735 9736; do
    if ! port_free "$p"; then
        echo "port $p is taken: the walkthrough cannot run as written; skipped"
        exit 77
    fi
done
for c in microsocks curl softhsm2-util; do
    command -v "$c" > /dev/null 2>&1 || { echo "$c not installed: skipped"; exit 77; }
done

awk '/^<!-- readme-test -->$/ { want = 1; next }
     want && /^```sh$/ { inblock = 1; want = 0; next }
     inblock && /^```$/ { inblock = 0; print ""; next }
     inblock { print }' "$srcdir/README.md" > "$tmp/walkthrough.sh"
t_check "the README has marked blocks" '[ "$(grep -c "^<!-- readme-test -->$" "$srcdir/README.md")" -ge 4 ]'

mkdir "$tmp/run"
tools=$(cd "$builddir/tools" && pwd)
(cd "$tmp/run" && PATH="$tools:$PATH" timeout 120 bash -e "$tmp/walkthrough.sh") \
    > "$tmp/out" 2> "$tmp/err"
rc=$?
t_check "the walkthrough runs to its end (exit $rc)" '[ "$rc" -eq 0 ]'
[ "$rc" -ne 0 ] && sed 's/^/  | /' "$tmp/err" | tail -20
t_check "the two fingerprints agree" \
    '[ "$(grep -c "^[A-Z2-7]\{4\}\(-[A-Z2-7]\{4\}\)\{7\}$" "$tmp/out")" -eq 2 ] &&
     [ "$(grep "^[A-Z2-7]\{4\}-" "$tmp/out" | sort -u | wc -l)" -eq 1 ]'
t_check "connect prints the echoes" 'grep -qx hello "$tmp/out" && grep -qx world "$tmp/out"'
t_check "curl through the tunnel" 'grep -qx "hello from behind p11noise" "$tmp/out"'
t_check "after the reload the revoked wallet is refused" \
    'grep -qx "refused: wallet-1 is revoked" "$tmp/out" &&
     [ "$(grep -c "hello from behind p11noise" "$tmp/out")" -eq 1 ]'
t_check "nothing is left running: its ports are free again" \
    'busy=0; for p in 1080 8000 8080 9735 9736; do port_free "$p" || busy=1; done; [ $busy -eq 0 ]'
t_done
