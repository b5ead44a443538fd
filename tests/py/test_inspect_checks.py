"""tests/py/test_inspect_checks.py — what `npt inspect` says must agree with what the file
and the model really are, on a tiny all-weights lm run (a few seconds):

- `verify` of an all-weights checkpoint checks its /weights/block against the model given
  (size, finiteness, negative second moments) and runs the forward pass through the
  trained weights: a block of the tied size for an untied model, weights that overflow
  the logits, and a negative /optimizer/weights_block.v each FAIL with exit 1;
- `diff` leaves NaN pairs at the same place out of ||a-b||/||a|| (the ratio equals
  numpy's over the other values) and makes it NaN (null in JSON, with a note) when one
  file alone holds a NaN;
- `inspect MODEL` counts parameters without the 16-float padding of the weight block:
  the count the dimensions give (init's command line and config.json), and the sum of
  the shapes in model.safetensors.
"""
import json
import math
import os
import shutil
import struct
import tempfile

import h5py
import numpy as np
from harness import check, exit_code, failures, run_npt, shared_path


def run(*args):
    p = run_npt(*args, timeout=None)
    return p.returncode, p.stdout, p.stderr


tmp = tempfile.mkdtemp(prefix="npt-inspect-checks-")
base = os.path.join(tmp, "base")
DIM, VOCAB = 32, 259  # npt init's byte-level tokenizer: vocab 259
rc, _, err = run("init", "--out", base, "--dim", str(DIM), "--layers", "2", "--heads", "2", "--context", "64")
check(rc == 0, f"npt init of a tiny untied base ({err.strip()[-200:]})")
with open(shared_path("data", "tinystories-valid-1000.txt")) as src, open(os.path.join(tmp, "text.txt"), "w") as dst:
    dst.write(src.read(20000))
with open(os.path.join(tmp, "lm.json"), "w") as fp:
    json.dump({"model": base, "output_dir": os.path.join(tmp, "run"),
               "objective": {"type": "lm", "train_all_weights": True},
               "data": {"train": os.path.join(tmp, "text.txt"), "seq_len": 32, "cache_dir": os.path.join(tmp, "cache")},
               "train": {"max_steps": 4, "batch_size": 2}, "checkpoint": {"every": 2}}, fp)
rc, _, err = run("train", os.path.join(tmp, "lm.json"))
final, c2 = os.path.join(tmp, "run", "final.h5"), os.path.join(tmp, "run", "ckpt-00000002.h5")
check(rc == 0 and os.path.exists(c2), f"a 4-step all-weights lm run, checkpoints at 2 and 4 ({err.strip()[-200:]})")


def copy_edit(name, fn, src=final):
    p = os.path.join(tmp, name)
    shutil.copy(src, p)
    with h5py.File(p, "r+") as f:
        fn(f)
    return p


def verify(p):
    rc, out, err = run("inspect", "verify", p, "--model", base)
    fail = [l for l in out.splitlines() if l.startswith("verify: FAIL")]
    return rc, out, err, fail


# ---- verify of an all-weights checkpoint ----
rc, out, err, fail = verify(final)
check(rc == 0 and "verify: PASS" in out and "forward pass of 8 tokens through the trained weights" in out,
      f"verify of the clean all-weights checkpoint: PASS after a forward pass, exit {rc} ({(out + err).strip()[-300:]})")

with h5py.File(final, "r") as f:
    size = f["weights/block"].shape[0]
lm_head = VOCAB * DIM  # the untied lm_head, last in the block (a multiple of 16: no padding)


def tied_size_block(f):
    """The block a tied model of this shape has: valid for the file alone, wrong for this model."""
    for name in ("weights/block", "optimizer/weights_block.m", "optimizer/weights_block.v"):
        x = f[name][()][:size - lm_head]
        del f[name]
        f[name] = x


def overflowing_norm(f):
    """The final RMSNorm weights (just before lm_head) set to 3e38: finite, but the logits overflow."""
    b = f["weights/block"][()]
    b[size - lm_head - DIM:size - lm_head] = 3e38
    f["weights/block"][...] = b


def negative_v(f):
    v = f["optimizer/weights_block.v"][()]
    v[0] = -1
    f["optimizer/weights_block.v"][...] = v


for name, fn, want in (
        ("tied_block.h5", tied_size_block, f"/weights/block has {size - lm_head} floats but model {base} needs {size}"),
        ("big_norm.h5", overflowing_norm, "the trained weights fail the forward pass"),
        ("negative_v.h5", negative_v, "tensor /optimizer/weights_block.v (AdamW second moments) holds negative values")):
    p = copy_edit(name, fn)
    rc, out, err, fail = verify(p)
    check(rc == 1 and len(fail) == 1 and want in fail[0] and "PASS" not in out,
          f"verify {name}: exit {rc} (want 1), one FAIL line with '{want}' ({fail[:1] or (out + err).strip()[-300:]})")

