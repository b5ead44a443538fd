"""tests/py/test_inspect.py — `npt inspect` on checkpoints from a real short run.

A 20-step stories260k-full run (checkpoints at steps 10 and 20) is made in a temp dir.
Independent sources: h5py + numpy read the tensors and attributes themselves,
metrics.jsonl is the trainer's own log, the llama2.c header is parsed here. Then damaged
copies (truncated, NaN planted, dataset deleted, format_version changed) must each be
reported precisely, and verify must fail on them and on the wrong base model; a copy
with a dataset declared 2^40 floats but never written is reported within a time limit
(not read: 4 TB of fill values), and not vouched for.
"""
import json
import os
import shutil
import struct
import subprocess
import tempfile

import h5py
import numpy as np
from harness import (HF656, NPT, STORIES260K_BIN as BIN, STORIES260K_GGUF as GGUF, TOK512 as TOK, check, exit_code,
                     failures, run_npt, shared_path)



def run(*args):
    p = run_npt(*args, timeout=None)
    return p.returncode, p.stdout, p.stderr


def inspect_json(path, *extra):
    rc, out, err = run("inspect", path, "--json", *extra)
    return rc, (json.loads(out) if out.strip() else None), err


def close(a, b, rel=1e-6, abs_=0.0):
    return abs(a - b) <= abs_ + rel * max(abs(a), abs(b))


tmp = tempfile.mkdtemp(prefix="npt-inspect-")
runs = os.path.join(tmp, "run")
rc, _, err = run("train", "stories260k-full", "--set", f"output_dir={runs}", "--set", "train.max_steps=20",
                 "--set", "train.warmup_steps=2", "--set", "checkpoint.every=10", "--set", "threads=1")
check(rc == 0, f"training run for the fixtures succeeds ({err.strip()[-200:]})")
final, c10 = os.path.join(runs, "final.h5"), os.path.join(runs, "ckpt-00000010.h5")

# ---- summary against the run's own log and h5py ----
rows = [json.loads(l) for l in open(os.path.join(runs, "metrics.jsonl"))]
rc, j, err = inspect_json(final)
check(rc == 0 and j is not None, f"inspect --json on final.h5 exits 0 (rc {rc}, {err.strip()})")
check(j["step"] == 20 == rows[-1]["step"], f"step is 20 like the last metrics.jsonl row (got {j['step']})")
check(j["recipe"]["name"] == "stories260k-full", "recipe name is stories260k-full")
check(j["recipe"]["train"]["max_steps"] == 20, "recipe shows the --set override train.max_steps=20")
check(close(j["last_loss"], rows[-1]["loss"], 1e-6), f"last loss {j['last_loss']} equals metrics.jsonl {rows[-1]['loss']}")
check(j["history"]["steps"] == len(rows) == 20, "history has 20 steps like metrics.jsonl")
check(close(j["history"]["min_loss"], min(r["loss"] for r in rows), 1e-6), "history min loss equals metrics.jsonl min")
check(j["history"]["skipped"] == sum(r["skipped"] for r in rows) == j["skipped_total"], "skips agree with metrics.jsonl")
check(close(j["history"]["mean_lr"], np.mean([r["lr"] for r in rows]), 1e-5), "mean lr agrees with metrics.jsonl")
with h5py.File(final, "r") as f:
    check(j["tokens_seen"] == int(f.attrs["tokens_seen"]), "tokens_seen equals the h5py attribute")
    check(j["base"]["fingerprint"] == f["base"].attrs["fingerprint"].decode(), "base fingerprint equals the h5py attribute")
    check(j["adapters"]["rank"] == int(f["adapters"].attrs["rank"]) == 64, "rank 64 as in the recipe and file")
    check(j["adapters"]["layers"] == [int(x) for x in f["adapters"].attrs["layers"]], "adapter layers equal h5py's")
    names = []
    f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) and n.split("/")[0] in ("adapters", "optimizer") else None)
    check(sorted(t["name"] for t in j["tensors"]) == sorted(names), f"tensor table lists every dataset h5py sees ({len(names)})")
    n_adapter = sum(f[n].size for n in names if n.startswith("adapters/"))
    n_moment = sum(f[n].size for n in names if n.startswith("optimizer/"))
    check(j["trainable_params"] == n_adapter and j["optimizer_moment_values"] == n_moment,
          f"parameter counts {n_adapter} / {n_moment} match h5py")
    by_name = {t["name"]: t for t in j["tensors"]}
    for name in ["adapters/layer_00/A", "adapters/layer_02/B_add", "adapters/layer_04/B_mul", "optimizer/layer_03/A.v"]:
        x = f[name][()].astype(np.float64)
        t = by_name[name]
        ok = (close(t["min"], x.min()) and close(t["max"], x.max()) and close(t["std"], x.std(), 1e-6)
              and abs(t["mean"] - x.mean()) <= 1e-9 * np.abs(x).max() and t["shape"] == list(x.shape)
              and t["nan"] == 0 and t["inf"] == 0 and t["beyond_fp16"] == int((np.abs(x) > 65504).sum()))
        check(ok, f"{name}: min/max/mean/std/shape equal h5py+numpy ({t['min']:.6g} {t['max']:.6g} {t['mean']:.6g} {t['std']:.6g})")

