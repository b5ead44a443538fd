#!/usr/bin/python3
"""tests/py/test_output_symlinks.py — a symbolic link at an output path, even one pointing
to nothing, is an existing file: npt keeps it unless --force, as it keeps a regular file.

For every output flag (recipes copy DEST, data prepare -o, eval --save-windows, debug scan
--out, debug forward --save) a dangling symlink at the path makes the command exit 1
with one line naming the path and --force, and the link is still a link afterwards (its
target not created); with --force the command replaces it. npt init / npt export --out
onto a symlink are refused at once, before a model is written (the rename that puts the
directory in place cannot replace a link). npt train refuses an output_dir holding a
dangling symlink by the name of a run's file (loss.svg), as it refuses the file itself.
Run from the repo root: /usr/bin/python3 tests/py/test_output_symlinks.py
"""
import json
import os
import sys
import tempfile

from harness import NPT, STORIES260K_BIN as BIN, TOK512 as TOK, VALID_TEXT as TEXT, built, check, exit_code, run_npt


def npt(*args, env=None):
    p = run_npt(*args, timeout=300, env=env)
    return p.returncode, p.stdout, p.stderr


def dangling(d, name):
    """A symlink named name in d to a file that does not exist; returns (link, target)."""
    link, target = os.path.join(d, name), os.path.join(d, "missing-" + name)
    os.symlink(target, link)
    return link, target


def kept(link, target):
    return os.path.islink(link) and not os.path.exists(target)


def commands(d):
    """(label, argv writing to out, out) for each output flag, out a fresh dangling link."""
    env = dict(os.environ, NPT_RECIPES_DIR=os.path.abspath("recipes"))
    out = {n: dangling(d, n) for n in ("my.json", "out.u16", "windows.h5", "scan.tsv", "save.h5")}
    model = ["--model", BIN, "--tokenizer", TOK]
    return env, [
        ("recipes copy", ["recipes", "copy", "npt-safe", out["my.json"][0]], out["my.json"]),
        ("data prepare -o", ["data", "prepare", TEXT, "-o", out["out.u16"][0], "--tokenizer", TOK, "--quiet"], out["out.u16"]),
        ("eval --save-windows", ["eval", *model, "--data", TEXT, "--windows", "2", "--seq-len", "32",
                                 "--save-windows", out["windows.h5"][0]], out["windows.h5"]),
        ("debug scan --out", ["debug", "scan", *model, "--data", TEXT, "--samples", "2", "--seq-len", "32",
                              "--out", out["scan.tsv"][0]], out["scan.tsv"]),
        ("debug forward --save", ["debug", "forward", *model, "--prompt", "Once upon a time", "--save", out["save.h5"][0]],
         out["save.h5"]),
    ]


def test_output_flags(d):
    env, cmds = commands(d)
    for label, argv, (link, target) in cmds:
        rc, _, err = npt(*argv, env=env)
        lines = [l for l in err.splitlines() if l.strip()]
        check(rc == 1 and len(lines) == 1 and link in lines[0] and "--force" in lines[0] and kept(link, target),
              f"{label} onto a dangling symlink: exit {rc} (want 1), one line naming it and --force, link kept: {err.strip()[:200]!r}")
    for label, argv, (link, target) in cmds:
        if label == "debug forward --save":
            continue  # writes only when an op is non-finite: nothing to replace the link with
        rc, _, err = npt(*argv, "--force", env=env)
        check(rc == 0 and os.path.isfile(link) and not os.path.islink(link),
              f"control: {label} --force replaces the dangling symlink (exit {rc}) {err.strip()[-160:]!r}")


def test_model_dirs(d):
    for verb, argv in (("init", ["init", "--dim", "16", "--layers", "1", "--heads", "2", "--hidden", "32"]),
                       ("export", ["export", BIN])):
        link, target = dangling(d, verb + "-out")
        for out in (link, link + "/"):  # "link/": lstat would follow the link
            rc, _, err = npt(*argv, "--out", out)
            lines = [l for l in err.splitlines() if l.strip()]
            check(rc == 1 and len(lines) == 1 and link in lines[0] and "symbolic link" in lines[0] and kept(link, target)
                  and not any(n.startswith(verb + "-out.tmp") for n in os.listdir(d)),
                  f"{verb} --out {out} onto a dangling symlink is refused first: exit {rc}, {err.strip()[:200]!r}")


def test_train_output_dir(d):
    run = os.path.join(d, "run")
    os.mkdir(run)
    link, target = dangling(run, "loss.svg")
    recipe = os.path.join(d, "r.json")
    with open(recipe, "w") as f:
        json.dump({"model": BIN, "tokenizer": TOK, "npt": {"rank": 4}, "data": {"train": TEXT, "seq_len": 32},
                   "train": {"max_steps": 1, "batch_size": 1}, "output_dir": run}, f)
    rc, _, err = npt("train", recipe, env=dict(os.environ, NPT_CACHE_DIR=os.path.join(d, "cache")))
    check(rc == 1 and link in err and "earlier run" in err and kept(link, target),
          f"train refuses an output_dir with a dangling loss.svg symlink: exit {rc}, {err.strip()[-200:]!r}")


def main():
    if not built(NPT):
        return 1
    with tempfile.TemporaryDirectory() as d:
        test_output_flags(d)
        test_model_dirs(d)
        test_train_output_dir(d)
    return exit_code()


if __name__ == "__main__":
    sys.exit(main())
