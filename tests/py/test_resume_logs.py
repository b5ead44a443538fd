#!/usr/bin/python3
"""tests/py/test_resume_logs.py — metrics.jsonl after a resume holds each row of the run
once, in order, however the run got there.

  1. a run rewound into a new output_dir (--set output_dir=NEW --resume OLD/ckpt), its
     first batch there skipped (a skipped row carries the checkpoint's step), stopped
     after its last metrics line but before final.h5 (what kill -9 there leaves), then
     --resume auto: NEW/metrics.jsonl is the uninterrupted rewound run's, row for row
     from step 1 (the rows up to the checkpoint are OLD's own lines, tokens and time
     with them), no step twice, none missing;
  2. in place, a skipped row logged right after the checkpoint the resume starts from
     (same step as the checkpoint, not in its history): the redone skip appears once;
  3. rewound from a checkpoint copied alone (no log beside it): the rows up to it come
     from its history, tokens and time null, and every line parses as strict JSON.

Fast: 40 steps of 4 x 64 tokens on one thread per run. The stop in 1 and 2 is made by
removing final.h5 (the files are then those of a kill -9 after the last line), so no
test depends on when a signal lands.
Run from the repo root: /usr/bin/python3 tests/py/test_resume_logs.py
"""
import json
import os
import shutil
import sys
import tempfile

from harness import NPT, built, check, exit_code, run_npt, set_flags

SAFE = "recipes/stories260k-safe.json"
SETS = ["train.max_steps=40", "train.warmup_steps=2", "checkpoint.every=10", "checkpoint.keep_last=10",
        "data.seq_len=64", "train.batch_size=4", "threads=1"]


def train(out, extra=(), poison=None, sets=SETS):
    """npt train SAFE into out; poison: NPT_TEST_POISON_BATCHES (batch indices of this
    session, 0 the first drawn)."""
    env = dict(os.environ, NPT_TEST_POISON_BATCHES=poison) if poison else None
    r = run_npt("train", SAFE, *set_flags(sets + [f"output_dir={out}"]), *extra, timeout=300, env=env)
    if r.returncode != 0:
        check(False, f"npt train {' '.join(extra)} into {out}: exit {r.returncode}: {r.stderr.strip()[-300:]}")
    return r.returncode == 0


def rows(run_dir):
    """metrics.jsonl as parsed rows (strict JSON: NaN is refused)."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line, parse_constant=refuse) for line in f]


def lines(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return f.readlines()


def history_fields(rs):
    """What the checkpoint history holds of each row (not tokens and time)."""
    return [(r["step"], r["skipped"], r["loss"], r["lr"]) for r in rs]


def describe(rs):
    applied = [r["step"] for r in rs if not r["skipped"]]
    twice = sorted({s for s in applied if applied.count(s) > 1})
    return f"{len(rs)} rows, steps {rs[0]['step'] if rs else '-'}..{rs[-1]['step'] if rs else '-'}, steps twice: {twice[:5]}"


def test_rewind_then_resume(tmp, old):
    ref, new = os.path.join(tmp, "rewound_ref"), os.path.join(tmp, "rewound")
    rewind = ["--resume", os.path.join(old, "ckpt-00000020.h5")]
    if not (train(ref, rewind, poison="0") and train(new, rewind, poison="0")):
        return
    os.remove(os.path.join(new, "final.h5"))  # newest is now ckpt-00000030.h5, rows to step 40 logged
    if not train(new, ["--resume", "auto"]):
        return
    got, want = rows(new), rows(ref)
    check(history_fields(got) == history_fields(want),
          f"rewind then --resume auto: metrics.jsonl equals the uninterrupted rewound run's row for row "
          f"({describe(got)}; want {describe(want)})")
    check(lines(new)[:20] == lines(old)[:20] and lines(ref)[:20] == lines(old)[:20],
          "rewind: the new directory's first 20 lines are the old directory's own (tokens and time included)")
    skip = [(r["step"], r["skipped"]) for r in got[20:22]]
    check(skip == [(20, 1), (21, 0)], f"rewind: the skipped first batch is logged once at the checkpoint's step: {skip}")
    check(all(isinstance(r["tokens"], int) for r in got), "rewind: every row has its tokens")


def test_skip_after_checkpoint(tmp):
    out, ref = os.path.join(tmp, "skip_after_ckpt"), os.path.join(tmp, "skip_after_ckpt_ref")
    sets = SETS[:1] + ["train.max_steps=30"] + SETS[1:]  # ckpt-10, ckpt-20, final.h5 at 30
    if not (train(ref, sets=sets, poison="20") and train(out, sets=sets, poison="20")):
        return
    os.remove(os.path.join(out, "final.h5"))  # newest ckpt-20: the skip row at step 20 follows it in the log
    if not train(out, ["--resume", "auto"], sets=sets, poison="0"):  # the same batch, skipped again
        return
    got, want = rows(out), rows(ref)
    check(history_fields(got) == history_fields(want) and sum(r["skipped"] for r in got) == 1,
          f"in place: a skipped row logged after the checkpoint (its step) is redone once ({describe(got)}; "
          f"want {describe(want)})")


def test_lone_checkpoint(tmp, old):
    lone, out = os.path.join(tmp, "lone"), os.path.join(tmp, "from_lone")
    os.mkdir(lone)
    shutil.copy(os.path.join(old, "ckpt-00000020.h5"), lone)
    if not train(out, ["--resume", os.path.join(lone, "ckpt-00000020.h5")]):
        return
    got, want = rows(out), rows(old)
    seeded = got[:20]
    check(history_fields(got) == history_fields(want)
          and all(r["tokens"] is None and r["time"] is None for r in seeded)
          and all(isinstance(r["tokens"], int) for r in got[20:]),
          f"rewound from a checkpoint alone: rows 1-20 from its history (tokens and time null), 21-40 logged "
          f"({describe(got)})")


def main():
    if not built(NPT):
        return exit_code()
    tmp = tempfile.mkdtemp(prefix="npt-resume-logs-")
    try:
        old = os.path.join(tmp, "old")
        if train(old):
            test_rewind_then_resume(tmp, old)
            test_lone_checkpoint(tmp, old)
        test_skip_after_checkpoint(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return exit_code()


if __name__ == "__main__":
    sys.exit(main())
