"""tests/py/test_debug_cli.py — `npt debug` on stories260K copies with planted faults.

The llama2.c file is parsed here with numpy (7 x int32 header, then the weights in
Meta order) and damaged copies are written to a temp dir. Where each fault must be
reported follows from where it was planted:
- a NaN in layer 3's wq: every command refuses the model, naming the tensor;
- layer 2's ffn_norm x1000: finite in float32, overflows fp16 at layer 2;
- token 300's embedding row set to 1e5 (beyond fp16) in an untied copy (header vocab
  negated, the original table appended as the classifier, so only the input side is
  touched): an fp16 scan of a token file lists exactly the windows containing token
  300; the overlap of two scans is checked against set arithmetic on the windows
  planted here;
- a full disk (RLIMIT_FSIZE below the file's size, so every write past it fails with
  EFBIG): forward --save and scan --out fail with exit 1 and one line naming the file,
  leave no temporary file, and keep the file --force would have replaced;
- replay files edited with h5py so their inputs cannot feed the op (a 1-D matmul
  input, a 2-D RMSNorm weight, ...): exit 1 with one line saying what the op needs;
- layer 3's ffn_norm x1e22 (float32 overflow in every window): a training run with
  train.debug_on_skip writes a report per skipped step naming layer 3's SwiGLU; eval
  and generate refuse the same copy's NaN logits (exit 3), and the debug command their
  error line suggests finds layer 3's SwiGLU;
- a step skipped for a NaN in its gradients alone (NPT_TEST_POISON_GRADS): the
  debug_on_skip report blames no op (the rerun does not add to the skipped step's
  gradients), and training ends as without the report.
"""
import json
import os
import shlex
import shutil
import tempfile

import h5py
import numpy as np
from harness import VALID_TEXT as VALID, check, exit_code, run_npt, set_flags, shared_path, temp_files

BIN, TOK = shared_path("models", "stories260K", "stories260K.bin"), shared_path("models", "stories260K", "tok512.bin")


def run(*args, fsize=None):
    """npt debug ARGS: (rc, stdout, stderr); fsize as in run_npt."""
    p = run_npt("debug", *args, timeout=None, fsize=fsize)
    return p.returncode, p.stdout, p.stderr


def adapters(path):
    """The adapter tensors of a checkpoint by name ({} if it is not there)."""
    out = {}
    if os.path.exists(path):
        with h5py.File(path, "r") as f:
            f["adapters"].visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


def edited_copy(src, dst, edit):
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


def offsets():
    """Float offsets of each weight in the llama2.c file (after the 28-byte header)."""
    hdr = np.fromfile(BIN, dtype=np.int32, count=7)
    dim, hidden, L, nh, nkv, vocab, seq = (int(x) for x in hdr)
    kv = dim * nkv // nh
    sizes = [("tok_emb", abs(vocab) * dim), ("attn_norm", L * dim), ("wq", L * dim * dim), ("wk", L * kv * dim),
             ("wv", L * kv * dim), ("wo", L * dim * dim), ("ffn_norm", L * dim), ("w1", L * hidden * dim),
             ("w2", L * dim * hidden), ("w3", L * hidden * dim)]
    off, o = {}, 7  # in float32 units, header included
    for name, n in sizes:
        off[name] = o
        o += n
    return off, dict(dim=dim, hidden=hidden, L=L, vocab=abs(vocab), kv=kv)


def planted(tmp, name, edit):
    w = np.fromfile(BIN, dtype=np.float32)  # header bytes ride along unchanged
    edit(w)
    path = os.path.join(tmp, name)
    w.tofile(path)
    return path


