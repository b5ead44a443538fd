#!/usr/bin/python3
"""tests/py/test_output_races.py — outputs written while something else touches them
(util/atomic_file.c: fresh temporary names, their locks, no-replace commits):
  1. npt data prepare -o OUT without --force, and OUT is created while the text is being
     tokenized: OUT is kept, the command exits 1 naming it, no temporary file is left.
     With --force the same race ends with npt's output. (Before, OUT was checked only at
     start and silently replaced.) The process is stopped the moment its temporary file
     appears, so the file is made mid-write however busy the machine is.
  2. npt train killed with SIGKILL while it tokenizes text into the token cache leaves
     its temporary file there; the next run that writes into the cache (another text)
     removes it, the file being made a minute old first (only such are swept). (Before,
     such files stayed for good.)
  3. a live writer's temporary file is not removed by another run's sweep: a run
     stopped mid-tokenizing keeps its file (aged too: its lock alone protects it) while a
     second run writes into the cache.
Run from the repo root: /usr/bin/python3 tests/py/test_output_races.py
"""
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from harness import (NPT, STORIES260K_DIR, TRAIN_TEXT, VALID_TEXT, built, check, exit_code, pause_when,
                     repeated_text, resume, set_flags, temp_files)

SAFE = "recipes/stories260k-safe.json"
TOK = os.path.join(STORIES260K_DIR, "tok512.bin")


def big_text(tmp, copies=8):
    """Seconds of tokenizing: copies of the training head (2 MB each)."""
    return repeated_text(os.path.join(tmp, f"stories{copies}.txt"), TRAIN_TEXT, copies)


def test_prepare_race(tmp):
    text = big_text(tmp)
    for force in (False, True):
        out = os.path.join(tmp, f"race-{force}.u16")
        argv = [NPT, "data", "prepare", text, "-o", out, "--tokenizer", TOK, "--quiet"] + (["--force"] if force else [])
        p, stopped = pause_when(argv, glob.escape(out) + ".tmp.*")
        with open(out, "w") as f:
            f.write("the user's file\n")
        resume(p.pid)
        _, err = p.communicate(timeout=300)
        with open(out, "rb") as f:
            head = f.read(16)
        left = [n for n in os.listdir(tmp) if n.startswith(os.path.basename(out) + ".tmp.")]
        if not force:
            lines = [l for l in err.splitlines() if l.strip()]
            check(stopped and p.returncode == 1 and head == b"the user's file\n" and left == [] and len(lines) == 1
                  and out in lines[0] and "--force" in lines[0],
                  f"without --force, an OUT made mid-write is kept (caught mid-write: {stopped}), exit "
                  f"{p.returncode}, one line naming it: {err.strip()[-300:]!r}; temporaries left: {left}")
        else:
            check(stopped and p.returncode == 0 and head != b"the user's file\n" and os.path.getsize(out) > 1000000
                  and left == [], f"with --force it is replaced by the tokens (exit {p.returncode}, "
                  f"{os.path.getsize(out)} bytes, temporaries left: {left}) {err.strip()[-200:]}")


def train_argv(text, out):
    sets = ["train.max_steps=1", "train.warmup_steps=1", "data.seq_len=64", "train.batch_size=2", "threads=1",
            f"data.train={text}", f"output_dir={out}"]
    return [NPT, "train", SAFE, *set_flags(sets)]


def age(directory, names, seconds=120):
    """Makes the files `seconds` old: npt sweeps only temporaries a minute untouched."""
    then = time.time() - seconds
    for n in names:
        os.utime(os.path.join(directory, n), (then, then))


def test_cache_sweep(tmp):
    cache = os.path.join(tmp, "cache")
    env = dict(os.environ, NPT_CACHE_DIR=cache)
    text = big_text(tmp, copies=6)
    # 3: stopped mid-tokenizing (alive, holding its lock) while another run writes into the cache
    p, stopped = pause_when(train_argv(text, os.path.join(tmp, "run-a")), os.path.join(glob.escape(cache), "*.tmp.*"),
                            env=env)
    live = temp_files(cache)
    age(cache, live)  # only its lock protects it now, not its age
    r = subprocess.run(train_argv(VALID_TEXT, os.path.join(tmp, "run-b")), capture_output=True, text=True, env=env,
                       timeout=300, stdin=subprocess.DEVNULL)
    check(stopped and len(live) == 1 and r.returncode == 0 and temp_files(cache) == live,
          f"a live writer's temporary {live} survives another run writing into the cache (caught: {stopped}, "
          f"other run's exit {r.returncode}; after it: {temp_files(cache)}) {r.stderr.strip()[-200:]}")
    # 2: the same writer killed outright leaves its file; the next cache write removes it
    resume(p.pid, signal.SIGKILL)
    p.communicate(timeout=60)
    check(p.returncode == -signal.SIGKILL and temp_files(cache) == live,
          f"SIGKILL mid-tokenizing leaves the temporary file behind ({temp_files(cache)})")
    age(cache, live)  # the sweep also wants a minute untouched (a writer on another machine)
    shutil.rmtree(os.path.join(tmp, "run-b"))
    other = os.path.join(tmp, "other.txt")
    shutil.copyfile(VALID_TEXT, other)  # another name: a cache file of its own to write
    r = subprocess.run(train_argv(other, os.path.join(tmp, "run-b")), capture_output=True, text=True, env=env,
                       timeout=300, stdin=subprocess.DEVNULL)
    check(r.returncode == 0 and temp_files(cache) == [],
          f"the next run writing into the cache removes it (exit {r.returncode}, left: {temp_files(cache)}) "
          f"{r.stderr.strip()[-200:]}")


def main():
    if not built(NPT):
        return 1
    tmp = tempfile.mkdtemp(prefix="npt-races-")
    try:
        test_prepare_race(tmp)
        test_cache_sweep(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return exit_code()


if __name__ == "__main__":
    sys.exit(main())
