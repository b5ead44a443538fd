#!/usr/bin/python3
"""tests/py/test_train.py — `npt train` end to end on stories260K and TinyStories text.

Short runs of the bundled stories260k recipes (overridden with --set), checked from the
outside: exit codes, stderr, metrics.jsonl, and the HDF5 checkpoints read with h5py.
  1. a batch made non-finite (NPT_TEST_POISON_BATCHES) is skipped, logged with its
     sample ids, and the run ends bit-identical to one without that batch
     (NPT_TEST_DROP_BATCHES);
  2. ten in a row stop the run with exit 3 and a usable emergency checkpoint;
  3. kill -9 mid-run, then --resume auto: final.h5 bit-identical to an uninterrupted run;
  4. the distillation loss goes down (full mode, small lambda);
  5. resuming onto another base model or another adapter shape is refused by name;
  6. bad invocations: non-zero exit, one clear message, no crash;
  7. the teacher cache (train.teacher_cache_gb) changes no bit of a run, resumed or not;
  8. finite loss with non-finite gradients is skipped too (NPT_TEST_POISON_GRADS);
  9. grad_accum k x batch B/k equals one batch of B (SGD, so the update is linear);
 10. parameters made non-finite by a learning rate beyond float range stop the run;
 11. best.h5 failing at the boundary of the best interval (NPT_TEST_FAIL_BEST), then
     --resume auto: best.h5 and final.h5 equal the uninterrupted run's.
Run from the repo root: /usr/bin/python3 tests/py/test_train.py
"""
import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np
from harness import (HF656 as M656, NPT, STORIES260K_BIN as S260, TRAIN_TEXT, built, check, exit_code, pause, run_npt, set_flags,
                     shared_path)

SAFE = "recipes/stories260k-safe.json"
FULL = "recipes/stories260k-full.json"
# 30 steps of 4 x 64 tokens, one thread (bit-exact comparisons need a fixed thread count)
SHORT = ["train.max_steps=30", "train.warmup_steps=2", "checkpoint.every=10", "data.seq_len=64",
         "train.batch_size=4", "threads=1"]
POISON_AT = 5                # 0-based micro-batch index (grad_accum is 1: batch k is step k+1's)
KILL_AFTER_STEPS = 24        # test 3 kills once this many steps are logged (checkpoints every 10)
MIN_LOSS_DROP = 2.2          # test 4, first-10 / last-10 mean loss of the bundled full recipe; observed 2.57
MIN_COMMON_PREFIX = 15       # test 4, greedy tokens shared with the base model; observed 21 (untrained-like adapters: 4)


def train(recipe, sets, out, env=None, extra=(), timeout=300):
    """env: variables added to ours (the NPT_TEST_* fault injections)."""
    return run_npt("train", recipe, *set_flags(sets + [f"output_dir={out}"]), *extra, timeout=timeout,
                   env=dict(os.environ, **(env or {})))


def tail(s, n=300):
    return s.strip()[-n:]


def reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def metrics(path):
    """Rows of metrics.jsonl, and the lines that are not strict JSON (RFC 8259 has no
    NaN/Infinity: npt writes null for a skipped step's non-finite figures)."""
    rows, bad = [], []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line, parse_constant=reject_constant))
            except ValueError:
                bad.append(line.strip())
    return rows, bad


def datasets(path, prefixes=("adapters/", "optimizer/", "history/")):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset)
                     and n.startswith(prefixes) else None)
    return out


def identical(a, b):
    """Names of datasets that differ (bitwise), or are in one file only."""
    diff = [n for n in sorted(set(a) | set(b)) if n not in a or n not in b
            or a[n].dtype != b[n].dtype or a[n].tobytes() != b[n].tobytes()]
    return diff


def attrs(path, group="/"):
    with h5py.File(path, "r") as f:
        return dict(f[group].attrs)


# ---------------------------------------------------------------------------


def with_threads(sets, threads):
    return [s for s in sets if not s.startswith("threads=")] + [f"threads={threads}"]


def split_over_threads(stderr):
    """Whether npt train said it splits each micro-batch over its threads (shards)."""
    return "each micro-batch split over them" in stderr


def test_skip(tmp, threads=1):
    """One poisoned batch is skipped and equals a run without it. On 2 threads each batch
    of 4 runs as two shards of 2 sequences, the poison in the first."""
    lab = "" if threads == 1 else f" ({threads} threads, batch split)"
    p_dir, d_dir = os.path.join(tmp, f"poison1-{threads}"), os.path.join(tmp, f"drop1-{threads}")
    sets = with_threads(SHORT, threads) + ["checkpoint.every=5", "checkpoint.keep_last=10"]  # keep ckpt-5 for test_ten_in_a_row
    p = train(SAFE, sets, p_dir, {"NPT_TEST_POISON_BATCHES": str(POISON_AT)})
    d = train(SAFE, sets, d_dir, {"NPT_TEST_DROP_BATCHES": str(POISON_AT)})
    if p.returncode != 0 or d.returncode != 0:
        check(False, f"skip{lab}: runs exited {p.returncode} (poisoned) / {d.returncode} (dropped): {tail(p.stderr + d.stderr)}")
        return None
    if threads > 1:
        check(split_over_threads(p.stderr), f"skip{lab}: npt train says each micro-batch is split over the threads")
    rows, bad = metrics(os.path.join(p_dir, "metrics.jsonl"))
    skipped = [i for i, r in enumerate(rows) if r["skipped"]]
    ok = (skipped == [POISON_AT] and rows[POISON_AT]["loss"] is None
          and rows[POISON_AT]["step"] == rows[POISON_AT - 1]["step"] == POISON_AT and len(rows) == 31)
    check(ok, f"skip{lab}: metrics.jsonl has one skipped row (row {skipped}, loss {rows[POISON_AT]['loss']}, step "
          f"{rows[POISON_AT]['step']} = steps done before it) among {len(rows)} rows")
    check(not bad, f"skip{lab}: every metrics.jsonl line is strict JSON" + (f"; not: {bad[0]}" if bad else ""))
    m = re.search(r"skipped non-finite batch.*samples \[([0-9,]*)\]", p.stderr)
    ids = [int(x) for x in m.group(1).split(",")] if m and m.group(1) else []
    check(len(ids) == 4 and len(set(ids)) == 4, f"skip{lab}: stderr names the batch's 4 sample ids: "
          f"{m.group(0) if m else tail(p.stderr)}")
    # Same steps, same numbers: the skipped batch changed neither parameters nor schedule.
    d_rows, _ = metrics(os.path.join(d_dir, "metrics.jsonl"))
    good = [r for r in rows if not r["skipped"]]
    keys = ("step", "loss", "lr", "grad_norm")
    same_rows = len(good) == len(d_rows) and all(a[k] == b[k] for a, b in zip(good, d_rows) for k in keys)
    check(same_rows, f"skip{lab}: the {len(good)} good rows equal the dropped-batch run's rows (step, loss, lr, grad_norm)")
    pa, da = datasets(os.path.join(p_dir, "final.h5"), ("adapters/", "optimizer/")), \
        datasets(os.path.join(d_dir, "final.h5"), ("adapters/", "optimizer/"))
    diff = identical(pa, da)
    n_ad = sum(n.startswith("adapters/") for n in pa)
    check(not diff and n_ad == 10, f"skip{lab}: final adapters ({n_ad} datasets) and optimizer moments bit-identical "
          f"to the run without batch {POISON_AT}" + (f"; differ: {diff[:4]}" if diff else ""))
    st = attrs(os.path.join(p_dir, "final.h5"), "state")
    check(st["skipped_total"] == 1 and attrs(os.path.join(p_dir, "final.h5"))["step"] == 30,
          f"skip{lab}: final.h5 step 30, state.skipped_total {st['skipped_total']}")
    return p_dir