# ---- diff: ||a-b||/||a|| with NaN values ----
def nan_at_7(f):
    b = f["weights/block"][()]
    b[7] = np.nan
    f["weights/block"][...] = b


na, nb = copy_edit("na.h5", nan_at_7, c2), copy_edit("nb.h5", nan_at_7, final)
with h5py.File(c2, "r") as fa, h5py.File(final, "r") as fb:
    a, b = fa["weights/block"][()].astype(np.float64), fb["weights/block"][()].astype(np.float64)
keep = np.arange(size) != 7
want_rel = np.linalg.norm(a[keep] - b[keep]) / np.linalg.norm(a[keep])


def block_row(path_a, path_b):
    rc, out, _ = run("inspect", "diff", path_a, path_b, "--json")
    d = json.loads(out) if out.strip() else {}
    return rc, next((t for t in d.get("tensors", []) if t["name"] == "weights/block"), {})


rc, t = block_row(na, nb)
rel = t.get("rel_norm_diff")
check(rc == 1 and rel is not None and math.isclose(rel, want_rel, rel_tol=1e-6) and t.get("nonfinite_in_both") == 1,
      f"diff with a NaN at the same place in both: ||a-b||/||a|| {rel} equals numpy's over the other values "
      f"{want_rel:.6g}, nonfinite_in_both {t.get('nonfinite_in_both')}")
rc, t = block_row(na, final)
check(rc == 1 and "rel_norm_diff" in t and t["rel_norm_diff"] is None and t.get("nonfinite_in_one") == 1
      and "one file only" in t.get("note", ""),
      f"diff with a NaN in a only: ||a-b||/||a|| null (NaN), not a number, with a note ({t})")
rc, out, _ = run("inspect", "diff", na, final)
row = next((l for l in out.splitlines() if l.startswith("weights/block ")), "")
check(rc == 1 and row.split()[3:4] == ["nan"] and "1 NaN/Inf in one file only" in row,
      f"diff text row says nan and why: {row!r}")

# ---- inspect MODEL: parameters, not the padded block ----
tiny = os.path.join(tmp, "tiny")
T_DIM, T_HEADS, T_LAYERS = 2, 1, 1
rc, _, err = run("init", "--out", tiny, "--dim", str(T_DIM), "--heads", str(T_HEADS), "--layers", str(T_LAYERS))
# The expected count from the dimensions (the command line above, and what config.json
# says of the rest), not from anything npt counted: embeddings V*D; per layer two norms
# of D, wq D*qd, wk and wv D*kvd each, wo qd*D, w1 and w3 D*H each, w2 H*D; the final
# norm D; an untied lm_head V*D.
with open(os.path.join(tiny, "config.json")) as fp:
    tcfg = json.load(fp)
V, H, KV = tcfg["vocab_size"], tcfg["intermediate_size"], tcfg["num_key_value_heads"]
hd = T_DIM // T_HEADS
qd, kvd = T_HEADS * hd, KV * hd
per_layer = 2 * T_DIM + T_DIM * qd + 2 * T_DIM * kvd + qd * T_DIM + 2 * T_DIM * H + H * T_DIM
want_dims = V * T_DIM + T_LAYERS * per_layer + T_DIM + (0 if tcfg["tie_word_embeddings"] else V * T_DIM)
rc, out, err = run("inspect", tiny)
tline = next((l for l in out.splitlines() if l.startswith('tensors')), err.strip())
check(rc == 0 and f", {want_dims} parameters" in out,
      f"inspect of a dim-2 model counts the {want_dims} parameters its dimensions give "
      f"(V={V}, D={T_DIM}, H={H}, kv heads {KV}, tied {tcfg['tie_word_embeddings']}): {tline}")
# and the header npt wrote holds as many (this guards model.safetensors too)
with open(os.path.join(tiny, "model.safetensors"), "rb") as fp:
    header = json.loads(fp.read(struct.unpack("<Q", fp.read(8))[0]))
want = sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
check(rc == 0 and f", {want} parameters" in out,
      f"inspect of a dim-2 model counts the {want} parameters in model.safetensors: {tline}")
rc, out, _ = run("inspect", tiny, "--json")
params = json.loads(out).get("params") if rc == 0 and out.strip() else None
check(params == want_dims, f"inspect --json params is {want_dims}, the count from the dimensions (got {params})")
check(rc == 0 and json.loads(out).get("params") == want, f"inspect --json params is {want}")

shutil.rmtree(tmp, ignore_errors=True)
print(f"{failures()} failures")
raise SystemExit(exit_code())
