#!/usr/bin/python3
"""tests/py/test_mpi_shared_weights.py — MPI ranks on one machine hold one copy of the
frozen base model (train.c's load_base_model, util/shared_map.c).

The model is a random one of 42 MB (npt init, dim 384, 6 layers), big enough that a
private copy shows in a rank's anonymous memory; two ranks on this machine train it.
  1. both ranks map the same file in the shared-memory directory, of the weights' size,
     read-only in both once loaded; each rank's anonymous memory (RssAnon, sampled while
     it trains) stays below the weights' size; the start line says so;
  2. the control, NPT_SHARE_WEIGHTS=0: each rank's anonymous memory holds the weights
     (so check 1 measures what it claims), and the two runs end bit-identical;
  3. no file is left in the shared-memory directory after the run;
  4. a directory where the file cannot be made (NPT_SHM_DIR missing): one warning line,
     each rank loads its own copy, and the run ends bit-identical;
  5. a model that fails to load (a weight set to NaN): exit 1, one error line naming the
     tensor, nothing left in the shared-memory directory;
  6. npt-weights files that killed runs left (old, locked by no one) are removed before
     the new one is made, in one warning line; a file another process holds locked (a
     live run's), a fresh one and other names are kept.
"""
import fcntl
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

from harness import NPT, TRAIN_TEXT as TEXT, built, check, exit_code, run_npt, set_flags
from test_mpi import ENV, MPIRUN, find_rank, same_bits



def nan_first_value(path, tensor):
    """Sets the first element of a float32 tensor of a safetensors file to NaN."""
    with open(path, "r+b") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        entry = json.loads(f.read(n))[tensor]
        assert entry["dtype"] == "F32", entry
        f.seek(8 + n + entry["data_offsets"][0])
        f.write(struct.pack("<f", float("nan")))


def recipe_sets(model, out, cache, steps):
    return ["objective.type=distill", "npt.layers=all", "npt.rank=16", f"train.max_steps={steps}",
            "train.warmup_steps=2", "train.grad_accum=2", "train.batch_size=2", "data.seq_len=64", "threads=1",
            "log.every=1", f"checkpoint.every={steps}", f"model={model}", "tokenizer=", f"data.train={TEXT}",
            f"data.cache_dir={cache}", f"output_dir={out}"]


def argv(recipe, sets):
    return [MPIRUN, "-np", "2", NPT, "train", recipe] + set_flags(sets)


def status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def weight_mappings(pid):
    """(device, inode, size, permissions) of each npt-weights file this process maps."""
    out = set()
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and "/npt-weights-" in parts[5]:
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    out.add((parts[3], int(parts[4]), hi - lo, parts[1]))
    except OSError:
        pass
    return out


def watch(recipe, sets, env):
    """Runs the 2-rank job, sampling each rank's RssAnon (peak seen, in bytes) and its
    npt-weights mappings (the last seen) while it trains; (result, peaks, maps)."""
    proc = subprocess.Popen(argv(recipe, sets), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            stdin=subprocess.DEVNULL)
    peaks, maps, pids = [0, 0], [set(), set()], [None, None]
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        for r in range(2):
            pids[r] = pids[r] or find_rank(proc.pid, r)
            if pids[r]:
                kb = status_kb(pids[r], "RssAnon")
                peaks[r] = max(peaks[r], (kb or 0) * 1024)
                maps[r] = weight_mappings(pids[r]) or maps[r]  # the last seen: the state while training
        time.sleep(0.02)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), peaks, maps


def leftovers(directory):
    return [f for f in os.listdir(directory) if f.startswith("npt-weights-")]


