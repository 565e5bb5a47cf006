#!/bin/sh
# The p11noise demo. Installs missing Debian packages (as root), builds, and
# runs the main job. Safe to run again.
set -eu
cd "$(dirname "$0")"
. tests/deps.sh
p11n_install_deps
p11n_build
P=build/tools/p11noise
echo "== BOLT #8 and Noise vector self-check"
$P vectors tests/vectors/bolt8.json
$P vectors tests/vectors/snow.txt
