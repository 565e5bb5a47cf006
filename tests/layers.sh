#!/bin/sh
# The network layer's shape (doc/design.md, "Who calls whom"), checked in
# the source so that it stays true:
#  - the helpers (resolver, worker pool, dialer, proxy) never name the
#    connection structure, include the connection header, or call a
#    function defined in the connection file;
#  - the loop (context, timers, fd set, backends, posted calls) calls into
#    the connection and listener files only through the callbacks it was
#    given: it calls none of their functions by name, includes neither
#    header and does not name the connection structure either.
# Comments do not count. The checker first proves on a copy with planted
# violations that it finds each kind.
src="${P11N_SRCDIR:-.}"
net="$src/lib/net"
[ -f "$net/conn.c" ] || { echo "missing $net/conn.c"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

HELPERS="resolve.c resolve.h worker.c worker.h dialer.c dialer.h proxy.c proxy.h"
LOOP="loop.c fdset.c loop_poll.c loop_epoll.c post.c backend.h net.h"

# The file without its comments.
code() { perl -0777 -pe 's{/\*.*?\*/}{ }gs; s{//[^\n]*}{}g' "$1"; }

# Names of the functions a .c file defines for other files (not static).
defined_in() {
    code "$1" | perl -0777 -ne \
        'while (/^(?!static\b)[A-Za-z_][\w\s\*]*?\b(\w+)\s*\([^;{]*?\)\s*\{/mg) { print "$1\n" }' |
        sort -u
}

# reach DIR FNS WHAT FILE...: in each FILE of DIR, an include of a
# connection header and a call of a function listed in FNS ("calls NAME
# WHAT"), one line each.
reach() {
    dir=$1 fns=$2 what=$3
    shift 3
    for f in "$@"; do
        [ -f "$dir/$f" ] || continue
        code "$dir/$f" > "$tmp/code"
        grep -n '#include *"\(conn\|listener\|channel\)\.h"' "$tmp/code" |
            sed "s|^|$f: includes a connection header: |"
        while read -r fn; do
            grep -n "\\b$fn *(" "$tmp/code" | sed "s|^|$f: calls $fn $what: |"
        done < "$fns"
        grep -n '\bp11n_conn\b' "$tmp/code" | sed "s|^|$f: names the connection structure: |"
    done
}

# check DIR: prints one line per violation in the lib/net copy DIR.
check() {
    dir=$1
    defined_in "$dir/conn.c" > "$tmp/conn.fns"
    { cat "$tmp/conn.fns"; defined_in "$dir/listener.c"; } | sort -u > "$tmp/connlisten.fns"
    if [ ! -s "$tmp/conn.fns" ]; then
        echo "no function found in conn.c: the checker is broken"
        return
    fi
    # shellcheck disable=SC2086
    reach "$dir" "$tmp/conn.fns" "of conn.c" $HELPERS
    # shellcheck disable=SC2086
    reach "$dir" "$tmp/connlisten.fns" "by name" $LOOP
}

fail=0

# The checker finds each kind of violation on a copy.
mkdir "$tmp/net"
cp "$net"/*.c "$net"/*.h "$tmp/net/"
printf '/* planted */\nstatic void planted(void) { p11n_conn_end(0, 0, 0); }\n' >> "$tmp/net/worker.c"
printf '/* planted */\nstruct p11n_conn;\n' >> "$tmp/net/dialer.h"
printf '#include "conn.h"\n' >> "$tmp/net/resolve.c"
printf '/* planted */\nstatic void planted(void) { p11n_listener_free(0); }\n' >> "$tmp/net/loop.c"
printf '/* p11n_conn_end(c) in a comment is no call */\n' >> "$tmp/net/proxy.c"
check "$tmp/net" > "$tmp/planted.out"
for want in "worker.c: calls p11n_conn_end" "dialer.h: names the connection structure" \
    "resolve.c: includes a connection header" "loop.c: calls p11n_listener_free"; do
    if ! grep -q "^$want" "$tmp/planted.out"; then
        echo "FAIL: the checker misses a planted violation ($want)"
        fail=1
    fi
done
if grep -q "^proxy.c" "$tmp/planted.out"; then
    echo "FAIL: the checker counts a comment as a violation"
    fail=1
fi

# The tree itself.
check "$net" > "$tmp/tree.out"
if [ -s "$tmp/tree.out" ]; then
    echo "FAIL: the network layer's layering is broken (doc/design.md, Who calls whom):"
    cat "$tmp/tree.out"
    fail=1
fi
[ "$fail" -eq 0 ] && echo "ok: helpers do not see connections; the loop reaches them only by callbacks"
exit "$fail"
