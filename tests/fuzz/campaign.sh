#!/bin/sh
# Run the libFuzzer harnesses built by tests/fuzz/build.sh, each for a
# given time on its seed corpus, a few at a time, and print one line per
# harness for the record in tests/fuzz/README.md.
#
#   tests/fuzz/campaign.sh [-j JOBS] BUILDDIR SECONDS [NAME...]
#
# JOBS (default 2) harnesses run at once, each under `nice -n 10` with one
# libFuzzer process. New inputs go to BUILDDIR/corpus/NAME, never to the
# source tree; logs and any crash, leak or timeout input to
# BUILDDIR/campaign/NAME/. A harness that finds something ends early and
# its line says FOUND with the input's path: minimise it with
#   BUILDDIR/fuzz_NAME -minimize_crash=1 -runs=100000 INPUT
# and add it to tests/fuzz/corpus/NAME once the fix is in, so that
# `make check` replays it.
#
# Output, one line per harness, in the order they finish:
#   NAME  DATE(UTC)  SECONDS  EXECUTIONS  cov: N  ft: N  corpus: N  OK|FOUND ...
set -eu

jobs=2
if [ "${1:-}" = "-j" ]; then
    jobs=$2
    shift 2
fi
[ $# -ge 2 ] || { echo "usage: $0 [-j JOBS] BUILDDIR SECONDS [NAME...]" >&2; exit 2; }
builddir=$(cd "$1" && pwd)
seconds=$2
shift 2
if [ $# -eq 0 ]; then
    set -- $(cd "$builddir" && ls fuzz_* | sed 's/^fuzz_//')
fi

# One harness: run it, then summarise its log.
run_one() {
    name=$1
    dir="$builddir/campaign/$name"
    mkdir -p "$dir" "$builddir/corpus/$name"
    start=$(date -u +%Y-%m-%dT%H:%MZ)
    status=OK
    nice -n 10 "$builddir/fuzz_$name" -max_total_time="$seconds" -print_final_stats=1 \
        -artifact_prefix="$dir/" -timeout=25 -rss_limit_mb=2048 \
        "$builddir/corpus/$name" > "$dir/log" 2>&1 || status=FOUND
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$dir/log" | tail -1)
    cov=$(printf '%s\n' "$last" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
    ft=$(printf '%s\n' "$last" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
    corpus=$(ls "$builddir/corpus/$name" | wc -l)
    if [ "$status" = FOUND ]; then
        status="FOUND $(ls "$dir" | grep -v '^log$' | sed "s|^|$dir/|" | tr '\n' ' ')"
    fi
    printf '%-14s %s %ss %s execs  cov: %s  ft: %s  corpus: %s  %s\n' "$name" "$start" \
        "$seconds" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$corpus" "$status"
}

# A simple pool: start up to $jobs runs, wait for the oldest, go on.
pids=
for name in "$@"; do
    [ -x "$builddir/fuzz_$name" ] || { echo "$name: not built (tests/fuzz/build.sh)" >&2; exit 1; }
    run_one "$name" &
    pids="$pids $!"
    set -- $pids
    if [ $# -ge "$jobs" ]; then
        wait "$1" || true
        shift
        pids="$*"
    fi
done
for pid in $pids; do
    wait "$pid" || true
done
