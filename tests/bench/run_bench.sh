#!/bin/sh
# tests/bench/run_bench.sh — `make bench`: in one run, the sgemm peak, the NPT
# distillation step of npt (tests/bench/bench_step.c) and of PyTorch
# (tests/bench/torch_step.py) on stories260K and on random stories15M- and
# stories110M-shape models,
# and generation speed; prints one table with the ratios. Every measurement runs in
# its own process so that peak RSS figures do not mix. docs/bench.md explains the
# figures; tests/bench/bench_data.sh adds the data pipeline's (RSS, prepare MB/s).
# Env: PYTHON (with torch), BUILD (build dir), NPT (the npt binary).
set -u
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
NPT=${NPT:-./npt}
BENCH=$BUILD/tests/bench/bench_step
CENSUS=$BUILD/tests/bench/sgemm_census.so
M260=../shared/models/stories260K/stories260K.bin
THREADS="1 2"
# warm-up steps, max timed steps, seconds after which timing stops (>= 1 timed step)
SMALL="1 20 5"
LARGE="1 8 10"
HUGE="1 2 20"   # stories110M shape: ~10 s a step
ROUNDS=${ROUNDS:-3} # rounds of the stories260K and 15M-shape steps (110M: one)

# PyTorch links libblas.so.3, which the system alternative points at one OpenBLAS build.
# Its runs name the build (LD_LIBRARY_PATH) so that the alternative does not decide: the
# OpenMP build, which follows torch.set_num_threads (npt's own BLAS), and the pthreads
# build, Debian's default for python3-torch, whose BLAS threads are separate from
# PyTorch's intra-op threads: "1+2b" is 1 intra-op thread over a 2-thread BLAS.
BLAS_OMP=/usr/lib/x86_64-linux-gnu/openblas-openmp
BLAS_PTHREAD=/usr/lib/x86_64-linux-gnu/openblas-pthread

res=$(mktemp)
err=$(mktemp)
trap 'rm -f "$res" "$err"' EXIT

for f in "$BENCH" "$CENSUS"; do
    if [ ! -f "$f" ]; then
        echo "bench: $f is missing; build it with 'make $f'" >&2
        exit 1
    fi
done
for blas in "$BLAS_OMP" "$BLAS_PTHREAD"; do
    if [ ! -d "$blas" ]; then # LD_LIBRARY_PATH would name nothing: the system's BLAS would run
        echo "bench: $blas is missing (an OpenBLAS build the PyTorch runs use); run scripts/setup.sh" >&2
        exit 1
    fi
done
if [ ! -f "$M260" ]; then
    echo "bench: $M260 is missing (the shared test models, see SPEC section 10)" >&2
    exit 1
fi

# measure CONFIG IMPL THREADS COMMAND...: runs one measurement, keeps its key=value line
# with THREADS as its thread label ("1+2b": OMP_NUM_THREADS=1, the command's own env
# sets the BLAS threads)
measure() {
    cfg=$1 impl=$2 thr=$3
    shift 3
    printf '  %-22s %-6s %s thread(s) ... ' "$cfg" "$impl" "$thr" >&2
    line=$(OMP_NUM_THREADS=${thr%%+*} "$@" 2>"$err" | grep '^kind=' | tail -1)
    if [ -n "$line" ]; then
        echo "cfg=$cfg impl=$impl $line" | sed "s/ threads=[^ ]*/ threads=$thr/" >>"$res"
        echo "$line" | tr ' ' '\n' | grep -E '^(ms|tok_s|gflops)=' | head -1 >&2
    else
        echo "failed: $(tail -1 "$err")" >&2
        echo "cfg=$cfg impl=$impl threads=$thr failed=1" >>"$res"
    fi
}