def test_nonfinite_grads(tmp):
    """A batch whose loss is finite but whose gradients are not is skipped as well, and
    the run equals the one without that batch (test_skip's dropped-batch run)."""
    out, ref = os.path.join(tmp, "poison-grads"), os.path.join(tmp, "drop1-1")
    sets = SHORT + ["checkpoint.every=5", "checkpoint.keep_last=10"]
    r = train(SAFE, sets, out, {"NPT_TEST_POISON_GRADS": str(POISON_AT)})
    if r.returncode != 0 or not os.path.exists(os.path.join(ref, "final.h5")):
        check(False, f"non-finite gradients: exit {r.returncode}, reference run present "
              f"{os.path.exists(os.path.join(ref, 'final.h5'))}: {tail(r.stderr)}")
        return
    rows, _ = metrics(os.path.join(out, "metrics.jsonl"))
    skipped = [i for i, row in enumerate(rows) if row["skipped"]]
    row = rows[POISON_AT] if len(rows) > POISON_AT else {}
    check(skipped == [POISON_AT] and isinstance(row.get("loss"), float) and math.isfinite(row["loss"])
          and row.get("grad_norm") is None,
          f"non-finite gradients: row {skipped} skipped with a finite loss ({row.get('loss')}) and grad_norm "
          f"{row.get('grad_norm')} (want null)")
    diff = identical(datasets(os.path.join(out, "final.h5"), ("adapters/", "optimizer/")),
                     datasets(os.path.join(ref, "final.h5"), ("adapters/", "optimizer/")))
    check(not diff, "non-finite gradients: final adapters and moments bit-identical to the run without that batch"
          + (f"; differ: {diff[:4]}" if diff else ""))


def test_grad_accum(tmp):
    """grad_accum k with batch_size B/k is the step of one batch of B (same windows,
    drawn in the same order): per-step loss and gradient norm, and the adapters after
    SGD steps (linear in the gradient, unlike Adam's first steps), agree to rounding."""
    sets = [s for s in SHORT if not s.startswith(("train.max_steps", "train.batch_size"))] + [
        "train.max_steps=6", "train.optimizer=sgd", "train.lr=0.5", "checkpoint.every=6"]
    runs = {}
    for batch, accum in ((4, 1), (2, 2), (1, 4)):
        out = os.path.join(tmp, f"accum-{batch}x{accum}")
        r = train(FULL, sets + [f"train.batch_size={batch}", f"train.grad_accum={accum}"], out)
        if r.returncode != 0:
            check(False, f"grad_accum: batch {batch} x {accum} exited {r.returncode}: {tail(r.stderr)}")
            return
        runs[(batch, accum)] = (metrics(os.path.join(out, "metrics.jsonl"))[0],
                                datasets(os.path.join(out, "final.h5"), ("adapters/",)))
    rows, final = runs[(4, 1)]
    for key in ((2, 2), (1, 4)):
        k_rows, k_final = runs[key]
        worst = max((abs(a[f] - b[f]) / abs(b[f]) for a, b in zip(k_rows, rows) for f in ("loss", "grad_norm")),
                    default=float("inf"))
        same = len(k_rows) == len(rows) == 6 and worst < 1e-5
        check(same, f"grad_accum: batch {key[0]} x {key[1]} = batch 4 x 1, loss and grad_norm of {len(k_rows)} steps "
              f"within rel {worst:.1e} (< 1e-5)")
        # a step moves a weight by up to lr x grad_norm (about 8e-5); 1e-7 is a thousandth
        # of that and above float32 rounding of the weights (|w| < 0.1: ulp 7.5e-9)
        diff = max(float(np.abs(k_final[n].astype(np.float64) - final[n]).max()) for n in final)
        check(diff <= 1e-7, f"grad_accum: batch {key[0]} x {key[1]}: adapters after 6 SGD steps max diff {diff:.1e} "
              f"from batch 4 x 1 (< 1e-7)")


def test_nonfinite_params(tmp):
    """A learning rate times weight decay beyond float range (each within it: the recipe
    refuses values beyond float32) makes the parameters infinite from finite gradients:
    the run stops (exit 4), says to lower train.lr, and saves nothing."""
    out = os.path.join(tmp, "huge-lr")
    r = train(FULL, SHORT + ["train.lr=3e38", "train.weight_decay=3e38", "train.warmup_steps=0",
                             "train.optimizer=sgd"], out)  # safe mode would cap lr
    err = [ln for ln in r.stderr.splitlines() if "error" in ln]
    saved = [f for f in os.listdir(out) if f.endswith(".h5")] if os.path.isdir(out) else []
    check(r.returncode == 4 and len(err) == 1 and "non-finite" in err[0] and "train.lr" in err[0] and not saved,
          f"lr x weight decay 9e76: exit {r.returncode} (want 4), {err[0] if err else tail(r.stderr)}; checkpoints {saved}")


