#!/usr/bin/python3
"""tests/py/test_cli_outputs.py — files named by an output flag are never replaced
without --force, and a subcommand refuses the flags of its siblings.

For each output flag (eval --save-windows, data prepare -o, debug scan --out, debug
forward --save; inspect --plot is in test_inspect.py): a file already at the path is
kept byte for byte, the command exits 1 naming the path and --force, and with --force
the file is written. Then flags given to the wrong subcommand of `npt data` and
`npt recipes` are usage errors (exit 2) instead of being ignored, and so is a value flag
given twice in any verb, where "last one wins" would drop the earlier value (nothing on
stdout, nothing written); --set, meant to repeat, still does.
Run from the repo root: /usr/bin/python3 tests/py/test_cli_outputs.py
"""
import os
import sys
import tempfile

from harness import (NPT, STORIES260K_BIN as BIN, TOK512 as TOK, VALID_TEXT as TEXT, built, check, exit_code, run_npt,
                     temp_files)

SAFE = "recipes/stories260k-safe.json"
MINE = b"my own file, not to be lost\n"


def npt(*args):
    p = run_npt(*args)
    return p.returncode, p.stdout, p.stderr


def check_kept(tmp, name, flag, args):
    """args: the command with OUT where the output path goes."""
    out = os.path.join(tmp, name)
    with open(out, "wb") as f:
        f.write(MINE)
    argv = [out if a == "OUT" else a for a in args]
    rc, _, err = npt(*argv)
    with open(out, "rb") as f:
        kept = f.read() == MINE
    check(rc == 1 and kept and out in err and "--force" in err and len(err.strip().splitlines()) == 1,
          f"npt {' '.join(args[:2])} {flag} onto an existing file: exit {rc} (want 1), file kept: {kept}, "
          f"one line naming it and --force: {err.strip()[:160]!r}")
    rc, _, err = npt(*argv, "--force")
    with open(out, "rb") as f:
        body = f.read()
    check(rc == 0 and body != MINE and len(body) > 0,
          f"... with --force: exit {rc} (want 0), file rewritten ({len(body)} bytes) {err.strip()[-160:]!r}")
    left = temp_files(tmp)
    check(not left, f"no temporary files left behind ({left})")


def test_outputs(tmp):
    check_kept(tmp, "windows.u32", "--save-windows",
               ["eval", "--model", BIN, "--data", TEXT, "--windows", "2", "--seq-len", "32", "--save-windows", "OUT"])
    check_kept(tmp, "tokens.u16", "-o", ["data", "prepare", TEXT, "-o", "OUT", "--tokenizer", TOK, "--quiet"])
    check_kept(tmp, "list.tsv", "--out",
               ["debug", "scan", "--model", BIN, "--data", TEXT, "--samples", "1", "--seq-len", "32", "--out", "OUT"])
    # forward on finite weights finds nothing to save: only the refusal is checked
    out = os.path.join(tmp, "op.h5")
    with open(out, "wb") as f:
        f.write(MINE)
    rc, _, err = npt("debug", "forward", "--model", BIN, "--prompt", "Once", "--save", out)
    with open(out, "rb") as f:
        kept = f.read() == MINE
    check(rc == 1 and kept and "--force" in err, f"debug forward --save onto an existing file: exit {rc}, kept: {kept}")
    rc, _, err = npt("debug", "forward", "--model", BIN, "--prompt", "Once", "--save", out, "--force")
    with open(out, "rb") as f:
        kept = f.read() == MINE
    check(rc == 0 and kept, f"... with --force it runs (exit {rc}, want 0: all finite) and, finding nothing to save, "
          f"leaves the file (kept: {kept}) {err.strip()[-120:]!r}")
    rc, _, err = npt("debug", "layers", "--model", BIN, "--prompt", "Once", "--force")
    check(rc == 2 and "--force does not apply to layers" in err, f"debug layers --force: exit {rc} (want 2)")


