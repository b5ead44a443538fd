#!/bin/sh
# tests/run_tests.sh — runs every C test program in $BUILD/tests and every Python test
# in tests/py, counts their PASS/FAIL lines and ends with "N passed, N failed".
#   --asan: only the error-path tests (names containing "errors"), built with ASan.
set -u
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
NPT=${NPT:-./npt}
export NPT BUILD PYTHON
filter=""
[ "${1:-}" = "--asan" ] && filter="errors"
# ASan's leak checker is noisy on OpenMP/OpenBLAS thread pools; errors still abort.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=0}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
# as ./npt does by default (cli/main.c): sleeping, not spinning, OpenMP waiters
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"

passed=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

run_one() {
    name=$1
    shift
    start=$(date +%s)
    "$@" >"$log" 2>&1
    rc=$?
    p=$(grep -c '^PASS' "$log")
    f=$(grep -c '^FAIL' "$log")
    grep -E '^(FAIL|SKIP|NOTE)' "$log" | sed "s|^|  [$name] |"
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "  [$name] FAIL: exited with status $rc without reporting a failure; last lines:"
        tail -5 "$log" | sed 's/^/      /'
        f=1
    fi
    if [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then
        echo "  [$name] FAIL: ran no check"
        f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    printf '%-28s %4d passed %4d failed  (%ds)\n' "$name" "$p" "$f" $(($(date +%s) - start))
}

for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    case "$name" in *"$filter"*) ;; *) continue ;; esac
    run_one "$name" "$t"
done
for t in tests/py/test_*.py; do
    [ -f "$t" ] || continue
    name=$(basename "$t" .py)
    case "$name" in *"$filter"*) ;; *) continue ;; esac
    run_one "$name" "$PYTHON" "$t"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