def test_ten_in_a_row(tmp, clean_dir):
    """Ten poisoned batches in a row: exit 3, why, and the last good state on disk."""
    out = os.path.join(tmp, "poison10")
    poison = ",".join(str(POISON_AT + i) for i in range(10))
    r = train(SAFE, SHORT + ["train.max_consecutive_skips=10"], out, {"NPT_TEST_POISON_BATCHES": poison})
    why = [ln for ln in r.stderr.splitlines() if "error" in ln]
    check(r.returncode == 3 and len(why) == 1 and "10 consecutive non-finite" in why[0],
          f"ten in a row: exit {r.returncode} (want 3), {why[0] if why else 'no error line: ' + tail(r.stderr)}")
    ckpts = sorted(f for f in os.listdir(out) if f.startswith("ckpt-")) if os.path.isdir(out) else []
    if not ckpts:
        check(False, f"ten in a row: no checkpoint in {out}")
        return
    path = os.path.join(out, ckpts[-1])
    top = attrs(path)
    ad = datasets(path, ("adapters/",))
    finite = all(np.all(np.isfinite(a)) for a in ad.values())
    check(top["step"] == POISON_AT and top["kind"] == b"emergency" and finite and len(ad) == 10
          and not os.path.exists(os.path.join(out, "final.h5")),
          f"ten in a row: {ckpts[-1]} opens with h5py, kind {top['kind'].decode()}, step {top['step']} "
          f"(= steps before the poison), {len(ad)} adapter tensors all finite, no final.h5")
    if clean_dir:
        ref = datasets(os.path.join(clean_dir, f"ckpt-{POISON_AT:08d}.h5"), ("adapters/", "optimizer/"))
        diff = identical(datasets(path, ("adapters/", "optimizer/")), ref)
        check(not diff, f"ten in a row: its adapters and moments are bit-identical to a clean run's step-{POISON_AT} "
              f"checkpoint" + (f"; differ: {diff[:4]}" if diff else ""))
    r2 = train(SAFE, SHORT, os.path.join(tmp, "from_emergency"), extra=["--resume", path])
    check(r2.returncode == 0 and f"at step {POISON_AT}" in r2.stderr,
          f"ten in a row: --resume from it runs to completion (exit {r2.returncode}): "
          f"{next((ln for ln in r2.stderr.splitlines() if 'resumed' in ln), tail(r2.stderr))}")


def test_resume_step0_logs(tmp):
    """The first ten batches poisoned: the emergency checkpoint is at step 0 with ten skipped
    rows in its history; resuming it in place keeps those rows in metrics.jsonl."""
    out = os.path.join(tmp, "poison_from_0")
    r = train(SAFE, SHORT, out, {"NPT_TEST_POISON_BATCHES": ",".join(map(str, range(10)))})
    check(r.returncode == 3 and os.path.exists(os.path.join(out, "ckpt-00000000.h5")),
          f"step-0 stop: exit {r.returncode} (want 3) with ckpt-00000000.h5")
    r = train(SAFE, SHORT, out, extra=["--resume", "auto"])
    rows = metrics(os.path.join(out, "metrics.jsonl"))[0]
    with h5py.File(os.path.join(out, "final.h5"), "r") as f:
        n_history = len(f["history/step"])
    check(r.returncode == 0 and len(rows) == n_history == 40 and [x["skipped"] for x in rows[:11]] == [1] * 10 + [0],
          f"step-0 resume: exit {r.returncode}; metrics.jsonl keeps the 10 skipped rows: {len(rows)} rows, "
          f"history {n_history} (want 40 = 10 skipped + 30 steps)")


def test_moment_overflow(tmp):
    """Finite gradients whose square overflows float32 (a stories260K copy with its final
    norm x1e22, lm objective, clipping off: loss ~4e22, grad norm ~3e21, both finite)
    would turn AdamW's second
    moments Inf while loss and norm stay finite; such a batch is skipped like a NaN one,
    so the run stops on its skip limit with a usable checkpoint instead of failing to
    write one (exit 4, nothing saved)."""
    w = np.fromfile(S260, dtype=np.float32)
    dim, hidden, L, nh, nkv, vocab = (int(x) for x in w[:6].view(np.int32))
    kv = dim * nkv // nh
    # llama2.c order (after a 7-int header): tok_emb, attn_norm, wq, wk, wv, wo, ffn_norm, w1, w2, w3, final norm
    final_norm = 7 + abs(vocab) * dim + L * dim + 2 * L * dim * dim + 2 * L * kv * dim + L * dim + 3 * L * hidden * dim
    w[final_norm:final_norm + dim] *= 1e22
    model, out = os.path.join(tmp, "overflow.bin"), os.path.join(tmp, "overflow_run")
    w.tofile(model)
    r = train(FULL, SHORT + [f"model={model}", "objective.type=lm", "train.clip_grad_norm=0",
                             "train.max_consecutive_skips=3"], out)
    rows = metrics(os.path.join(out, "metrics.jsonl"))[0] if os.path.isdir(out) else []
    ckpt = os.path.join(out, "ckpt-00000000.h5")
    moments = datasets(ckpt, ("optimizer/",)) if os.path.exists(ckpt) else {}
    check(r.returncode == 3 and len(rows) == 3
          and all(x["skipped"] == 1 and x["loss"] is not None and (x["grad_norm"] or 0) > 1.9e19 for x in rows)
          and moments and all(np.all(np.isfinite(v)) for v in moments.values()),
          f"moment overflow: exit {r.returncode} (want 3), {len(rows)} skipped rows with grad norms "
          f"{[x['grad_norm'] for x in rows]}, emergency checkpoint with {len(moments)} finite moment tensors")


def interval_means(path, every):
    """[(last step, mean loss of its applied steps)] of each interval of `every` steps in
    the checkpoint's own history rows, and the checkpoint's best_loss attribute."""
    with h5py.File(path, "r") as f:
        h = [f["history"][k][()] for k in ("step", "loss", "skipped")]
        best, end = f["state"].attrs["best_loss"], int(f.attrs["step"])
    means = []
    for e in range(every, end + every, every):
        ls = [loss for st, loss, sk in zip(*h) if not sk and e - every < st <= min(e, end)]
        if ls:
            means.append((min(e, end), sum(ls) / len(ls)))
    return means, best


def check_best_loss(paths, every, lab):
    """Each checkpoint's best_loss is the lowest mean loss of an interval of `every` steps,
    the interval the checkpoint closes included (best.h5 is that interval's checkpoint),
    recomputed here from the checkpoint's own history rows."""
    for path in paths:
        means, got = interval_means(path, every)
        low = min(m for _, m in means)
        check(got == low, f"{lab}: {os.path.basename(path)} holds best_loss {got}, the lowest interval mean of "
              f"its history ({low} over {len(means)} intervals)")