def main():
    off, c = offsets()
    dim = c["dim"]
    with tempfile.TemporaryDirectory() as tmp:
        # 1. NaN weight: named by tensor at load, in the debug command too
        def nan_wq(w):
            w[off["wq"] + 3 * dim * dim] = np.nan
        m = planted(tmp, "nan.bin", nan_wq)
        rc, out, err = run("forward", "--model", m, "--tokenizer", TOK, "--prompt", "Once upon a time")
        check(rc == 1 and "wq[layer 3]" in err and "1 non-finite" in err,
              f"NaN planted in layer 3 wq: refused at load naming it ({err.strip()[:120]})")

        # 2. fp16-only overflow at layer 2
        def big_norm(w):
            o = off["ffn_norm"] + 2 * dim
            w[o:o + dim] *= 1000.0
        m = planted(tmp, "big.bin", big_norm)
        rc, out, _ = run("forward", "--model", m, "--tokenizer", TOK, "--prompt", "Once upon a time there was", "--json")
        j = json.loads(out) if out.strip() else {}
        check(rc == 0 and j.get("found") is False, "ffn_norm x1000 at layer 2: float32 all finite")
        rc, out, _ = run("forward", "--model", m, "--tokenizer", TOK, "--prompt", "Once upon a time there was", "--json",
                         "--precision", "fp16")
        j = json.loads(out) if out.strip() else {}
        check(rc == 3 and j.get("found") and j.get("layer") == 2 and j.get("overflow") and j.get("float32_found") is False
              and j.get("raw_absmax", 0) > 65504, f"ffn_norm x1000 at layer 2: fp16 overflow at layer {j.get('layer')} op {j.get('op')}")
        rc, out, _ = run("forward", "--model", m, "--tokenizer", TOK, "--prompt", "Once upon a time there was",
                         "--precision", "fp16")
        check("float32: all finite" in out and "layer 2" in out, "text report compares fp16 with float32")

        # 2b. layer 1's wq and wk x1e19: finite projections whose scores overflow, so the
        # NaN is born in layer 1's attention (softmax of Inf); the saved op replays alike
        def huge_qk(w):
            kv = c["kv"]
            w[off["wq"] + dim * dim:off["wq"] + 2 * dim * dim] *= 1e19
            w[off["wk"] + kv * dim:off["wk"] + 2 * kv * dim] *= 1e19
        m = planted(tmp, "att.bin", huge_qk)
        saved = os.path.join(tmp, "att.h5")
        rc, out, _ = run("forward", "--model", m, "--tokenizer", TOK, "--prompt", "Once upon a time", "--save", saved)
        rc2, out2, _ = run("replay", saved)
        check(rc == 3 and "layer 1, op attention" in out and "produced from finite inputs" in out and rc2 == 3
              and "layer 1, op attention" in out2,
              f"wq, wk x1e19 at layer 1: found at layer 1's attention, from finite inputs, and replayed (exit {rc}, {rc2})")
        # the same file with v cut to half its columns: a one-line error, not the op's abort
        edited = os.path.join(tmp, "att_edited.h5")
        shutil.copy(saved, edited)
        with h5py.File(edited, "r+") as f:
            v = f["in2"][()]
            del f["in2"]
            f["in2"] = v[:, : v.shape[1] // 2]
        rc3, _, err3 = run("replay", edited)
        lines = [ln for ln in err3.splitlines() if ln.strip()]
        check(rc3 == 1 and len(lines) == 1 and "do not fit together" in lines[0] and "internal error" not in err3,
              f"replay of an op file whose v was cut: exit {rc3}, {lines[0] if lines else 'nothing on stderr'}")
        # q, k and v declared 2^24 x 2^24 (chunked, never written: the file stays small; shapes
        # that fit head_dim 8 and one another): 2^52 bytes each to replay, beyond any address
        # space, so the allocation fails whatever the overcommit policy
        with h5py.File(edited, "r+") as f:
            for name in ("in0", "in1", "in2"):
                del f[name]
                f.create_dataset(name, shape=(1 << 24, 1 << 24), dtype="f4", chunks=(64, 64))
        rc4, _, err4 = run("replay", edited)
        lines = [ln for ln in err4.splitlines() if ln.strip()]
        check(rc4 == 1 and len(lines) == 1 and edited in lines[0] and "cannot be allocated" in lines[0],
              f"replay of an op file declaring a 2^48-element input: exit {rc4}, one line naming the file: "
              f"{lines[0][:160] if lines else 'nothing on stderr'}")

        # inputs edited so the op cannot take them: refused before the op runs, with the reason
        # (the op itself would stop the process as on a bug in npt: "internal error", exit 2)
        def matmul_1d(f):
            f.attrs["op"] = "matmul"
            f.attrs["n_inputs"] = np.int32(2)
            for name in ("in0", "in1", "in2"):
                del f[name]
            f["in0"] = np.ones(172, np.float32)
            f["in1"] = np.ones(172, np.float32)

        def matmul_1d_weight(f):
            f.attrs["op"] = "matmul"
            f.attrs["n_inputs"] = np.int32(2)
            del f["in1"], f["in2"]
            f["in1"] = np.ones(64, np.float32)  # in0 is q, [T, 64]

        def rope_3d(f):
            f.attrs["op"] = "rope"
            f.attrs["n_inputs"] = np.int32(1)
            q = f["in0"][()]
            del f["in0"]
            f["in0"] = q.reshape(1, *q.shape)

        def rmsnorm_wrong_weight(f):
            f.attrs["op"] = "rmsnorm"
            f.attrs["n_inputs"] = np.int32(2)
            del f["in2"]  # in1 is k, [T, 32]: not a weight of 64 entries

        def attention_1d_q(f):
            q = f["in0"][()]
            del f["in0"]
            f["in0"] = q.reshape(-1)

        def attention_two_inputs(f):
            f.attrs["n_inputs"] = np.int32(2)

        T5 = 5  # "Once upon a time" is BOS + 4 tokens
        for label, edit, want in (
                ("matmul with 1-D inputs of 172", matmul_1d, "op matmul needs 2-D inputs, in0 has shape [172]"),
                ("matmul with a 1-D weight", matmul_1d_weight, "op matmul needs 2-D inputs, in1 has shape [64]"),
                ("rope of a 3-D input", rope_3d, f"op rope needs 1-D or 2-D inputs, in0 has shape [1, {T5}, 64]"),
                ("rmsnorm with k as its weight", rmsnorm_wrong_weight,
                 f"the saved inputs of rmsnorm do not fit together (the weight does not match the row width: "
                 f"in0 [{T5}, 64], in1 [{T5}, 32])"),
                ("attention with q flattened", attention_1d_q,
                 f"the saved inputs of attention do not fit together (q, k and v do not fit head_dim and one another: "
                 f"in0 [{T5 * 64}], in1 [{T5}, 32], in2 [{T5}, 32], head_dim 8)"),
                ("attention with n_inputs 2", attention_two_inputs, "op attention takes 3 inputs, attribute n_inputs says 2")):
            bad_file = edited_copy(saved, os.path.join(tmp, "edited_op.h5"), edit)
            rc5, out5, err5 = run("replay", bad_file)
            lines = [ln for ln in err5.splitlines() if ln.strip()]
            check(rc5 == 1 and len(lines) == 1 and lines[0].startswith(f"npt debug replay: error: {bad_file}: {want}; ")
                  and lines[0].endswith("this file was not written by npt debug --save (or was edited)")
                  and "internal error" not in err5 and not out5,
                  f"replay of an op file edited to {label}: exit {rc5} (want 1), "
                  f"{lines[0] if lines else 'nothing on stderr'}")

        # a full disk while saving: the file is below 8 KB, the limit 3000 bytes. Exit 1, one
        # line naming the file and the OS's reason, no "inputs saved", nothing left behind;
        # with --force the file it would replace is kept as it was
        target = os.path.join(tmp, "full.h5")
        rc, out, err = run("forward", "--model", m, "--tokenizer", TOK, "--prompt", "Once upon a time", "--save", target,
                           fsize=3000)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        check(rc == 1 and len(lines) == 1 and f"cannot write op file {target}: File too large" in lines[0]
              and "inputs saved" not in out and not os.path.exists(target) and not temp_files(tmp),
              f"forward --save on a full disk: exit {rc} (want 1), no file, no temporary file "
              f"{temp_files(tmp)}: {lines[0] if lines else 'nothing on stderr'}")
        kept = os.path.join(tmp, "kept.h5")
        shutil.copy(saved, kept)
        before = open(kept, "rb").read()
        rc, out, err = run("forward", "--model", m, "--tokenizer", TOK, "--prompt", "Once upon a time there", "--save",
                           kept, "--force", fsize=3000)
        rc2, out2, _ = run("replay", kept)
        check(rc == 1 and "inputs saved" not in out and open(kept, "rb").read() == before and not temp_files(tmp)
              and rc2 == 3 and "layer 1, op attention" in out2,
              f"forward --save --force on a full disk: exit {rc}, the previous file is unchanged and still replays "
              f"(exit {rc2})")

        # 2c. a window longer than the model's context (512 in the header) is refused, not read
        rc, out, err = run("forward", "--model", BIN, "--tokenizer", TOK, "--data", VALID, "--sample", "0", "--seq-len", "600")
        check(rc == 1 and "context of 512" in err, f"--seq-len 600 on a 512-token model: exit {rc}, {err.strip()[:90]}")
        rc, out, _ = run("forward", "--model", BIN, "--tokenizer", TOK, "--data", VALID, "--sample", "0", "--json")
        j = json.loads(out) if out.strip() else {}
        check(rc == 0 and len(j.get("layers", [])) == 7 and j.get("found") is False,
              "--data window 0 with the default length runs clean")

        # 3. token-specific fault, scan and overlap
        X, T, W = 300, 32, 16

        w = np.fromfile(BIN, dtype=np.float32)
        table = w[off["tok_emb"]:off["tok_emb"] + c["vocab"] * dim].copy()
        w.view(np.int32)[5] = -c["vocab"]
        w[off["tok_emb"] + X * dim:off["tok_emb"] + (X + 1) * dim] = 1e5
        m = os.path.join(tmp, "tok.bin")
        np.concatenate([w, table]).tofile(m)
        rng = np.random.default_rng(0)

        def token_file(name, windows):
            ids = rng.integers(3, 512, size=W * (T - 1)).astype(np.uint16)
            ids[ids == X] = X + 1
            for w_ in windows:
                ids[w_ * (T - 1) + rng.integers(0, T - 1)] = X
            path = os.path.join(tmp, name)
            ids.tofile(path)
            return path

        lists = {}
        for label, wins in (("A", [1, 4, 7]), ("B", [4, 9, 12])):
            data = token_file(f"{label}.u16", wins)
            out_tsv = os.path.join(tmp, f"{label}.tsv")
            rc, out, err = run("scan", "--model", m, "--tokenizer", TOK, "--data", data, "--format", "u16",
                               "--seq-len", str(T), "--samples", str(W), "--precision", "fp16", "--out", out_tsv)
            rows = [l.split("\t") for l in open(out_tsv).read().splitlines() if not l.startswith("#")] if rc in (0, 3) else []
            got = [int(r[0]) for r in rows]
            check(rc == 3 and got == wins and all(r[2] == "embedding" for r in rows),
                  f"fp16 scan {label}: lists exactly windows {wins} holding token {X} at the embedding (got {got})")
            rc, out, _ = run("scan", "--model", m, "--tokenizer", TOK, "--data", data, "--format", "u16",
                             "--seq-len", str(T), "--samples", str(W), "--out", out_tsv + ".f32")
            check(rc == 0 and "0 of 16" in out, f"float32 scan {label}: no failing sample")
            lists[label] = (out_tsv, set(wins))
        # the same scan again with --force over A's list on a full disk (the list would be 250
        # bytes, the limit 100): exit 1, one error line (after the warning about the rounded
        # embedding row), no "list in" on stdout, A's list unchanged
        out_tsv = lists["A"][0]
        before = open(out_tsv, "rb").read()
        rc, out, err = run("scan", "--model", m, "--tokenizer", TOK, "--data", os.path.join(tmp, "A.u16"), "--format",
                           "u16", "--seq-len", str(T), "--samples", str(W), "--precision", "fp16", "--out", out_tsv,
                           "--force", fsize=100)
        lines = [ln for ln in err.splitlines() if "warning: 64 weights exceed the fp16 range" not in ln and ln.strip()]
        check(rc == 1 and len(lines) == 1 and out_tsv in lines[0] and "File too large" in lines[0] and "list in" not in out
              and open(out_tsv, "rb").read() == before and not temp_files(tmp),
              f"scan --out --force on a full disk: exit {rc} (want 1), the previous list is unchanged, no temporary "
              f"file {temp_files(tmp)}: {lines[0] if lines else 'nothing on stderr'}")
        rc, out, _ = run("overlap", lists["A"][0], lists["B"][0])
        a, b = lists["A"][1], lists["B"][1]
        check(rc == 0 and f"in common: {len(a & b)}" in out and f"only in A: {len(a - b)} (1 7)" in out
              and f"only in B: {len(b - a)} (9 12)" in out, f"overlap: {len(a & b)} common, A-only {sorted(a - b)}, B-only {sorted(b - a)}")

        # 3b. the same copy, one window, forward --json and text: in fp16 the row of token X
        # (1e5 > 65504) becomes dim Infs when the weights are rounded, so the embedding is
        # reported with an Inf (not NaN) input. Shapes from the header: table [vocab, dim],
        # output [T, dim]. Window 1 is BOS + stream tokens T-1 .. 2(T-1)-1 (docs/data.md), so
        # X at stream offsets 3, 11, 19 of it sits at positions 4, 12, 20.
        T1 = 21
        ids = rng.integers(3, 512, size=3 * (T1 - 1)).astype(np.uint16)
        ids[ids == X] = X + 1
        want_pos = [4, 12, 20]
        for p_ in want_pos:
            ids[(T1 - 1) + p_ - 1] = X
        one = os.path.join(tmp, "one.u16")
        ids.tofile(one)
        args = ["forward", "--model", m, "--tokenizer", TOK, "--data", one, "--format", "u16", "--sample", "1",
                "--seq-len", str(T1), "--precision", "fp16"]
        rc, out, _ = run(*args, "--json")
        j = json.loads(out) if out.strip() else {}
        o, ins = j.get("output", {}), j.get("inputs", [{}])
        check(rc == 3 and j.get("layer") == -1 and j.get("op") == "embedding" and j.get("bad_input") == 0
              and not j.get("overflow") and o.get("inf") == len(want_pos) * dim and o.get("nan") == 0
              and j.get("positions") == want_pos,
              f"fp16 Inf in token {X}'s embedding row: reported at the embedding as {len(want_pos) * dim} Inf, 0 NaN at "
              f"positions {want_pos} (exit {rc}, op {j.get('op')}, {o.get('inf')} Inf, {o.get('nan')} NaN, "
              f"positions {j.get('positions')})")
        check(o.get("shape") == [T1, dim] and len(ins) == 1 and ins[0].get("name") == "tok_emb"
              and ins[0].get("shape") == [c["vocab"], dim] and ins[0].get("inf") == dim and ins[0].get("nan") == 0,
              f"fp16 Inf in token {X}'s embedding row: JSON shapes output {[T1, dim]}, input tok_emb {[c['vocab'], dim]} "
              f"with {dim} Inf (got output {o.get('shape')}, input {ins[0].get('name')} {ins[0].get('shape')} "
              f"with {ins[0].get('inf')} Inf)")
        rc, out, _ = run(*args)
        lines = [ln.strip() for ln in out.splitlines()]
        check(rc == 3 and f"output embedding [{T1}, {dim}]: 0 NaN, {len(want_pos) * dim} Inf" in lines
              and any(ln.startswith(f"input 0 tok_emb [{c['vocab']}, {dim}]: ") and ln.endswith(f"0 NaN {dim} Inf")
                      for ln in lines),
              f"fp16 Inf in token {X}'s embedding row: the text report prints output [{T1}, {dim}] and tok_emb "
              f"[{c['vocab']}, {dim}] with their Inf counts")

        # overlap reads only scan lists; sub-commands refuse the flags of another
        bad = os.path.join(tmp, "notalist.txt")
        with open(bad, "w") as f:
            f.write("Once upon a time\n")
        empty = os.path.join(tmp, "empty.tsv")
        open(empty, "w").close()
        for label, path, want in (("a text file", bad, "is not a scan list"), ("an empty file", empty, "is empty"),
                                  ("a directory", tmp, "Is a directory")):
            rc, out, err = run("overlap", path, lists["A"][0])
            check(rc == 1 and want in err and len(err.strip().splitlines()) == 1 and not out,
                  f"overlap of {label}: exit {rc} (want 1), one line: {err.strip()}")
        for args, flag in ((["scan", "--model", BIN, "--data", os.path.join(tmp, "A.u16"), "--samples", "2", "--out",
                             os.path.join(tmp, "x.tsv"), "--prompt", "hi"], "--prompt"),
                           (["layers", "--model", BIN, "--prompt", "hi", "--save", os.path.join(tmp, "x.h5")], "--save"),
                           (["replay", "x.h5", "--json"], "--json"), (["overlap", "a", "b", "--model", BIN], "--model")):
            rc, out, err = run(*args)
            check(rc == 2 and f"{flag} does not apply to {args[0]}" in err and not os.path.exists(os.path.join(tmp, "x.tsv")),
                  f"debug {args[0]} with {flag}: usage error (exit {rc}): {err.strip()}")

        # 4. in training: layer 3's ffn_norm x1e22 overflows float32 in its SwiGLU for every
        # window, so every batch is skipped; train.debug_on_skip must say where, per skip.
        def huge_norm(w):
            o = off["ffn_norm"] + 3 * dim
            w[o:o + dim] *= 1e22
        m = planted(tmp, "huge.bin", huge_norm)
        out_dir = os.path.join(tmp, "run")
        sets = [f"model={m}", f"tokenizer={TOK}", f"output_dir={out_dir}", "train.debug_on_skip=true",
                "train.max_consecutive_skips=2", "data.seq_len=32", "train.batch_size=2", "train.grad_accum=2"]
        p = run_npt("train", "recipes/stories260k-safe.json", *set_flags(sets), timeout=300)
        reports = sorted(f for f in os.listdir(out_dir) if f.startswith("debug_") and f.endswith(".txt")) \
            if os.path.isdir(out_dir) else []
        txt = open(os.path.join(out_dir, reports[0])).read() if reports else ""
        seqs = txt.count("== sequence")
        at_l3 = txt.count("forward pass, layer 3, op npt_swiglu")  # the NPT MLP's fused middle
        check(p.returncode == 3 and reports == ["debug_step0_skip1.txt", "debug_step0_skip2.txt"] and seqs == 4 and at_l3 == 4
              and "where it is born" in p.stderr,
              f"debug_on_skip: 2 skipped steps (exit {p.returncode}) give reports {reports}; "
              f"{at_l3} of {seqs} windows (2 x 2 micro-batches) born at layer 3 op npt_swiglu")
        saved = os.path.join(out_dir, "debug_step0_skip1.h5")
        rc, out, _ = run("replay", saved) if os.path.exists(saved) else (None, "", "")
        check(rc == 3 and "layer 3, op npt_swiglu" in out and "produced from finite inputs" in out,
              f"debug_on_skip saves the producer's inputs (.h5) and they replay to the same op (exit {rc})")

        # 4b. a NaN in the gradients alone (test hook; the loss and every op stay finite):
        # the report reruns the windows on gradients of their own, so it finds nothing
        # rather than blaming the op that adds to the skipped step's NaN, and the run
        # ends as the one without reports
        runs = {}
        for debug in ("true", "false"):
            out_dir = os.path.join(tmp, "grads-" + debug)
            sets = [f"model={BIN}", f"tokenizer={TOK}", f"output_dir={out_dir}", f"train.debug_on_skip={debug}",
                    "data.seq_len=32", "train.batch_size=2", "train.grad_accum=2", "train.max_steps=3",
                    "train.warmup_steps=1", "threads=1"]
            runs[debug] = run_npt("train", "recipes/stories260k-safe.json", *set_flags(sets), timeout=300,
                                  env=dict(os.environ, NPT_TEST_POISON_GRADS="1"))
        txt_path = os.path.join(tmp, "grads-true", "debug_step0_skip1.txt")
        txt = open(txt_path).read() if os.path.exists(txt_path) else ""
        finals = [adapters(os.path.join(tmp, d, "final.h5")) for d in ("grads-true", "grads-false")]
        same = bool(finals[0]) and sorted(finals[0]) == sorted(finals[1]) \
            and all(finals[0][k].tobytes() == finals[1][k].tobytes() for k in finals[0])
        p = runs["true"]
        check(p.returncode == 0 and runs["false"].returncode == 0 and "the 4 windows are finite when rerun alone" in p.stderr
              and txt.count("all ops finite") == 4 and "first non-finite" not in txt and same,
              f"debug_on_skip after a gradient-only NaN: no op blamed ({txt.count('all ops finite')} of 4 windows finite), "
              f"final adapters as without the report: {same} (exit {p.returncode})")

        # 5. the same copy in the other verbs: eval and generate refuse its NaN logits with
        # one line naming the window / position and the debug command, which finds it
        p = run_npt("eval", "--model", m, "--tokenizer", TOK, "--data", VALID, "--windows", "3", "--seq-len", "32",
                    timeout=None)
        lines = p.stderr.strip().splitlines()
        hint = lines[0].split("see where with: ", 1)[-1].split() if len(lines) == 1 else []
        check(p.returncode == 3 and p.stdout == "" and len(lines) == 1 and "base model's logits are not finite in window 0"
              in lines[0] and hint[:3] == ["npt", "debug", "forward"],
              f"eval of a model overflowing float32: exit {p.returncode}, {lines[0][:110] if lines else 'no message'}")
        rc, out, _ = run(*hint[2:]) if hint[:3] == ["npt", "debug", "forward"] else (None, "", "")
        check(rc == 3 and "layer 3, op swiglu" in out, f"eval's suggested debug command finds layer 3's SwiGLU (exit {rc})")
        for extra in ([], ["--json"], ["--temperature", "0.8"]):
            p = run_npt("generate", "--model", m, "--tokenizer", TOK, "--prompt", "Once upon a time", "--steps", "16",
                        *extra, timeout=None)
            lines = p.stderr.strip().splitlines()
            check(p.returncode == 3 and len(lines) == 1 and "logits at position 4 are NaN/Inf" in lines[0]
                  and lines[0].endswith(f"npt debug forward --model {m} --tokenizer {TOK} --prompt 'Once upon a time'")
                  and "<unk>" not in p.stdout,
                  f"generate {' '.join(extra)} on it: exit {p.returncode}, no garbage tokens, "
                  f"{lines[0][:100] if lines else 'no message'}")
        hint = shlex.split(lines[0].split("see where with: ", 1)[-1]) if lines else []
        rc, out, _ = run(*hint[2:]) if hint[:3] == ["npt", "debug", "forward"] else (None, "", "")
        check(rc == 3 and "layer 3, op swiglu" in out, f"generate's suggested debug command finds layer 3's SwiGLU (exit {rc})")
    return exit_code()


if __name__ == "__main__":
    raise SystemExit(main())
