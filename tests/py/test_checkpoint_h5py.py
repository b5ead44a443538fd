"""tests/py/test_checkpoint_h5py.py — independent check of the checkpoint file format.

1. The C writer (build/tests/test_checkpoint --write PATH) writes the fixture checkpoint;
   h5py opens it and every value is compared with numbers recomputed here from the
   formulas of tests/test_checkpoint_fixture.h (not read back through npt).
2. h5dump reads it.
3. The other direction: a checkpoint written here with h5py, following docs/checkpoint.md
   only (h5py's default types: int64 attributes, variable-length strings, no chunking),
   is loaded by the C reader and compared with the fixture (--check PATH).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import h5py
import numpy as np
from harness import BUILD, built, check, exit_code

BIN = os.path.join(BUILD, "tests", "test_checkpoint")


# ---- the fixture, recomputed from its definition ----
LAYERS = [2, 3, 4]
RANK, DIM, HIDDEN = 4, 64, 172
RECIPE = {"name": "fixture", "adapters": {"rank": 4, "layers": [2, 3, 4]}}
FINGERPRINT = 0xFEDCBA9876543210
RNG = [1, 0x8000000000000005, 0xDEADBEEF, 2**64 - 1]
CURSOR = [3, 1234, -1, 7]
N_HIST = 50


def fixture_tensors(safe=False):
    """name -> float32 array, in the fixture's k order."""
    out, k = {}, 0
    for layer in LAYERS:
        for part in ["A", "B_add", "B_mul"]:
            for suffix in ["", ".m", ".v"]:
                shape = (RANK, DIM) if part == "A" else (HIDDEN, RANK)
                i = np.arange(shape[0] * shape[1], dtype=np.int64)
                vals = (((i * 37 + k * 11) % 1001 - 500).astype(np.float32) / np.float32(64)).reshape(shape)
                if suffix == ".v":  # AdamW second moments are never negative
                    vals = np.abs(vals)
                if not (safe and part == "B_mul"):
                    group = "optimizer" if suffix else "adapters"
                    out[f"{group}/layer_{layer:02d}/{part}{suffix}"] = vals
                k += 1
    return out


def fixture_history():
    i = np.arange(N_HIST)
    return {
        "step": (i + 1) * 10,
        "loss": np.array([1.0 / (j + 1) for j in i]),
        "nmse": np.array([0.5 / (j + 1) for j in i]),
        "reg": np.array([j * 1e-3 for j in i]),
        "lr": np.array([5e-5 * (j + 1) / N_HIST for j in i]),
        "grad_norm": np.array([2.0 + j * 0.25 for j in i]),
        "skipped": (i % 7 == 3).astype(np.int8),
    }


def text(v):
    """npt stores fixed-length UTF-8 strings, which h5py returns as bytes."""
    return v.decode("utf-8") if isinstance(v, bytes) else v


def datasets_under(f):
    names = []
    f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
    return names


