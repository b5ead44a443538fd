#!/bin/sh
# tests/bench/bench_data.sh — the data pipeline's figures (docs/data.md): peak RSS and
# time of drawing every training window of a 10 MB and of a 1 GB uint16 token corpus
# once, in shuffled order (memory must not grow with the corpus), and the throughput of
# `npt data prepare` on TinyStories text on 1 and 2 threads. Run by `make bench`
# (tests/bench/run_bench.sh) or alone. Env: BUILD, NPT, PYTHON (with numpy).
set -u
BUILD=${BUILD:-build}
NPT=${NPT:-./npt}
PYTHON=${PYTHON:-/usr/bin/python3}
TEST=$BUILD/tests/test_dataset
DIR=$BUILD/bench-data
TOK=../shared/models/stories260K/tok512.bin
TEXT=../shared/data/tinystories-train-head.txt
mkdir -p "$DIR"
trap 'rm -rf "$DIR"' EXIT

if [ ! -x "$TEST" ] || [ ! -x "$NPT" ]; then
    echo "bench_data: build $TEST and $NPT first (make)" >&2
    exit 1
fi
# synthetic corpora: uniform ids 3..499 (tok512's vocabulary), written in 32 MB pieces
"$PYTHON" - "$DIR" <<'PY'
import sys, numpy as np
rng = np.random.default_rng(0)
for name, size in [("10mb.u16", 10 << 20), ("1gb.u16", 1 << 30)]:
    with open(f"{sys.argv[1]}/{name}", "wb") as f:
        left = size // 2
        while left:
            n = min(left, 16 << 20)
            rng.integers(3, 500, n, dtype=np.uint16).tofile(f)
            left -= n
PY
echo "data pipeline: every window of seq_len 256 drawn once in shuffled order (one process each)"
printf '%-22s %12s %12s %10s\n' "corpus" "windows" "peak RSS MB" "seconds"
for c in 10mb 1gb; do
    line=$("$TEST" --rss "$DIR/$c.u16" 256)
    printf '%-22s %12s %12s %10s\n' "$c uint16 tokens" "$(echo "$line" | sed -n 's/.*windows=\([0-9]*\).*/\1/p')" \
        "$(echo "$line" | sed -n 's/.*rss_mb=\([0-9.]*\).*/\1/p')" "$(echo "$line" | sed -n 's/.*seconds=\([0-9.]*\).*/\1/p')"
done
rm -f "$DIR"/*.u16
# ~52 MB of text: the TinyStories head 25 times
i=0
while [ $i -lt 25 ]; do cat "$TEXT"; i=$((i + 1)); done >"$DIR/stories.txt"
echo
echo "npt data prepare, $(du -m "$DIR/stories.txt" | cut -f1) MB of TinyStories text, llama2.c tokenizer (tok512)"
printf '%-10s %10s %14s %10s\n' "threads" "MB/s" "M tokens/s" "seconds"
for t in 1 2; do
    j=$("$NPT" data prepare "$DIR/stories.txt" -o "$DIR/stories.u16" --force --tokenizer "$TOK" --threads $t --quiet --json)
    printf '%-10s %10s %14s %10s\n' "$t" "$(echo "$j" | sed -n 's/.*"mb_per_s":\([0-9.]*\).*/\1/p')" \
        "$(echo "$j" | sed -n 's/.*"tokens_per_s":\([0-9.]*\).*/\1/p' | awk '{printf "%.2f", $1 / 1e6}')" \
        "$(echo "$j" | sed -n 's/.*"seconds":\([0-9.]*\).*/\1/p')"
done