# ---- plot ----
rc, out, _ = run("inspect", final, "--plot")
svg = final + ".loss.svg"
check(rc == 0 and os.path.exists(svg) and "<polyline" in open(svg).read(), "--plot writes CKPT.loss.svg with a polyline")
custom = os.path.join(tmp, "curve.svg")
rc, out, _ = run("inspect", final, "--plot", custom)
check(rc == 0 and "<polyline" in open(custom).read() and custom in out, "--plot FILE.svg writes FILE.svg")
rc, _, err = run("inspect", final, "--plot", custom)
check(rc == 1 and "already exists" in err and "--force" in err and "<polyline" in open(custom).read(),
      f"--plot FILE.svg onto an existing FILE: exit {rc} (want 1), names --force, FILE kept")
with open(custom, "w") as f:
    f.write("my notes\n")
rc, _, _ = run("inspect", final, "--plot=" + custom, "--force")
check(rc == 0 and "<polyline" in open(custom).read(), "--plot=FILE --force replaces it")
with open(svg, "w") as f:  # so that only a rewrite brings the polyline back
    f.write("stale\n")
rc, _, _ = run("inspect", final, "--plot")
check(rc == 0 and "<polyline" in open(svg).read(), "--plot without a name replaces CKPT.loss.svg, npt's own file, on each run")
for args in (("diff", final, final, "--plot"), (final, "--force")):
    rc, _, err = run("inspect", *args)
    check(rc == 2 and "see npt inspect --help" in err, f"inspect {' '.join(args[-2:])}: usage error, exit {rc} (want 2)")

# ---- verify and refusals ----
for model in (BIN, GGUF):
    rc, out, _ = run("inspect", "verify", final, "--model", model)
    check(rc == 0 and "verify: PASS" in out and "finite logits" in out, f"verify against {os.path.basename(model)} passes")
rc, out, _ = run("inspect", "verify", final, "--model", HF656)
fail_line = [l for l in out.splitlines() if l.startswith("verify: FAIL")]
check(rc == 1 and fail_line and "stories260K.bin" in fail_line[0] and "TinyStories-656K" in fail_line[0],
      f"verify against TinyStories-656K fails naming both models: {fail_line[:1]}")
rc, out, _ = run("inspect", "verify", final, "--model", c10)
check(rc == 1 and "is an npt checkpoint (adapters only" in out and "stories260K.bin" in out,
      "a checkpoint given as --model is refused, naming the base it needs")
