"""tests/py/test_export_ids.py — npt export and the two identities a checkpoint carries.

The tokenizer: a run started with relative paths (--set model=init1 --set
tokenizer=init1/tokenizer.json) is exported from other directories, one of which holds a
different init1/tokenizer.json of the same size: export must copy the run's own file
(the checkpoint records its absolute path, size and hash), refuse it once it changed,
refuse an older checkpoint that names it only relatively (with the --tokenizer way out),
and train --resume must refuse a tokenizer whose contents changed.

The base model: stories260K.bin and npt's own HF export of it (q/k rows permuted to
rotate-half RoPE) have one fingerprint, so adapters trained on the .bin are verified and
generate the same greedy tokens on the export.
"""
import json
import os
import shutil
import subprocess
import tempfile

from harness import BUILD, NPT, STORIES260K_BIN, TOK512, VALID_TEXT, built, check, exit_code, run_npt

NPT_ABS = os.path.abspath(NPT)
STRIP = os.path.abspath(os.path.join(BUILD, "tests", "test_export_ids"))
RECIPES = os.path.abspath("recipes")
BIN, TOK, TEXT = os.path.abspath(STORIES260K_BIN), os.path.abspath(TOK512), os.path.abspath(VALID_TEXT)


def npt_in(cwd, *args):
    p = subprocess.run([NPT_ABS, *args], cwd=cwd, capture_output=True, text=True, errors="replace",
                       stdin=subprocess.DEVNULL, timeout=600)
    return p.returncode, p.stdout, p.stderr


def one_error(err, *words):
    lines = [l for l in err.splitlines() if "error" in l]
    return len(lines) == 1 and all(w in lines[0] for w in words)


def swapped_tokenizer(src, dst):
    """src's tokenizer.json with the tokens '<0x41>' and '<0x42>' (A, B) swapped: same size, other ids."""
    text = open(src, "rb").read().replace(b"<0x41>", b"<tmp41>").replace(b"<0x42>", b"<0x41>").replace(b"<tmp41>", b"<0x42>")
    assert text != open(src, "rb").read()
    open(dst, "wb").write(text)


def same_bytes(a, b):
    return open(a, "rb").read() == open(b, "rb").read()


def train_relative(work, extra=()):
    return npt_in(work, "train", os.path.join(RECIPES, "demo-base.json"), "--set", "model=init1",
                  "--set", "tokenizer=init1/tokenizer.json", "--set", "output_dir=run", "--set", f"data.train={TEXT}",
                  "--set", "train.warmup_steps=1", "--set", "checkpoint.every=2", "--set", "threads=2",
                  "--set", "train.batch_size=2", *extra)


