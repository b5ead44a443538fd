#!/bin/sh
# scripts/demo.sh — `make demo`: the whole npt story on a bare Debian machine, offline,
# with nothing but Debian packages and this repository (no ../shared):
#   packages -> build -> corpus (the King James Bible, from Debian's bible-kjv) ->
#   `npt init` a byte-level Llama -> `npt train` it from scratch (lm, every weight) ->
#   `npt export` it as an HF directory -> `npt train` safe NPT distillation on it ->
#   `npt eval` base vs NPT -> `npt inspect` + loss plot -> `npt generate` side by side.
# Every artifact goes under one directory (NPT_DEMO_OUT, default demo-out/).
#   NPT_DEMO_QUICK=1  far fewer steps (the test suite's smoke run; the text stays noise)
set -eu
cd "$(dirname "$0")/.."

OUT=${NPT_DEMO_OUT:-demo-out}
NPT=./npt
QUICK=""
EVAL_WINDOWS=64
if [ "${NPT_DEMO_QUICK:-0}" = 1 ]; then
    QUICK="--set train.max_steps=30 --set log.every=10"
    EVAL_WINDOWS=8
fi
PROMPTS="And God said|In the beginning"
T0=$(date +%s)
N=0

step() {
    N=$((N + 1))
    printf '\n==> [%d/9] %s   (%ds elapsed)\n' "$N" "$1" "$(($(date +%s) - T0))"
}

# The demo owns $OUT: a directory it made before (it holds .npt-demo) is replaced, anything
# else is left alone.
if [ -e "$OUT" ] && [ ! -e "$OUT/.npt-demo" ]; then
    echo "demo: $OUT exists and was not made by the demo; remove it or set NPT_DEMO_OUT" >&2
    exit 1
fi
rm -rf "$OUT"
mkdir -p "$OUT/corpus"
touch "$OUT/.npt-demo"
# npt train tokenizes text once into a token cache; keep it with the rest of the demo.
export NPT_CACHE_DIR="$OUT/cache"

step "Debian packages (build tools, OpenBLAS, HDF5, cJSON, the bible-kjv corpus)"
sh scripts/setup.sh --check-demo || sh scripts/setup.sh --demo

step "build ./npt (about half a minute from scratch)"
make -s -j2 npt
echo "built $NPT"

step "corpus: the King James Bible from Debian's bible-kjv-text, one verse a line"
# `bible -f` prints "Ge1:1 In the beginning..." one verse a line; drop the reference.
bible -f gen1:1-rev22:21 | sed 's/^[^ ]* //' > "$OUT/corpus/kjv.txt"
VERSES=$(wc -l < "$OUT/corpus/kjv.txt")
head -n $((VERSES - 1000)) "$OUT/corpus/kjv.txt" > "$OUT/corpus/kjv-train.txt"
tail -n 1000 "$OUT/corpus/kjv.txt" > "$OUT/corpus/kjv-valid.txt"
echo "$VERSES verses: $(wc -c < "$OUT/corpus/kjv-train.txt") bytes to train on, the last 1000 verses ($(wc -c < "$OUT/corpus/kjv-valid.txt") bytes) held out"

step "npt init: a random Llama model (byte-level tokenizer) as an HF directory"
$NPT init --out "$OUT/init" --dim 128 --layers 4 --heads 4 --context 128 --seed 1

step "npt train demo-base: every weight from scratch, next-byte cross-entropy (lm objective)"
$NPT train recipes/demo-base.json --set model="$OUT/init" --set data.train="$OUT/corpus/kjv-train.txt" \
    --set output_dir="$OUT/base-run" $QUICK
$NPT export "$OUT/base-run/final.h5" --out "$OUT/base"

step "npt train demo-npt-safe: safe-mode NPT distillation of the new base, every layer converted"
$NPT train recipes/demo-npt-safe.json --set model="$OUT/base" --set data.train="$OUT/corpus/kjv-train.txt" \
    --set output_dir="$OUT/npt-run" $QUICK

step "npt eval: base vs NPT on the held-out verses"
$NPT eval --model "$OUT/base" --adapters "$OUT/npt-run/final.h5" --data "$OUT/corpus/kjv-valid.txt" \
    --seq-len 128 --windows $EVAL_WINDOWS | tee "$OUT/eval.txt"
$NPT eval --model "$OUT/base" --adapters "$OUT/npt-run/final.h5" --data "$OUT/corpus/kjv-valid.txt" \
    --seq-len 128 --windows $EVAL_WINDOWS --json > "$OUT/eval.json"

step "npt inspect: the NPT checkpoint and its loss plot"
$NPT inspect "$OUT/npt-run/final.h5" --plot > "$OUT/inspect.txt"
sed -n '1,/^plot/p' "$OUT/inspect.txt"
echo "(the whole report, with the tensor table: $OUT/inspect.txt)"

step "npt generate: base and NPT, greedy, side by side"
: > "$OUT/generate.txt"
IFS='|'
for p in $PROMPTS; do
    unset IFS
    base=$($NPT generate --model "$OUT/base" --prompt "$p" --steps 100 2>>"$OUT/generate.log")
    npt=$($NPT generate --model "$OUT/base" --adapters "$OUT/npt-run/final.h5" --prompt "$p" --steps 100 \
        2>>"$OUT/generate.log")
    printf 'prompt "%s"\n  base: %s\n  NPT : %s\n' "$p" "$base" "$npt" | tee -a "$OUT/generate.txt"
done
unset IFS

# Distillation fidelity (mean NMSE over the compared layers) of the adapters as initialised
# (step 1 is evaluated before its update) and of the last 10 steps, from metrics.jsonl.
FID=$(awk -F'"fidelity":' 'NF > 1 { split($2, v, ","); f[++n] = v[1] }
    END { for (i = n - 9 < 1 ? 1 : n - 9; i <= n; i++) { s += f[i]; k++ }
          printf "%.6g %.6g %.2f", f[1], s / k, f[1] / (s / k) }' "$OUT/npt-run/metrics.jsonl")
set -- $FID
json_num() { sed -n "s/.*\"$1\": *\([^,}]*\).*/\1/p" "$OUT/eval.json" | awk '{ printf "%.4g", $1 }'; }
cat > "$OUT/summary.txt" <<EOF
demo done in $(($(date +%s) - T0)) s; everything is in $OUT/
  corpus        $OUT/corpus/kjv-train.txt, kjv-valid.txt (held out)
  random init   $OUT/init/                (npt init: config.json, model.safetensors, tokenizer.json)
  base run      $OUT/base-run/            (final.h5, metrics.jsonl, loss.svg)
  base model    $OUT/base/                (npt export: config.json, model.safetensors, tokenizer.json)
  NPT run       $OUT/npt-run/             (final.h5 adapters, metrics.jsonl, loss.svg)
  loss plot     $OUT/npt-run/final.h5.loss.svg
  eval          $OUT/eval.txt, $OUT/eval.json
  inspect       $OUT/inspect.txt
  token cache   $OUT/cache/               (the corpus tokenized once by npt train)
  generations   $OUT/generate.txt
NPT vs its base: distillation NMSE $1 at step 1 (adapters as initialised) -> $2 (mean of the last 10 steps), $3x closer
held-out perplexity per byte: base $(json_num ppl_base), NPT $(json_num ppl_npt); NMSE vs base (held out) $(json_num nmse_e2e_mean)
EOF
printf '\n'
cat "$OUT/summary.txt"
