#!/bin/sh
# scripts/setup.sh — installs the Debian packages npt needs on a bare machine.
#   --check-build  exit 0 if everything needed to build is present
#   --check-test   exit 0 if the test-only references (python3-torch, numpy, h5py,
#                  sentencepiece, protobuf) and the demo corpus are present
#   --check-demo   exit 0 if `make demo` has what it needs (build + demo corpus)
#   --demo         install only what `make demo` needs (no test references)
# Without flags: installs what is missing (needs root; uses sudo when not root).
set -eu

# libopenmpi-dev + openmpi-bin: data-parallel `mpirun -np N npt train` (train/dist.c)
BUILD_PKGS="build-essential pkg-config libopenblas-openmp-dev libhdf5-dev libcjson-dev libopenmpi-dev openmpi-bin"
# libopenblas0-pthread: PyTorch's default BLAS on Debian, for the bench's "1+2b" setting
# (1 intra-op thread over a 2-thread BLAS); npt itself always links the OpenMP build.
TEST_PKGS="python3-torch python3-numpy python3-h5py hdf5-tools python3-sentencepiece python3-protobuf libopenblas0-pthread"
# The demo's corpus: the King James Bible (bible-kjv-text) and `bible`, which prints it.
DEMO_PKGS="bible-kjv"
PKGS="$BUILD_PKGS $TEST_PKGS $DEMO_PKGS"

have_build() {
    [ -f /usr/include/cjson/cJSON.h ] &&
    [ -f /usr/include/hdf5/serial/hdf5.h ] &&
    [ -d /usr/lib/x86_64-linux-gnu/openblas-openmp ] &&
    [ -f /usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h ] && command -v mpirun >/dev/null 2>&1 &&
    command -v cc >/dev/null 2>&1
}
have_demo() {
    command -v bible >/dev/null 2>&1 && [ -f /usr/lib/bible.data ]
}
have_test() {
    /usr/bin/python3 -c "import torch, numpy, h5py, sentencepiece, google.protobuf" >/dev/null 2>&1 && command -v h5dump >/dev/null 2>&1 &&
    [ -d /usr/lib/x86_64-linux-gnu/openblas-pthread ] && have_demo
}
ready() { have_build && have_test; }

case "${1:-}" in
    --check-build) have_build; exit $? ;;
    --check-test) have_test; exit $? ;;
    --check-demo) have_build && have_demo; exit $? ;;
    --demo) PKGS="$BUILD_PKGS $DEMO_PKGS"; ready() { have_build && have_demo; } ;;
esac

if ready; then
    echo "setup: all packages present"
    exit 0
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
echo "setup: installing Debian packages: $PKGS"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $PKGS >/dev/null
# The Makefile links the OpenMP build of OpenBLAS by path (openblas-openmp/), so BLAS and
# npt's OpenMP loops share one thread pool whatever the system alternative points to.
ready && echo "setup: done"
