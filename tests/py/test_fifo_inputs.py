#!/usr/bin/python3
"""tests/py/test_fifo_inputs.py — an input that is not a regular file is refused at once.

open() of a named pipe blocks until a writer appears, so `npt inspect PIPE` (or a pipe as
a model, tokenizer, recipe, data, checkpoint, ...) used to never return. Here every verb
and option that reads a file is given a FIFO made with os.mkfifo: the command must exit
non-zero within TIMEOUT seconds (a timeout is a failure) with one line naming the FIFO,
"PATH: is a named pipe, not a regular file; give the ... as a regular file". Also: the
files inside an HF model directory, a FIFO with a writer attached (refused all the same
and its bytes left unread: a pipe can be neither seeked nor mapped), a directory where a
file is expected, character devices (/dev/null, /dev/zero) and a socket.
Run from the repo root: /usr/bin/python3 tests/py/test_fifo_inputs.py
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from harness import (HF656, NPT, STORIES260K_BIN as BIN, TOK512 as TOK, VALID_TEXT as TEXT, built, check, exit_code,
                     pause, resume, run_npt, set_flags)

SAFE = "recipes/stories260k-safe.json"
TIMEOUT = 20  # seconds; a refusal takes well under one, a blocked open() never returns


def run(argv, timeout=None):
    """(rc, stdout, stderr), or None when the command did not finish in time (killed)."""
    try:
        p = run_npt(*argv, timeout=timeout or TIMEOUT)
    except subprocess.TimeoutExpired:
        return None
    return p.returncode, p.stdout, p.stderr


def refused(argv, path, kind="named pipe", where="stderr", label=None):
    """npt ARGV must fail fast with the refusal of PATH. where: "stderr" one line on stderr
    and nothing on stdout; "train" the last stderr line (a run logs its progress before);
    "verify" the last stdout line (verify prints its verdicts there); "validate" the
    recipe diagnostics: the line, then "N error(s)"."""
    label = label or "npt " + " ".join(argv)
    r = run(argv)
    if r is None:
        return check(False, f"{label}: still running after {TIMEOUT} s (blocked opening {path}?)")
    rc, out, err = r
    lines, outl = err.strip().splitlines(), out.strip().splitlines()
    want = f"{path}: is a {kind}, not a regular file; give the "
    if where == "stderr":
        msg, shape = (lines[0] if lines else ""), len(lines) == 1 and not out.strip()
    elif where == "train":
        msg, shape = (lines[-1] if lines else ""), bool(lines) and lines[-1].startswith("npt train: error: ")
    elif where == "verify":
        msg, shape = (outl[-1] if outl else ""), bool(outl) and outl[-1].startswith("verify: FAIL: ")
    else:
        msg, shape = (lines[0] if lines else ""), len(lines) == 2 and lines[1].endswith(": 1 error")
    crash = any(w in err for w in ("Sanitizer", "Segmentation", "core dumped", "internal error"))
    return check(0 < rc < 128 and shape and want in msg and not crash,
                 f"{label}: exit {rc}, {msg.strip()[:200]!r}" + ("" if shape else f" (stderr {lines!r})"))


def fifo(tmp, name):
    p = os.path.join(tmp, name)
    os.mkfifo(p)
    return p


def test_verbs(tmp, ckpt, tokens):
    """Each verb and option that reads a file, given a FIFO without a writer."""
    p = fifo(tmp, "pipe")
    p_u16, p_h5, p_json, p_tsv = (fifo(tmp, "pipe" + e) for e in (".u16", ".h5", ".json", ".tsv"))
    out = os.path.join(tmp, "out")
    cases = [
        (["inspect", p], p),
        (["inspect", p, "--json"], p),
        (["inspect", p, "--plot"], p),
        (["inspect", "diff", ckpt, p_h5], p_h5),
        (["generate", "--model", p], p),
        (["generate", "--model", BIN, "--tokenizer", p], p),
        (["generate", "--model", BIN, "--tokenizer", p_json], p_json),
        (["generate", "--model", BIN, "--adapters", p_h5], p_h5),
        (["eval", "--model", p, "--data", TEXT], p),
        (["eval", "--model", BIN, "--data", p], p),
        (["eval", "--model", BIN, "--data", p_u16], p_u16),
        (["eval", "--model", BIN, "--data", p_h5 + ":/tokens"], p_h5),
        (["eval", "--model", BIN, "--adapters", p_h5, "--data", TEXT], p_h5),
        (["data", "prepare", p, "-o", out + ".u16", "--tokenizer", TOK], p),
        (["data", "prepare", TEXT, "-o", out + ".u16", "--tokenizer", p], p),
        (["data", "stats", p_u16], p_u16),
        (["data", "stats", p_h5], p_h5),
        (["data", "stats", tokens, "--tokenizer", p], p),
        (["debug", "forward", "--model", p, "--prompt", "Once"], p),
        (["debug", "forward", "--model", BIN, "--data", p, "--sample", "0", "--seq-len", "32"], p),
        (["debug", "layers", "--model", BIN, "--data", p_u16, "--sample", "0", "--seq-len", "32"], p_u16),
        (["debug", "scan", "--model", BIN, "--data", p, "--samples", "1", "--out", out + ".tsv"], p),
        (["debug", "overlap", p_tsv, p_tsv], p_tsv),
        (["debug", "replay", p_h5], p_h5),
        (["export", p, "--out", out + "-export"], p),
        (["export", BIN, "--out", out + "-export", "--tokenizer", p_json], p_json),
        (["init", "--out", out + "-init", "--tokenizer", p_json], p_json),
        (["train", p], p),
    ]
    for argv, path in cases:
        refused(argv, path)
    refused(["inspect", "verify", p_h5, "--model", BIN], p_h5, where="verify")
    refused(["inspect", "verify", ckpt, "--model", p], p, where="verify")
    refused(["validate", p], p, where="validate")
    written = [f for f in os.listdir(tmp) if f.startswith("out")]
    check(not written, f"nothing was written by the refused commands ({written})")
    # the files a recipe names: validate lists them, train refuses them before running
    rc, _, err = run(["validate", SAFE, "--set", f"model={p}", "--set", f"data.train={p_u16}"]) or (None, "", "timeout")
    lines = err.strip().splitlines()
    check(rc == 1 and f"model: {p}: is a named pipe, not a regular file; give the model as a regular file" in lines
          and f"data.train: {p_u16}: is a named pipe, not a regular file; give the data file as a regular file" in lines,
          f"npt validate with a pipe as model and data.train: exit {rc}, {lines}")
    base = ["train", SAFE, "--set", "train.max_steps=2", "--set", "train.warmup_steps=1", "--set", "threads=1",
            "--set", "data.seq_len=32", "--set", "train.batch_size=2", "--set", f"data.cache_dir={tmp}/cache"]
    for i, (sets, path) in enumerate(((["model=" + p], p), (["tokenizer=" + p, "data.train=" + TEXT], p),
                                      (["data.train=" + p], p), (["data.train=" + p_u16], p_u16),
                                      (["data.train=" + tokens, "data.valid=" + p], p))):
        argv = base + set_flags(sets + [f"output_dir={tmp}/run{i}"])
        refused(argv, path, where="train", label=f"npt train --set {' --set '.join(sets)}")
    refused(base + ["--set", f"data.train={tokens}", "--set", f"output_dir={tmp}/run_r", "--resume", p_h5], p_h5,
            where="train", label="npt train --resume PIPE")


def test_resume_metrics_log(tmp, run_dir, base):
    """--resume rewrites the run's metrics.jsonl: a pipe put there is refused, not read."""
    metrics = os.path.join(run_dir, "metrics.jsonl")
    os.remove(metrics)
    os.mkfifo(metrics)
    refused(base + ["--set", "train.max_steps=4", "--resume", "auto"], metrics, where="train",
            label="npt train --resume auto with metrics.jsonl a pipe")