def check_c_written(path):
    with h5py.File(path, "r") as f:
        a = {k: text(v) for k, v in f.attrs.items()}
        check(a["format"] == "npt-checkpoint" and a["format_version"] == 1, "root: format npt-checkpoint, version 1")
        check(a["step"] == 500 and a["tokens_seen"] == 500 * 2048 and a["kind"] == "periodic",
              "root: step 500, tokens_seen 1024000, kind periodic")
        check(len(a["created"]) == 20 and a["created"].endswith("Z") and a["npt_version"] == "0.1",
              f"root: created {a['created']}, npt_version {a['npt_version']}")
        check(f["recipe"].shape == (1,) and json.loads(text(f["recipe"][0])) == RECIPE,
              "/recipe is one string that parses as the fixture recipe JSON")
        b = {k: text(v) for k, v in f["base"].attrs.items()}
        check(b["path"] == "/work/shared/models/stories260K/stories260K.bin" and b["architecture"] == "llama"
              and b["format"] == "llama2c", "/base: path, architecture, format")
        check(b["fingerprint"] == f"{FINGERPRINT:016x}" and int(b["fingerprint_u64"]) == FINGERPRINT
              and b["fingerprint_u64"].dtype == np.uint64, "/base: fingerprint as hex string and uint64")
        dims = [int(b[k]) for k in ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size"]]
        check(dims == [64, 172, 5, 8, 4, 512], f"/base: dims {dims}")
        check(b["norm_eps"] == 1e-5 and b["rope_theta"] == 10000.0 and b["norm_eps"].dtype == np.float64,
              f"/base: norm_eps {b['norm_eps']}, rope_theta {b['rope_theta']} (float64)")
        check(b["tokenizer_path"] == "/work/runs/init1/tokenizer.json" and int(b["tokenizer_bytes"]) == 12345
              and b["tokenizer_bytes"].dtype == np.int64 and b["tokenizer_fingerprint"] == "0123456789abcdef",
              "/base: the run's tokenizer as path, int64 size and hex fingerprint")
        ad = f["adapters"].attrs
        check(ad["rank"] == 4 and ad["safe_mode"] == 0 and ad["modulation_scale"] == 0.1
              and list(ad["layers"]) == LAYERS, "/adapters: rank, safe_mode, modulation_scale, layers")
        check(text(f["optimizer"].attrs["type"]) == "adamw" and f["optimizer"].attrs["step"] == 500, "/optimizer: type, step")
        st = f["state"].attrs
        check([int(x) for x in st["rng"]] == RNG and st["rng"].dtype == np.uint64, "/state: rng uint64[4]")
        check(list(st["data_cursor"]) == CURSOR and st["data_cursor"].dtype == np.int64, "/state: data_cursor int64[4]")
        check(st["skipped_total"] == 2 and st["consecutive_skips"] == 1 and st["best_loss"] == 0.125
              and st["last_loss"] == 0.25, "/state: skips and losses")
        want = fixture_history()
        for name, values in want.items():
            got = f["history"][name][()]
            check(got.shape == (N_HIST,) and np.array_equal(got, values), f"/history/{name}: {N_HIST} values exact")
        check(f["history/loss"].dtype == np.float64 and f["history/step"].dtype == np.int64
              and f["history/skipped"].dtype == np.int8, "/history dtypes float64 / int64 / int8")
        tensors = fixture_tensors()
        listed = sorted(n for n in datasets_under(f) if n.split("/")[0] in ("adapters", "optimizer"))
        check(listed == sorted(tensors), f"tensor datasets are exactly the fixture's {len(tensors)}")
        exact = all(f[n].dtype == np.float32 and f[n].shape == v.shape
                    and f[n][()].view(np.uint32).tolist() == v.view(np.uint32).tolist() for n, v in tensors.items())
        check(exact, "every tensor is float32 with the formula's values, bit for bit")
        everything = datasets_under(f)
        check(all(f[n].fletcher32 for n in everything if f[n].size), f"all {len(everything)} non-empty datasets "
              "carry Fletcher-32 checksums")
        superblock = f.id.get_create_plist().get_version()[0]
        check(superblock == 3, f"file uses the HDF5 1.10 format (superblock version {superblock}, expected 3)")


def check_h5dump(path):
    if not shutil.which("h5dump"):
        print("SKIP: h5dump not installed")
        return
    r = subprocess.run(["h5dump", "-A", path], capture_output=True, text=True)
    check(r.returncode == 0 and '"npt-checkpoint"' in r.stdout and 'GROUP "adapters"' in r.stdout,
          "h5dump -A reads the header")
    r = subprocess.run(["h5dump", "-d", "/adapters/layer_02/A", path], capture_output=True, text=True)
    first = fixture_tensors()["adapters/layer_02/A"].ravel()[:2]
    check(r.returncode == 0 and f"(0,0): {first[0]:g}, {first[1]:g}," in r.stdout,
          f"h5dump prints /adapters/layer_02/A starting {first[0]:g}, {first[1]:g}")


def write_with_h5py(path):
    """A checkpoint made from the documentation alone, with h5py's defaults
    (variable-length strings, a scalar /recipe, no chunking): the reader accepts both."""
    with h5py.File(path, "w") as f:
        f.attrs.update(format="npt-checkpoint", format_version=1, step=500, tokens_seen=500 * 2048, kind="periodic",
                       created="2025-01-01T00:00:00Z", npt_version="0.1")
        f["recipe"] = json.dumps(RECIPE)
        b = f.create_group("base")
        b.attrs.update(path="/work/shared/models/stories260K/stories260K.bin", architecture="llama", format="llama2c",
                       fingerprint=f"{FINGERPRINT:016x}", fingerprint_u64=np.uint64(FINGERPRINT), dim=64,
                       hidden_dim=172, n_layers=5, n_heads=8, n_kv_heads=4, vocab_size=512, norm_eps=1e-5,
                       rope_theta=10000.0, tokenizer_path="/work/runs/init1/tokenizer.json",
                       tokenizer_bytes=np.int64(12345), tokenizer_fingerprint="0123456789abcdef")
        f.create_group("adapters").attrs.update(rank=4, safe_mode=0, modulation_scale=0.1,
                                                layers=np.array(LAYERS, dtype=np.int32))
        f.create_group("optimizer").attrs.update(type="adamw", step=500)
        f.create_group("state").attrs.update(rng=np.array(RNG, dtype=np.uint64), data_cursor=np.array(CURSOR),
                                             skipped_total=2, consecutive_skips=1, best_loss=0.125, last_loss=0.25)
        h = f.create_group("history")
        for name, values in fixture_history().items():
            h[name] = values
        for name, values in fixture_tensors().items():
            f[name] = values


def main():
    if not built(BIN):
        return 1
    tmp = tempfile.mkdtemp(prefix="npt_ckpt_py_")
    try:
        path = os.path.join(tmp, "c_written.h5")
        r = subprocess.run([BIN, "--write", path], capture_output=True, text=True)
        check(r.returncode == 0 and os.path.exists(path), f"C writer wrote {os.path.basename(path)}")
        if r.returncode == 0:
            check_c_written(path)
            check_h5dump(path)
        path = os.path.join(tmp, "py_written.h5")
        write_with_h5py(path)
        r = subprocess.run([BIN, "--check", path], capture_output=True, text=True)
        check(r.returncode == 0 and r.stdout.count("PASS") >= 3,
              "C reader loads an h5py-written checkpoint equal to the fixture: "
              + " | ".join(r.stdout.strip().splitlines()[-3:]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return exit_code()


if __name__ == "__main__":
    sys.exit(main())
