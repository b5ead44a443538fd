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
import os
import re
import sys

from harness import NPT, STORIES260K_BIN as BIN, TOK512, VALID_TEXT, built, check, exit_code, run_npt

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ref"))
import tok_ref  # noqa: E402

PROMPT = "Once upon a time"


def npt(*args):
    p = run_npt(*args, timeout=120)
    return p.returncode, p.stdout, p.stderr


def test_json_help():
    rc, help_text, _ = npt("generate", "--help")
    line = help_text[help_text.index("--json"):]
    documented = set(re.findall(r'\\?"(\w+)\\?":', line))
    rc2, out, err = npt("generate", "--model", BIN, "--prompt", PROMPT, "--steps", "12", "--json")
    obj = json.loads(out)
    check(rc == 0 and rc2 == 0 and documented == set(obj), f"--help documents the --json keys printed: {sorted(documented)} "
          f"vs {sorted(obj)}")
    # The prompt's ids from the independent reference tokenizer (tests/ref/tok_ref.py) on
    # the tokenizer beside the model (tok512.bin), BOS (1) first: not from npt's output.
    want = [1] + tok_ref.Llama2cRef(TOK512, 512).encode(PROMPT)
    check(isinstance(obj["prompt_tokens"], int) and "prompt_tokens\":N" in line.replace("\\", "")
          and obj["prompt_tokens"] == len(want) and obj["tokens"][:len(want)] == want,
          f"prompt_tokens is a count as --help says (BOS included) and the first that many tokens are the "
          f"prompt: {obj['prompt_tokens']!r}, tokens {obj['tokens'][:len(want) + 2]} vs reference {want}")


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