def test_eval_log_pipe_during_run(tmp, tokens):
    """A pipe put in place of eval.jsonl while a run goes on (a new run refuses an existing
    file and a resume's log trim refuses a pipe, so only this is left): the periodic
    evaluation warns and the run goes on, instead of blocking on the pipe."""
    out = os.path.join(tmp, "eval-pipe")
    path = os.path.join(out, "eval.jsonl")
    argv = [NPT, "train", SAFE] + set_flags([f"data.train={tokens}", f"output_dir={out}", "threads=1",
                                             "train.max_steps=30", "data.seq_len=32", "train.batch_size=2",
                                             "data.valid_fraction=0.05", "eval.every=10", "eval.windows=4"])
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    deadline = time.time() + TIMEOUT
    # metrics.jsonl is opened once the run has accepted output_dir: a pipe made earlier
    # would be an earlier run's eval.jsonl there, and the run rightly refuses to start
    while not os.path.exists(os.path.join(out, "metrics.jsonl")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    # the run stopped meanwhile: its first eval (step 10) cannot make eval.jsonl first
    paused = pause(proc.pid)
    try:
        os.mkfifo(path)
    except OSError as e:
        proc.kill()
        proc.wait()
        check(False, f"eval.jsonl a pipe during a run: could not make the pipe before the run's first eval "
                     f"(stopped: {paused}; {e})")
        return
    resume(proc.pid)
    try:
        err = proc.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        check(False, "eval.jsonl a pipe during a run: still running after 60 s (blocked opening the pipe?)")
        return
    warned = [ln for ln in err.splitlines() if ln.startswith(f"warning: {path}: is a named pipe, not a regular file")]
    check(proc.returncode == 0 and len(warned) == 3 and os.path.isfile(os.path.join(out, "final.h5")),
          f"eval.jsonl a pipe during a run: the run ends (exit {proc.returncode}) with final.h5 and one warning per "
          f"evaluation ({len(warned)} of 3): {warned[:1] if warned else err.strip()[-300:]!r}")


def test_hf_directory(tmp):
    """An HF model is a directory on purpose; the files in it must be regular files."""
    def model_dir(name, pipe, copy=(), link=(), index=None):
        d = os.path.join(tmp, name)
        os.mkdir(d)
        for f in copy:
            shutil.copy(os.path.join(HF656, f), d)
        for f in link:
            os.symlink(os.path.abspath(os.path.join(HF656, f)), os.path.join(d, f))
        if index:
            with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
                f.write('{"weight_map": {"lm_head.weight": "%s"}}' % index)
        os.mkfifo(os.path.join(d, pipe))
        return d, os.path.join(d, pipe)

    d, p = model_dir("hf_config", "config.json", link=["model.safetensors"])
    refused(["inspect", d], p)
    refused(["inspect", p], p)
    d, p = model_dir("hf_weights", "model.safetensors", copy=["config.json"])
    refused(["generate", "--model", d], p)
    d, p = model_dir("hf_index", "model.safetensors.index.json", copy=["config.json"])
    refused(["inspect", d], p)
    d, p = model_dir("hf_shard", "model-00001-of-00001.safetensors", copy=["config.json"],
                     index="model-00001-of-00001.safetensors")
    refused(["inspect", d], p)
    d, p = model_dir("hf_tokconfig", "tokenizer_config.json", copy=["tokenizer.json"])
    refused(["generate", "--model", HF656, "--tokenizer", os.path.join(d, "tokenizer.json"), "--steps", "4"], p)
    # a directory where config.json should be a file
    d = os.path.join(tmp, "hf_dir_config")
    os.makedirs(os.path.join(d, "config.json"))
    os.symlink(os.path.abspath(os.path.join(HF656, "model.safetensors")), os.path.join(d, "model.safetensors"))
    refused(["inspect", d], os.path.join(d, "config.json"), kind="directory")


def test_pipe_with_writer(tmp):
    """A writer on the other end does not make a pipe readable as a file: still refused,
    and nothing is taken out of it."""
    p = fifo(tmp, "written")
    with open(BIN, "rb") as f:
        head = f.read(4096)  # a real model header: read as a file it would look valid
    fd = os.open(p, os.O_RDWR | os.O_NONBLOCK)  # O_RDWR: we are writer and reader, no wait
    try:
        os.write(fd, head)
        refused(["inspect", p], p, label="npt inspect PIPE with a writer")
        refused(["generate", "--model", p], p, label="npt generate --model PIPE with a writer")
        refused(["data", "prepare", p, "-o", os.path.join(tmp, "w.u16"), "--tokenizer", TOK], p,
                label="npt data prepare PIPE with a writer")
        try:
            left = os.read(fd, len(head) + 1)
        except BlockingIOError:  # emptied by npt
            left = b""
        check(left == head, f"the pipe's {len(head)} bytes were left unread ({len(left)} still there)")
    finally:
        os.close(fd)


def test_devices_and_socket(tmp):
    refused(["generate", "--model", "/dev/null"], "/dev/null", kind="character device")
    refused(["inspect", "/dev/zero"], "/dev/zero", kind="character device")
    refused(["eval", "--model", "/dev/zero", "--data", TEXT], "/dev/zero", kind="character device")
    # /dev/zero as text: refused for what it is (before, for the NUL byte it reads first)
    refused(["data", "prepare", "/dev/zero", "-o", os.path.join(tmp, "z.u16"), "--tokenizer", TOK], "/dev/zero",
            kind="character device")
    refused(["train", "/dev/null"], "/dev/null", kind="character device")
    path = os.path.join(tmp, "sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(path)
        refused(["generate", "--model", path], path, kind="socket")
    finally:
        s.close()


def main():
    if not built(NPT):
        return 1
    tmp = tempfile.mkdtemp(prefix="npt-fifo-")
    try:
        # a token file and a finished 2-step run: a real checkpoint and a run to resume
        tokens = os.path.join(tmp, "train.u16")
        r = run(["data", "prepare", TEXT, "-o", tokens, "--tokenizer", TOK, "--quiet"], timeout=300)
        if not check(r is not None and r[0] == 0, f"setup: data prepare writes {tokens}"):
            print("NOTE:", r[2].strip()[-300:] if r else "timeout")
        run_dir = os.path.join(tmp, "run")
        base = ["train", SAFE, "--set", f"data.train={tokens}", "--set", f"output_dir={run_dir}", "--set", "threads=1",
                "--set", "train.max_steps=2", "--set", "train.warmup_steps=1", "--set", "data.seq_len=32",
                "--set", "train.batch_size=2", "--set", f"data.cache_dir={tmp}/cache"]
        r = run(base, timeout=300)
        ckpt = os.path.join(run_dir, "final.h5")
        if not check(r is not None and r[0] == 0 and os.path.isfile(ckpt), f"setup: a 2-step run writes {ckpt}"):
            print("NOTE:", r[2].strip()[-300:] if r else "timeout")
            return exit_code()
        pipes = os.path.join(tmp, "pipes")
        os.mkdir(pipes)
        test_verbs(pipes, ckpt, tokens)
        test_resume_metrics_log(tmp, run_dir, base)
        test_eval_log_pipe_during_run(tmp, tokens)
        test_hf_directory(tmp)
        test_pipe_with_writer(tmp)
        test_devices_and_socket(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return exit_code()


if __name__ == "__main__":
    sys.exit(main())
