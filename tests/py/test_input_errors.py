#!/usr/bin/python3
"""tests/py/test_input_errors.py — bad inputs the sweep found reported vaguely or not at
all, each with a control that the check is specific:

  1. npt validate reports what npt train refuses at once (both run train_setup_issues):
     a tokenizer of another vocabulary, output_dir or data.cache_dir that is a file,
     data.train unset; train says the same under the same key and creates nothing;
  2. a token cache or output_dir that cannot be created names its setting (data.cache_dir
     and NPT_CACHE_DIR for the default cache, output_dir) instead of a bare mkdir error;
  3. --resume with a missing checkpoint says so, even where output_dir holds a run, and
     creates no output_dir;
  4. --resume PATH on a damaged checkpoint prints its own error once (not the run
     directory's "none can be resumed"), and no warning repeating it;
  5. npt eval names its --seq-len flag, not the recipe key data.seq_len;
  6. npt export of a llama2.c .bin or GGUF model (whose tokenizer is a .bin), or of a
     model with no tokenizer beside it, writes the weights and config.json without a
     tokenizer and one note line saying why; an
     explicit --tokenizer .bin is an error saying what to give instead.
Run from the repo root: /usr/bin/python3 tests/py/test_input_errors.py
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import h5py
import numpy as np

from harness import (HF656_TOKENIZER as HF_TOK, NPT, STORIES260K_BIN as BIN, STORIES260K_GGUF as GGUF, TOK512 as TOK,
                     VALID_TEXT as TEXT, built, check, exit_code, run_npt, set_flags)

SAFE = "recipes/stories260k-safe.json"


def npt(*args, env=None):
    p = run_npt(*args, timeout=300, env=env)
    return p.returncode, p.stdout, p.stderr


def errors(stderr):
    return [line for line in stderr.splitlines() if ": error:" in line]


def md5(path):
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


def recipe_sets(tmp, *more):
    """A 2-step run of the safe recipe on the shared text, everything it writes in tmp."""
    return set_flags([f"data.train={TEXT}", f"data.cache_dir={tmp}/cache", f"output_dir={tmp}/run",
                      "train.max_steps=2", "train.warmup_steps=1", "train.batch_size=2", "data.seq_len=64",
                      "checkpoint.every=1", "threads=1", *more])


def test_validate_as_train(tmp):
    afile = os.path.join(tmp, "afile.txt")
    with open(afile, "w") as f:
        f.write("precious\n")
    before = md5(afile)
    rc, out, err = npt("validate", SAFE, *recipe_sets(tmp))
    check(rc == 0 and "OK" in out, f"control: the recipe validates (exit {rc}) {err.strip()[:200]!r}")
    cases = [(f"tokenizer={HF_TOK}", "tokenizer", "vocabulary is 512"),
             (f"output_dir={afile}", "output_dir", "is a file, not a directory"),
             (f"data.cache_dir={afile}", "data.cache_dir", "is a file, not a directory"),
             ("data.train=", "data.train", "required for training")]
    for setting, key, says in cases:
        rc, _, verr = npt("validate", SAFE, *recipe_sets(tmp), "--set", setting)
        check(rc == 1 and f"{key}: " in verr and says in verr,
              f"validate --set {os.path.basename(setting)}: exit {rc}, reported under {key}: {verr.strip()[:300]!r}")
        rc, _, terr = npt("train", SAFE, *recipe_sets(tmp), "--set", setting)
        lines = errors(terr)
        check(rc == 1 and len(lines) == 1 and f"error: {key}: " in lines[0] and says in lines[0],
              f"train refuses the same under {key}: exit {rc}, {lines}")
    check(not os.path.exists(os.path.join(tmp, "run")) and md5(afile) == before,
          "none of them created output_dir, and the file named as a directory is unchanged")


def test_setup_dirs(tmp):
    afile = os.path.join(tmp, "afile.txt")
    env = {k: v for k, v in os.environ.items() if k not in ("NPT_CACHE_DIR", "XDG_CACHE_HOME")}
    env["HOME"] = os.path.join(afile, "home")  # a home below a file: no cache can be made there
    rc, _, err = npt("train", SAFE, *recipe_sets(tmp, "data.cache_dir="), env=env)
    lines = errors(err)
    ok = len(lines) == 1 and all(w in lines[0] for w in ("data.cache_dir", "token cache", "NPT_CACHE_DIR", afile))
    check(rc == 1 and ok, f"a default token cache that cannot be made names data.cache_dir and NPT_CACHE_DIR: "
                          f"exit {rc}, {lines}")
    env["NPT_CACHE_DIR"] = os.path.join(tmp, "envcache")
    rc, _, err = npt("validate", SAFE, *recipe_sets(tmp, "data.cache_dir="), env=env)
    check(rc == 0, f"control: with NPT_CACHE_DIR set it validates (exit {rc}) {err.strip()[:200]!r}")
    deep = os.path.join(afile, "runs", "x")
    rc, _, err = npt("train", SAFE, *recipe_sets(tmp, f"output_dir={deep}"))
    lines = errors(err)
    check(rc == 1 and len(lines) == 1 and "output_dir: cannot create directory" in lines[0] and afile in lines[0],
          f"an output_dir below a file names output_dir and the file: exit {rc}, {lines}")
    if os.geteuid() == 0 and shutil.which("setpriv"):  # the sweep's case: HOME=/nonexistent, as an ordinary user
        os.chmod(tmp, 0o755)
        env = {k: v for k, v in env.items() if k != "NPT_CACHE_DIR"}
        env["HOME"] = "/nonexistent"
        p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", os.path.abspath(NPT),
                            "train", SAFE, *recipe_sets(tmp, "data.cache_dir=")], capture_output=True, text=True,
                           env=env, timeout=300, stdin=subprocess.DEVNULL)
        lines = errors(p.stderr)
        check(p.returncode == 1 and len(lines) == 1 and "data.cache_dir" in lines[0] and "Permission denied" in lines[0]
              and "output_dir: cannot create directory" in lines[0],
              f"as nobody with HOME=/nonexistent: the token cache and output_dir in one line: {lines}")


def test_resume_missing(tmp):
    rc, _, err = npt("train", SAFE, *recipe_sets(tmp))
    check(rc == 0, f"a 2-step run to resume from (exit {rc}) {err.strip()[-200:]!r}")
    missing = os.path.join(tmp, "nosuch.h5")
    rc, _, err = npt("train", SAFE, *recipe_sets(tmp), "--resume", missing)
    lines = errors(err)
    check(rc == 1 and len(lines) == 1 and missing in lines[0] and "does not exist" in lines[0]
          and "already holds a run" not in lines[0],
          f"--resume of a missing file where output_dir holds a run says the file is missing: exit {rc}, {lines}")
    fresh = os.path.join(tmp, "fresh")
    rc, _, err = npt("train", SAFE, *recipe_sets(tmp, f"output_dir={fresh}"), "--resume", missing)
    check(rc == 1 and "does not exist" in err and not os.path.exists(fresh),
          f"... and into a new output_dir creates none (exit {rc}, exists: {os.path.exists(fresh)})")
    rc, _, err = npt("train", SAFE, *recipe_sets(tmp, "train.max_steps=3"), "--resume",
                     os.path.join(tmp, "run", "final.h5"))
    check(rc == 0, f"control: --resume of the run's final.h5 continues it (exit {rc}) {err.strip()[-200:]!r}")


def test_resume_damaged_once(tmp):
    for where in ("own", "other"):
        run = os.path.join(tmp, f"dmg-{where}")
        rc, _, err = npt("train", SAFE, *recipe_sets(tmp, f"output_dir={run}"))
        ckpt = os.path.join(run, "ckpt-00000001.h5")
        with h5py.File(ckpt, "r+") as f:
            a = f["adapters/layer_02/A"]
            a[0, 0] = np.nan
        for name in ("final.h5", "best.h5", "ckpt-00000002.h5"):
            if os.path.exists(os.path.join(run, name)):
                os.remove(os.path.join(run, name))
        out = run if where == "own" else os.path.join(tmp, f"dmg-into-{where}")
        rc, _, err = npt("train", SAFE, *recipe_sets(tmp, f"output_dir={out}"), "--resume", ckpt)
        lines = [l for l in err.splitlines() if ": warning:" in l or ": error:" in l]
        check(rc == 1 and len(lines) == 1 and ": error:" in lines[0] and "NaN" in lines[0]
              and lines[0].split(": error: ")[1].startswith(ckpt) and "none can be resumed" not in lines[0],
              f"--resume of a damaged checkpoint ({where} directory): one error line, no warning repeating it: {lines}")


def test_eval_flag(tmp):
    short = os.path.join(tmp, "short.txt")
    with open(short, "w") as f:
        f.write("Once upon a time there was a cat. " * 4)
    rc, _, err = npt("eval", "--model", BIN, "--tokenizer", TOK, "--data", short, "--seq-len", "256")
    lines = errors(err)
    check(rc == 1 and len(lines) == 1 and "--seq-len 256" in lines[0] and "data.seq_len" not in lines[0],
          f"npt eval on too little data names --seq-len, not the recipe key: exit {rc}, {lines}")
    rc, _, err = npt("eval", "--model", BIN, "--tokenizer", TOK, "--data", short, "--seq-len", "16")
    check(rc == 0, f"control: a window that fits evaluates (exit {rc}) {err.strip()[:200]!r}")


def test_export_llama2c(tmp):
    exp = os.path.join(tmp, "export")
    os.makedirs(exp)
    rc, ref, _ = npt("generate", "--model", BIN, "--tokenizer", TOK, "--temperature", "0", "--steps", "30", "--json")
    for name, model in (("bin", BIN), ("gguf", GGUF)):
        out = os.path.join(exp, name)
        rc, o, err = npt("export", model, "--out", out)
        lines = err.strip().splitlines()
        ok = rc == 0 and sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
        check(ok and len(lines) == 1 and "llama2.c tokenizer" in lines[0] and "--tokenizer" in lines[0]
              and "no tokenizer.json" in lines[0] and "no tokenizer" in o,
              f"export of the {name} model writes weights and config.json and one note: exit {rc}, "
              f"{os.listdir(out) if os.path.isdir(out) else 'no directory'}, {lines}")
        rc, gen, err = npt("generate", "--model", out, "--tokenizer", TOK, "--temperature", "0", "--steps", "30",
                           "--json")
        check(rc == 0 and json.loads(gen)["tokens"] == json.loads(ref)["tokens"],
              f"the exported {name} model with tok512.bin generates the original's 30 greedy tokens (exit {rc})")
    alone = os.path.join(exp, "alone")  # the model with no tokenizer beside it
    os.makedirs(alone)
    os.symlink(os.path.abspath(BIN), os.path.join(alone, "model.bin"))
    out = os.path.join(exp, "untokenized")
    rc, o, err = npt("export", os.path.join(alone, "model.bin"), "--out", out)
    lines = err.strip().splitlines()
    check(rc == 0 and sorted(os.listdir(out)) == ["config.json", "model.safetensors"] and len(lines) == 1
          and "none was found beside" in lines[0] and "--tokenizer FILE.json" in lines[0] and "no tokenizer" in o,
          f"export of a model with no tokenizer at all writes the weights and one note: exit {rc}, "
          f"{os.listdir(out) if os.path.isdir(out) else 'no directory'}, {lines}")
    out = os.path.join(exp, "explicit")
    rc, _, err = npt("export", BIN, "--out", out, "--tokenizer", TOK)
    lines = err.strip().splitlines()
    check(rc == 1 and len(lines) == 1 and "not an HF tokenizer.json" in lines[0] and "leave out --tokenizer" in lines[0]
          and not os.path.exists(out), f"export with --tokenizer tok512.bin: exit {rc}, says what to do: {lines}")
    rc, _, err = npt("export", BIN, "--out", out, "--tokenizer", HF_TOK)
    check(rc == 1 and "has 2048 tokens" in err and not os.path.exists(out),
          f"control: a tokenizer.json of another vocabulary is still refused (exit {rc}) {err.strip()[:160]!r}")


def main():
    if not built(NPT):
        return 1
    with tempfile.TemporaryDirectory(prefix="npt-input-errors-") as tmp:
        test_validate_as_train(tmp)
        test_setup_dirs(tmp)
        test_resume_missing(tmp)
        test_resume_damaged_once(tmp)
        test_eval_flag(tmp)
        test_export_llama2c(tmp)
    return exit_code()


if __name__ == "__main__":
    sys.exit(main())