def main():
    if not built(NPT):
        return exit_code()
    if not check(MPIRUN is not None, "mpirun is installed (scripts/setup.sh installs openmpi-bin)"):
        return exit_code()
    tmp = tempfile.mkdtemp(prefix="npt-shared-")
    try:
        return cases(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cases(tmp):
    model, cache, shm = (os.path.join(tmp, d) for d in ("model", "cache", "shm"))
    os.mkdir(shm)
    r = run_npt("init", "--out", model, "--dim", "384", "--layers", "6", "--heads", "6", "--hidden", "1024")
    if not check(r.returncode == 0, f"npt init makes the test model (exit {r.returncode}) {r.stderr.strip()}"):
        return exit_code()
    weights = os.path.getsize(os.path.join(model, "model.safetensors"))  # float32: the loaded block's size
    recipe = "recipes/stories260k-full.json"
    env = dict(ENV, NPT_SHM_DIR=shm)
    steps = 40

    # 1. shared
    shared_out = os.path.join(tmp, "shared")
    r1, peaks, maps = watch(recipe, recipe_sets(model, shared_out, cache, steps), env)
    check(r1.returncode == 0, f"the 2-rank run with a shared base succeeds (exit {r1.returncode}) {r1.stderr[-300:] if r1.returncode else ''}")
    files = [{(dev, ino, sz) for dev, ino, sz, _ in m} for m in maps]
    same = len(files[0]) == 1 and files[0] == files[1]
    size = next(iter(files[0]))[2] if files[0] else 0
    check(same and weights * 0.95 <= size <= weights * 1.05,
          f"both ranks map one and the same npt-weights file of the weights' size ({size / 1e6:.1f} MB mapped, "
          f"{weights / 1e6:.1f} MB of weights; rank 0 {sorted(maps[0])}, rank 1 {sorted(maps[1])})")
    perms = [{p for _, _, _, p in m} for m in maps]
    check(perms[0] and perms[1] and all(p[:2] == "r-" for m in perms for p in m),
          f"the file is mapped read-only in both ranks once loaded ({perms})")
    check(all(0 < p < weights for p in peaks),
          f"each rank's anonymous memory stays below the weights' size: {peaks[0] / 1e6:.1f} / {peaks[1] / 1e6:.1f} MB "
          f"< {weights / 1e6:.1f} MB")
    check(leftovers(shm) == [], f"no npt-weights file is left in the shared-memory directory ({leftovers(shm)})")
    check(r1.stderr.count("one copy of the base model per machine") == 1, "the start line says the base is shared")

    # 2. the control: a copy per rank
    private_out = os.path.join(tmp, "private")
    r2, ppeaks, pmaps = watch(recipe, recipe_sets(model, private_out, cache, steps), dict(env, NPT_SHARE_WEIGHTS="0"))
    check(r2.returncode == 0 and all(p >= weights for p in ppeaks) and pmaps == [set(), set()]
          and "one copy of the base model" not in r2.stderr,
          f"NPT_SHARE_WEIGHTS=0: each rank holds its own copy ({ppeaks[0] / 1e6:.1f} / {ppeaks[1] / 1e6:.1f} MB "
          f"anonymous, >= {weights / 1e6:.1f}; exit {r2.returncode})")
    ok, n = same_bits(os.path.join(shared_out, "final.h5"), os.path.join(private_out, "final.h5")) \
        if r1.returncode == 0 and r2.returncode == 0 else (False, 0)
    check(ok, f"the shared and the private runs end bit-identical ({n} datasets)")

    # 4. no room for the file: a warning, and a copy per rank
    fallback_out = os.path.join(tmp, "fallback")
    missing = os.path.join(tmp, "no-such-dir")
    r4 = subprocess.run(argv(recipe, recipe_sets(model, fallback_out, cache, steps)), capture_output=True, text=True,
                        env=dict(ENV, NPT_SHM_DIR=missing), stdin=subprocess.DEVNULL, timeout=300)
    warnings = [line for line in r4.stderr.splitlines() if "warning" in line]
    check(r4.returncode == 0 and len(warnings) == 1 and "cannot share the base model" in warnings[0]
          and missing in warnings[0] and "each holds its own copy" in warnings[0],
          f"an unusable shared-memory directory: exit {r4.returncode}, one warning: {warnings}")
    ok, n = same_bits(os.path.join(shared_out, "final.h5"), os.path.join(fallback_out, "final.h5")) \
        if r1.returncode == 0 and r4.returncode == 0 else (False, 0)
    check(ok, f"... and the run ends bit-identical to the shared one ({n} datasets)")

    # 6. files that killed runs left: swept before the new file is made; a live run's and
    # a just-created one stay
    def plant(name, age):
        path = os.path.join(shm, name)
        with open(path, "wb") as f:
            f.truncate(1 << 20)
            f.write(b"\1" * (1 << 20))
        os.utime(path, (time.time() - age, time.time() - age))
        return path
    plant("npt-weights-999999-1", 7200)
    plant("npt-weights-999999-2", 7200)
    live = os.open(plant("npt-weights-3-3", 7200), os.O_RDONLY)
    fcntl.flock(live, fcntl.LOCK_EX)
    plant("npt-weights-4-4", 0)
    plant("other-file", 7200)
    plant("npt-weights-backup", 7200)  # the prefix, but not a run's name
    r6 = subprocess.run(argv(recipe, recipe_sets(model, os.path.join(tmp, "sweep"), cache, 4)), capture_output=True,
                        text=True, env=env, stdin=subprocess.DEVNULL, timeout=300)
    os.close(live)
    warnings = [line for line in r6.stderr.splitlines() if "warning" in line]
    check(r6.returncode == 0 and len(warnings) == 1 and "removed 2 copies" in warnings[0] and "2.1 MB" in warnings[0]
          and "npt-weights-999999-" in warnings[0] and "and 1 more" in warnings[0] and shm in warnings[0]
          and "one copy of the base model per machine" in r6.stderr,
          f"two files killed runs left: removed, with one warning, and the base still shared (exit {r6.returncode}): "
          f"{warnings}")
    kept = sorted(f for f in os.listdir(shm))
    check(kept == ["npt-weights-3-3", "npt-weights-4-4", "npt-weights-backup", "other-file"],
          f"... a file a live process holds, a just-made one and other names are kept ({kept})")
    for f in kept:
        os.remove(os.path.join(shm, f))

    # 5. the loading rank fails
    nan_first_value(os.path.join(model, "model.safetensors"), "model.layers.2.mlp.up_proj.weight")
    r5 = subprocess.run(argv(recipe, recipe_sets(model, os.path.join(tmp, "nan"), cache, steps)), capture_output=True,
                        text=True, env=env, stdin=subprocess.DEVNULL, timeout=300)
    errors = [line for line in r5.stderr.splitlines() if "error" in line]
    check(r5.returncode == 1 and len(errors) == 1 and "model.layers.2.mlp.up_proj.weight" in errors[0]
          and "non-finite" in errors[0],
          f"a NaN weight: exit {r5.returncode}, one error line: {errors}")
    check(leftovers(shm) == [], f"... and no npt-weights file is left behind ({leftovers(shm)})")
    return exit_code()


if __name__ == "__main__":
    sys.exit(main())
