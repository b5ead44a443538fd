#!/usr/bin/python3
"""tests/py/test_signals.py — Ctrl-C (SIGINT) and SIGTERM stop at a clean point (util/stop.h).

  1. npt train stopped by SIGTERM between checkpoints: exit 143, an emergency checkpoint
     of the last completed step, a message naming it and --resume auto; resumed, the run
     ends with a final.h5 bit-identical to an uninterrupted run's;
  2. npt train stopped by SIGINT while it tokenizes its text data into the token cache:
     exit 130, nothing left in the cache directory (no partial cache, no temporary file),
     no checkpoint;
  3. npt data prepare stopped by SIGINT: exit 130, neither the output nor its temporary
     file on disk; also when the input is a single block (2 MB: the signal lands in its
     only, final block, after which nothing else would look at it).
Not tested: that a second signal ends the process at once (the handler resets itself to
the default action, SA_RESETHAND; timing a second signal into a given phase is racy).
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import h5py
from harness import NPT, TOK512 as TOK, TRAIN_TEXT as TEXT, built, check, exit_code, pause, repeated_text, resume, set_flags

SAFE = "recipes/stories260k-safe.json"
# 40 steps of 8 x 128 tokens on one thread (bit-exact comparison), checkpoints every 10
SETS = ["train.max_steps=40", "train.warmup_steps=2", "checkpoint.every=10", "data.seq_len=128",
        "train.batch_size=8", "threads=1"]
STOP_AFTER_STEPS = 24  # test 1 signals once this many steps are logged: between checkpoints


def train_argv(out, sets=SETS, extra=()):
    return [NPT, "train", SAFE] + set_flags(sets + [f"output_dir={out}"]) + list(extra)


def lines(path):
    try:
        with open(path) as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def wait_until(proc, ready, limit=120):
    """Polls ready() until it holds; False if the process ended first or time ran out."""
    deadline = time.time() + limit
    while not ready():
        if proc.poll() is not None or time.time() > deadline:
            return False
        time.sleep(0.005)
    return True


def adapter_datasets(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()].tobytes()) if isinstance(o, h5py.Dataset)
                     and n.startswith(("adapters/", "optimizer/", "history/")) else None)
    return out


def big_text(tmp, copies=20):
    """About 40 MB of TinyStories text: tokenizing it takes seconds, so a signal lands mid-way."""
    return repeated_text(os.path.join(tmp, "big.txt"), TEXT, copies)


def test_train_sigterm_resume(tmp):
    a_dir, b_dir = os.path.join(tmp, "uninterrupted"), os.path.join(tmp, "stopped")
    a = subprocess.run(train_argv(a_dir), capture_output=True, text=True, timeout=300)
    if not check(a.returncode == 0, f"sigterm: the uninterrupted run ends with exit 0 (got {a.returncode})"):
        return
    proc = subprocess.Popen(train_argv(b_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = os.path.join(b_dir, "metrics.jsonl")
    # stopped where it is seen, so the signal lands there however late this test ran
    if not wait_until(proc, lambda: lines(log) >= STOP_AFTER_STEPS) or not pause(proc.pid) or lines(log) >= 39:
        proc.kill()
        check(False, f"sigterm: the run ended (status {proc.wait()}) before the signal could be sent")
        return
    resume(proc.pid, signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    step = lines(log)  # the step in flight completes and is logged before the stop
    ckpt = os.path.join(b_dir, f"ckpt-{step:08d}.h5")
    said = [ln for ln in err.splitlines() if "stopped by SIGTERM" in ln]
    check(proc.returncode == 143, f"sigterm: exit 143 (128 + SIGTERM), got {proc.returncode}")
    check(said and f"after step {step}" in said[0] and ckpt in said[0] and "--resume auto" in said[0],
          f"sigterm: one line names the step ({step}), the checkpoint and --resume auto: {said[:1]}")
    check(STOP_AFTER_STEPS <= step < 40, f"sigterm: stopped before the end (step {step} of 40)")
    if not check(os.path.exists(ckpt), f"sigterm: {os.path.basename(ckpt)} holds the state of the last step"):
        return
    with h5py.File(ckpt, "r") as f:
        kind, at = f.attrs["kind"], int(f.attrs["step"])
    kind = kind.decode() if isinstance(kind, bytes) else kind
    check(at == step and kind == ("emergency" if step % 10 else "periodic"),
          f"sigterm: its step attribute is {at} and its kind {kind}")
    check(not os.path.exists(os.path.join(b_dir, "final.h5")), "sigterm: no final.h5 for a stopped run")
    b = subprocess.run(train_argv(b_dir, extra=["--resume", "auto"]), capture_output=True, text=True, timeout=300)
    check(b.returncode == 0 and f"resumed from {ckpt} at step {step}" in b.stderr,
          f"sigterm: --resume auto continues from that checkpoint (exit {b.returncode})")
    if b.returncode != 0:
        return
    fa, fb = adapter_datasets(os.path.join(a_dir, "final.h5")), adapter_datasets(os.path.join(b_dir, "final.h5"))
    differ = sorted(n for n in set(fa) | set(fb) if fa.get(n) != fb.get(n))
    check(fa and not differ, f"sigterm: final.h5 adapters, moments and history ({len(fa)} datasets) bit-identical "
          f"to the uninterrupted run's" + (f"; differ: {differ[:4]}" if differ else ""))


def sigint_while_tokenizing(argv, watch, label, env=None):
    """Runs ARGV and sends SIGINT once a file appears in WATCH (its temporary output:
    tokenizing has begun), the command stopped meanwhile so the signal lands while that
    file is still temporary. Checks exit 130; returns stderr, or None if the command
    ended before."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    if not wait_until(proc, lambda: os.listdir(watch)) or not pause(proc.pid) \
            or not any(".tmp." in f for f in os.listdir(watch)):
        proc.kill()
        check(False, f"{label}: the command ended (status {proc.wait()}) before it was seen tokenizing")
        return None
    resume(proc.pid, signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    check(proc.returncode == 130, f"{label}: exit 130 (128 + SIGINT), got {proc.returncode}: {err.strip()[-200:]}")
    return err


def test_train_sigint_while_tokenizing(tmp):
    cache, out = os.path.join(tmp, "cache"), os.path.join(tmp, "tokenizing")
    os.mkdir(cache)
    text = big_text(tmp)
    err = sigint_while_tokenizing(train_argv(out, SETS + [f"data.train={text}"]), cache, "sigint/tokenizing",
                                  env=dict(os.environ, NPT_CACHE_DIR=cache))
    if err is None:
        return
    check(f"npt train: error: {text}: stopped by SIGINT while tokenizing; nothing was written" in err,
          "sigint/tokenizing: one error line names the text and the signal")
    check(os.listdir(cache) == [], f"sigint/tokenizing: the cache directory is empty: {os.listdir(cache)}")
    left = [f for f in os.listdir(out) if f.endswith(".h5") or ".tmp." in f] if os.path.isdir(out) else []
    check(left == [], f"sigint/tokenizing: no checkpoint or temporary file in the run directory: {left}")


def test_prepare_sigint(tmp, copies, label):
    text, out_dir = big_text(tmp, copies), os.path.join(tmp, label.replace("/", "-"))
    os.mkdir(out_dir)
    argv = [NPT, "data", "prepare", text, "-o", os.path.join(out_dir, "big.u16"), "--tokenizer", TOK]
    err = sigint_while_tokenizing(argv, out_dir, label)
    if err is None:
        return
    check(f"npt data prepare: error: {text}: stopped by SIGINT while tokenizing; nothing was written" in err,
          f"{label}: one error line names the text and the signal")
    check(os.listdir(out_dir) == [], f"{label}: neither the output nor its temporary file is left: {os.listdir(out_dir)}")


def main():
    if not built(NPT):
        return 1
    tmp = tempfile.mkdtemp(prefix="npt-signals-")
    try:
        test_train_sigterm_resume(tmp)
        test_train_sigint_while_tokenizing(tmp)
        test_prepare_sigint(tmp, 20, "sigint/prepare")
        test_prepare_sigint(tmp, 1, "sigint/prepare-one-block")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return exit_code()


if __name__ == "__main__":
    sys.exit(main())
