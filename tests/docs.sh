#!/bin/sh
# The manual pages render without warnings; every option of every command
# is in p11noise(1) and in the bash completion; the exit statuses of
# tools/cli.h are the man page's and the unit's; the systemd units pass
# systemd-analyze verify (when it is installed).
set -u
. "$(dirname "$0")/lib.sh"
t_init docs
man1="$srcdir/doc/p11noise.1"
comp="$srcdir/doc/p11noise.bash-completion"

for page in doc/p11noise.1 doc/p11noise.conf.5 doc/libp11noise.3; do
    if command -v mandoc > /dev/null 2>&1; then
        t_check "$page: mandoc -T lint, no warnings" \
            'mandoc -T lint -W warning "$srcdir/$page" > "$tmp/lint" 2>&1 && [ ! -s "$tmp/lint" ]'
    else
        t_check "$page: groff -w all, no warnings" \
            'groff -mandoc -w all -z "$srcdir/$page" > "$tmp/lint" 2>&1 && [ ! -s "$tmp/lint" ]'
    fi
    [ -s "$tmp/lint" ] && cat "$tmp/lint"
done

# Every option a command's --help names.
for cmd in keygen pubkey ceremony listen connect "tunnel server" "tunnel client"; do
    # shellcheck disable=SC2086
    "$tool" $cmd --help | grep -o -- '--[a-z][a-z0-9-]*' | sort -u > "$tmp/opts"
    while read -r opt; do
        [ "$opt" = --help ] && continue
        grep -q "^\.\(It \)\?Fl -${opt#--}\b" "$man1" ||
            grep -q "Fl -${opt#--}\( \|$\)" "$man1" ||
            t_fail "p11noise(1) lacks $opt of $cmd"
        grep -q -- "$opt\b" "$comp" || t_fail "the bash completion lacks $opt of $cmd"
    done < "$tmp/opts"
    t_ok "$cmd: every option of --help documented and completed ($(wc -l < "$tmp/opts"))"
done

# The completion itself, in bash.
complete_words() {
    bash -c '. "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _p11noise;
        echo "${COMPREPLY[*]}"' sh "$comp" "$@"
}
t_check "completion: commands" '[ "$(complete_words p11noise tu)" = tunnel ]'
t_check "completion: listen --b -> --bind" '[ "$(complete_words p11noise listen --b)" = --bind ]'
t_check "completion: tunnel client's options, not the server's" \
    'complete_words p11noise tunnel client --m | grep -qx -- --mode &&
     [ -z "$(complete_words p11noise tunnel server --m)" ]'
t_check "completion: --pattern values" '[ "$(complete_words p11noise connect --pattern X)" = XK ]'

# Exit statuses: tools/cli.h, the man page, the unit.
for class in OK INTERNAL USAGE TOKEN PEER NETWORK; do
    n=$(sed -n "s/^#define CLI_EXIT_$class \([0-9]*\).*/\1/p" "$srcdir/tools/cli.h")
    sed -n '/^\.Sh EXIT STATUS/,/^\.Sh EXAMPLES/p' "$man1" | grep -qx "\.It $n" ||
        t_fail "EXIT STATUS lacks $class ($n)"
done
usage=$(sed -n 's/^#define CLI_EXIT_USAGE \([0-9]*\).*/\1/p' "$srcdir/tools/cli.h")
token=$(sed -n 's/^#define CLI_EXIT_TOKEN \([0-9]*\).*/\1/p' "$srcdir/tools/cli.h")
unit="$srcdir/doc/systemd/p11noise-tunnel@.service"
t_check "the unit never restarts on usage ($usage) or token ($token) failures" \
    'grep -qx "RestartPreventExitStatus=$usage $token" "$unit"'

if command -v systemd-analyze > /dev/null 2>&1; then
    mkdir -p "$tmp/units"
    sed "s|/usr/local/bin/p11noise|$(cd "$builddir" && pwd)/tools/p11noise|" "$unit" \
        > "$tmp/units/p11noise-tunnel@test.service"
    cp "$srcdir/doc/systemd/p11noise-tunnel@.socket" "$tmp/units/p11noise-tunnel@test.socket"
    t_check "systemd-analyze verify: the service and socket units" \
        '(cd "$tmp/units" && timeout 60 systemd-analyze verify --man=no \
            ./p11noise-tunnel@test.service ./p11noise-tunnel@test.socket) > "$tmp/verify" 2>&1'
    [ -s "$tmp/verify" ] && cat "$tmp/verify"
else
    echo "systemd-analyze not installed: the units are not verified"
fi

t_done
