#!/bin/sh
# Cross-check: vectors written by an independent Noise implementation
# (tests/xcheck/noise_ref.py, from the spec text alone) must all pass in
# `p11noise vectors`, in both roles, with none skipped. Needs only the
# committed JSON files; tests/xcheck/gen_vectors.py regenerates them.
builddir="${P11N_BUILDDIR:-.}"
srcdir="${P11N_SRCDIR:-.}"
tool="$builddir/tools/p11noise"
status=0
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT

# run FILE WANT: the tool's last line on FILE must be WANT.
run() {
    out=$("$tool" vectors "$1")
    rc=$?
    last=$(printf '%s\n' "$out" | tail -n 1)
    if [ "$last" != "$2" ]; then
        printf '%s\n' "$out" | grep '^FAIL' | head -20
        echo "FAIL: p11noise vectors $(basename "$1"): exit $rc, '$last', want '$2'"
        status=1
        return 1
    fi
    echo "ok: $(basename "$1"): $last"
}

for f in secp256k1.json curve448.json; do
    path="$srcdir/tests/vectors/$f"
    n=$(grep -c '"protocol_name"' "$path")
    if [ "$n" -lt 50 ]; then
        echo "FAIL: $f holds only $n vectors"
        status=1
        continue
    fi
    run "$path" "$n passed, 0 failed, 0 skipped"
done

# The files are checked, not merely parsed: a changed handshake hash and a
# changed transport ciphertext must each fail exactly one vector.
path="$srcdir/tests/vectors/secp256k1.json"
n=$(grep -c '"protocol_name"' "$path")
awk '!done && /"handshake_hash": "/ {
        i = index($0, "\"handshake_hash\": \"") + 19
        c = substr($0, i, 1)
        $0 = substr($0, 1, i - 1) (c == "0" ? "1" : "0") substr($0, i + 1)
        done = 1
    } { print }' "$path" > "$tmp"
run "$tmp" "$((n - 1)) passed, 1 failed, 0 skipped" >/dev/null &&
    echo "ok: a changed handshake hash fails its vector"
# the last ciphertext of the first vector is a transport message
awk '/"protocol_name"/ { v++ }
    v == 1 && /"ciphertext": "/ { last = NR }
    { line[NR] = $0 }
    END {
        for (i = 1; i <= NR; i++) {
            s = line[i]
            if (i == last) {
                j = index(s, "\"ciphertext\": \"") + 15
                c = substr(s, j, 1)
                s = substr(s, 1, j - 1) (c == "0" ? "1" : "0") substr(s, j + 1)
            }
            print s
        }
    }' "$path" > "$tmp"
run "$tmp" "$((n - 1)) passed, 1 failed, 0 skipped" >/dev/null &&
    echo "ok: a changed transport ciphertext fails its vector"
exit $status
