#!/bin/sh
# Run `p11noise bench` and record it: the table goes into doc/benchmarks.md
# (between the bench:begin/bench:end markers; the analysis around them is
# kept) and the throughput plot into doc/throughput.png.
#
#   doc/bench-plot.sh [BENCH OPTIONS]     e.g. --quick, --rows throughput
#
# On a fresh Debian 12 machine, as root: installs the missing build
# packages and gnuplot-nox (apt-get install gnuplot-nox), builds without
# sanitizers in ./build-bench, runs the benchmark. Safe to run again.
set -eu
cd "$(dirname "$0")/.."
. tests/deps.sh
P11N_PKGS="$P11N_PKGS gnuplot-nox"
p11n_install_deps

# P11N_BENCH_BUILD names an existing build directory (configured without
# sanitizers) to use instead of ./build-bench.
build=${P11N_BENCH_BUILD:-build-bench}
if [ ! -f "$build/Makefile" ]; then
    [ -x configure ] && [ configure -nt configure.ac ] || autoreconf -fi
    mkdir -p "$build"
    (cd "$build" && "$OLDPWD/configure" -q)
fi
make -C "$build" -j"$(nproc)" tools/p11noise tests/faultmod.la

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$build/tools/p11noise" bench --plot-data "$tmp/plot.dat" "$@" | tee "$tmp/table.md"

# One line per system: throughput against message size.
grep -v '^#' "$tmp/plot.dat" | sed 's/^"\([^"]*\)".*/\1/' | sort -u > "$tmp/systems"
i=0
plot=""
while IFS= read -r s; do
    i=$((i + 1))
    grep -F "\"$s\"" "$tmp/plot.dat" | sed 's/^"[^"]*" //' > "$tmp/s$i.dat"
    plot="$plot${plot:+, }'$tmp/s$i.dat' using 1:2 with linespoints title '$s'"
done < "$tmp/systems"
gnuplot <<EOF
set terminal pngcairo size 900,560 noenhanced
set output "doc/throughput.png"
set title "Throughput against message size, one connection over 127.0.0.1 (median)"
set xlabel "message size (bytes)"
set ylabel "MB/s of application payload"
set logscale x 2
set logscale y 10
set key top left
set grid
plot $plot
EOF

# Replace the recorded table, keep everything else.
awk -v t="$tmp/table.md" '
    /<!-- bench:begin -->/ { print; while ((getline l < t) > 0) print l; skip = 1; next }
    /<!-- bench:end -->/ { skip = 0 }
    !skip { print }' doc/benchmarks.md > "$tmp/benchmarks.md"
cp "$tmp/benchmarks.md" doc/benchmarks.md
echo "bench-plot.sh: wrote doc/benchmarks.md and doc/throughput.png"