def test_kill_resume(tmp, threads=1):
    """kill -9 after the step-20 checkpoint, --resume auto: bit-identical to no kill
    (on 2 threads: each batch of 8 as two shards of 4)."""
    lab = "" if threads == 1 else f" ({threads} threads, batch split)"
    sets = ["train.max_steps=40", "train.warmup_steps=2", "checkpoint.every=10", "data.seq_len=128",
            "train.batch_size=8", f"threads={threads}"]
    a_dir, b_dir = os.path.join(tmp, f"uninterrupted-{threads}"), os.path.join(tmp, f"killed-{threads}")
    a = train(SAFE, sets, a_dir)
    if threads > 1:
        check(split_over_threads(a.stderr), f"kill/resume{lab}: npt train says each micro-batch is split over the threads")
    if a.returncode != 0:
        check(False, f"kill/resume{lab}: uninterrupted run exited {a.returncode}: {tail(a.stderr)}")
        return
    argv = [NPT, "train", SAFE] + set_flags(sets + [f"output_dir={b_dir}"])
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill between checkpoints: after ckpt-00000020.h5 and a few more steps, so that
    # the resumed run redoes steps the killed one had already logged.
    marker, log = os.path.join(b_dir, "ckpt-00000020.h5"), os.path.join(b_dir, "metrics.jsonl")
    deadline = time.time() + 120

    def logged():
        with open(log) as f:
            return sum(1 for _ in f)

    while (not os.path.exists(marker) or logged() < KILL_AFTER_STEPS) and proc.poll() is None \
            and time.time() < deadline:
        time.sleep(0.005)
    # stopped where it is seen, so the kill lands there however late this test ran
    if proc.poll() is not None or not pause(proc.pid) or logged() >= 40:
        proc.kill()
        check(False, f"kill/resume{lab}: the run ended (status {proc.wait()}) before it could be killed")
        return
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    rows_at_kill = logged()
    # not a checkpoint's temporary file, left by a kill mid-write
    newest = max(f for f in os.listdir(b_dir) if re.fullmatch(r"ckpt-\d{8}\.h5", f))
    check(proc.returncode == -signal.SIGKILL and not os.path.exists(os.path.join(b_dir, "final.h5")),
          f"kill/resume{lab}: killed with SIGKILL at step {rows_at_kill}, newest checkpoint {newest}, no final.h5")
    b = train(SAFE, sets, b_dir, extra=["--resume", "auto"])
    resumed = next((ln for ln in b.stderr.splitlines() if "resumed from" in ln), "")
    check(b.returncode == 0 and f"{newest} at step {int(newest[5:13])}" in resumed,
          f"kill/resume{lab}: --resume auto exit {b.returncode}: {resumed or tail(b.stderr)}")
    if b.returncode != 0:
        return
    # resume cuts metrics.jsonl back to the checkpoint, so redone steps appear once
    rows = metrics(log)[0]
    a_rows = metrics(os.path.join(a_dir, "metrics.jsonl"))[0]
    same = [r["step"] for r in rows] == [r["step"] for r in a_rows] and all(
        x["loss"] == y["loss"] for x, y in zip(rows, a_rows))
    check(same, f"kill/resume{lab}: metrics.jsonl ({len(rows)} rows) equals the uninterrupted run's row for row "
          f"({len(a_rows)} rows), each step once")
    fa, fb = os.path.join(a_dir, "final.h5"), os.path.join(b_dir, "final.h5")
    da, db = datasets(fa), datasets(fb)
    diff = identical(da, db)
    kinds = {n.split("/")[0] for n in da}
    check(not diff and kinds == {"adapters", "optimizer", "history"},
          f"kill/resume{lab}: final.h5 adapters, optimizer moments and history ({len(da)} datasets) bit-identical to "
          f"the uninterrupted run" + (f"; differ: {diff[:4]}" if diff else ""))
    sa, sb = attrs(fa, "state"), attrs(fb, "state")
    same = (list(sa["data_cursor"]) == list(sb["data_cursor"]) and attrs(fa)["step"] == attrs(fb)["step"] == 40
            and attrs(fa, "optimizer")["step"] == attrs(fb, "optimizer")["step"])
    check(same, f"kill/resume{lab}: step 40, optimizer step and data cursor {list(sb['data_cursor'])} equal")
    check_best_loss([os.path.join(a_dir, "ckpt-00000020.h5"), fa], 10, f"kill/resume{lab}")
    ba, bb = os.path.join(a_dir, "best.h5"), os.path.join(b_dir, "best.h5")
    diff = identical(datasets(ba), datasets(bb))
    check(not diff and attrs(ba)["step"] == attrs(bb)["step"] and sa["best_loss"] == sb["best_loss"],
          f"kill/resume{lab}: best.h5 (step {attrs(ba)['step']}) and best_loss equal the uninterrupted run's")


def greedy_ids(extra):
    r = run_npt("generate", "--model", S260, "--steps", "60", "--temperature", "0", "--json", *extra, timeout=120)
    return json.loads(r.stdout) if r.returncode == 0 else None


def test_best_write_fails(tmp):
    """A run that stops while best.h5 of a new best interval is being written (a kill or
    a full disk there; NPT_TEST_FAIL_BEST fails that write) resumes to the uninterrupted
    run's best.h5: the periodic checkpoint of that step, which records the new best
    loss, is written after best.h5, so the resumed run judges the interval again. Before
    the fix it resumed past it with best_loss set and best.h5 of an older interval."""
    sets = ["train.max_steps=25", "train.warmup_steps=2", "checkpoint.every=3", "checkpoint.keep_last=20",
            "data.seq_len=64", "train.batch_size=8", "threads=1"]
    a_dir, b_dir = os.path.join(tmp, "best-uninterrupted"), os.path.join(tmp, "best-failed")
    a = train(SAFE, sets, a_dir)
    if not check(a.returncode == 0, f"best.h5 failure: the uninterrupted run exit {a.returncode} {tail(a.stderr) if a.returncode else ''}"):
        return
    step = int(attrs(os.path.join(a_dir, "best.h5"))["step"])
    if not check(3 <= step < 25, f"best.h5 failure: the uninterrupted run's best interval ends at step {step}, a "
                                 f"periodic boundary (not the last step, which writes best.h5 before final.h5)"):
        return
    b = train(SAFE, sets, b_dir, env={"NPT_TEST_FAIL_BEST": str(step)})
    errors = [ln for ln in b.stderr.splitlines() if "error" in ln]
    check(b.returncode == 4 and len(errors) == 1 and "best.h5" in errors[0]
          and not os.path.exists(os.path.join(b_dir, f"ckpt-{step:08d}.h5")),
          f"best.h5 failure at step {step}: exit {b.returncode} (want 4), {errors}; no ckpt-{step:08d}.h5 after it")
    b = train(SAFE, sets, b_dir, extra=["--resume", "auto"])
    if not check(b.returncode == 0, f"best.h5 failure: --resume auto exit {b.returncode} {tail(b.stderr) if b.returncode else ''}"):
        return
    for name in ("best.h5", "final.h5"):
        fa, fb = os.path.join(a_dir, name), os.path.join(b_dir, name)
        diff = identical(datasets(fa), datasets(fb))
        same = attrs(fa)["step"] == attrs(fb)["step"] and attrs(fa, "state")["best_loss"] == attrs(fb, "state")["best_loss"]
        check(not diff and same, f"best.h5 failure, resumed: {name} (step {attrs(fb)['step']}, best_loss "
              f"{attrs(fb, 'state')['best_loss']}) equals the uninterrupted run's (step {attrs(fa)['step']})"
              + (f"; differ: {diff[:4]}" if diff else ""))


