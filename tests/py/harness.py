"""tests/py/harness.py — what every Python test shares: the PASS/FAIL protocol (one line
per assertion, counted by tests/run_tests.sh, and an exit status that says whether any
failed), where npt and the shared models are, and how npt is run.
Not a test itself (run_tests.sh runs tests/py/test_*.py)."""
import glob
import os
import resource
import signal
import subprocess
import time

NPT = os.environ.get("NPT", "./npt")
BUILD = os.environ.get("BUILD", "build")  # the C test drivers are in BUILD/tests
SHARED = os.environ.get("NPT_SHARED", "../shared")

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


def built(*programs):
    """Whether every program (./npt, a test driver in BUILD/tests) is built; if not, one
    FAIL naming the missing ones and how to build them, so a test without its binary
    fails instead of passing vacuously."""
    missing = [p for p in programs if not os.access(p, os.X_OK)]
    if missing:
        check(False, f"{' and '.join(missing)} missing (build with: make {' '.join(missing)})")
    return not missing


def shared_path(*parts):
    """A file under $NPT_SHARED (models, data), relative as given: npt echoes paths back
    in its messages and the tests compare them."""
    return os.path.join(SHARED, *parts)


# The shared models and data the tests use, each named once (tests import them under
# the names they read best as).
STORIES260K_DIR = shared_path("models", "stories260K")
STORIES260K_BIN = shared_path("models", "stories260K", "stories260K.bin")
STORIES260K_GGUF = shared_path("models", "stories260K", "tinyllamas-stories-260k-f32.gguf")
TOK512 = shared_path("models", "stories260K", "tok512.bin")
HF656 = shared_path("models", "TinyStories-656K")
HF656_TOKENIZER = shared_path("models", "TinyStories-656K", "tokenizer.json")  # 2048 tokens; stories260K has 512
TRAIN_TEXT = shared_path("data", "tinystories-train-head.txt")
VALID_TEXT = shared_path("data", "tinystories-valid-1000.txt")


def set_flags(assignments):
    """["--set", a, "--set", b, ...]: recipe overrides as npt takes them."""
    return [flag for a in assignments for flag in ("--set", a)]


def run_npt(*args, timeout=600, fsize=None, env=None):
    """npt ARGS with stdout and stderr captured; the CompletedProcess. Raises
    subprocess.TimeoutExpired after timeout seconds (None: no limit), so a hung npt fails
    its test instead of stalling the suite.
    fsize: RLIMIT_FSIZE in bytes, a full disk without privileges (a write past it fails
    with EFBIG, SIGXFSZ being ignored). env: the child's whole environment (None: ours).
    Output is decoded with errors replaced: a test fails on its checks, not on a
    UnicodeDecodeError. stdin is /dev/null: npt never reads it, and a test must not wait
    on the terminal."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return subprocess.run([NPT, *args], capture_output=True, text=True, errors="replace", timeout=timeout,
                          stdin=subprocess.DEVNULL, env=env, preexec_fn=limit if fsize else None)


def temp_files(directory):
    """Names in directory that look like an unfinished write, sorted: npt writes
    PATH.tmp.PID.XXXXXXXX and renames it over PATH, so one left behind is a write that was
    not cleaned up. Any name with ".tmp" counts (a superset of npt's ".tmp." names, so a
    check that none is left is the stricter for it). [] for a missing directory: a caller
    that needs the directory to exist checks that itself."""
    if not os.path.isdir(directory):
        return []
    return sorted(f for f in os.listdir(directory) if ".tmp" in f)


def repeated_text(dst, src, copies):
    """Writes `copies` copies of the file src (a stories text) to dst, one after another:
    a big text that takes npt seconds to tokenize. Returns dst."""
    with open(src, "rb") as f:
        text = f.read()
    with open(dst, "wb") as f:
        for _ in range(copies):
            f.write(text)
    return dst


def pause_when(argv, pattern, env=None, timeout=120):
    """Starts argv (stdin /dev/null, stdout discarded, stderr a text pipe) and pauses it
    (pause()) as soon as a path matching the glob pattern exists; pattern may be a function
    of the process id that returns the pattern. (process, stopped): stopped is False if the
    process ended, or timeout seconds passed, before the path appeared, or if it could not
    be stopped (then it is left running). The caller resumes it (resume()) and reaps it."""
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                         env=env)
    wanted = pattern(p.pid) if callable(pattern) else pattern
    deadline = time.time() + timeout
    while p.poll() is None and time.time() < deadline:
        if glob.glob(wanted):
            stopped = pause(p.pid)
            if not stopped:
                resume(p.pid)  # not left stopped by a SIGSTOP that landed late
            return p, stopped
        time.sleep(0.002)
    return p, False


def pause(pid, limit=30):
    """Stops pid (SIGSTOP) and waits until the kernel reports it stopped, so what a test
    looks at next (files, logged steps) is where a signal it sends then will land, however
    late this process ran: the signal is delivered when the test continues it with
    resume(). False if the process is gone (or a zombie) instead."""
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return False
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        if state in "Zx":
            return False
        if state in "Tt":
            return True
        time.sleep(0.001)
    return False


def resume(pid, sig=None):
    """Sends sig (if any) to a process pause() stopped, then continues it."""
    try:
        if sig is not None:
            os.kill(pid, sig)
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass
