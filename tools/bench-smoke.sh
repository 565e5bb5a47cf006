#!/bin/sh
# Smoke test of `p11noise bench`: a quick run of the in-memory rows exits 0
# and prints the result table. No figure is checked: timings are never
# asserted on.
set -e
bin="${P11N_BUILDDIR:-.}/tools/p11noise"
out=$("$bin" bench --quick --rows aead)
printf '%s\n' "$out"
printf '%s\n' "$out" | grep -q '^| figure | p11noise | reference | ratio | goal | met? |$'
printf '%s\n' "$out" | grep -q '^| transport seal in memory, one core, 65535 B | [0-9]'