def test_learns(tmp):
    """The bundled full recipe, as shipped: the loss falls by a large factor and greedy
    generation with the adapters stays close to the base model's."""
    out = os.path.join(tmp, "learn")
    r = train(FULL, ["threads=1", "log.every=100"], out)
    if r.returncode != 0:
        check(False, f"learning: run exited {r.returncode}: {tail(r.stderr)}")
        return
    rows, _ = metrics(os.path.join(out, "metrics.jsonl"))
    loss = [x["loss"] for x in rows]
    first, last = np.mean(loss[:10]), np.mean(loss[-10:])
    check(len(loss) == 300 and first / last >= MIN_LOSS_DROP,
          f"learning: {FULL} (300 steps of 8 x 128): mean loss first 10 {first:.5f}, last 10 {last:.5f}, "
          f"x{first / last:.2f} (>= x{MIN_LOSS_DROP})")
    # checkpoint.every 100, keep_last 2
    kept = [os.path.join(out, f) for f in ("ckpt-00000100.h5", "ckpt-00000200.h5", "final.h5")]
    check_best_loss(kept, 100, "learning")
    means, _ = interval_means(kept[-1], 100)
    best_end = min(means, key=lambda x: x[1])[0]
    check(attrs(os.path.join(out, "best.h5"))["step"] == best_end,
          f"learning: best.h5 is at the end of the interval with the lowest mean loss (step {best_end})")
    base, npt = greedy_ids([]), greedy_ids(["--adapters", os.path.join(out, "final.h5")])
    if not base or not npt:
        check(False, "learning: npt generate failed")
        return
    # the base text is the MANIFEST's (an independent source), so the comparison is with it
    check(base["text"].startswith("Once upon a time, there was a little girl named Lily."),
          f"learning: base greedy text is the MANIFEST text: {base['text'][:60]!r}")
    common = next((i for i, (a, b) in enumerate(zip(base["tokens"], npt["tokens"])) if a != b),
                  min(len(base["tokens"]), len(npt["tokens"])))
    check(common >= MIN_COMMON_PREFIX,
          f"learning: NPT greedy generation shares its first {common} tokens with the base model's "
          f"(>= {MIN_COMMON_PREFIX}): {npt['text'][:80]!r}")


def test_lm_all_weights(tmp):
    """lm with train_all_weights: the trained weights and moments are in the checkpoint,
    and a resumed run ends bit-identical to an uninterrupted one."""
    sets = ["objective.type=lm", "objective.train_all_weights=true", "train.lr=1e-3"] + SHORT
    a, b = os.path.join(tmp, "lm_a"), os.path.join(tmp, "lm_b")
    ra = train(FULL, sets + ["train.max_steps=20"], a)
    rb1 = train(FULL, sets + ["train.max_steps=20"], b)
    if ra.returncode or rb1.returncode:
        check(False, f"lm all weights: runs exited {ra.returncode}/{rb1.returncode}: {tail(ra.stderr + rb1.stderr)}")
        return
    os.remove(os.path.join(b, "final.h5"))  # redo steps 11..20 from the step-10 checkpoint
    rb = train(FULL, sets + ["train.max_steps=20"], b, extra=["--resume", os.path.join(b, "ckpt-00000010.h5")])
    da, db = datasets(os.path.join(a, "final.h5"), ("weights/", "optimizer/")), datasets(os.path.join(b, "final.h5"), ("weights/", "optimizer/"))
    base = np.fromfile(S260, dtype=np.float32, offset=28, count=512 * 64)
    moved = "weights/block" in da and not np.array_equal(da["weights/block"][:base.size], base)
    check(rb.returncode == 0 and set(da) == {"weights/block", "optimizer/weights_block.m", "optimizer/weights_block.v"}
          and not identical(da, db) and moved,
          f"lm all weights: checkpoint holds the trained weights ({da['weights/block'].size if 'weights/block' in da else 0} floats, "
          f"token embeddings moved from the file's) and moments; resumed from step 10 == uninterrupted, bit for bit")
    g = run_npt("generate", "--model", S260, "--adapters", os.path.join(a, "final.h5"), "--steps", "4", timeout=60)
    check(g.returncode == 1 and "not NPT adapters" in g.stderr and "npt export" in g.stderr
          and len(g.stderr.strip().splitlines()) == 1,
          f"lm all weights: its checkpoint given as --adapters is refused, pointing to npt export: {g.stderr.strip()}")
    export_refusals(tmp, os.path.join(a, "final.h5"))


