#!/usr/bin/python3
"""tests/py/test_generate_cli.py — `npt generate`'s --help and its errors say what it does.

--json: the keys --help documents are exactly the keys of the object printed, and
prompt_tokens is the count (an integer, BOS included) that --help says, the first
prompt_tokens entries of "tokens" being the prompt.
A prompt longer than the model's context (stories260K: 512) is reported against that
context, not against a "--steps 512" the user never gave (with --steps 100000, and with a
--steps below the context); a prompt that fits the context but not --steps names --steps
with the value given, or says it is the default when none was.
Run from the repo root: /usr/bin/python3 tests/py/test_generate_cli.py
"""
import json
import re
import sys

from harness import NPT, STORIES260K_BIN as BIN, VALID_TEXT, built, check, exit_code, run_npt


def npt(*args):
    p = run_npt(*args, timeout=120)
    return p.returncode, p.stdout, p.stderr


def test_json_help():
    rc, help_text, _ = npt("generate", "--help")
    line = help_text[help_text.index("--json"):]
    documented = set(re.findall(r'\\?"(\w+)\\?":', line))
    rc2, out, err = npt("generate", "--model", BIN, "--prompt", "Once upon a time", "--steps", "12", "--json")
    obj = json.loads(out)
    check(rc == 0 and rc2 == 0 and documented == set(obj), f"--help documents the --json keys printed: {sorted(documented)} "
          f"vs {sorted(obj)}")
    check(isinstance(obj["prompt_tokens"], int) and "prompt_tokens\":N" in line.replace("\\", "")
          and obj["prompt_tokens"] <= len(obj["tokens"]) and obj["tokens"][0] == 1,
          f"prompt_tokens is a count as --help says (BOS included): {obj['prompt_tokens']!r}, tokens {obj['tokens'][:6]}")


def prompt(n_bytes):
    with open(VALID_TEXT) as f:
        return f.read(n_bytes)


def test_long_prompt():
    long_prompt = prompt(1500)  # 781 tokens with tok512, past the context of 512
    for steps in (["--steps", "100000"], ["--steps", "300"], []):
        rc, _, err = npt("generate", "--model", BIN, "--prompt", long_prompt, *steps)
        check(rc == 1 and "context of 512" in err and "--steps" not in err and len(err.strip().splitlines()) == 1,
              f"a prompt past the context with {' '.join(steps) or 'no --steps'} names the context: {err.strip()!r}")
    mid = prompt(800)  # about 400 tokens: fits the context of 512, not 100 or 256 steps
    rc, _, err = npt("generate", "--model", BIN, "--prompt", mid, "--steps", "100")
    check(rc == 1 and "--steps 100 allows" in err and "512" in err, f"a prompt past a given --steps names it: {err.strip()!r}")
    rc, _, err = npt("generate", "--model", BIN, "--prompt", mid)
    check(rc == 1 and "--steps 256 (the default)" in err, f"a prompt past the default --steps says so: {err.strip()!r}")


def main():
    if not built(NPT):
        return 1
    test_json_help()
    test_long_prompt()
    return exit_code()


if __name__ == "__main__":
    sys.exit(main())
