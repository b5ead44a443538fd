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
Run from the repo root: /usr/bin/python3 tests/py/test_train_full_disk.py
"""
import os
import sys
import tempfile

from harness import check, exit_code, run_npt, set_flags, temp_files

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
        want = f"npt train: error: cannot write checkpoint {out}/ckpt-00000015.h5: File too large; "
        check(r.returncode == 4 and len(errors) == 1 and errors[0].startswith(want)
              and "bytes actually written" not in r.stderr and "buf = " not in r.stderr,
              f"resumed run on a full disk: exit {r.returncode} (want 4, not a crash), one error line naming the "
              f"checkpoint: {errors[0] if errors else r.stderr.strip()[-300:]!r}")
        after = {f: open(os.path.join(out, f), "rb").read() for f in sorted(os.listdir(out)) if f.endswith(".h5")}
        check(len(before) >= 2 and after == before,
              f"the earlier checkpoints {sorted(before)} are unchanged and no new one appeared ({sorted(after)})")
        left = temp_files(out)
        check(not left, f"no temporary file left in the run directory ({left})")
    return exit_code()


if __name__ == "__main__":
    sys.exit(main())