def export_refusals(tmp, ckpt):
    """npt export of an all-weights checkpoint refuses, in one line, a base with the same
    weights but another head count (the fingerprint covers weights only), a NaN in
    /weights/block (blamed on the checkpoint, not the base), a 2-D /weights/block; and
    --model with a model input (it would be ignored) is a usage error."""
    def export(*args):
        out = os.path.join(tmp, "export_out")
        shutil.rmtree(out, ignore_errors=True)
        r = run_npt("export", *args, "--out", out, timeout=60)
        return r, os.path.exists(out)
    # stories260K: dim 64, 8 heads, 4 kv heads (MANIFEST); with 4 and 2 every tensor keeps
    # its size (kv dim 64 * 2 / 4 = 32 as before), but the legacy RoPE tables llama2.c
    # files carry after the weights (seq_len x head_dim floats) double: padded with zeros.
    # Header ints 3 and 4 are the counts.
    heads4 = os.path.join(tmp, "s260_4heads.bin")
    raw = bytearray(open(S260, "rb").read())
    raw[12:20] = np.array([4, 2], dtype=np.int32).tobytes()
    raw += bytes(512 * 8 * 4)  # seq_len 512 x (16 - 8) more floats
    open(heads4, "wb").write(raw)
    r, made = export(ckpt, "--model", heads4)
    check(r.returncode == 1 and not made and len(r.stderr.strip().splitlines()) == 1 and "8 heads" in r.stderr
          and "4 heads" in r.stderr, f"export onto a base with the same weights and 4 heads instead of 8: refused by "
          f"name: {r.stderr.strip()}")
    nan = os.path.join(tmp, "nan_block.h5")
    shutil.copy(ckpt, nan)
    with h5py.File(nan, "r+") as f:
        f["weights/block"][5] = np.nan
    r, made = export(nan)
    check(r.returncode == 1 and not made and f"{nan}: tensor /weights/block holds 1 NaN" in r.stderr
          and S260 not in r.stderr, f"a NaN in /weights/block is blamed on the checkpoint: {r.stderr.strip()}")
    twod = os.path.join(tmp, "twod_block.h5")
    shutil.copy(ckpt, twod)
    with h5py.File(twod, "r+") as f:
        b = f["weights/block"][()]
        del f["weights/block"]
        f["weights/block"] = b.reshape(2, -1)
    # the real shape [2, half], from the checkpoint's own block, which holds every weight of
    # the base: from the llama2.c header of stories260K.bin (dim, hidden, layers, heads, kv
    # heads, vocab; tied classifier): per layer wq, wo (dim x dim), wk, wv (kv dim x dim),
    # three FFN matrices (hidden x dim) and two norms; the embedding and the final norm
    dim, hidden, layers, heads, kv_heads, vocab = np.frombuffer(open(S260, "rb").read(24), dtype="<i4").tolist()
    kv_dim = dim * kv_heads // heads
    n_weights = layers * (2 * dim * dim + 2 * kv_dim * dim + 3 * hidden * dim + 2 * dim) + abs(vocab) * dim + dim
    half = b.shape[0] // 2
    r, made = export(twod)
    check(r.returncode == 1 and not made and b.shape[0] == n_weights == 2 * half
          and f"/weights/block has shape [2, {half}]" in r.stderr and "damaged" in r.stderr,
          f"a 2-D /weights/block is called damaged with its real shape: {r.stderr.strip()}")
    r, made = export(S260, "--model", S260)
    check(r.returncode == 2 and not made and "--model applies only to a checkpoint" in r.stderr,
          f"export of a model with --model: usage error, exit {r.returncode}: {r.stderr.strip()}")


def cache_stats(stderr):
    """(hits, misses, stored) from npt train's teacher cache line, or None."""
    m = re.search(r"teacher cache: (\d+) hits, (\d+) misses, (\d+) windows stored", stderr)
    return tuple(int(x) for x in m.groups()) if m else None


def test_teacher_cache(tmp):
    """train.teacher_cache_gb: over three epochs of a small corpus, on 2 threads, the
    run ends bit-identical to one without the cache, also when the cache holds only 50
    windows and when resumed from a checkpoint (cold cache); the counts add up; the
    cache file never outlives the run; bad values are refused by name."""
    small = os.path.join(tmp, "small.txt")
    with open(shared_path("data", "tinystories-train-head.txt"), "rb") as f:
        head = f.read(20000)
    with open(small, "wb") as f:
        f.write(head[:head.rfind(b"\n") + 1])
    steps, B = 60, 8
    sets = [f"train.max_steps={steps}", "train.warmup_steps=2", "checkpoint.every=20", "data.seq_len=64",
            f"train.batch_size={B}", "threads=2", f"data.train={small}"]
    # one window: (5 layers - first 0 + 2) blocks of 64 x 64 floats
    record = 7 * 64 * 64 * 4
    runs = {"none": [], "cache": ["train.teacher_cache_gb=1"], "50 windows": [f"train.teacher_cache_gb={50.5 * record / 1e9}"]}
    out = {k: train(FULL, sets + v, os.path.join(tmp, f"tc-{k.replace(' ', '')}")) for k, v in runs.items()}
    if any(r.returncode for r in out.values()):
        check(False, "teacher cache: runs exited " + ", ".join(f"{k} {r.returncode}" for k, r in out.items())
              + f": {tail(' '.join(r.stderr for r in out.values()))}")
        return
    m = re.search(r"(\d+) training \+", out["none"].stderr)
    n_train = int(m.group(1)) if m else -1
    final = {k: datasets(os.path.join(tmp, f"tc-{k.replace(' ', '')}", "final.h5")) for k in runs}
    for k in ("cache", "50 windows"):
        diff = identical(final["none"], final[k])
        check(not diff and len(final[k]) > 3, f"teacher cache ({k}): final.h5 adapters, moments and history bit-identical "
              f"to the run without it" + (f"; differ: {diff[:4]}" if diff else ""))
    full, part = cache_stats(out["cache"].stderr), cache_stats(out["50 windows"].stderr)
    draws = steps * B
    # every window misses once, when first drawn; a window drawn twice in one batch (at an
    # epoch boundary) misses on its second copy too, so misses may exceed n_train by < B
    check(full is not None and 0 < n_train < draws / 2 and full[0] + full[1] == draws and full[2] == n_train
          and n_train <= full[1] < n_train + B,
          f"teacher cache: {draws} windows drawn from {n_train}: hits, misses, stored = {full}")
    check(part is not None and part[2] == 50 and part[0] + part[1] == draws and part[0] < full[0],
          f"teacher cache holding 50 windows: hits, misses, stored = {part}")
    check(all(not any(".npt-teacher-cache" in f for f in os.listdir(os.path.join(tmp, f"tc-{k.replace(' ', '')}")))
              for k in runs), "teacher cache: no cache file left in the output directories")
    # resume from step 20 with a cold cache: the same floats are recomputed (into a new
    # directory: rewinding in place over the later checkpoints is refused)
    b_dir = os.path.join(tmp, "tc-cache-resumed")
    r = train(FULL, sets + runs["cache"], b_dir,
              extra=["--resume", os.path.join(tmp, "tc-cache", "ckpt-00000020.h5")])
    diff = identical(final["none"], datasets(os.path.join(b_dir, "final.h5"))) if r.returncode == 0 else ["(run failed)"]
    check(r.returncode == 0 and not diff, f"teacher cache: resumed from step 20 (cold cache) == the run without it, bit for "
          f"bit (exit {r.returncode}{', differ: ' + str(diff[:4]) if diff else ''})")
    for sets_bad, words in ((["train.teacher_cache_gb=1e-9"], ("train.teacher_cache_gb", "holds no window")),
                            (["train.teacher_cache_gb=-1"], ("train.teacher_cache_gb",)),
                            (["train.teacher_cache_gb=1", "objective.type=lm"], ("train.teacher_cache_gb", "lm"))):
        r = train(FULL, sets + sets_bad, os.path.join(tmp, "tc-bad"))
        msg = next((ln for ln in r.stderr.splitlines() if "teacher_cache_gb" in ln), tail(r.stderr))
        check(r.returncode == 1 and all(w in msg for w in words), f"teacher cache {sets_bad}: exit {r.returncode}, {msg}")