def test_output_is_input(tmp):
    """--force replaces an output file, never the command's own input nor a device or pipe
    node (a rename would replace the node itself; a pipe stands in for /dev/full)."""
    node = os.path.join(tmp, "node")
    os.mkfifo(node)
    data = os.path.join(tmp, "mine.txt")
    with open(TEXT, "rb") as f, open(data, "wb") as g:
        g.write(f.read())
    before = open(data, "rb").read()
    for argv, words in ((["data", "prepare", data, "-o", data, "--format", "text", "--tokenizer", TOK, "--force"],
                         "is the input"),
                        (["eval", "--model", BIN, "--data", data, "--windows", "1", "--seq-len", "32",
                          "--save-windows", data, "--force"], "is the input"),
                        (["recipes", "copy", "npt-safe", node, "--force"], "not a regular file"),
                        (["data", "prepare", TEXT, "-o", node, "--tokenizer", TOK, "--force"], "not a regular file")):
        rc, out, err = npt(*argv)
        lines = err.strip().splitlines()
        check(rc == 1 and len(lines) == 1 and words in lines[0] and open(data, "rb").read() == before
              and not os.path.isfile(node),
              f"npt {' '.join(argv[:2])} ... --force onto {'its input' if 'input' in words else 'a pipe node'}: "
              f"exit {rc}, {lines[-1] if lines else ''}")
    rc, _, err = npt("eval", "--model", BIN, "--data", TEXT, "--force")
    check(rc == 2 and "--force only goes with --save-windows" in err, f"eval --force without --save-windows: exit {rc}")


def test_sibling_flags(tmp):
    out = os.path.join(tmp, "never.u16")
    cases = [
        (["data", "stats", TEXT, "-o", out], "-o is a flag of npt data prepare"),
        (["data", "stats", TEXT, "--output=" + out], "--output=" + out + " is a flag of npt data prepare"),
        (["data", "stats", TEXT, "--force"], "--force is a flag of npt data prepare"),
        (["data", "prepare", TEXT, "-o", out, "--tokenizer", TOK, "--seq-len", "64"],
         "--seq-len is a flag of npt data stats"),
        (["data", "prepare", TEXT, "-o", out, "--tokenizer", TOK, "--bos=1"], "--bos=1 is a flag of npt data stats"),
        (["recipes", "show", "npt-safe", "--force"], "--force is not a flag of this subcommand"),
        (["recipes", "copy", "npt-safe", os.path.join(tmp, "r.json"), "--json"], "--json is not a flag"),
    ]
    for args, want in cases:
        rc, _, err = npt(*args)
        check(rc == 2 and want in err, f"npt {' '.join(a if a != out else 'OUT' for a in args[:2] + args[3:])}: "
              f"exit {rc} (want 2) {err.strip()[:120]!r}")
    check(not os.path.exists(out) and not os.path.exists(os.path.join(tmp, "r.json")),
          "nothing was written by the refused commands")
    rc, out_text, _ = npt("recipes", "list", "--json")
    check(rc == 0 and out_text.lstrip().startswith("["), "recipes list --json still works")


def test_repeated_flags(parent):
    tmp = tempfile.mkdtemp(prefix="repeated-", dir=parent)
    a, b = os.path.join(tmp, "a"), os.path.join(tmp, "b")
    cases = [
        (["generate", "--model", BIN, "--model", BIN, "--steps", "4"], "--model"),
        (["generate", "--model", BIN, "--steps", "4", "--steps=5"], "--steps"),
        (["eval", "--model", BIN, "--data", TEXT, "--data", TEXT, "--save-windows", a], "--data"),
        (["train", SAFE, "--set", f"output_dir={a}", "--resume", a, "--resume", b], "--resume"),
        (["data", "prepare", TEXT, "--tokenizer", TOK, "-o", a, "--output", b], "--output"),
        (["data", "stats", TEXT, "--seq-len", "8", "--seq-len", "9"], "--seq-len"),
        (["debug", "forward", "--model", BIN, "--prompt", "Once", "--prompt", "upon"], "--prompt"),
        (["init", "--out", a, "--dim", "32", "--dim", "64"], "--dim"),
        (["export", BIN, "--out", a, "--out", b], "--out"),
    ]
    for args, flag in cases:
        rc, out, err = npt(*args)
        lines = err.strip().splitlines()
        written = os.listdir(tmp)
        check(rc == 2 and out == "" and len(lines) == 1 and f"{flag} is given twice" in lines[0] and not written,
              f"npt {args[0]} with {flag} twice: exit {rc}, {lines[0] if lines else 'no message'}"
              f"{', wrote ' + str(written) if written else ''}")
    rc, _, err = npt("validate", SAFE, "--set", "train.max_steps=500", "--set", "train.lr=1e-5")
    check(rc == 0, f"--set may repeat: validate with two --set exits {rc} {err.strip()[:100]}")
    rc, _, err = npt("validate", SAFE, "--set", "train.max_steps=500", "--set", "train.lr=abc")
    check(rc == 1 and "train.lr" in err, f"the second --set is applied too: a bad value in it is reported (exit {rc})")


def main():
    if not built(NPT):
        return 1
    with tempfile.TemporaryDirectory(prefix="npt-outputs-") as tmp:
        test_outputs(tmp)
        test_output_is_input(tmp)
        test_sibling_flags(tmp)
        test_repeated_flags(tmp)
    return exit_code()


if __name__ == "__main__":
    sys.exit(main())
