#!/usr/bin/python3
"""tests/py/test_cli_usage.py — a value flag given twice is a usage error in every verb
(exit 2, one line naming the flag, nothing on stdout, nothing written), where "last one
wins" would silently drop the earlier value; --set, which is meant to repeat, still does.
Run from the repo root: /usr/bin/python3 tests/py/test_cli_usage.py
"""
import os
import subprocess
import tempfile

from harness import check, exit_code

NPT = os.environ.get("NPT", "./npt")
SHARED = os.environ.get("NPT_SHARED", "../shared")
MODEL = os.path.join(SHARED, "models", "stories260K", "stories260K.bin")
TOK = os.path.join(SHARED, "models", "stories260K", "tok512.bin")
VALID = os.path.join(SHARED, "data", "tinystories-valid-1000.txt")
SAFE = "recipes/stories260k-safe.json"


def npt(*args):
    return subprocess.run([NPT, *args], capture_output=True, text=True, timeout=120)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        a, b = os.path.join(tmp, "a"), os.path.join(tmp, "b")
        cases = [
            (["generate", "--model", MODEL, "--model", MODEL, "--steps", "4"], "--model"),
            (["generate", "--model", MODEL, "--steps", "4", "--steps=5"], "--steps"),
            (["eval", "--model", MODEL, "--data", VALID, "--data", VALID, "--save-windows", a], "--data"),
            (["train", SAFE, "--set", f"output_dir={a}", "--resume", a, "--resume", b], "--resume"),
            (["data", "prepare", VALID, "--tokenizer", TOK, "-o", a, "--output", b], "--output"),
            (["data", "stats", VALID, "--seq-len", "8", "--seq-len", "9"], "--seq-len"),
            (["debug", "forward", "--model", MODEL, "--prompt", "Once", "--prompt", "upon"], "--prompt"),
            (["init", "--out", a, "--dim", "32", "--dim", "64"], "--dim"),
            (["export", MODEL, "--out", a, "--out", b], "--out"),
        ]
        for args, flag in cases:
            p = npt(*args)
            lines = p.stderr.strip().splitlines()
            written = [f for f in os.listdir(tmp)]
            check(p.returncode == 2 and p.stdout == "" and len(lines) == 1 and f"{flag} is given twice" in lines[0]
                  and not written,
                  f"npt {args[0]} with {flag} twice: exit {p.returncode}, {lines[0] if lines else 'no message'}"
                  f"{', wrote ' + str(written) if written else ''}")
        p = npt("validate", SAFE, "--set", "train.max_steps=500", "--set", "train.lr=1e-5")
        check(p.returncode == 0, f"--set may repeat: validate with two --set exits {p.returncode} {p.stderr.strip()[:100]}")
        p = npt("validate", SAFE, "--set", "train.max_steps=500", "--set", "train.lr=abc")
        check(p.returncode == 1 and "train.lr" in p.stderr,
              f"the second --set is applied too: a bad value in it is reported (exit {p.returncode})")
    return exit_code()


if __name__ == "__main__":
    raise SystemExit(main())
