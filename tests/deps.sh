#!/bin/sh
# Installs the Debian packages p11noise needs to build, test and run its demo,
# only those missing. Sourced by ../test.sh and ../demo.sh; needs root.
P11N_PKGS="build-essential autoconf automake libtool pkg-config
  libssl-dev libsecp256k1-dev libp11-kit-dev p11-kit softhsm2 opensc
  libc-ares-dev libcunit1-dev libjansson-dev microsocks dante-server iproute2 curl
  python3-cryptography valgrind libsystemd-dev mandoc"

p11n_install_deps() {
    missing=""
    for p in $P11N_PKGS; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing Debian packages:$missing (run as root to install them)" >&2
        exit 1
    fi
    echo "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing
}

# p11n_build DIR [CONFIGURE-OPTION...]: configure (again only when the
# options change) and build out of tree in DIR.
p11n_build() {
    dir=$1
    shift
    [ -x configure ] && [ configure -nt configure.ac ] || autoreconf -fi
    mkdir -p "$dir"
    stamp="$dir/.configured-with"
    if [ ! -f "$dir/Makefile" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$*" ]; then
        (cd "$dir" && ../configure -q "$@") && echo "$*" > "$stamp"
    fi
    make -C "$dir" -j"$(nproc)"
}
