#!/bin/sh
# Build the libFuzzer harnesses with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer, in a build directory of their own.
#
#   tests/fuzz/build.sh [BUILDDIR [NAME...]]  (default: ./build-fuzz, all)
#   BUILDDIR/fuzz_socks5 -max_total_time=300 BUILDDIR/corpus/socks5
#   tests/fuzz/campaign.sh BUILDDIR SECONDS   (every harness; README.md)
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
[ $# -gt 0 ] && shift
CC=${CC:-clang}
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"

mkdir -p "$builddir"
builddir=$(cd "$builddir" && pwd)
cd "$builddir"

if [ ! -f Makefile ]; then
    "$srcdir/configure" -q CC="$CC" \
        CFLAGS="-g -O1 -fsanitize=fuzzer-no-link $SAN" LDFLAGS="$SAN"
fi
make -s V=0 lib/libp11noise_core.la >/dev/null

# The dependency flags exactly as the build uses them.
make_var() {
    printf 'print-var:\n\t@echo $(%s)\n' "$1" | make -s --no-print-directory -f Makefile -f - print-var
}
deps=$(make_var DEPS_LIBS)
dep_cflags="$(make_var CRYPTO_CFLAGS) $(make_var SECP256K1_CFLAGS) $(make_var P11KIT_CFLAGS)"

# What a harness needs besides the library: fuzz_vectors links the tool's
# reader as it is (and its option parser), which reads JSON with jansson.
extras() {
    case $1 in
    vectors)
        echo "-I$srcdir/tools $(make_var JANSSON_CFLAGS) $srcdir/tools/cmd_vectors.c" \
            "$srcdir/tools/cli_args.c $(make_var JANSSON_LIBS)" ;;
    esac
}

if [ $# -eq 0 ]; then
    set -- $(cd "$srcdir/tests/fuzz" && ls fuzz_*.c | sed 's/^fuzz_//; s/\.c$//')
fi
failed=
for name in "$@"; do
    if ! "$CC" -g -O1 -fsanitize=fuzzer $SAN \
        -I"$builddir" -I"$srcdir/lib" -I"$srcdir/socks" -I"$srcdir/pkcs11" -DP11N_BUILDING \
        $dep_cflags -o "fuzz_$name" "$srcdir/tests/fuzz/fuzz_$name.c" $(extras "$name") \
        lib/.libs/libp11noise_core.a $deps
    then
        failed="$failed $name"
        continue
    fi
    mkdir -p "corpus/$name"
    if [ -d "$srcdir/tests/fuzz/corpus/$name" ]; then
        cp "$srcdir/tests/fuzz/corpus/$name"/* "corpus/$name"/
    else
        echo "warning: no seed corpus tests/fuzz/corpus/$name" >&2
    fi
    echo "built $builddir/fuzz_$name (seeds in $builddir/corpus/$name)"
done
if [ -n "$failed" ]; then
    echo "failed to build:$failed" >&2
    exit 1
fi
