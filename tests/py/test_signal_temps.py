#!/usr/bin/python3
"""tests/py/test_signal_temps.py — commands that keep the default Ctrl-C (everything but
npt train and npt data prepare, which stop at a clean point) leave no temporary file
behind when a signal ends them mid-write, and the file they were to replace is intact
(util/atomic_file.c's tracking):
  1. npt debug scan --out LIST.tsv --force, ended by SIGINT and by SIGTERM while it
     scans: killed by that signal, no LIST.tsv.tmp.PID.X, the earlier LIST.tsv unchanged;
  2. npt export MODEL --out DIR, ended by SIGTERM while it writes the directory (a
     random 0.3 GB model; stopped the moment model.safetensors appears, then signalled,
     so a busy machine cannot let the write finish first): no DIR.tmp.PID.X, no DIR;
  3. the control: the same scan left alone finishes and replaces LIST.tsv;
  4. npt eval --data TEXT, ended by SIGINT and by SIGTERM while it tokenizes the text
     into $TMPDIR: neither the token file nor its temporary is left there.
Run from the repo root: /usr/bin/python3 tests/py/test_signal_temps.py
"""
import glob
import os
import shutil
import signal
import sys
import tempfile

from harness import (NPT, STORIES260K_BIN as MODEL, VALID_TEXT as DATA, built, check, exit_code, pause_when,
                     repeated_text, resume, run_npt, temp_files)


def signal_when(argv, appears, sig, timeout=120, env=None):
    """Starts argv and sends sig once a path matching the glob pattern `appears(pid)`
    exists, the process stopped (harness.pause_when) the moment the path is seen, so the
    signal lands at that point of the work however busy the machine is.
    (returncode, stderr, seen)."""
    p, seen = pause_when(argv, appears, env=env, timeout=timeout)
    if seen:
        resume(p.pid, sig)
    _, err = p.communicate(timeout=timeout)
    return p.returncode, err, seen


def scan_argv(out):
    return [NPT, "debug", "scan", "--model", MODEL, "--data", DATA, "--samples", "2000", "--out", out, "--force"]


def test_scan(tmp):
    out = os.path.join(tmp, "list.tsv")
    for sig in (signal.SIGINT, signal.SIGTERM):
        with open(out, "w") as f:
            f.write("# the earlier list\n")
        rc, err, seen = signal_when(scan_argv(out), lambda pid: f"{glob.escape(out)}.tmp.{pid}.*", sig)
        with open(out) as f:
            kept = f.read()
        check(seen and rc == -sig and temp_files(tmp) == [] and kept == "# the earlier list\n",
              f"debug scan ended by {sig.name} mid-scan: killed by it (returncode {rc}), no temporary file "
              f"({temp_files(tmp)}), the earlier list intact ({kept[:40]!r})")
    r = run_npt(*scan_argv(out)[1:], timeout=300)
    with open(out) as f:
        head = f.readline()
    check(r.returncode == 0 and head != "# the earlier list\n" and temp_files(tmp) == [],
          f"control: the scan left alone replaces the list (exit {r.returncode}, first line {head.strip()!r})")


def test_export(tmp):
    model = os.path.join(tmp, "model")
    r = run_npt("init", "--out", model, "--dim", "768", "--layers", "12", "--heads", "12", "--hidden", "2048")
    if not check(r.returncode == 0, f"npt init makes a 0.3 GB model (exit {r.returncode}) {r.stderr.strip()[-200:]}"):
        return
    out = os.path.join(tmp, "exported")
    rc, err, seen = signal_when([NPT, "export", model, "--out", out],
                                lambda pid: os.path.join(f"{glob.escape(out)}.tmp.{pid}.*", "model.safetensors"), signal.SIGTERM)
    check(seen and rc == -signal.SIGTERM and temp_files(tmp) == [] and not os.path.exists(out),
          f"export ended by SIGTERM while writing: killed by it (returncode {rc}, caught mid-write: {seen}), "
          f"no temporary directory ({temp_files(tmp)}), no output directory")


def test_eval_tokens(tmp):
    tmpdir = os.path.join(tmp, "evaltmp")
    os.makedirs(tmpdir)
    # 19 MB: seconds of tokenizing, more than the windows asked for allow to skip
    text = repeated_text(os.path.join(tmp, "stories.txt"), DATA, 24)
    argv = [NPT, "eval", "--model", MODEL, "--data", text, "--windows", "100000000"]
    env = dict(os.environ, TMPDIR=tmpdir)

    def writing(pid):  # data_prepare's temporary beside the token file npt-tokens-XXXXXX.u32
        return os.path.join(glob.escape(tmpdir), f"*.tmp.{pid}.*")

    for sig in (signal.SIGINT, signal.SIGTERM):
        rc, err, seen = signal_when(argv, writing, sig, env=env)
        left = os.listdir(tmpdir)
        check(seen and rc == -sig and left == [],
              f"eval ended by {sig.name} while tokenizing: killed by it (returncode {rc}, caught mid-write: {seen}), "
              f"nothing left in TMPDIR ({left})")
        for n in left:
            os.remove(os.path.join(tmpdir, n))


def main():
    if not built(NPT):
        return exit_code()
    tmp = tempfile.mkdtemp(prefix="npt-signal-temps-")
    try:
        test_scan(tmp)
        test_export(tmp)
        test_eval_tokens(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return exit_code()


if __name__ == "__main__":
    sys.exit(main())
