#!/usr/bin/python3
"""tests/py/test_data_lost.py — the training data becomes unreadable mid-run (a file
replaced, truncated, or on a network mount that went away).

The step whose windows cannot be read never happens: the data cursor goes back to its
start, the state after the last step is saved (an emergency checkpoint, unless that
step's checkpoint is on disk), and once the data reads again --resume auto continues
as if nothing had stopped the run.
  1. a token file truncated under a running `npt train`: exit 1, one error line naming
     the file and the checkpoint of the last logged step, that checkpoint on disk, no
     final.h5 and no temporary file; with the file back, --resume auto finishes the run;
  2. a read failure at a known micro-batch (test hook NPT_TEST_FAIL_READS): the resumed
     run ends bit-identical to an uninterrupted one, so no window was skipped;
  3. the same under MPI on rank 1 alone: rank 1 prints its error, rank 0 says another
     rank failed and where the state is, and the resumed 2-rank run ends bit-identical
     to the uninterrupted 2-rank run;
  4. the file truncated under a 2-rank run (either rank, or both, may be the first to
     fail): the job ends with exit 1 instead of hanging in a collective.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

import h5py
from harness import NPT, TOK512 as TOK, TRAIN_TEXT as TEXT, built, check, exit_code, run_npt, set_flags, temp_files
from test_mpi import ENV, MPIRUN, RECIPE, SETS, metrics, mpi_argv, run, same_bits

# a run far longer than the test: it is stopped by the truncation
ENDLESS = ["train.max_steps=100000", "train.warmup_steps=2", "checkpoint.every=5", "log.every=1", "train.batch_size=4",
           "threads=1"]


def ckpt_step_kind(path):
    with h5py.File(path, "r") as f:
        kind = f.attrs["kind"]
        return int(f.attrs["step"]), kind.decode() if isinstance(kind, bytes) else kind


def truncate_when_running(argv, tokens, out, env=None):
    """Starts argv, truncates the token file to nothing once 8 steps are logged, and
    returns (exit status, stderr, whether it was truncated in time)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                            stdin=subprocess.DEVNULL, env=env)
    path, cut = os.path.join(out, "metrics.jsonl"), False
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(path) and len(open(path).readlines()) >= 8:
            os.truncate(tokens, 0)
            cut = True
            break
        time.sleep(0.005)
    try:
        _, err = proc.communicate(timeout=120)  # a rank left waiting in a collective would hang here
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        err += "\n(hung: killed after 120 s)"
    return proc.returncode, err, cut


