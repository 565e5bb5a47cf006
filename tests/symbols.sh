#!/bin/sh
# The shared library's exports and the public header must name the same
# functions, both ways: an export not declared with P11N_API means symbol
# hiding was lost (or an internal function leaked); a declaration without
# an export is a function an application can compile against but not link.
# Everything exported must also carry the p11n_ prefix.
lib="${P11N_BUILDDIR:-.}/lib/.libs/libp11noise.so"
hdr="${P11N_SRCDIR:-.}/lib/p11noise.h"
[ -f "$lib" ] || { echo "missing $lib"; exit 1; }
[ -f "$hdr" ] || { echo "missing $hdr"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | sort -u > "$tmp/exported"
# A declaration: P11N_API, its return type and attributes, then the name
# and its opening parenthesis, possibly across lines.
grep -v "^[[:space:]]*#" "$hdr" | perl -0ne 'while (/\bP11N_API\b[^;{()]*?\b(\w+)\s*\(/g) { print "$1\n" }' |
    sort -u > "$tmp/declared"

fail=0
bad=$(grep -v '^p11n_' "$tmp/exported" || true)
if [ -n "$bad" ]; then
    echo "FAIL: libp11noise exports symbols outside the p11n_ prefix:"
    echo "$bad"
    fail=1
fi
undeclared=$(comm -23 "$tmp/exported" "$tmp/declared")
if [ -n "$undeclared" ]; then
    echo "FAIL: exported but not declared with P11N_API in p11noise.h:"
    echo "$undeclared"
    fail=1
fi
missing=$(comm -13 "$tmp/exported" "$tmp/declared")
if [ -n "$missing" ]; then
    echo "FAIL: declared with P11N_API in p11noise.h but not exported:"
    echo "$missing"
    fail=1
fi
count=$(wc -l < "$tmp/exported")
if [ "$count" -lt 1 ]; then
    echo "FAIL: libp11noise exports no symbols"
    fail=1
fi
[ "$fail" -eq 0 ] || exit 1
echo "symbols: $count exported, all p11n_, each declared in p11noise.h and each declaration exported"
