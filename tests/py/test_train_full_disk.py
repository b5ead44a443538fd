#!/usr/bin/python3
"""tests/py/test_train_full_disk.py — `npt train` when a checkpoint cannot be written.

A full disk is simulated without privileges: RLIMIT_FSIZE below a checkpoint's size
(stories260K adapters + AdamW moments, ~1.6 MB; metrics.jsonl stays far below it), so a
write past the limit fails with EFBIG (SIGXFSZ ignored). A run of 10 steps writes its
checkpoints unlimited; the same run resumed to step 20 under a 100 KB limit must stop at
its first checkpoint with exit 4 and one error line naming the file and the reason,
leave the earlier checkpoints byte for byte as they were, and no temporary file. HDF5
1.10 cannot close a file whose writes failed: before the fix the process crashed inside
exit() (SIGSEGV, exit 139) after printing HDF5's internal write report.

The teacher cache on a small file system (a 12 MiB tmpfs in a private mount namespace;
the test runs as root): a cache that fits the free space but would leave too little for
the run's checkpoints is refused before the first step (before the fix it filled the
disk and the first checkpoint failed with exit 4, the run lost); a smaller one trains to
the end with every checkpoint written.
Run from the repo root: /usr/bin/python3 tests/py/test_train_full_disk.py
"""
import os
import subprocess
import sys
import tempfile

from harness import NPT, check, exit_code, run_npt, set_flags, temp_files

FULL = "recipes/stories260k-full.json"
SETS = ["train.warmup_steps=0", "checkpoint.every=5", "data.seq_len=64", "train.batch_size=4", "threads=1"]


def train(out, steps, extra=(), fsize=None):
    return run_npt("train", FULL, *set_flags(SETS + [f"train.max_steps={steps}", f"output_dir={out}"]), *extra,
                   timeout=300, fsize=fsize)


def main():
    with tempfile.TemporaryDirectory(prefix="npt-full-disk-") as tmp:
        out = os.path.join(tmp, "run")
        r = train(out, 10)
        if r.returncode != 0:
            check(False, f"the unlimited 10-step run: exit {r.returncode}: {r.stderr.strip()[-300:]}")
            return exit_code()
        before = {f: open(os.path.join(out, f), "rb").read() for f in sorted(os.listdir(out)) if f.endswith(".h5")}
        r = train(out, 20, ["--resume", "auto"], fsize=100_000)
        errors = [line for line in r.stderr.splitlines() if "error" in line]
        # the first file of step 15 to be written: best.h5 when that interval is the best yet, else the periodic one
        want = tuple(f"npt train: error: cannot write checkpoint {out}/{name}: File too large; "
                     for name in ("ckpt-00000015.h5", "best.h5"))
        check(r.returncode == 4 and len(errors) == 1 and errors[0].startswith(want)
              and "bytes actually written" not in r.stderr and "buf = " not in r.stderr,
              f"resumed run on a full disk: exit {r.returncode} (want 4, not a crash), one error line naming the "
              f"checkpoint: {errors[0] if errors else r.stderr.strip()[-300:]!r}")
        after = {f: open(os.path.join(out, f), "rb").read() for f in sorted(os.listdir(out)) if f.endswith(".h5")}
        check(len(before) >= 2 and after == before,
              f"the earlier checkpoints {sorted(before)} are unchanged and no new one appeared ({sorted(after)})")
        left = temp_files(out)
        check(not left, f"no temporary file left in the run directory ({left})")
        cache_on_small_disk(tmp)
    return exit_code()


def train_on_tmpfs(tmp, name, cache_gb):
    """A 20-step run with the teacher cache whose output_dir is a fresh 12 MiB tmpfs; the
    CompletedProcess and the names the run left there (listed before the mount goes)."""
    mnt, listing = os.path.join(tmp, f"mnt-{name}"), os.path.join(tmp, f"{name}.ls")
    os.mkdir(mnt)
    run = [os.path.abspath(NPT), "train", "recipes/stories260k-safe.json",
           *set_flags(["data.seq_len=32", "train.max_steps=20", "train.warmup_steps=0", "checkpoint.every=5", "threads=1",
                       f"train.teacher_cache_gb={cache_gb}", f"output_dir={mnt}/run"])]
    script = 'mount -t tmpfs -o size=12m npt-test "$MNT" || exit 90; "$@"; rc=$?; ls -A "$MNT/run" > "$LS"; exit $rc'
    r = subprocess.run(["unshare", "--mount", "/bin/sh", "-c", script, "sh", *run], capture_output=True, text=True,
                       errors="replace", timeout=300, stdin=subprocess.DEVNULL, env=dict(os.environ, MNT=mnt, LS=listing))
    left = open(listing).read().split() if os.path.exists(listing) else []
    return r, left


def cache_on_small_disk(tmp):
    rig = subprocess.run(["unshare", "--mount", "true"], capture_output=True, text=True)
    if not check(rig.returncode == 0, f"a private mount namespace can be made for the tmpfs (unshare: "
                                      f"{rig.stderr.strip() or 'ok'}; the test runs as root)"):
        return
    # 12.5 MB of records fit the 12.58 MB file system, but not with the checkpoints' room
    r, left = train_on_tmpfs(tmp, "big", 0.0125)
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    check(r.returncode == 1 and len(errors) == 1 and "stay free for checkpoints" in errors[0]
          and "train.teacher_cache_gb" in errors[0] and not any(f.endswith(".h5") for f in left),
          f"a teacher cache that would crowd out the checkpoints on a 12 MiB disk is refused before the first step "
          f"(exit {r.returncode}, want 1): {errors or r.stderr.strip()[-300:]}, left {left}")
    r, left = train_on_tmpfs(tmp, "small", 0.002)
    want = {"ckpt-00000010.h5", "ckpt-00000015.h5", "best.h5", "final.h5"}
    stored = [line for line in r.stdout.splitlines() + r.stderr.splitlines() if "windows stored" in line]
    check(r.returncode == 0 and want <= set(left) and stored and " 0 windows stored" not in stored[0],
          f"a 2 MB teacher cache on the 12 MiB disk: exit {r.returncode}, {stored}, left {sorted(left)} "
          f"{r.stderr.strip()[-300:] if r.returncode else ''}")


if __name__ == "__main__":
    sys.exit(main())