def main():
    if not built(NPT):
        return exit_code()
    tmp = tempfile.mkdtemp(prefix="npt-data-lost-")
    try:
        tokens = os.path.join(tmp, "tokens.u16")
        r = run_npt("data", "prepare", TEXT, "-o", tokens, "--tokenizer", TOK, "--quiet", timeout=120)
        if not check(r.returncode == 0, f"npt data prepare makes the token file (exit {r.returncode})"):
            return exit_code()
        with open(tokens, "rb") as f:
            blob = f.read()

        # 1. the file truncated under a running single-process run
        out = os.path.join(tmp, "cut")
        argv = [NPT, "train", RECIPE] + set_flags(ENDLESS + [f"data.train={tokens}", f"output_dir={out}"])
        rc, err, cut = truncate_when_running(argv, tokens, out)
        last = metrics(os.path.join(out, "metrics.jsonl"))[-1]["step"] if os.path.isdir(out) else -1
        errors = [line for line in err.splitlines() if line.startswith("npt train: error:")]
        ckpt = os.path.join(out, f"ckpt-{last:08d}.h5")
        check(cut and rc == 1 and len(errors) == 1 and f"cannot read {tokens}" in errors[0]
              and "the file is shorter than when it was opened" in errors[0]
              and f"the state after step {last} is in {ckpt}" in errors[0] and "--resume auto" in errors[0],
              f"token file truncated mid-run: exit {rc}, one error line naming the file and the step-{last} checkpoint: "
              f"{errors[0] if errors else err[-300:]!r}")
        saved = ckpt_step_kind(ckpt) if os.path.exists(ckpt) else (-1, None)
        check(saved[0] == last and saved[1] in ("emergency", "periodic") and not os.path.exists(os.path.join(out, "final.h5"))
              and not temp_files(out),
              f"the state of the last logged step {last} is on disk ({os.path.basename(ckpt)}, {saved[1]}), no final.h5, "
              "no temporary file")
        with open(tokens, "wb") as f:
            f.write(blob)
        r = run_npt("train", RECIPE, *set_flags([s for s in ENDLESS if not s.startswith("train.max_steps")]
                                                + [f"train.max_steps={last + 3}", f"data.train={tokens}",
                                                   f"output_dir={out}"]), "--resume", "auto", timeout=300)
        final = os.path.join(out, "final.h5")
        check(r.returncode == 0 and f"resumed from {ckpt}" in r.stderr and os.path.exists(final)
              and ckpt_step_kind(final)[0] == last + 3,
              f"with the file back, --resume auto goes on from step {last} to {last + 3} (exit {r.returncode})")

        # 2. a failed read at micro-batch 9 (step 10): resumed, bit-identical
        sets = ["train.max_steps=16", "train.warmup_steps=2", "checkpoint.every=100", "train.batch_size=4", "threads=1",
                f"data.train={tokens}"]
        whole, failed = os.path.join(tmp, "whole"), os.path.join(tmp, "failed")
        r1 = run_npt("train", RECIPE, *set_flags(sets + [f"output_dir={whole}"]), timeout=300)
        r2 = run_npt("train", RECIPE, *set_flags(sets + [f"output_dir={failed}"]), timeout=300,
                     env=dict(os.environ, NPT_TEST_FAIL_READS="9"))
        ckpt = os.path.join(failed, "ckpt-00000009.h5")
        check(r1.returncode == 0 and r2.returncode == 1 and r2.stderr.count("npt train: error:") == 1
              and f"the state after step 9 is in {ckpt}" in r2.stderr and ckpt_step_kind(ckpt) == (9, "emergency"),
              f"a read failing in step 10: exit {r2.returncode}, the state after step 9 in an emergency checkpoint")
        r3 = run_npt("train", RECIPE, *set_flags(sets + [f"output_dir={failed}"]), "--resume", "auto", timeout=300)
        ok, n = same_bits(os.path.join(whole, "final.h5"), os.path.join(failed, "final.h5")) if r3.returncode == 0 \
            else (False, 0)
        check(ok, f"resumed after the failed read, the run ends bit-identical to the uninterrupted one ({n} datasets): "
                  "the failed step's windows were not skipped")

        # 3. MPI: micro-batch 9 fails on rank 1 alone (step 5's second micro-batch)
        if not check(MPIRUN is not None, "mpirun is installed (scripts/setup.sh installs openmpi-bin)"):
            return exit_code()
        whole, failed = os.path.join(tmp, "mpi-whole"), os.path.join(tmp, "mpi-failed")
        r1 = run(mpi_argv(whole))
        args = [NPT, "train", RECIPE] + set_flags(SETS + [f"output_dir={failed}"])
        r2 = run([MPIRUN, "-np", "1", *args, ":", "-np", "1", "env", "NPT_TEST_FAIL_READS=9", *args])
        ckpt = os.path.join(failed, "ckpt-00000004.h5")
        check(r1.returncode == 0 and r2.returncode == 1 and r2.stderr.count("npt train: error:") == 2
              and r2.stderr.count("npt train: error: rank 1 of 2: test hook NPT_TEST_FAIL_READS") == 1
              and r2.stderr.count("another rank could not read the data") == 1
              and f"the state after step 4 is in {ckpt}" in r2.stderr and ckpt_step_kind(ckpt) == (4, "emergency"),
              f"MPI, rank 1 cannot read: exit {r2.returncode}, rank 1's error and rank 0's line naming the step-4 "
              f"checkpoint{'' if r2.returncode == 1 else r2.stderr[-400:]}")
        r3 = run(mpi_argv(failed, extra=["--resume", "auto"]))
        ok, n = same_bits(os.path.join(whole, "final.h5"), os.path.join(failed, "final.h5")) if r3.returncode == 0 \
            else (False, 0)
        check(ok, f"MPI: resumed, the run ends bit-identical to the uninterrupted 2-rank run ({n} datasets)")

        # 4. MPI: the file truncated under both ranks
        with open(tokens, "wb") as f:
            f.write(blob)
        out = os.path.join(tmp, "mpi-cut")
        argv = mpi_argv(out, [s for s in SETS if not s.startswith("train.max_steps")]
                        + ["train.max_steps=100000", f"data.train={tokens}"])
        rc, err, cut = truncate_when_running(argv, tokens, out, env=ENV)
        check(cut and rc == 1 and 1 <= err.count("npt train: error:") <= 2 and "shorter than when it was opened" in err
              and "the state after step" in err and "hung" not in err,
              f"MPI, the file truncated under both ranks: exit {rc}, no hang, the reason and the saved state said "
              f"({err.count('npt train: error:')} error line(s))")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return exit_code()


if __name__ == "__main__":
    sys.exit(main())
