"""tests/py/harness.py — the PASS/FAIL protocol every Python test follows: one line per
assertion, counted by tests/run_tests.sh, and an exit status that says whether any failed.
Not a test itself (run_tests.sh runs tests/py/test_*.py)."""

_failures = 0


def check(ok, what):
    """Prints PASS or FAIL with what was checked; returns ok."""
    global _failures
    print(("PASS: " if ok else "FAIL: ") + what, flush=True)
    _failures += 0 if ok else 1
    return ok


def failures():
    return _failures


def exit_code():
    return 1 if _failures else 0
