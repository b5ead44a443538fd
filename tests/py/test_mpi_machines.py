#!/usr/bin/python3
"""tests/py/test_mpi_machines.py — npt train over MPI ranks on two machines.

This machine plays two: mpirun starts its daemon on hosts "npt-machine-a" and
"npt-machine-b" through tests/py/machine_shell.sh instead of ssh, which gives each
host its own host name and its own /dev/shm (new UTS and mount namespaces) over the
shared file system, as on a cluster; Open MPI then carries the traffic between the hosts
over TCP (loopback), and MPI_COMM_TYPE_SHARED groups the ranks by host. The reference for
results is the same number of ranks on one machine (the gradient sum has a fixed order,
so where the ranks run must not change a bit).
  1. 4 ranks, 2 per machine: the ranks run where the rig puts them (ranks 0-1 in one
     UTS namespace, 2-3 in another); each machine's two ranks map one npt-weights file
     and the machines' files differ; the start line says 4 ranks on 2 machines with one
     copy of the base model per machine; the run ends bit-identical to 4 ranks on one
     machine;
  2. SIGTERM to rank 3 alone (on the second machine): every rank stops after the same
     step, rank 0 saves the emergency checkpoint once, and --resume auto on the two
     machines ends bit-identical to the uninterrupted run;
  3. 3 ranks, 2 on one machine and 1 on the other, no threads in the recipe and unbound:
     the cores are shared among a machine's ranks, not the world's (1 thread each on the
     first machine, every core on the second: "1-2 threads" on the start line);
  4. one path that holds another file on one machine (bind-mounted there): another base
     model, or the same stories in another order (same size, same number of windows):
     the job stops before its first step with one error line naming the rank and what
     differs, and writes no checkpoint;
  5. a token cache per machine (cache_dir holds another directory on the second
     machine): each machine's cache is written once (its first rank tokenizes, the other
     finds the file) and the run ends bit-identical to 4 ranks on one machine.
"""
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

from harness import (NPT, STORIES260K_BIN as MODEL, TRAIN_TEXT as TEXT, built, check, exit_code, pause, resume,
                     set_flags)
from test_mpi import ENV, MPIRUN, same_bits, stop_checkpoint
from test_mpi_shared_weights import weight_mappings

RECIPE = "recipes/stories260k-full.json"
SHELL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "machine_shell.sh")
NPT_EXE = os.path.realpath(NPT)
MACHINES = ("npt-machine-a", "npt-machine-b")
STEPS = 60


def sets(out, cache, steps, accum, extra=()):
    return ["train.max_steps=" + str(steps), "train.warmup_steps=2", f"train.grad_accum={accum}", "train.batch_size=2",
            "log.every=1", f"checkpoint.every={steps}", f"data.cache_dir={cache}", f"output_dir={out}", *extra]


def machines_argv(hostfile, ranks, recipe_sets, extra=(), mpi_flags=()):
    """mpirun over the two stand-in machines: daemons started by machine_shell.sh, TCP
    over loopback between them."""
    return [MPIRUN, "--hostfile", hostfile, "-np", str(ranks), *mpi_flags, "--mca", "plm_rsh_agent", SHELL,
            "--mca", "btl", "self,vader,tcp", "--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo",
            NPT, "train", RECIPE] + set_flags(recipe_sets) + list(extra)


def one_machine_argv(ranks, recipe_sets, extra=()):
    return [MPIRUN, "-np", str(ranks), NPT, "train", RECIPE] + set_flags(recipe_sets) + list(extra)


def run(argv, env=None, timeout=300):
    return subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout,
                          stdin=subprocess.DEVNULL, env=env or ENV)


