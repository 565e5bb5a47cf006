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
# The capacity rows run both servers (forked, pinned) and both clients:
# the row is printed, with figures or the reason they are missing.
cap=$("$bin" bench --quick --rows capacity)
printf '%s\n' "$cap"
printf '%s\n' "$cap" | grep -q '^| server capacity KK, software keys: .* | [0-9n]'
# --json: one JSON object per line, every stable key present (those not
# measured in this run with "value": null and a note).
json=$("$bin" bench --quick --json --rows aead)
printf '%s\n' "$json"
for key in kk_soft_vs_floor xk_soft_vs_floor kk_soft_mem_vs_floor xk_soft_mem_vs_floor \
    kk_soft_vs_tls_pinned xk_soft_vs_tls_pinned kk_capacity_vs_tls kk_token_derives_per_hs \
    xk_token_derives_per_hs kk_token_vs_derive_floor xk_token_vs_derive_floor \
    kk_token_latency_50ms xk_token_latency_50ms tput_16384_vs_tls tput_65535_vs_tls \
    tput_65535_loop_vs_sansio conn10k_heap_kib conn10k_rtt_p99_vs_single; do
    printf '%s\n' "$json" | grep -q "^{\"key\": \"$key\", .*}\$"
done
test "$(printf '%s\n' "$json" | grep -vc '^{"key": ')" = 0
