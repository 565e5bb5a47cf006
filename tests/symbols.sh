#!/bin/sh
# Fails if the shared library exports any symbol not starting with p11n_.
lib="${P11N_BUILDDIR:-.}/lib/.libs/libp11noise.so"
[ -f "$lib" ] || { echo "missing $lib"; exit 1; }
bad=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | grep -v '^p11n_' || true)
count=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/' | grep -c ' p11n_' || true)
if [ -n "$bad" ]; then
    echo "FAIL: libp11noise exports symbols outside the p11n_ prefix:"
    echo "$bad"
    exit 1
fi
if [ "$count" -lt 1 ]; then
    echo "FAIL: libp11noise exports no p11n_ symbols"
    exit 1
fi
echo "symbols: $count exported, all p11n_"