peft = os.path.join(tmp, "peft")
os.mkdir(peft)
json.dump({"peft_type": "LORA", "r": 8, "base_model_name_or_path": "meta-llama/Llama-2-7b-hf"},
          open(os.path.join(peft, "adapter_config.json"), "w"))
rc, _, err = run("inspect", peft)
check(rc == 1 and "PEFT adapter directory" in err and "meta-llama/Llama-2-7b-hf" in err, f"PEFT dir refused: {err.strip()}")
# every command that expects a full model refuses both (the guard is in load_full_model)
for what, bad, needle in (("checkpoint", c10, "is an npt checkpoint (adapters only"), ("PEFT dir", peft, "PEFT adapter directory")):
    for argv in (["generate", "--model", bad, "--tokenizer", TOK, "--steps", "4"],
                 ["debug", "layers", "--model", bad, "--tokenizer", TOK, "--prompt", "Once"],
                 ["train", "recipes/stories260k-safe.json", "--set", f"model={bad}", "--set", f"output_dir={tmp}/refused"]):
        rc, out, err = run(*argv)
        check(rc == 1 and needle in err and len(err.strip().splitlines()) == 1,
              f"npt {argv[0]} refuses a {what} given as the model in one line: {err.strip()[:90]}")

# ---- model files: header parsed here ----
hdr = struct.unpack("7i", open(BIN, "rb").read(28))
rc, m, _ = inspect_json(BIN)
check(rc == 0 and [m["dim"], m["hidden_dim"], m["n_layers"], m["n_heads"], m["n_kv_heads"], m["vocab_size"], m["seq_len"]]
      == [hdr[0], hdr[1], hdr[2], hdr[3], hdr[4], abs(hdr[5]), hdr[6]] and m["tied"] == (hdr[5] > 0),
      f"llama2c model: dims equal the file header {hdr}")
check(m["fingerprint"] == j["base"]["fingerprint"], "model fingerprint equals the one stored in the checkpoint")
rc, g, _ = inspect_json(GGUF)
check(rc == 0 and g["format"] == "gguf" and g["fingerprint"] == m["fingerprint"], "GGUF: same weights, same fingerprint")
cfg = json.load(open(os.path.join(HF656, "config.json")))
rc, h, _ = inspect_json(HF656)
check(rc == 0 and h["dim"] == cfg["hidden_size"] and h["n_layers"] == cfg["num_hidden_layers"]
      and h["vocab_size"] == cfg["vocab_size"] and h["format"] == "hf", "HF dir: dims equal config.json")

# ---- diff ----
rc, out, _ = run("inspect", "diff", c10, final, "--json")
d = json.loads(out)
check(rc == 1 and not d["identical"] and all(t.get("max_abs_diff", 0) > 0 for t in d["tensors"]),
      "diff step 10 vs 20: every tensor differs, exit 1")
check(any(s.startswith("step: 10 -> 20") for s in d["differences"]), "diff reports step 10 -> 20")
with h5py.File(c10, "r") as fa, h5py.File(final, "r") as fb:
    a, b = fa["adapters/layer_01/A"][()].astype(np.float64), fb["adapters/layer_01/A"][()].astype(np.float64)
t = next(t for t in d["tensors"] if t["name"] == "adapters/layer_01/A")
check(close(t["max_abs_diff"], np.abs(a - b).max()) and close(t["rel_norm_diff"], np.linalg.norm(a - b) / np.linalg.norm(a)),
      f"diff of adapters/layer_01/A equals numpy ({t['max_abs_diff']:.6g}, {t['rel_norm_diff']:.6g})")
rc, out, _ = run("inspect", "diff", final, final, "--json")
d = json.loads(out)
check(rc == 0 and d["identical"] and all(t["max_abs_diff"] == 0 and t["rel_norm_diff"] == 0 for t in d["tensors"])
      and d["differences"] == [], "diff of a file with itself: all zeros, exit 0")