def snapshot(d):
    out = {}
    for f in sorted(os.listdir(d)):
        with open(os.path.join(d, f), "rb") as fh:
            out[f] = hashlib.sha256(fh.read()).hexdigest()
    return out


def test_resume_mismatch(tmp, run_dir):
    ckpt = os.path.join(run_dir, "final.h5")
    before = snapshot(run_dir)
    r = train(SAFE, SHORT + [f"model={M656}", f"tokenizer={os.path.join(M656, 'tokenizer.json')}"], run_dir,
              extra=["--resume", ckpt])
    msg = next((ln for ln in r.stderr.splitlines() if "error" in ln), tail(r.stderr))
    check(r.returncode == 1 and "stories260K.bin" in msg and "TinyStories-656K" in msg,
          f"other base: exit {r.returncode}, {msg}")
    check(snapshot(run_dir) == before, f"other base: the run directory is untouched ({len(before)} files)")
    for what, sets, words in (("rank 8", ["npt.rank=8"], ("rank 16", "rank 8")),
                              ("full mode", ["npt.safe_mode=false"], ("safe mode", "full mode")),
                              ("upper_half", ["npt.layers=upper_half"], ("5 layers", "3 layers"))):
        r = train(SAFE, SHORT + sets, os.path.join(tmp, "mismatch"), extra=["--resume", ckpt])
        msg = next((ln for ln in r.stderr.splitlines() if "error" in ln), tail(r.stderr))
        check(r.returncode == 1 and all(w in msg for w in words), f"resume as {what}: exit {r.returncode}, {msg}")
    # keys that would change what the adapters, moments or data cursor mean: refused
    for sets, words in ((["npt.modulation_scale=0.5"], ("npt.modulation_scale 0.1", "has 0.5")),
                        (["train.optimizer=sgd"], ('train.optimizer "adamw"', '"sgd"')),
                        (["objective.loss=mse"], ('objective.loss "nmse"', '"mse"')),
                        (["data.shuffle=false"], ("data.shuffle true", "has false"))):
        r = train(SAFE, SHORT + sets, os.path.join(tmp, "mismatch"), extra=["--resume", ckpt])
        msg = next((ln for ln in r.stderr.splitlines() if "error" in ln), tail(r.stderr))
        check(r.returncode == 1 and all(w in msg for w in words) and not os.path.exists(os.path.join(tmp, "mismatch", "final.h5")),
              f"resume with {sets[0]}: exit {r.returncode}, {msg}")
    # the data cursor: another split of the same text, then a cursor whose counts do not add
    # up (edited here): the message shows what differs, never the same figures on both sides
    def cursor_sides(msg):
        m = re.search(r"data cursor \(([^)]*)\) does not fit this data \(([^)]*)\)", msg)
        return m.groups() if m else None

    r = train(SAFE, SHORT + ["data.valid_fraction=0.05"], os.path.join(tmp, "mismatch"), extra=["--resume", ckpt])
    msg = next((ln for ln in r.stderr.splitlines() if "error" in ln), tail(r.stderr))
    sides = cursor_sides(msg)
    check(r.returncode == 1 and sides and sides[0] != sides[1], f"resume with another validation split: exit {r.returncode}, {msg}")
    damaged = os.path.join(tmp, "cursor-damaged.h5")
    shutil.copy(ckpt, damaged)
    with h5py.File(damaged, "r+") as f:
        cursor = f["state"].attrs["data_cursor"].copy()
        cursor[5] += 3  # the one source's draws no longer add up to the total drawn
        f["state"].attrs.modify("data_cursor", cursor)
    r = train(SAFE, SHORT, os.path.join(tmp, "mismatch"), extra=["--resume", damaged])
    msg = next((ln for ln in r.stderr.splitlines() if "error" in ln), tail(r.stderr))
    sides = cursor_sides(msg)
    check(r.returncode == 1 and "inconsistent" in msg and damaged in msg and (sides is None or sides[0] != sides[1]),
          f"resume from a checkpoint whose data cursor does not add up: exit {r.returncode}, {msg}")
    # other tokens, the same window count: the training text with its first two stories
    # swapped (tokenized a document at a time, the count cannot change); only the data
    # fingerprint in the cursor tells
    with open(TRAIN_TEXT, encoding="utf-8") as f:
        docs = f.read().split("<|endoftext|>")
    swapped = os.path.join(tmp, "swapped.txt")
    with open(swapped, "w", encoding="utf-8") as f:
        f.write("<|endoftext|>".join([docs[1], docs[0]] + docs[2:]))
    r = train(SAFE, SHORT + [f"data.train={swapped}"], os.path.join(tmp, "mismatch"), extra=["--resume", ckpt])
    msg = next((ln for ln in r.stderr.splitlines() if "error" in ln), tail(r.stderr))
    check(r.returncode == 1 and "other tokens than" in msg and swapped in msg and "same" in msg,
          f"resume on other text of the same window count: exit {r.returncode}, {msg}")
    # the learning rate and the length may change, with a warning that the run no longer
    # reproduces an uninterrupted one
    r = train(SAFE, SHORT + ["train.lr=5e-5", "train.max_steps=40"], os.path.join(tmp, "lr_changed"),
              extra=["--resume", ckpt])
    warn = next((ln for ln in r.stderr.splitlines() if "warning" in ln), "")
    check(r.returncode == 0 and "train.lr, train.max_steps differ" in warn and "will not reproduce" in warn,
          f"resume with train.lr and max_steps changed: exit {r.returncode}, {warn or tail(r.stderr)}")
    r = train(SAFE, SHORT + ["train.max_steps=20", "train.warmup_steps=2"], os.path.join(tmp, "shorter"),
              extra=["--resume", ckpt])
    msg = next((ln for ln in r.stderr.splitlines() if "error" in ln), tail(r.stderr))
    check(r.returncode == 1 and "is at step 30, past train.max_steps 20" in msg,
          f"resume past max_steps: exit {r.returncode}, {msg}")
    r = train(SAFE, SHORT + ["log.every=3", "checkpoint.keep_last=5"], os.path.join(tmp, "log_changed"),
              extra=["--resume", ckpt])
    check(r.returncode == 0 and "warning" not in r.stderr, f"resume with log.every changed: exit {r.returncode}, no warning")


