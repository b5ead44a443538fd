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
     temporary file;
  6. output_dir moved aside (mv out out.old) under a running npt train and another
     directory made at its path: the run stops at its next write there (exit 4, one line
     naming both), writes nothing into the new directory, and continues from the moved
     one with the command the line gives; moved before its first checkpoint, nothing in
     its place: the line says the path is gone and that there is nothing to continue.
"""
import glob
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from harness import (NPT, TOK512 as TOK, VALID_TEXT as TEXT, built, check, exit_code, pause_when, resume, run_npt,
                     set_flags, shared_path, temp_files)

SAFE = "recipes/stories260k-safe.json"
SHORT = ["train.warmup_steps=1", "threads=1", "train.batch_size=4"]


def error_lines(stderr):
    return [line for line in stderr.splitlines() if ": error:" in line]


def snapshot(directory):
    """name -> bytes of every file in directory."""
    out = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            out[name] = f.read()
    return out


def test_moved_output_dir(tmp):
    out = os.path.join(tmp, "moved")
    sets = SHORT + ["train.max_steps=200", "checkpoint.every=5", "checkpoint.save_best=false", "data.seq_len=64",
                    f"output_dir={out}"]
    # loss.svg comes last in a checkpoint's writes (without best.h5, which has its own):
    # stopped once it is there, the run is past ckpt-00000005.h5 and before its next
    # write, so the move lands between two checkpoints, not inside one
    run, stopped = pause_when([NPT, "train", SAFE] + set_flags(sets), glob.escape(os.path.join(out, "loss.svg")),
                              timeout=60)
    if not stopped:
        check(False, f"moved output_dir: the run ended (status {run.poll()}) before its directory could be moved")
        return
    os.rename(out, out + ".old")
    os.mkdir(out)  # another run's directory now, as a second npt train there would make it
    for name, text in (("metrics.jsonl", '{"step":1}\n'), ("loss.svg", "<svg/>\n"), ("ckpt-00000005.h5", "theirs")):
        with open(os.path.join(out, name), "w") as f:
            f.write(text)
    theirs = snapshot(out)
    resume(run.pid)
    _, err = run.communicate(timeout=120)
    errs = error_lines(err)
    moved = os.path.realpath(out + ".old")
    check(run.returncode == 4 and len(errs) == 1 and f"output_dir {out} was moved or replaced" in errs[0]
          and f"this run's files are in {moved}" in errs[0] and f"--set output_dir={moved} --resume auto" in errs[0],
          f"moved output_dir: exit {run.returncode} (want 4), one line naming both directories: {errs}")
    check(snapshot(out) == theirs, f"moved output_dir: the new directory holds only its own files, unchanged: "
          f"{sorted(os.listdir(out))}")
    r = run_npt("train", SAFE, *set_flags(sets[:-1] + [f"output_dir={moved}"]), "--resume", "auto", timeout=300)
    ok = r.returncode == 0 and os.path.exists(os.path.join(moved, "final.h5")) and snapshot(out) == theirs
    check(ok, f"moved output_dir: the run continues in the moved directory as the line says (exit {r.returncode})"
          + ("" if ok else f": {r.stderr.strip()[-300:]}"))


def test_output_dir_gone(tmp):
    out = os.path.join(tmp, "gone")
    sets = SHORT + ["train.max_steps=100", "checkpoint.every=50", "data.seq_len=64", f"output_dir={out}"]
    # metrics.jsonl is opened before the first step
    run, stopped = pause_when([NPT, "train", SAFE] + set_flags(sets), glob.escape(os.path.join(out, "metrics.jsonl")),
                              timeout=60)
    if not stopped or os.path.exists(os.path.join(out, "best.h5")):
        run.kill()
        check(False, f"output_dir gone: the run reached its first checkpoint (status {run.wait()}) before the move")
        return
    os.rename(out, out + ".old")
    resume(run.pid)
    _, err = run.communicate(timeout=120)
    errs = error_lines(err)
    check(run.returncode == 4 and len(errs) == 1 and f"output_dir {out} was moved or replaced" in errs[0]
          and "(the path is gone: No such file or directory)" in errs[0]
          and f"{os.path.realpath(out + '.old')}, with no checkpoint to continue from" in errs[0]
          and not os.path.exists(out),
          f"output_dir moved before its first checkpoint: exit {run.returncode}, one line, nothing made at the path: {errs}")


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
        check(r.returncode in (1, 4) and len(errs) == 1 and "File too large" in errs[0] and os.path.isdir(capped)
              and not temp_files(capped),
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

        # 6. output_dir moved and replaced under a running run
        test_moved_output_dir(tmp)
        test_output_dir_gone(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return exit_code()


if __name__ == "__main__":
    sys.exit(main())