# ---- damaged checkpoints ----
def damaged(name, fn):
    p = os.path.join(tmp, name)
    shutil.copy(final, p)
    fn(p)
    return p


def truncate(p):
    size = os.path.getsize(p)
    with open(p, "r+b") as f:
        f.truncate(size // 2)


def plant_nan(p):
    with h5py.File(p, "r+") as f:
        f["adapters/layer_02/A"][3, 5] = np.nan


def delete_dataset(p):
    with h5py.File(p, "r+") as f:
        del f["adapters/layer_03/B_mul"]


def bump_version(p):
    with h5py.File(p, "r+") as f:
        f.attrs.modify("format_version", np.int32(7))


cases = [
    ("truncated.h5", truncate, "is truncated"),
    ("nan.h5", plant_nan, "tensor /adapters/layer_02/A holds 1 NaN and 0 Inf values (of 4096)"),
    ("missing.h5", delete_dataset, "dataset /adapters/layer_03/B_mul missing"),
    ("version.h5", bump_version, "written by a newer npt (format_version 7 > 1)"),
]
for name, fn, expect in cases:
    p = damaged(name, fn)
    rc, out, err = run("inspect", p)
    check(rc == 1 and expect in out + err, f"inspect {name}: exit 1 and says '{expect}'")
    rc, out, _ = run("inspect", "verify", p, "--model", BIN)
    fail_line = [l for l in out.splitlines() if l.startswith("verify: FAIL")]
    check(rc == 1 and len(fail_line) == 1 and expect in fail_line[0], f"verify {name} fails with the reason on one line")
# a NaN on one side is a difference, wherever it falls among the finite values
rc, out, _ = run("inspect", "diff", final, os.path.join(tmp, "nan.h5"), "--json")
d = json.loads(out) if out.strip() else {}
t = next((t for t in d.get("tensors", []) if t["name"] == "adapters/layer_02/A"), {})
check(rc == 1 and d.get("identical") is False and t.get("max_abs_diff", 0) is None,
      f"diff against a copy with one NaN: exit {rc} (want 1), not identical, its tensor's max diff "
      f"{t.get('max_abs_diff', 'absent')} (NaN, null in JSON)")
rc, out, _ = run("inspect", "diff", os.path.join(tmp, "nan.h5"), os.path.join(tmp, "nan.h5"))
check(rc == 0 and "checkpoints are identical" in out, f"diff of the NaN copy with itself: identical (exit {rc})")
rc, jn, _ = inspect_json(os.path.join(tmp, "nan.h5"))
t = next(t for t in jn["tensors"] if t["name"] == "adapters/layer_02/A")
with h5py.File(os.path.join(tmp, "nan.h5"), "r") as f:
    x = f["adapters/layer_02/A"][()].astype(np.float64)
check(t["nan"] == 1 and close(t["mean"], np.nanmean(x), 1e-6) and len(jn["problems"]) == 1,
      "NaN counted once; stats of the rest still equal numpy's nanmean")

# ---- a history edited out of step order: listed among the problems, never plotted with
# overflowing arithmetic, and refused by --resume in one line ----
def bad_history_step(p):
    with h5py.File(p, "r+") as f:
        steps = f["history/step"][()]
        steps[-1] = -2 ** 62
        del f["history/step"]
        f["history/step"] = steps


hbad = damaged("hist_step.h5", bad_history_step)
want = "damaged: /history/step row 19 holds step -4611686018427387904, outside 1..20"
svg = os.path.join(tmp, "hist_step.svg")
rc, out, err = run("inspect", hbad, f"--plot={svg}")
problems = out[out.find("PROBLEMS"):] if "PROBLEMS" in out else ""
check(rc == 1 and want in problems and os.path.exists(svg),
      f"inspect of a history step -2^62: exit {rc} (want 1), listed under PROBLEMS ({problems.strip()[:200] or err.strip()[:200]}), plot still written")
rc, out, err = run("train", "stories260k-full", "--set", f"output_dir={os.path.join(tmp, 'resume_bad')}",
                   "--set", "train.max_steps=22", "--set", "train.warmup_steps=2", "--set", "checkpoint.every=10",
                   "--set", "threads=1", "--resume", hbad)
errors = [l for l in err.splitlines() if "error" in l]
check(rc != 0 and len(errors) == 1 and want in errors[0], f"train --resume refuses it in one line: exit {rc}, {errors}")

# ---- diff: a damaged checkpoint is an error (exit 2), resume state is compared, NaN equals NaN ----
def transpose_b_add(p):
    with h5py.File(p, "r+") as f:
        b = f["adapters/layer_00/B_add"][()]
        del f["adapters/layer_00/B_add"]
        f["adapters/layer_00/B_add"] = b.T.copy()


tbad = damaged("transposed.h5", transpose_b_add)
want = "dataset /adapters/layer_00/B_add has shape [64, 172], expected [172, 64]"
rc, out, err = run("inspect", tbad)
check(rc == 1 and want in out, f"inspect of a transposed B_add: exit {rc} (want 1), problem listed")
for a, b in ((final, tbad), (tbad, final)):
    rc, out, err = run("inspect", "diff", a, b)
    check(rc == 2 and len(err.strip().splitlines()) == 1 and tbad + ": " + want in err and "differ" not in out,
          f"diff {os.path.basename(a)} {os.path.basename(b)}: exit {rc} (want 2), one error line naming the damaged file "
          f"({err.strip()[:200]}), no verdict")


def move_state(p):
    with h5py.File(p, "r+") as f:
        cur = f["state"].attrs["data_cursor"].copy()
        cur[2] += 4000
        f["state"].attrs["data_cursor"] = cur
        f["optimizer"].attrs["step"] = np.int64(999)
        f["state"].attrs["consecutive_skips"] = np.int32(2)


moved = damaged("state.h5", move_state)
with h5py.File(final, "r") as f:
    cur = [int(x) for x in f["state"].attrs["data_cursor"]]
rc, out, _ = run("inspect", "diff", final, moved, "--json")
d = json.loads(out) if out.strip() else {}
new_cur = cur[:2] + [cur[2] + 4000] + cur[3:]
wants = ["optimizer step: 20 -> 999", "consecutive_skips: 0 -> 2",
         "data_cursor: [%s] -> [%s]" % (", ".join(map(str, cur)), ", ".join(map(str, new_cur)))]
check(rc == 1 and d.get("identical") is False and all(w in d.get("differences", []) for w in wants),
      f"diff of the same tensors with another data cursor, optimizer step and skip run: exit {rc} (want 1), "
      f"differences {d.get('differences')}")


def nan_best(p):
    with h5py.File(p, "r+") as f:
        f["state"].attrs["best_loss"] = np.float64("nan")


nb = damaged("nan_best.h5", nan_best)
rc, out, _ = run("inspect", "diff", nb, nb)
check(rc == 0 and "checkpoints are identical" in out and "best_loss" not in out,
      f"diff of a file whose best_loss is NaN with itself: identical, exit {rc} (want 0)")

# ---- an all-weights checkpoint: /weights/block must be 1-D, of the base's size ----
aw = os.path.join(tmp, "aw")
os.makedirs(aw)
rc, _, err = run("init", "--out", os.path.join(aw, "base"), "--dim", "32", "--layers", "2", "--heads", "2", "--context", "64")
check(rc == 0, f"npt init of a tiny base ({err.strip()[-200:]})")
with open(shared_path("data", "tinystories-valid-1000.txt")) as src, open(os.path.join(aw, "text.txt"), "w") as dst:
    dst.write(src.read(20000))
with open(os.path.join(aw, "lm.json"), "w") as fp:
    json.dump({"model": os.path.join(aw, "base"), "output_dir": os.path.join(aw, "run"),
               "objective": {"type": "lm", "train_all_weights": True},
               "data": {"train": os.path.join(aw, "text.txt"), "seq_len": 32, "cache_dir": os.path.join(aw, "cache")},
               "train": {"max_steps": 2, "batch_size": 2}, "checkpoint": {"every": 2}}, fp)
rc, _, err = run("train", os.path.join(aw, "lm.json"))
awfinal = os.path.join(aw, "run", "final.h5")
check(rc == 0, f"a 2-step all-weights lm run ({err.strip()[-200:]})")
rc, out, _ = run("inspect", awfinal)
check(rc == 0 and "no problems found" in out, f"inspect of the all-weights checkpoint: no problems, exit {rc}")
with h5py.File(awfinal, "r") as f:
    size = f["weights/block"].shape[0]


def block_2d(p):
    with h5py.File(p, "r+") as f:
        b = f["weights/block"][()]
        del f["weights/block"]
        f["weights/block"] = b.reshape(2, -1)


def block_short(p):
    with h5py.File(p, "r+") as f:
        b = f["weights/block"][()]
        del f["weights/block"]
        f["weights/block"] = b[:-16]


def block_missing(p):
    with h5py.File(p, "r+") as f:
        del f["weights/block"]


for name, fn, want in (("aw_2d.h5", block_2d, f"damaged: dataset /weights/block has shape [2, {size // 2}]"),
                       ("aw_short.h5", block_short, f"damaged: dataset /weights/block has shape [{size - 16}]"),
                       ("aw_missing.h5", block_missing, "damaged: /weights/block missing")):
    p = os.path.join(aw, name)
    shutil.copy(awfinal, p)
    fn(p)
    rc, out, err = run("inspect", p)
    check(rc == 1 and "PROBLEMS" in out and want in out and (name == "aw_missing.h5" or f"or [{size}] (untied)" in out),
          f"inspect {name}: exit {rc} (want 1), '{want}' listed with the size it must have")
    for args in (("export", p, "--out", os.path.join(aw, "out_" + name)),
                 ("generate", "--model", os.path.join(aw, "base"), "--adapters", p, "--steps", "2"),
                 ("generate", "--model", p, "--steps", "2")):
        rc, out, err = run(*args)
        check(rc != 0 and len(err.strip().splitlines()) == 1 and p + ": " + want in err,
              f"{args[0]} {' '.join(args[1:3])} ... refuses {name} in one line naming the damage: exit {rc}, {err.strip()[:200]}")

# ---- a dataset declared huge but never written: reported, not read (reading it would mean
# 4 TB of fill values); the checkpoint is not vouched for ----
huge = os.path.join(tmp, "huge.h5")
shutil.copy(final, huge)
with h5py.File(huge, "r+") as f:
    x = f.create_dataset("x", shape=(1 << 40,), dtype="f4")  # no data: HDF5 allocates nothing
    check(x.id.get_storage_size() == 0 and os.path.getsize(huge) < os.path.getsize(final) + (1 << 20),
          f"fixture: /x declares 2^40 floats with no storage (file {os.path.getsize(huge)} bytes)")


def run_bounded(*args, limit=60):
    try:
        p = run_npt(*args, timeout=limit)
        return p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired:
        return None, "", f"still running after {limit} s"


never = "dataset /x declares 1099511627776 float32 values (4.4 TB) but the file holds 0 bytes of them"
rc, out, err = run_bounded("inspect", huge, "--json")
jh = json.loads(out) if rc is not None and out.strip() else {}
tx = next((t for t in jh.get("tensors", []) if t["name"] == "x"), {})
check(rc == 1 and any(never in p_ for p_ in jh.get("problems", [])) and tx.get("readable") is False
      and tx.get("count") == 1 << 40 and "min" not in tx,
      f"inspect --json of a copy with /x declared 2^40 floats, never written: exit {rc} (want 1) within 60 s, the "
      f"problem named, /x not read ({err.strip()[:200] or jh.get('problems')})")
by_name_h = {t["name"]: t for t in jh.get("tensors", [])}
check(all(close(by_name_h[t["name"]]["mean"], t["mean"]) for t in j["tensors"] if t["name"] in by_name_h),
      "... the checkpoint's own tensors still get their statistics")
rc, out, err = run_bounded("inspect", huge)
check(rc == 1 and "PROBLEMS" in out and never in out and "(not read" in out,
      f"inspect (text): exit {rc}, the tensor row says not read and PROBLEMS lists it ({err.strip()[:200]})")
rc, out, err = run_bounded("inspect", "verify", huge, "--model", BIN)
fail_line = [l for l in out.splitlines() if l.startswith("verify: FAIL")]
check(rc == 1 and len(fail_line) == 1 and never in fail_line[0], f"verify fails on it with the reason: exit {rc}, {fail_line[:1] or err.strip()[:200]}")
rc, out, err = run_bounded("generate", "--model", BIN, "--adapters", huge, "--steps", "4")
check(rc == 1 and never in err and len(err.strip().splitlines()) == 1,
      f"generate --adapters refuses it in one line: exit {rc}, {err.strip()[:200]}")
rc, out, err = run_bounded("inspect", "diff", huge, huge)
check(rc == 2, f"diff of two such files: exit {rc} (want 2, /x cannot be compared) {err.strip()[:200]}")
# the same for the history columns, which are read whole: 2^28 entries each, never written
hist = os.path.join(tmp, "hist.h5")
shutil.copy(final, hist)
with h5py.File(hist, "r+") as f:
    for k in list(f["history"]):
        dt = f["history"][k].dtype
        del f["history"][k]
        f["history"].create_dataset(k, shape=(1 << 28,), dtype=dt)
rc, out, err = run_bounded("inspect", hist)
check(rc == 1 and "dataset /history/step declares 268435456 int64 values" in err and "never written" in err,
      f"inspect of a copy whose history columns declare 2^28 entries, never written: exit {rc}, {err.strip()[:200]}")

# ---- streaming: a 96 MiB tensor must not be held in memory ----
big = os.path.join(tmp, "big.h5")
shutil.copy(final, big)
rows_, cols = 6144, 4096
with h5py.File(big, "r+") as f:
    ds = f.create_dataset("extra/big", (rows_, cols), dtype="f4", chunks=(64, cols), fletcher32=True)
    for r in range(0, rows_, 512):
        ds[r:r + 512] = (np.arange(r * cols, (r + 512) * cols, dtype=np.float64) % 1000 - 500).reshape(512, cols)
    ds[7, 9] = 1e5  # beyond fp16


def peak_rss_kb(path):
    """Peak resident set of `npt inspect path --json`, measured by GNU time (ru_maxrss of a
    child forked from this Python would include Python's own pages), and its output."""
    p = subprocess.run(["/usr/bin/time", "-f", "%M", NPT, "inspect", path, "--json"], capture_output=True, text=True)
    return int(p.stderr.strip().splitlines()[-1]), json.loads(p.stdout)


small_kb, _ = peak_rss_kb(final)
big_kb, jb = peak_rss_kb(big)
t = next(t for t in jb["tensors"] if t["name"] == "extra/big")
check(t["beyond_fp16"] == 1 and t["max"] == 1e5 and t["count"] == rows_ * cols, "big tensor: stats over every block")
check(big_kb - small_kb < 16 * 1024,
      f"a 96 MiB tensor adds {(big_kb - small_kb) / 1024:.1f} MiB to the peak RSS ({small_kb // 1024} -> {big_kb // 1024} MiB; streamed, < 16)")

shutil.rmtree(tmp)
print(f"{failures()} failures")
raise SystemExit(exit_code())