start=$(date +%s)
load=$(cut -d' ' -f1 /proc/loadavg)
echo "npt benchmark ($(nproc) cores, load average $load; each line below is one process)" >&2
# the sgemm rates, at the start and again at the end: the peak is the best of both
bench_sgemm() {
    for t in $THREADS; do
        for shape in "1024 1024 1024" "2048 288 288" "2048 768 288" "2048 288 768" "2048 172 64"; do
            # shellcheck disable=SC2086
            measure sgemm openblas "$t" "$BENCH" sgemm $shape 5
        done
    done
}
bench_sgemm
# bench_train NAME MODEL "WARMUP STEPS BUDGET" ROUNDS [cached]: the step of npt and of
# PyTorch, both modes, every thread count, ROUNDS times with npt and PyTorch
# interleaved. The machine's speed drifts by 10% and more within minutes (other
# tenants); each side's best round is its figure, so a slow spell hits neither side
# alone. cached: also npt's step of later epochs with the teacher cache (2 threads).
bench_train() {
    for round in $(seq "$4"); do
        for mode in full safe; do
            for t in $THREADS; do
                # shellcheck disable=SC2086
                measure "$1 $mode" npt "$t" "$BENCH" train "$2" $mode $3
                # shellcheck disable=SC2086
                measure "$1 $mode" torch "$t" env LD_LIBRARY_PATH="$BLAS_OMP" \
                    "$PYTHON" tests/bench/torch_step.py "$2" $mode "$t" $3
            done
            # shellcheck disable=SC2086
            measure "$1 $mode" torch 1+2b env LD_LIBRARY_PATH="$BLAS_PTHREAD" OPENBLAS_NUM_THREADS=2 \
                "$PYTHON" tests/bench/torch_step.py "$2" $mode 1 $3
            # shellcheck disable=SC2086
            [ "${5:-}" = cached ] && measure "$1 $mode cached" npt 2 "$BENCH" train "$2" $mode $3 cached
        done
    done
}
bench_train stories260K "$M260" "$SMALL" "$ROUNDS"
bench_train stories15M-shape random15m "$LARGE" "$ROUNDS" cached
bench_train stories110M-shape random110m "$HUGE" 1
# census CONFIG MODEL MODE: one more 2-thread npt step with every cblas_sgemm call timed
# (tests/bench/sgemm_census.c): how much of the step is OpenBLAS, how much the rest
census() {
    printf '  %-22s npt    2 thread(s), sgemm census ... ' "$1" >&2
    # shellcheck disable=SC2086
    out=$(OMP_NUM_THREADS=2 LD_PRELOAD="$CENSUS" "$BENCH" train "$2" "$3" $LARGE 2>"$err")
    if echo "$out" | grep -q '^kind=census '; then
        echo "$out" | sed -n "s/^kind=train /cfg=$1 impl=census_step kind=train /p; s/^kind=census/cfg=$1 impl=census kind=census/p" >>"$res"
        echo "$out" | sed -n 's/.* \(sgemm_core_ms=[^ ]*\).*/\1/p' >&2
    else
        echo "failed: $(tail -1 "$err")" >&2
    fi
}
census "stories15M-shape full" random15m full
census "stories15M-shape safe" random15m safe
bench_sgemm
measure "gen stories15M-shape" npt 1 "$BENCH" generate random15m 256
measure "gen stories15M-shape" npt 2 "$BENCH" generate random15m 256
measure "gen stories110M-shape" npt 2 "$BENCH" generate random110m 256
gen260=$(OMP_NUM_THREADS=1 "$NPT" generate --model "$M260" --steps 256 --temperature 0 --json 2>/dev/null |
         sed -n 's/.*"tokens_per_second":\([0-9.]*\).*/\1/p')