def test_other_runs_kept(tmp, run_dir):
    """A run never replaces another run's files: resuming a checkpoint into a directory
    holding another run, or starting a run where an earlier one left only its log, is
    refused with the directory named, and nothing there changes."""
    other = os.path.join(tmp, "other_run")
    shutil.copytree(run_dir, other)
    before = snapshot(other)
    r = train(SAFE, SHORT, other, extra=["--resume", os.path.join(run_dir, "final.h5")])
    msg = next((ln for ln in r.stderr.splitlines() if "error" in ln), tail(r.stderr))
    check(r.returncode == 1 and other in msg and "already holds a run" in msg and snapshot(other) == before,
          f"resume into another run's directory: exit {r.returncode}, {msg}; files unchanged: {snapshot(other) == before}")
    # rewinding in place: the later checkpoints and final.h5 would stay and win a later
    # --resume auto, so it is refused; rewinding into a new directory is the way
    rewind = os.path.join(tmp, "rewind")
    shutil.copytree(run_dir, rewind)
    before = snapshot(rewind)
    r = train(SAFE, SHORT, rewind, extra=["--resume", os.path.join(rewind, "ckpt-00000010.h5")])
    msg = next((ln for ln in r.stderr.splitlines() if "error" in ln), tail(r.stderr))
    check(r.returncode == 1 and "final.h5, step 30" in msg and "output_dir=NEW" in msg and snapshot(rewind) == before,
          f"rewind in place: exit {r.returncode}, {msg}; files unchanged: {snapshot(rewind) == before}")
    r = train(SAFE, SHORT, os.path.join(tmp, "rewound"), extra=["--resume", os.path.join(rewind, "ckpt-00000010.h5")])
    check(r.returncode == 0 and "at step 10" in r.stderr, f"rewind into a new output_dir: exit {r.returncode}")
    log_only = os.path.join(tmp, "log_only")
    os.makedirs(log_only)
    with open(os.path.join(log_only, "metrics.jsonl"), "w") as f:
        f.write('{"step": 1, "loss": 0.5}\n')
    before = snapshot(log_only)
    r = train(SAFE, SHORT, log_only)
    msg = next((ln for ln in r.stderr.splitlines() if "error" in ln), tail(r.stderr))
    check(r.returncode == 1 and "metrics.jsonl" in msg and "no checkpoint" in msg and snapshot(log_only) == before,
          f"new run over an earlier run's log: exit {r.returncode}, {msg}; files unchanged: {snapshot(log_only) == before}")
    r = train(SAFE, SHORT, log_only, extra=["--resume", "auto"])
    msg = next((ln for ln in r.stderr.splitlines() if "error" in ln), tail(r.stderr))
    check(r.returncode == 1 and "metrics.jsonl" in msg and "no checkpoint" in msg and snapshot(log_only) == before,
          f"--resume auto with nothing to continue over an earlier run's log: exit {r.returncode}, {msg}; "
          f"files unchanged: {snapshot(log_only) == before}")
    best_only = os.path.join(tmp, "best_only")
    os.makedirs(best_only)
    shutil.copy(os.path.join(run_dir, "best.h5"), best_only)
    before = snapshot(best_only)
    r = train(SAFE, SHORT, best_only)
    msg = next((ln for ln in r.stderr.splitlines() if "error" in ln), tail(r.stderr))
    check(r.returncode == 1 and "best.h5" in msg and snapshot(best_only) == before,
          f"new run over another run's best.h5: exit {r.returncode}, {msg}; files unchanged: {snapshot(best_only) == before}")


def test_bad_invocations(tmp):
    out = os.path.join(tmp, "bad")
    cases = [  # argv after "npt train", words the message must contain
        ([], "which recipe"),
        ([SAFE, "--bogus"], "--bogus"),
        (["no-such-recipe.json"], "no such recipe"),
        ([SAFE, "--set", "train.lr"], "key.path=value"),
        ([SAFE, "--set", "train.lr=abc"], "train.lr: expected a number"),
        ([SAFE, "--set", "train.nosuch=3"], "unknown key"),
        ([SAFE, "--set"], "--set needs a value"),
        ([SAFE, "--resume"], "--resume needs a value"),
        ([SAFE, "--set", f"output_dir={out}", "--resume", os.path.join(tmp, "none.h5")], "the checkpoint does not exist"),
        ([SAFE, SAFE], "one recipe only"),
        ([SAFE, "--set", f"output_dir={out}", "--set", "train.batch_size=100000000"], "lower train.batch_size"),
    ]
    with open("/proc/sys/vm/overcommit_memory") as f:
        if f.read().strip() != "1":  # 4 TB of token ids: refused unless the kernel promises any size
            cases.append(([SAFE, "--set", f"output_dir={out}", "--set", "train.grad_accum=1000000000"],
                          "lower train.grad_accum"))
    for args, words in cases:
        r = run_npt("train", *args, timeout=60)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        crash = any(w in r.stderr for w in ("Traceback", "Sanitizer", "Segmentation", "core dumped"))
        ok = 0 < r.returncode < 128 and lines and len(lines) <= 2 and words in r.stderr and not crash
        shown = next((ln for ln in lines if "error" in ln), lines[0] if lines else "nothing on stderr")
        check(ok, f"bad invocation npt train {' '.join(args)}: exit {r.returncode}, {shown}")


def main():
    if not built(NPT):
        return 1
    tmp = tempfile.mkdtemp(prefix="npt-train-")
    try:
        t0 = time.time()
        run_dir = test_skip(tmp)
        test_skip(tmp, threads=2)
        test_ten_in_a_row(tmp, run_dir)
        test_nonfinite_grads(tmp)
        test_grad_accum(tmp)
        test_nonfinite_params(tmp)
        test_resume_step0_logs(tmp)
        test_moment_overflow(tmp)
        test_kill_resume(tmp)
        test_kill_resume(tmp, threads=2)
        test_best_write_fails(tmp)
        test_learns(tmp)
        test_lm_all_weights(tmp)
        test_teacher_cache(tmp)
        if run_dir:
            test_resume_mismatch(tmp, run_dir)
            test_other_runs_kept(tmp, run_dir)
        test_bad_invocations(tmp)
        print(f"NOTE: test_train took {time.time() - t0:.0f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return exit_code()


if __name__ == "__main__":
    sys.exit(main())
