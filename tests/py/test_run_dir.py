#!/usr/bin/python3
"""tests/py/test_run_dir.py — what protects a run directory and an output path.

  1. two `npt train` into one output_dir: the second is refused with one line, and the
     first finishes with a valid metrics.jsonl;
  2. --resume auto (and a fresh run) into a directory whose only checkpoint is damaged:
     refused with one line naming the file, which stays as it was (no fresh start over it);
  3. a file size limit (ulimit -f) with npt's default SIGXFSZ action: one error line,
     exit 1, no temporary file, the earlier checkpoints intact (not a kill by signal);
  4. a recipe name that is a path ("../x", ".", "/abs") is a recipe error;
  5. an output in a directory that does not exist: the error names the directory, not a
     temporary file.
"""
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from harness import (NPT, TOK512 as TOK, VALID_TEXT as TEXT, built, check, exit_code, run_npt, set_flags, shared_path,
                     temp_files)

SAFE = "recipes/stories260k-safe.json"
SHORT = ["train.warmup_steps=1", "threads=1", "train.batch_size=4"]


def error_lines(stderr):
    return [line for line in stderr.splitlines() if ": error:" in line]


def main():
    if not built(NPT):
        return exit_code()
    tmp = tempfile.mkdtemp(prefix="npt-run-dir-")
    try:
        # 1. two runs into one directory
        out = os.path.join(tmp, "busy")
        first = subprocess.Popen([NPT, "train", SAFE] + set_flags(SHORT + ["train.max_steps=400", f"output_dir={out}"]),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline and not os.path.exists(os.path.join(out, "metrics.jsonl")):
            time.sleep(0.01)
        r = run_npt("train", SAFE, *set_flags(SHORT + ["train.max_steps=400", "seed=7", f"output_dir={out}"]), timeout=120)
        still_running = first.poll() is None
        _, err1 = first.communicate(timeout=300)
        errs = error_lines(r.stderr)
        check(still_running and r.returncode == 1 and len(errs) == 1
              and f"{out} is in use by another npt train running there" in errs[0],
              f"a second run into a busy output_dir: exit {r.returncode}, one line: {errs}")
        with open(os.path.join(out, "metrics.jsonl")) as f:
            steps = [json.loads(line)["step"] for line in f]
        check(first.returncode == 0 and steps == list(range(1, 401)),
              f"the first run finishes alone: exit {first.returncode}, metrics.jsonl steps 1..400 ({len(steps)} lines)")

        # 2. the only checkpoint is damaged: never a fresh start over it
        good = os.path.join(tmp, "good")
        r = run_npt("train", SAFE, *set_flags(SHORT + ["train.max_steps=2", f"output_dir={good}"]), timeout=120)
        bad = os.path.join(tmp, "damaged")
        os.mkdir(bad)
        ckpt = os.path.join(bad, "ckpt-00000002.h5")
        with open(os.path.join(good, "final.h5"), "rb") as f:
            blob = f.read()[:4000]
        with open(ckpt, "wb") as f:
            f.write(blob)
        for label, extra in (("--resume auto", ["--resume", "auto"]), ("a fresh run", [])):
            r = run_npt("train", SAFE, *set_flags(SHORT + ["train.max_steps=4", f"output_dir={bad}"]), *extra, timeout=120)
            errs = error_lines(r.stderr)
            with open(ckpt, "rb") as f:
                same = f.read() == blob
            check(r.returncode == 1 and len(errs) == 1 and f"{bad} holds 1 checkpoint file and none can be resumed" in errs[0]
                  and ckpt in errs[0] and "skipped for resuming" not in r.stderr and same
                  and os.listdir(bad) == ["ckpt-00000002.h5"],
                  f"{label} into a directory whose only checkpoint is damaged: exit {r.returncode}, one line, the file "
                  f"untouched: {errs}")

        # 3. ulimit -f, SIGXFSZ left at its default action (which kills the process)
        def limit():
            signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
            resource.setrlimit(resource.RLIMIT_FSIZE, (100 * 1024, 100 * 1024))
        capped = os.path.join(tmp, "capped")
        r = subprocess.run([NPT, "train", SAFE] + set_flags(SHORT + ["train.max_steps=3", f"output_dir={capped}"]),
                           capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, preexec_fn=limit)
        errs = error_lines(r.stderr)
        check(r.returncode in (1, 4) and len(errs) == 1 and "File too large" in errs[0] and not temp_files(capped),
              f"train under ulimit -f: exit {r.returncode} (not killed by SIGXFSZ), one error line, no temporary file: {errs}")
        prepared = os.path.join(tmp, "capped.u16")
        r = subprocess.run([NPT, "data", "prepare", shared_path("data", "tinystories-train-head.txt"), "-o", prepared,
                            "--tokenizer", TOK, "--quiet"], capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL, preexec_fn=limit)
        check(r.returncode == 1 and len(error_lines(r.stderr)) == 1 and not os.path.exists(prepared)
              and not temp_files(tmp), f"data prepare under ulimit -f: exit {r.returncode}, one line, nothing left")

        # 4. recipe names that are paths
        for name in ("../escape", ".", "/abs"):
            r = run_npt("validate", SAFE, "--set", f"name={name}", timeout=60)
            check(r.returncode == 1 and f'name: "{name}" is a path; give a plain name' in r.stderr,
                  f"name {name!r} is a recipe error (exit {r.returncode})")

        # 5. an output whose directory does not exist
        missing = os.path.join(tmp, "no", "such")
        r = run_npt("data", "prepare", TEXT, "-o", os.path.join(missing, "x.u16"), "--tokenizer", TOK, "--quiet")
        check(r.returncode == 1 and f"directory {missing} does not exist; create it first" in r.stderr
              and ".tmp." not in r.stderr, f"an output in a missing directory names it: {r.stderr.strip()}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return exit_code()


if __name__ == "__main__":
    sys.exit(main())