def rank_pids(run_id):
    """{world rank: pid} of the live npt ranks of one job (marked by NPT_TEST_RUN_ID)."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
            exe = os.readlink(f"/proc/{pid}/exe")  # not comm: npt re-executes itself as /proc/self/exe
        except OSError:
            continue
        if exe != NPT_EXE or f"NPT_TEST_RUN_ID={run_id}".encode() not in env:
            continue
        for kv in env:
            if kv.startswith(b"OMPI_COMM_WORLD_RANK="):
                out[int(kv.split(b"=", 1)[1])] = int(pid)
    return out


def namespace(pid, kind):
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def watch(argv, ranks, until=None, env=None):
    """Runs the job, recording each rank's UTS namespace and weight files (device, inode) (the last seen
    while it runs). until(pids) may act on the ranks and return True to stop watching."""
    run_id = f"{os.getpid()}-{time.monotonic_ns()}"
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                            env=dict(env or ENV, NPT_TEST_RUN_ID=run_id), stdin=subprocess.DEVNULL)
    uts, files, pids = {}, {r: set() for r in range(ranks)}, {}
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if len(pids) < ranks:
            pids = rank_pids(run_id)
        for r, pid in pids.items():
            uts[r] = namespace(pid, "uts") or uts.get(r)
            files[r] = {m[:2] for m in weight_mappings(pid)} or files[r]
        if until and until(pids):
            until = None
        time.sleep(0.01)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err), uts, files


def reversed_stories(path, out):
    """The same stories in the opposite order: the same bytes, documents and tokens, so the
    same number of windows, but other windows."""
    sep = "<|endoftext|>\n"
    with open(path) as f:
        docs = f.read().split(sep)
    if docs and docs[-1] == "":
        docs.pop()
    with open(out, "w") as f:
        f.write(sep.join(reversed(docs)) + sep)
    return os.path.getsize(out) == os.path.getsize(path) and len(docs) > 1


def other_model(path, out):
    """stories260K with one embedding weight doubled: a base of the same shape."""
    shutil.copyfile(path, out)
    with open(out, "r+b") as f:
        f.seek(28 + 4 * 100)  # the 7-int llama2.c header, then the embedding
        v = f.read(4)
        f.seek(28 + 4 * 100)
        f.write(struct.pack("<f", 2 * struct.unpack("<f", v)[0] + 0.5))


def main():
    if not built(NPT):
        return exit_code()
    if not check(MPIRUN is not None, "mpirun is installed (scripts/setup.sh installs openmpi-bin)"):
        return exit_code()
    rig = subprocess.run(["unshare", "--uts", "--mount", "true"], capture_output=True, text=True)
    if not check(rig.returncode == 0, f"new UTS and mount namespaces can be made here, for the stand-in machines "
                                      f"(unshare: {rig.stderr.strip() or 'ok'}; the test runs as root)"):
        return exit_code()
    tmp = tempfile.mkdtemp(prefix="npt-machines-")
    try:
        return cases(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cases(tmp):
    cache = os.path.join(tmp, "cache")
    hosts22, hosts21 = os.path.join(tmp, "hosts-2-2"), os.path.join(tmp, "hosts-2-1")
    with open(hosts22, "w") as f:
        f.write(f"{MACHINES[0]} slots=2\n{MACHINES[1]} slots=2\n")
    with open(hosts21, "w") as f:
        f.write(f"{MACHINES[0]} slots=2\n{MACHINES[1]} slots=1\n")

    # 1. 2 + 2 ranks against 4 ranks on one machine
    two, one = os.path.join(tmp, "two-machines"), os.path.join(tmp, "one-machine")
    r1, uts, files = watch(machines_argv(hosts22, 4, sets(two, cache, STEPS, 4, ["threads=1"])), 4)
    if not check(r1.returncode == 0, f"4 ranks on 2 machines train (exit {r1.returncode}) {r1.stderr[-600:] if r1.returncode else ''}"):
        return exit_code()
    check(len(uts) == 4 and uts[0] == uts[1] and uts[2] == uts[3] and uts[0] != uts[2],
          f"the rig runs ranks 0-1 on one machine and 2-3 on another (UTS namespaces {uts})")
    a, b = files[0], files[2]
    check(len(a) == 1 and files[1] == a and len(b) == 1 and files[3] == b and a != b,
          f"each machine's two ranks map one npt-weights file, and the machines' files differ "
          f"({[sorted(files[r]) for r in range(4)]})")
    check("on each of 4 MPI ranks on 2 machines (micro-batches split over them; one copy of the base model per machine)"
          in r1.stderr and r1.stderr.count("npt train: done:") == 1,
          "the start line says 4 ranks on 2 machines, one copy of the base per machine; printed once")
    r2 = run(one_machine_argv(4, sets(one, cache, STEPS, 4, ["threads=1"])))
    check(r2.returncode == 0 and "on 2 machines" not in r2.stderr and "on each of 4 MPI ranks (" in r2.stderr,
          f"4 ranks on one machine: the start line names no machines (exit {r2.returncode})")
    ok, n = same_bits(os.path.join(two, "final.h5"), os.path.join(one, "final.h5")) if r2.returncode == 0 else (False, 0)
    check(ok, f"2 machines x 2 ranks end bit-identical to 4 ranks on one machine ({n} datasets)")

    # 2. SIGTERM to rank 3, on the second machine
    stopped = os.path.join(tmp, "stopped")
    stop_sets = sets(stopped, cache, STEPS, 4, ["threads=1"])
    killed, seen = [], {"ranks": [], "lines": -1}

    def stop_rank3(pids):
        path = os.path.join(stopped, "metrics.jsonl")
        seen["ranks"], seen["lines"] = sorted(pids), len(open(path).readlines()) if os.path.exists(path) else -1
        if 3 in pids and seen["lines"] >= 8:
            # stopped where it is seen, so the signal lands there however late this test ran
            if pause(pids[3]) and len(open(path).readlines()) < STEPS - 1:
                resume(pids[3], signal.SIGTERM)
                killed.append(pids[3])
            else:
                resume(pids[3])
            return True
        return False
    r3, uts3, _ = watch(machines_argv(hosts22, 4, stop_sets), 4, stop_rank3)
    ckpts, step, kind = stop_checkpoint(stopped)
    check(killed and uts3.get(3) != uts3.get(0) and r3.returncode != 0 and len(ckpts) == 1 and 8 <= step < STEPS
          and kind == "emergency",
          f"SIGTERM to rank 3 on the second machine (pid {killed}; last seen {seen}): the job stops (exit {r3.returncode}) with one "
          f"checkpoint, kind {kind}, at step {step}" + ("" if r3.returncode else f" {r3.stderr[-300:]}"))
    check(r3.stderr.count("stopped by SIGTERM after step") == 1 and f"after step {step};" in r3.stderr,
          "the stop is announced once, naming the checkpoint's step")
    r4 = run(machines_argv(hosts22, 4, stop_sets, ["--resume", "auto"]))
    ok, n = same_bits(os.path.join(two, "final.h5"), os.path.join(stopped, "final.h5")) if r4.returncode == 0 else (False, 0)
    check(ok, f"--resume auto on the 2 machines ends bit-identical to the uninterrupted run ({n} datasets; exit {r4.returncode})")

    # 3. 2 + 1 ranks, threads from the machine: shared among its ranks
    uneven = os.path.join(tmp, "uneven")
    r5 = run(machines_argv(hosts21, 3, sets(uneven, cache, 2, 3), mpi_flags=["--bind-to", "none"]))
    cores = os.cpu_count()
    want = f"| {max(1, cores // 2)}-{cores} threads on each of 3 MPI ranks on 2 machines" if cores > 1 else \
        "| 1 thread on each of 3 MPI ranks on 2 machines"
    check(r5.returncode == 0 and want in r5.stderr and "one copy of the base model per machine" in r5.stderr,
          f"2 + 1 ranks without threads in the recipe: {want!r} (exit {r5.returncode}) "
          f"{[l for l in r5.stderr.splitlines() if 'MPI ranks' in l]}")

    # 4. one path, another file on the second machine
    model_b, text_b = os.path.join(tmp, "model-b.bin"), os.path.join(tmp, "stories-b.txt")
    other_model(MODEL, model_b)
    if not check(reversed_stories(TEXT, text_b), "the reversed stories have the original's size"):
        return exit_code()
    for name, source, target, needle in [
            ("another base model", model_b, MODEL, "rank 2 of 4 has other base model weights (model) than rank 0"),
            ("other stories, same size", text_b, TEXT, "rank 2 of 4 has other training data or data cursor than rank 0")]:
        out = os.path.join(tmp, "differ-" + name.split()[1])
        env = dict(ENV, NPT_TEST_MACHINE_BIND=f"{MACHINES[1]}:{os.path.abspath(source)}:"
                   f"{os.path.abspath(target)}")
        r = run(machines_argv(hosts22, 4, sets(out, cache, 4, 4, ["threads=1"])), env=env)
        errors = [line for line in r.stderr.splitlines() if "npt train: error:" in line]
        check(r.returncode != 0 and len(errors) == 1 and needle in errors[0] and not os.path.exists(os.path.join(out, "metrics.jsonl"))
              and not any(f.endswith(".h5") for f in (os.listdir(out) if os.path.isdir(out) else [])),
              f"{name} on the second machine: exit {r.returncode}, one error line: {errors}")

    # 5. a token cache per machine (a node-local cache_dir under one path): each machine
    # tokenizes once, its first rank before the others (a second writer would replace the
    # file: another inode), and the run is the one-machine run
    local_a, local_b = os.path.join(tmp, "cache-a"), os.path.join(tmp, "cache-b")
    os.makedirs(local_a)
    os.makedirs(local_b)
    inodes = set()

    def cache_inodes(pids):
        for name in os.listdir(local_b):
            try:
                inodes.add((name, os.stat(os.path.join(local_b, name)).st_ino))
            except OSError:
                pass  # a temporary file renamed meanwhile
        return False
    local = os.path.join(tmp, "local-caches")
    env = dict(ENV, NPT_TEST_MACHINE_BIND=f"{MACHINES[1]}:{local_b}:{local_a}")
    argv = machines_argv(hosts22, 4, sets(local, local_a, STEPS, 4, ["threads=1"]))
    r6, _, _ = watch(argv, 4, cache_inodes, env=env)
    left_a, left_b = sorted(os.listdir(local_a)), sorted(os.listdir(local_b))
    caches = {name for name, _ in inodes if name in left_b}
    check(r6.returncode == 0 and len(left_a) == 1 and left_a == left_b and len(caches) == 1
          and len([i for name, i in inodes if name in caches]) == 1,
          f"a token cache per machine: one cache file on each, written once on the second machine "
          f"(exit {r6.returncode}; {left_a} and {left_b}; seen there: {sorted(inodes)})")
    ok, n = same_bits(os.path.join(one, "final.h5"), os.path.join(local, "final.h5")) if r6.returncode == 0 else (False, 0)
    check(ok, f"with a token cache per machine the run ends bit-identical to 4 ranks on one machine ({n} datasets)")
    return exit_code()


if __name__ == "__main__":
    sys.exit(main())
