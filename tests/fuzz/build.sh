#!/bin/sh
# Build the libFuzzer harnesses with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer, in a build directory of their own.
#
#   tests/fuzz/build.sh [BUILDDIR]          (default: ./build-fuzz)
#   BUILDDIR/fuzz_socks5 -max_total_time=300 BUILDDIR/corpus/socks5
#
# The library is configured with CC=clang and -fsanitize=fuzzer-no-link
# (coverage instrumentation without libFuzzer's main), then each
# tests/fuzz/fuzz_*.c is linked with -fsanitize=fuzzer. The seed corpora
# are copied to BUILDDIR/corpus/NAME so that new inputs found while fuzzing
# do not land in the source tree; copy the interesting ones back by hand
# (libFuzzer's -merge=1 keeps only inputs that add coverage). A crash
# input can be replayed in the ordinary build: tests/fuzz/fuzz_NAME FILE.
#
# Needs clang and its sanitizer runtimes (Debian: clang, libclang-rt-dev).
set -eu

srcdir=$(cd "$(dirname "$0")/../.." && pwd)
builddir=${1:-build-fuzz}
CC=${CC:-clang}
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"

mkdir -p "$builddir"
builddir=$(cd "$builddir" && pwd)
cd "$builddir"

if [ ! -f Makefile ]; then
    "$srcdir/configure" -q CC="$CC" \
        CFLAGS="-g -O1 -fsanitize=fuzzer-no-link $SAN" LDFLAGS="$SAN"
fi
make -s lib/libp11noise_core.la

# The dependency flags exactly as the build uses them.
deps=$(printf 'print-deps:\n\t@echo $(DEPS_LIBS)\n' | make -s -f Makefile -f - print-deps)

for harness in "$srcdir"/tests/fuzz/fuzz_*.c; do
    name=$(basename "$harness" .c)
    "$CC" -g -O1 -fsanitize=fuzzer $SAN \
        -I"$builddir" -I"$srcdir/lib" -I"$srcdir/socks" -I"$srcdir/pkcs11" -DP11N_BUILDING \
        -o "$name" "$harness" lib/.libs/libp11noise_core.a $deps
    corpus=corpus/${name#fuzz_}
    mkdir -p "$corpus"
    cp "$srcdir/tests/fuzz/corpus/${name#fuzz_}"/* "$corpus"/
    echo "built $builddir/$name (seeds in $builddir/$corpus)"
done
