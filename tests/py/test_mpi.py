#!/usr/bin/python3
"""tests/py/test_mpi.py — data-parallel npt train over MPI ranks (train/dist.c), two ranks
on this machine under Open MPI's mpirun.

The reference is the one-process run of the same recipe: with train.grad_accum 2 over two
ranks, rank k runs micro-batch k of every step, so the run is the one-process run with
its two gradient contributions summed across processes instead of inside one.
  1. the first step's loss is the one-process run's bit for bit (the same micro-batches
     ran, and the loss sum is rank 0's part + rank 1's, the one-process order); the
     whole loss history and the final adapters agree to float rounding;
  2. two MPI runs give bit-identical checkpoints (the gradient sum has a fixed order);
  3. only rank 0 writes: the run directory holds the one-process run's files, one
     metrics line per step, and each message is printed once;
  4. resumed under MPI from a checkpoint, the run ends bit-identical to the
     uninterrupted MPI run;
  5. SIGTERM to rank 1 alone stops both ranks after the same step; rank 0 saves the
     emergency checkpoint, and --resume auto ends bit-identical; SIGTERM to mpirun
     itself: mpirun exits 1, the stop line names the checkpoint (docs/training.md);
  6. a non-finite micro-batch on rank 1 skips the step on both ranks, logged once;
  4b. --resume auto past a truncated newer checkpoint: warned once (rank 0 picks the file
     for all ranks), bit-identical;
  7. errors end the job once, with one line: grad_accum not a multiple of the ranks, the
     teacher cache, ranks given different recipes (MPMD launch), also options that change
     the setup's collectives (training all weights, --resume) on one rank, refused rather
     than hung; NPT_SHARE_WEIGHTS=0 on one rank gives each rank a copy, not a hang;
  8. ranks on 1 and 2 threads stay identical (compared at every checkpoint); one ulp of
     difference (a test hook) is caught there, and the checkpoint is not written;
  9. without threads in the recipe, an unbound launch shares the cores among the ranks.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np
from harness import NPT, built, check, exit_code, pause, resume, run_npt, set_flags

RECIPE = "recipes/stories260k-full.json"
SETS = ["train.max_steps=6", "train.warmup_steps=2", "train.grad_accum=2", "train.batch_size=4", "threads=1",
        "log.every=1", "checkpoint.every=3"]
MPIRUN = shutil.which("mpirun")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")


def mpi_argv(out, sets=SETS, extra=(), ranks=2, mpi_flags=()):
    return [MPIRUN, "-np", str(ranks), *mpi_flags, NPT, "train", RECIPE] + set_flags(sets + [f"output_dir={out}"]) + \
        list(extra)


def run(argv, env=ENV, timeout=300):
    return subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout,
                          stdin=subprocess.DEVNULL, env=env)


def run_bounded(argv, env=ENV, timeout=60):
    """run, but a job that hangs is stopped (mpirun forwards SIGTERM, then SIGKILLs the
    ranks) and comes back with returncode None instead of hanging the test."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                            stdin=subprocess.DEVNULL, env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        return subprocess.CompletedProcess(argv, None, out, err)


