#!/bin/sh
# scripts/setup.sh — installs the Debian packages npt needs on a bare machine.
#   --check-build  exit 0 if everything needed to build is present
#   --check-test   exit 0 if the test-only references (python3-torch, numpy, h5py,
#                  sentencepiece, protobuf) are present
# Without flags: installs what is missing (needs root; uses sudo when not root).
set -eu

BUILD_PKGS="build-essential pkg-config libopenblas-openmp-dev libhdf5-dev libcjson-dev"
TEST_PKGS="python3-torch python3-numpy python3-h5py hdf5-tools python3-sentencepiece python3-protobuf"

have_build() {
    [ -f /usr/include/cjson/cJSON.h ] &&
    [ -f /usr/include/hdf5/serial/hdf5.h ] &&
    [ -d /usr/lib/x86_64-linux-gnu/openblas-openmp ] &&
    command -v cc >/dev/null 2>&1
}
have_test() {
    /usr/bin/python3 -c "import torch, numpy, h5py, sentencepiece, google.protobuf" >/dev/null 2>&1 && command -v h5dump >/dev/null 2>&1
}

case "${1:-}" in
    --check-build) have_build; exit $? ;;
    --check-test) have_test; exit $? ;;
esac

if have_build && have_test; then
    echo "setup: all packages present"
    exit 0
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
echo "setup: installing Debian packages: $BUILD_PKGS $TEST_PKGS"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $BUILD_PKGS $TEST_PKGS >/dev/null
# The Makefile links the OpenMP build of OpenBLAS by path (openblas-openmp/), so BLAS and
# npt's OpenMP loops share one thread pool whatever the system alternative points to.
have_build && have_test && echo "setup: done"