def tokenizer_cases(tmp):
    work, other, empty = (os.path.join(tmp, d) for d in ("work", "other", "empty"))
    for d in (work, os.path.join(other, "init1"), empty):
        os.makedirs(d)
    rc, _, err = npt_in(work, "init", "--out", "init1", "--dim", "64", "--layers", "2", "--heads", "4", "--kv-heads",
                        "2", "--context", "128")
    rc2, _, err2 = train_relative(work, ("--set", "train.max_steps=2"))
    if not check(rc == 0 and rc2 == 0, f"a run with relative model and tokenizer paths trains ({(err + err2)[-300:]})"):
        return
    ckpt, run_tok = os.path.join(work, "run", "final.h5"), os.path.join(work, "init1", "tokenizer.json")
    swapped_tokenizer(run_tok, os.path.join(other, "init1", "tokenizer.json"))
    rc, _, err = npt_in(empty, "export", ckpt, "--out", "e")
    check(rc == 0 and same_bytes(os.path.join(empty, "e", "tokenizer.json"), run_tok),
          f"exported from another directory, the run's tokenizer is found: exit {rc} {err.strip()[-200:]}")
    rc, _, err = npt_in(other, "export", ckpt, "--out", "e")
    check(rc == 0 and same_bytes(os.path.join(other, "e", "tokenizer.json"), run_tok),
          f"a same-sized init1/tokenizer.json in the current directory is not taken for the run's: exit {rc}")
    backup = os.path.join(work, "saved-tokenizer.json")
    shutil.copy(run_tok, backup)
    swapped_tokenizer(backup, run_tok)
    rc, _, err = npt_in(other, "export", ckpt, "--out", "changed")
    check(rc != 0 and one_error(err, run_tok, "changed", "--tokenizer") and not os.path.exists(os.path.join(other, "changed")),
          f"the run's tokenizer changed since: refused in one line naming it and --tokenizer, nothing written: {err.strip()}")
    rc, _, err = npt_in(work, "train", os.path.join(RECIPES, "demo-base.json"), "--resume", "auto", *sum(
        (["--set", s] for s in ("model=init1", "tokenizer=init1/tokenizer.json", "output_dir=run", f"data.train={TEXT}",
                                "train.warmup_steps=1", "checkpoint.every=2", "threads=2", "train.batch_size=2",
                                "train.max_steps=4")), []))
    check(rc != 0 and "other contents" in err and run_tok in err,
          f"train --resume with the tokenizer's contents changed is refused: exit {rc} {err.strip()[-300:]}")
    os.replace(backup, run_tok)
    os.rename(run_tok, backup)
    rc, _, err = npt_in(other, "export", ckpt, "--out", "gone")
    check(rc != 0 and one_error(err, run_tok, "--tokenizer"), f"the run's tokenizer removed: refused: {err.strip()}")
    rc, _, err = npt_in(other, "export", ckpt, "--out", "given", "--tokenizer", backup)
    check(rc == 0, f"--tokenizer still exports it: exit {rc} {err.strip()[-200:]}")
    os.rename(backup, run_tok)
    old = os.path.join(tmp, "old.h5")  # as npt wrote checkpoints before recording the tokenizer
    p = subprocess.run([STRIP, "--strip-tokenizer", ckpt, old], capture_output=True, text=True)
    if not check(p.returncode == 0, f"an old-style copy without the recorded tokenizer ({p.stderr.strip()})"):
        return
    rc, _, err = npt_in(other, "export", old, "--out", "old")
    check(rc != 0 and one_error(err, '"init1/tokenizer.json"', "relative", "--tokenizer")
          and not os.path.exists(os.path.join(other, "old")),
          f"an older checkpoint naming its tokenizer relatively is refused, not resolved from here: {err.strip()}")
    rc, _, err = npt_in(work, "export", old, "--out", "old", "--tokenizer", "init1/tokenizer.json")
    check(rc == 0 and same_bytes(os.path.join(work, "old", "tokenizer.json"), run_tok),
          f"... and exported with --tokenizer: exit {rc} {err.strip()[-200:]}")


def greedy(model, adapters):
    rc, out, err = npt_in(".", "generate", "--model", model, "--tokenizer", TOK, "--adapters", adapters,
                          "--temperature", "0", "--steps", "40", "--json")
    return json.loads(out)["tokens"] if rc == 0 else err.strip()


def fingerprint(model):
    rc, out, _ = npt_in(".", "inspect", model, "--json")
    return json.loads(out)["fingerprint"] if rc == 0 else None


def base_cases(tmp):
    exp = os.path.join(tmp, "exp260")
    rc, _, err = npt_in(".", "export", BIN, "--out", exp)
    if not check(rc == 0, f"export stories260K.bin as HF ({err.strip()[-200:]})"):
        return
    check(fingerprint(exp) == fingerprint(BIN) is not None,
          f"the export has the .bin's fingerprint ({fingerprint(exp)} vs {fingerprint(BIN)})")
    rc, _, err = npt_in(tmp, "train", os.path.join(RECIPES, "stories260k-full.json"), "--set", "output_dir=r260",
                        "--set", "train.max_steps=6", "--set", "train.warmup_steps=1", "--set", "checkpoint.every=6",
                        "--set", "threads=2")
    if not check(rc == 0, f"adapters trained on stories260K.bin ({err.strip()[-200:]})"):
        return
    ckpt = os.path.join(tmp, "r260", "final.h5")
    rc, out, err = npt_in(".", "inspect", "verify", ckpt, "--model", exp)
    check(rc == 0, f"inspect verify accepts them on the export: {(out + err).strip().splitlines()[-1][:300]}")
    a, b = greedy(BIN, ckpt), greedy(exp, ckpt)
    check(isinstance(a, list) and a == b, f"with the adapters, .bin and export give the same greedy tokens ({a} vs {b})")


if built(NPT, STRIP):
    tmp = tempfile.mkdtemp(prefix="npt-export-ids-")
    try:
        tokenizer_cases(tmp)
        base_cases(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
raise SystemExit(exit_code())