def datasets(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


def adapters(path):
    return {k: v for k, v in datasets(path).items() if k.startswith("adapters/")}


def same_bits(a, b):
    """Whether two checkpoints hold the same adapters, moments and history, bit for bit."""
    da, db = datasets(a), datasets(b)
    keys = [k for k in da if k.startswith(("adapters/", "optimizer/", "history/"))]
    return bool(keys) and sorted(keys) == sorted(k for k in db if k.startswith(("adapters/", "optimizer/", "history/"))) \
        and all(np.asarray(da[k]).tobytes() == np.asarray(db[k]).tobytes() for k in keys), len(keys)


def metrics(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def main():
    if not built(NPT):
        return exit_code()
    if not check(MPIRUN is not None, "mpirun is installed (scripts/setup.sh installs openmpi-bin)"):
        return exit_code()
    tmp = tempfile.mkdtemp(prefix="npt-mpi-")
    try:
        one, two, again = (os.path.join(tmp, d) for d in ("one", "two", "again"))

        # 1. against the one-process run
        r1 = run_npt("train", RECIPE, *set_flags(SETS + [f"output_dir={one}"]), timeout=300)
        r2 = run(mpi_argv(two))
        check(r1.returncode == 0 and r2.returncode == 0,
              f"one-process and 2-rank runs succeed (exit {r1.returncode} / {r2.returncode}){r2.stderr[-400:] if r2.returncode else ''}")
        if r1.returncode or r2.returncode:
            return exit_code()
        m1, m2 = metrics(os.path.join(one, "metrics.jsonl")), metrics(os.path.join(two, "metrics.jsonl"))
        check(m1[0]["loss"] == m2[0]["loss"],
              f"step 1 loss is the one-process run's bit for bit ({m2[0]['loss']!r} vs {m1[0]['loss']!r})")
        rel = max(abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in zip(m1, m2))
        check(len(m1) == len(m2) == 6 and rel < 1e-5, f"loss history of 6 steps agrees with the one-process run (max rel diff {rel:.2e} < 1e-5)")
        a1, a2 = adapters(os.path.join(one, "final.h5")), adapters(os.path.join(two, "final.h5"))
        worst = max(float(np.max(np.abs(a1[k] - a2[k]))) / max(float(np.max(np.abs(a1[k]))), 1e-30) for k in a1)
        # after 6 AdamW steps the two summation orders differ by rounding only (2.6e-6 seen);
        # a wrong micro-batch split or a lost rank's gradient moves them by O(1) of their size
        check(sorted(a1) == sorted(a2) and worst < 1e-4,
              f"final adapters agree with the one-process run ({len(a1)} tensors, max diff {worst:.2e} of the tensor's max < 1e-4)")

        # 2. determinism
        r3 = run(mpi_argv(again))
        ok, n = same_bits(os.path.join(two, "final.h5"), os.path.join(again, "final.h5")) if r3.returncode == 0 else (False, 0)
        check(ok, f"two 2-rank runs end bit-identical ({n} datasets)")

        # 3. only rank 0 writes, and speaks once
        check(sorted(os.listdir(one)) == sorted(os.listdir(two)),
              f"the 2-rank run directory holds the one-process run's files: {sorted(os.listdir(two))}")
        check(len(m2) == 6 and [m["step"] for m in m2] == list(range(1, 7)), "metrics.jsonl has one line per step (6)")
        check(r2.stderr.count("npt train: done:") == 1 and r2.stderr.count("step 6/6") == 1,
              "the banner, status lines and the done line are printed once")
        check("1 thread on each of 2 MPI ranks" in r2.stderr, "the banner names the 2 ranks")

        # 4. resume under MPI from the step-3 checkpoint, into a new directory
        resumed = os.path.join(tmp, "resumed")
        r4 = run(mpi_argv(resumed, extra=["--resume", os.path.join(two, "ckpt-00000003.h5")]))
        ok, n = same_bits(os.path.join(two, "final.h5"), os.path.join(resumed, "final.h5")) if r4.returncode == 0 else (False, 0)
        check(ok and r4.stderr.count("resumed from") == 1,
              f"resumed at step 3 under MPI, the run ends bit-identical to the uninterrupted one ({n} datasets; exit {r4.returncode})")

        # ...and with --resume auto past a damaged newer checkpoint: rank 0 picks the file
        # for every rank, so the skip is reported once and all ranks read the same one
        damaged = os.path.join(tmp, "damaged")
        os.makedirs(damaged)
        shutil.copy(os.path.join(two, "ckpt-00000003.h5"), damaged)
        with open(os.path.join(two, "final.h5"), "rb") as src, open(os.path.join(damaged, "ckpt-00000005.h5"), "wb") as dst:
            dst.write(src.read(3000))
        r = run(mpi_argv(damaged, extra=["--resume", "auto"]))
        ok, n = same_bits(os.path.join(two, "final.h5"), os.path.join(damaged, "final.h5")) if r.returncode == 0 else (False, 0)
        check(ok and r.stderr.count("skipped for resuming: ") == 1 and r.stderr.count("resumed from") == 1
              and "ckpt-00000003.h5 at step 3" in r.stderr,
              f"--resume auto past a truncated newer checkpoint: one warning, resumed at step 3, bit-identical "
              f"({n} datasets; exit {r.returncode}, {r.stderr.count('skipped for resuming: ')} warnings)")

        # 5. SIGTERM to rank 1 alone
        long_sets = [s for s in SETS if not s.startswith(("train.max_steps", "checkpoint.every"))] + \
            ["train.max_steps=60", "checkpoint.every=1000"]
        full = os.path.join(tmp, "full")
        r5 = run(mpi_argv(full, long_sets))
        stopped = os.path.join(tmp, "stopped")
        proc = subprocess.Popen(mpi_argv(stopped, long_sets), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=ENV, stdin=subprocess.DEVNULL)
        rank1 = None
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            path = os.path.join(stopped, "metrics.jsonl")
            if rank1 is None:
                rank1 = find_rank(proc.pid, 1)
            if rank1 and os.path.exists(path) and len(open(path).readlines()) >= 10:
                # stopped where it is seen, so the signal lands there however late this test ran
                if pause(rank1) and len(open(path).readlines()) < 59:
                    resume(rank1, signal.SIGTERM)
                else:
                    resume(rank1)
                break
            time.sleep(0.005)
        _, err = proc.communicate(timeout=120)
        ckpts, step, kind = stop_checkpoint(stopped)
        check(r5.returncode == 0 and rank1 is not None and proc.returncode != 0 and len(ckpts) == 1 and 10 <= step < 60
              and kind == "emergency",
              f"SIGTERM to rank 1 only: the job stops (exit {proc.returncode}) with one checkpoint, kind {kind}, at step {step}")
        check(err.count("stopped by SIGTERM after step") == 1 and f"after step {step};" in err,
              "the stop is announced once, naming the checkpoint's step")
        # SIGTERM to mpirun itself (a Ctrl-C, a scheduler): Open MPI forwards it a second
        # later and exits 1, so the documented way to tell a resumable stop from a
        # failure is rank 0's line naming the checkpoint, and that checkpoint
        via_mpirun = os.path.join(tmp, "via-mpirun")
        many = [x for x in long_sets if not x.startswith("train.max_steps")] + ["train.max_steps=600"]  # ends on its own
        proc = subprocess.Popen(mpi_argv(via_mpirun, many), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=ENV, stdin=subprocess.DEVNULL)
        deadline = time.time() + 120
        path = os.path.join(via_mpirun, "metrics.jsonl")
        while time.time() < deadline and proc.poll() is None and not (os.path.exists(path) and len(open(path).readlines()) >= 3):
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        ckpts, step, kind = stop_checkpoint(via_mpirun)
        line = [l for l in err.splitlines() if l.startswith("npt train: stopped by SIGTERM after step")]
        check(proc.returncode == 1 and len(line) == 1 and len(ckpts) == 1 and f"its state is in {via_mpirun}/{ckpts[0]}" in line[0],
              f"SIGTERM to mpirun: mpirun exits {proc.returncode} (Open MPI's 1), the stop line names the checkpoint "
              f"{ckpts} (step {step}, kind {kind})")
        r6 = run(mpi_argv(stopped, long_sets, extra=["--resume", "auto"]))
        ok, n = same_bits(os.path.join(full, "final.h5"), os.path.join(stopped, "final.h5")) if r6.returncode == 0 else (False, 0)
        check(ok, f"--resume auto after the stop ends bit-identical to the uninterrupted 60-step run ({n} datasets)")

        # 6. a non-finite micro-batch on rank 1 (micro-batch 1 = step 1's second)
        poisoned = os.path.join(tmp, "poisoned")
        r7 = run(mpi_argv(poisoned), env=dict(ENV, NPT_TEST_POISON_BATCHES="1"))
        mp = metrics(os.path.join(poisoned, "metrics.jsonl")) if r7.returncode == 0 else []
        check(r7.returncode == 0 and r7.stderr.count("skipped non-finite batch at step 0") == 1 and len(mp) == 7
              and mp[0]["skipped"] == 1 and sum(m["skipped"] for m in mp) == 1,
              f"a non-finite micro-batch on rank 1 skips the step on both ranks, logged once (exit {r7.returncode})")

        # 7. errors: once, one line, non-zero, nothing written
        cases = [("grad_accum 3 over 2 ranks", ["train.grad_accum=3"], "train.grad_accum is 3, not a multiple of the 2 MPI ranks"),
                 ("the teacher cache", ["train.teacher_cache_gb=1"], "train.teacher_cache_gb works in one process only")]
        for name, sets, needle in cases:
            out = os.path.join(tmp, "err-" + name.split()[0])
            r = run(mpi_argv(out, SETS + sets))
            check(r.returncode != 0 and r.stderr.count("npt train: error:") == 1 and needle in r.stderr
                  and not os.path.exists(out), f"{name}: exit {r.returncode}, one error line: {needle!r}")
        out = os.path.join(tmp, "err-mpmd")
        args = [NPT, "train", RECIPE] + set_flags(SETS + [f"output_dir={out}"])
        r = run([MPIRUN, "-np", "1", *args, ":", "-np", "1", *args, "--set", "seed=7"])
        needle = "rank 1 of 2 has other recipe (with its --set options) than rank 0"
        check(r.returncode != 0 and r.stderr.count("npt train: error:") == 1 and needle in r.stderr
              and not os.path.exists(os.path.join(out, "metrics.jsonl")),
              f"ranks launched with different recipes: exit {r.returncode}, one error line: {needle!r}")
        # options that change which collectives the setup runs: here rank 1 alone trains
        # the base (no shared copy), so the ranks must be refused before loading it
        out = os.path.join(tmp, "err-mpmd-lm")
        args = [NPT, "train", RECIPE] + set_flags(SETS + [f"output_dir={out}"])
        r = run_bounded([MPIRUN, "-np", "1", *args, ":", "-np", "1", *args, "--set", "objective.type=lm",
                         "--set", "objective.train_all_weights=true"])
        check(r.returncode not in (0, None) and r.stderr.count("npt train: error:") == 1 and needle in r.stderr
              and not os.path.exists(out),
              f"rank 1 alone training all weights: refused, exit {r.returncode} (None: hung), one error line: {needle!r}")
        # ...and --resume given to one rank alone (rank 0 picks the checkpoint for all)
        r = run_bounded([MPIRUN, "-np", "1", *args, "--resume", "auto", ":", "-np", "1", *args])
        needle = "rank 1 of 2 has other --resume option than rank 0"
        check(r.returncode not in (0, None) and r.stderr.count("npt train: error:") == 1 and needle in r.stderr
              and not os.path.exists(out),
              f"--resume on rank 0 alone: refused, exit {r.returncode} (None: hung), one error line: {needle!r}")
        # NPT_SHARE_WEIGHTS=0 on one rank of the machine: its ranks decide together, and
        # each holds its own copy
        unshared = os.path.join(tmp, "unshared")
        args = [NPT, "train", RECIPE] + set_flags(SETS + [f"output_dir={unshared}"])
        r = run_bounded([MPIRUN, "-np", "1", "env", "NPT_SHARE_WEIGHTS=0", *args, ":", "-np", "1", *args])
        ok = r.returncode == 0 and same_bits(os.path.join(two, "final.h5"), os.path.join(unshared, "final.h5"))[0]
        check(ok and "on each of 2 MPI ranks (micro-batches split over them)" in r.stderr,
              f"NPT_SHARE_WEIGHTS=0 on rank 0 alone: a copy each, bit-identical to the shared run (exit {r.returncode}; None: hung)"
              + (r.stderr[-300:] if r.returncode else ""))

        # 8. ranks on different thread counts (machines of different sizes) stay identical:
        # the gradient norm, computed by every rank, does not depend on the thread count;
        # the ranks compare their parameters and moments at every checkpoint. A tiny
        # clip_grad_norm clips every step, so the norm's last bits reach the update.
        mixed = os.path.join(tmp, "mixed")
        clip = [s for s in SETS if s != "threads=1"] + ["train.clip_grad_norm=1e-6"]
        args = [NPT, "train", RECIPE] + set_flags(clip + [f"output_dir={mixed}"])
        r = run([MPIRUN, "-np", "1", *args, "--set", "threads=1", ":", "-np", "1", *args, "--set", "threads=2"])
        check(r.returncode == 0 and "should not happen" not in r.stderr and os.path.exists(os.path.join(mixed, "final.h5")),
              f"rank 0 on 1 thread and rank 1 on 2 hold the same state at both checkpoints and the end (exit {r.returncode})"
              + (r.stderr[-300:] if r.returncode else ""))

        # ...and when they do not (a bug, simulated: rank 1's first parameter one ulp up
        # after step 2), the step-3 checkpoint is refused and the job stops with exit 4
        nudged = os.path.join(tmp, "nudged")
        args = [NPT, "train", RECIPE] + set_flags(SETS + [f"output_dir={nudged}"])
        r = run([MPIRUN, "-np", "1", *args, ":", "-np", "1", "env", "NPT_TEST_NUDGE_AFTER_STEPS=2", *args])
        needle = "after step 3 rank 1 of 2 holds other parameters, optimizer state or step"
        check(r.returncode != 0 and needle in r.stderr and r.stderr.count("npt train: error:") == 1
              and not any(f.endswith(".h5") for f in os.listdir(nudged)),
              f"ranks one ulp apart: exit {r.returncode}, one error line ({needle!r}), no checkpoint written")

        # 9. default threads, ranks not bound by the launcher: the cores are shared
        cores = len(os.sched_getaffinity(0))
        want = max(1, cores // 2) if cores >= os.cpu_count() else cores
        shared = os.path.join(tmp, "shared")
        r = run(mpi_argv(shared, [s for s in SETS if s != "threads=1"] + ["train.max_steps=2"], mpi_flags=["--bind-to", "none"]))
        check(r.returncode == 0 and f"| {want} thread{'s' if want > 1 else ''} on each of 2 MPI ranks" in r.stderr,
              f"no threads in the recipe, unbound ranks: {want} thread(s) each on {cores} cores")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return exit_code()


def stop_checkpoint(directory):
    """(checkpoint files, and the step and kind of the only one, else -1 and None) of a
    run directory after a stop."""
    ckpts = [f for f in os.listdir(directory) if f.startswith("ckpt-")] if os.path.isdir(directory) else []
    step, kind = -1, None
    if len(ckpts) == 1:
        with h5py.File(os.path.join(directory, ckpts[0]), "r") as f:
            step, kind = int(f.attrs["step"]), f.attrs["kind"]
        kind = kind.decode() if isinstance(kind, bytes) else kind
    return ckpts, step, kind


def find_rank(mpirun_pid, rank):
    """The pid of the given rank among mpirun's children (OMPI_COMM_WORLD_RANK)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != mpirun_pid:
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
            if f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
                return int(pid)
        except (OSError, ValueError, IndexError):
            continue
    return None


if __name__ == "__main__":
    sys.exit(main())