echo
awk -v gen260="$gen260" -v npt="$NPT" -v load="$load" -v secs="$(($(date +%s) - start))" '
function kv(line, key,   n, i, parts, p) {
    n = split(line, parts, " ")
    for (i = 1; i <= n; i++) { split(parts[i], p, "="); if (p[1] == key) return p[2] }
    return ""
}
{
    gsub(/^cfg=/, ""); split($0, a, " impl="); cfg = a[1]; rest = "impl=" a[2]
    impl = kv(rest, "impl"); thr = kv(rest, "threads")
    if (impl == "openblas") {
        shape = kv(rest, "shape"); g = kv(rest, "gflops")
        if (!(shape in seen_shape)) { seen_shape[shape] = 1; shapes[++nshapes] = shape }
        if (g + 0 > gf[shape, thr] + 0) gf[shape, thr] = g
        if (g + 0 > peak[thr]) peak[thr] = g + 0
        next
    }
    if (impl == "census_step") { cen_ms[cfg] = kv(rest, "ms"); cen_cores[cfg] = kv(rest, "cores"); next }
    if (impl == "census") {
        if (kv(rest, "kind") == "census") { cen_sg[cfg] = kv(rest, "sgemm_core_ms"); cen_gf[cfg] = kv(rest, "sgemm_gflop"); cen_calls[cfg] = kv(rest, "calls") }
        else cen_shape[cfg, ++cen_n[cfg]] = rest
        if (!(cfg in seen_cen)) { seen_cen[cfg] = 1; cens[++ncens] = cfg }
        next
    }
    rows[++n] = cfg SUBSEP impl SUBSEP thr
    line[n] = rest
    if (!(cfg in seen_cfg)) { seen_cfg[cfg] = 1; cfgs[++ncfgs] = cfg }
    if (impl == "npt" && kv(rest, "flops") != "") flops[cfg] = kv(rest, "flops")
}
END {
    printf "sgemm (cblas_sgemm x[M,K] W[N,K]^T, OpenBLAS OpenMP build), GFLOP/s, best of 5 at the start and 5 at the end\n"
    printf "%-18s %10s %10s\n", "M x N x K", "1 thread", "2 threads"
    for (i = 1; i <= nshapes; i++) printf "%-18s %10s %10s\n", shapes[i], gf[shapes[i], 1], gf[shapes[i], 2]
    printf "%-18s %10.1f %10.1f\n\n", "peak (max)", peak[1], peak[2]

    printf "training step: NPT distillation, all layers converted, rank 16, batch 8 x 256, float32;\n"
    printf "one row per round (npt and PyTorch interleaved); ratios below use each side'"'"'s best round\n"
    printf "%-24s %-6s %7s %9s %8s %11s %6s %17s\n", "config", "impl", "threads", "ms/step", "tok/s", "peak RSS MB",
           "cores", "% of sgemm floor"
    for (i = 1; i <= n; i++) {
        split(rows[i], r, SUBSEP); cfg = r[1]; impl = r[2]; thr = r[3]; l = line[i]
        if (cfg ~ /^gen /) continue
        if (kv(l, "failed") != "") { printf "%-24s %-6s %7s %9s\n", cfg, impl, thr, "failed"; continue }
        ms = kv(l, "ms"); tok = kv(l, "tok_s") + 0
        cores = (thr ~ /\+2b$/) ? 2 : thr   # "1+2b": a 2-thread BLAS under 1 intra-op thread
        if (kv(l, "cores") + 0 < 0.9 * cores) starved++
        floor_pct = (cfg in flops && peak[cores] > 0) ? sprintf("%.1f", 100 * flops[cfg] / (ms / 1000) / (peak[cores] * 1e9)) : "-"
        printf "%-24s %-6s %7s %9s %8.0f %11s %6s %17s\n", cfg, impl, thr, ms, tok, kv(l, "rss_mb"), kv(l, "cores"), floor_pct
        key = cfg SUBSEP impl
        if (tok > best[key]) { best[key] = tok; best_thr[key] = thr; best_rss[key] = kv(l, "rss_mb") }
        if (impl == "npt" && thr == 2 && tok > npt2[cfg]) npt2[cfg] = tok
    }
    printf "\n"
    for (i = 1; i <= ncfgs; i++) {
        cfg = cfgs[i]
        if (cfg ~ /^gen /) continue
        if (cfg in flops) printf "necessary FLOPs per step (%s): %.1f GFLOP\n", cfg, flops[cfg] / 1e9
    }
    for (i = 1; i <= ncfgs; i++) {
        cfg = cfgs[i]; base = cfg; sub(/ cached$/, "", base); tk = base SUBSEP "torch"
        if (cfg ~ /^gen /) continue
        nk = cfg SUBSEP "npt"
        if (!(nk in best) || !(tk in best)) { printf "ratio npt/torch-best (%s): not measured\n", cfg; continue }
        printf "ratio npt/torch-best (%s): %s with npt on 2 threads, %.2fx npt best (%s thr) vs torch best (%s thr); peak RSS %.2fx\n",
               cfg, (cfg in npt2) ? sprintf("%.2fx", npt2[cfg] / best[tk]) : "-", best[nk] / best[tk], best_thr[nk],
               best_thr[tk], best_rss[nk] / best_rss[tk]
        if (cfg != base)
            printf "  (%s: npt in epochs after the first, teacher states read from its teacher cache; PyTorch recomputes its teacher)\n", cfg
    }
    for (i = 1; i <= ncens; i++) {
        cfg = cens[i]; tk = cfg SUBSEP "torch"
        if (!(cfg in cen_sg) || !(cfg in cen_ms)) { printf "\nsgemm census (%s): failed\n", cfg; continue }
        step = cen_ms[cfg] * cen_cores[cfg]; sg = cen_sg[cfg]
        printf "\nwhere the time goes (%s, npt on 2 threads, one more run with every cblas_sgemm call timed):\n", cfg
        printf "  step %.1f ms x %.2f busy cores = %.0f core-ms: OpenBLAS %.0f core-ms (%.1f%%; %d calls, %.1f GFLOP executed", cen_ms[cfg],
               cen_cores[cfg], step, sg, 100 * sg / step, cen_calls[cfg], cen_gf[cfg]
        if (cfg in flops) printf ", %.1f necessary", flops[cfg] / 1e9
        printf ", %.1f GFLOP/s per core), the rest %.0f core-ms (%.1f%%)\n", cen_gf[cfg] * 1e3 / sg, step - sg, 100 * (step - sg) / step
        # the census run is one more run, as exposed to slow spells as any: its shares,
        # applied to the best npt round, give the bound
        best_ms = (cfg in npt2) ? 8 * 256 / npt2[cfg] * 1e3 : cen_ms[cfg]
        ms0 = best_ms * sg / step; ms1 = (peak[2] > 0) ? cen_gf[cfg] / peak[2] * 1e3 : 0
        printf "  bounds: npt'"'"'s best round (%.0f ms a step) with no time outside OpenBLAS, %.0f ms (%.0f tok/s", best_ms, ms0, 8 * 256 / (ms0 / 1e3)
        if (tk in best) printf ", %.2fx PyTorch'"'"'s best", 8 * 256 / (ms0 / 1e3) / best[tk]
        if (ms1 > 0) {
            printf "); and with its calls also at the 2-thread sgemm peak, %.0f ms (%.0f tok/s", ms1, 8 * 256 / (ms1 / 1e3)
            if (tk in best) printf ", %.2fx", 8 * 256 / (ms1 / 1e3) / best[tk]
        }
        printf ")\n  costliest call shapes (op = transposes of x and W, C[m,n] = op(x) op(W), k inner; per step):\n"
        printf "  %-4s %6s %6s %6s %7s %9s %7s %9s\n", "op", "m", "n", "k", "calls", "core-ms", "% step", "GFLOP/s"
        for (j = 1; j <= cen_n[cfg] && j <= 10; j++) {
            l = cen_shape[cfg, j]
            printf "  %-4s %6s %6s %6s %7s %9s %7.1f %9s\n", kv(l, "op"), kv(l, "m"), kv(l, "n"), kv(l, "k"), kv(l, "calls"),
                   kv(l, "core_ms"), 100 * kv(l, "core_ms") / step, kv(l, "gflops")
        }
    }
    printf "\ngeneration (greedy, KV cache, 256 positions from BOS)\n"
    if (gen260 != "") printf "  stories260K (%s generate, 1 thread): %.0f tok/s\n", npt, gen260
    else printf "  stories260K: skipped: %s generate did not run (build ./npt first)\n", npt
    for (i = 1; i <= n; i++) {
        split(rows[i], r, SUBSEP)
        if (r[1] !~ /^gen /) continue
        t = kv(line[i], "tok_s")
        printf "  %s (bench_step, %s thread(s)): %s\n", substr(r[1], 5), r[3], t == "" ? "failed" : t " tok/s"
    }
    printf "\n(bench took %d s; load average %s at the start)\n", secs, load
    if (starved)
        printf "WARNING: %d run(s) got less CPU than their threads (column cores): the machine was busy; rerun on an idle machine\n", starved
}' "$res"
echo
BUILD=$BUILD NPT=$NPT PYTHON=$PYTHON sh tests/bench/bench_data.sh
echo
echo "debug mode: cost of checking every op (tests/test_debug: the same forward, same arena, with and without the checker)"
"$BUILD"/tests/test_debug 2>/dev/null | sed -n 's/^NOTE: /  /p'
