"""tests/py/test_load_values.py — the C loaders against an independent numpy parse.

Parses the shared models itself (llama2.c .bin, GGUF, safetensors), computes per-tensor
sums, position-weighted sums and first/last values and the FNV-1a fingerprint, and compares them with
`test_load --dump MODEL`. It also writes variants with numpy into a temp dir and checks
the C loader reads them as the same weights: HF F16, BF16 and a 2-shard index; llama2.c
ak42 version 1 (shared and unshared classifier) and legacy unshared; GGUF v3 in F32 and
F16. Run from the repo root; BUILD names the build directory."""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
from harness import BUILD, HF656 as HF, STORIES260K_BIN as STORIES, STORIES260K_GGUF as GGUF, check, exit_code

TOOL = os.path.join(BUILD, "tests", "test_load")


LAYER_KEYS = ["attn_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w_gate", "w_up", "w_down"]


def canonical(n_layers):
    names = ["tok_emb"]
    for l in range(n_layers):
        names += [f"layers.{l}.{k}" for k in LAYER_KEYS]
    return names + ["final_norm", "lm_head"]


# ---------------------------------------------------------------- independent parsers

def parse_llama2c(path):
    """Returns (config dict, {npt name: float32 array}) for legacy or ak42 v1 files."""
    raw = open(path, "rb").read()
    magic, version = struct.unpack_from("<Ii", raw, 0)
    if magic == 0x616B3432:
        dim, hid, L, H, KV, V, S = struct.unpack_from("<7i", raw, 8)
        shared = raw[36] != 0
        off = 256
        order = ["attn_norm", "ffn_norm", "final", "tok", "wq", "wk", "wv", "wo", "w1", "w2", "w3", "wcls"]
    else:
        dim, hid, L, H, KV, V, S = struct.unpack_from("<7i", raw, 0)
        shared = V > 0
        V = abs(V)
        off = 28
        order = ["tok", "attn_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w2", "w3", "final", "freq", "wcls"]
    hd = dim // H
    kvd = KV * hd
    flt = np.frombuffer(raw, dtype="<f4", offset=off)
    pos = 0
    w = {}
    shapes = {"attn_norm": (dim,), "ffn_norm": (dim,), "wq": (dim, dim), "wk": (kvd, dim), "wv": (kvd, dim),
              "wo": (dim, dim), "w1": (hid, dim), "w2": (dim, hid), "w3": (hid, dim)}
    npt = {"attn_norm": "attn_norm", "ffn_norm": "ffn_norm", "wq": "wq", "wk": "wk", "wv": "wv", "wo": "wo",
           "w1": "w_gate", "w2": "w_down", "w3": "w_up"}
    for sec in order:
        if sec in ("tok", "wcls"):
            if sec == "wcls" and shared:
                continue
            n = V * dim
            w["tok_emb" if sec == "tok" else "lm_head"] = flt[pos:pos + n].reshape(V, dim)
            pos += n
        elif sec == "final":
            w["final_norm"] = flt[pos:pos + dim]
            pos += dim
        elif sec == "freq":
            pos += S * hd
        else:
            n = int(np.prod(shapes[sec]))
            for l in range(L):
                w[f"layers.{l}.{npt[sec]}"] = flt[pos:pos + n].reshape(shapes[sec])
                pos += n
    assert pos == len(flt), (pos, len(flt))
    if shared:
        w["lm_head"] = w["tok_emb"]
    cfg = dict(dim=dim, hidden_dim=hid, n_layers=L, n_heads=H, n_kv_heads=KV, vocab_size=V, seq_len=S,
               tied=int(shared))
    return cfg, w


GGUF_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "B", 10: "Q", 11: "q", 12: "d"}


def parse_gguf(path):
    """Returns (version, [(key, type, value)], [(name, dims, type, bytes)], {npt name: array})."""
    g = open(path, "rb").read()
    p = [4]

    def rd(fmt):
        v = struct.unpack_from("<" + fmt, g, p[0])[0]
        p[0] += struct.calcsize(fmt)
        return v

    version = rd("I")
    cnt = (lambda: rd("I")) if version == 1 else (lambda: rd("Q"))

    def rstr():
        n = cnt()
        s = g[p[0]:p[0] + n]
        p[0] += n
        return s.decode()

    def val(t):
        if t == 8:
            return rstr()
        if t == 9:
            et = rd("I")
            return (et, [val(et) for _ in range(cnt())])
        return rd(GGUF_SCALAR[t])

    nt, nkv = cnt(), cnt()
    kvs = []
    for _ in range(nkv):
        k = rstr()
        t = rd("I")
        kvs.append((k, t, val(t)))
    infos = []
    for _ in range(nt):
        name = rstr()
        nd = rd("I")
        dims = [cnt() for _ in range(nd)]
        infos.append((name, dims, rd("I"), rd("Q")))
    align = dict((k, v) for k, _, v in kvs).get("general.alignment", 32)
    start = (p[0] + align - 1) // align * align
    tensors, w = [], {}
    names = {"token_embd": "tok_emb", "output_norm": "final_norm", "output": "lm_head"}
    per = {"attn_norm": "attn_norm", "attn_q": "wq", "attn_k": "wk", "attn_v": "wv", "attn_output": "wo",
           "ffn_norm": "ffn_norm", "ffn_gate": "w_gate", "ffn_up": "w_up", "ffn_down": "w_down"}
    for name, dims, t, off in infos:
        n = int(np.prod(dims))
        dt = {0: "<f4", 1: "<f2"}[t]
        a = np.frombuffer(g, dtype=dt, count=n, offset=start + off)
        tensors.append((name, dims, t, a))
        base = name[:-len(".weight")]
        key = names.get(base) or "layers.%s.%s" % (base.split(".")[1], per[base.split(".")[2]])
        w[key] = a.astype(np.float32).reshape(list(reversed(dims)))
    return version, kvs, tensors, w


def parse_safetensors_dir(d):
    files = ["model.safetensors"]
    if not os.path.exists(os.path.join(d, files[0])):
        files = sorted(set(json.load(open(os.path.join(d, "model.safetensors.index.json")))["weight_map"].values()))
    out = {}
    for f in files:
        raw = open(os.path.join(d, f), "rb").read()
        n = struct.unpack_from("<Q", raw, 0)[0]
        head = json.loads(raw[8:8 + n])
        for k, v in head.items():
            if k == "__metadata__":
                continue
            b, e = v["data_offsets"]
            buf = raw[8 + n + b:8 + n + e]
            if v["dtype"] == "F32":
                a = np.frombuffer(buf, "<f4")
            elif v["dtype"] == "F16":
                a = np.frombuffer(buf, "<f2").astype(np.float32)
            elif v["dtype"] == "BF16":
                a = (np.frombuffer(buf, "<u2").astype(np.uint32) << 16).view(np.float32)
            out[k] = a.reshape(v["shape"])
    cfg = json.load(open(os.path.join(d, "config.json")))
    w = {}
    per = {"input_layernorm": "attn_norm", "self_attn.q_proj": "wq", "self_attn.k_proj": "wk",
           "self_attn.v_proj": "wv", "self_attn.o_proj": "wo", "post_attention_layernorm": "ffn_norm",
           "mlp.gate_proj": "w_gate", "mlp.up_proj": "w_up", "mlp.down_proj": "w_down"}
    for l in range(cfg["num_hidden_layers"]):
        for hf, ours in per.items():
            w[f"layers.{l}.{ours}"] = out[f"model.layers.{l}.{hf}.weight"]
    w["final_norm"] = out["model.norm.weight"]
    w["tok_emb"] = out.get("model.embed_tokens.weight", out.get("lm_head.weight"))
    w["lm_head"] = out.get("lm_head.weight", w["tok_emb"])
    return out, w


def interleaved(w, heads):
    """q/k rows of rotate-half RoPE (pairs i, i + hd/2 of a head) in interleaved order
    (pairs 2i, 2i + 1): row h*hd + 2i + j is row h*hd + j*hd/2 + i."""
    rows, cols = w.shape
    return w.reshape(heads, 2, rows // heads // 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def rotate_half(w, heads):
    """q/k rows of interleaved RoPE (pairs 2i, 2i + 1 of a head) in rotate-half order
    (pairs i, i + hd/2): row h*hd + j*hd/2 + i of the result is row h*hd + 2i + j of w.
    Built from explicit row indices, not as the inverse of interleaved()."""
    rows = w.shape[0]
    hd = rows // heads
    src = np.empty(rows, dtype=np.int64)
    for h in range(heads):
        for j in range(2):
            for i in range(hd // 2):
                src[h * hd + j * (hd // 2) + i] = h * hd + 2 * i + j
    return w[src]


def fnv1a(weights, n_layers, tied, half_heads=None):
    """FNV-1a 64 over the float32 bytes of the canonical tensors (lm_head only if untied),
    q/k rows in interleaved RoPE order: half_heads (n_heads, n_kv_heads) when the weights
    are in rotate-half order (HF), to be reordered."""
    h = 0xCBF29CE484222325
    names = canonical(n_layers)
    if tied:
        names = names[:-1]
    for name in names:
        w = weights[name]
        if half_heads and name.endswith((".wq", ".wk")):
            w = interleaved(w, half_heads[0] if name.endswith(".wq") else half_heads[1])
        for byte in np.ascontiguousarray(w, dtype="<f4").tobytes():
            h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


# ---------------------------------------------------------------- the C side

def c_dump(path):
    r = subprocess.run([TOOL, "--dump", path], capture_output=True, text=True)
    if r.returncode != 0:
        return None, r.stdout + r.stderr
    out = {"tensors": {}}
    for line in r.stdout.splitlines():
        f = line.split()
        if f[0] == "config":
            out["config"] = dict(kv.split("=") for kv in f[1:])
        elif f[0] == "fingerprint":
            out["fingerprint"] = int(f[1], 16)
        elif f[0] == "tensor":
            out["tensors"][f[1]] = (int(f[2]), int(f[3]), float(f[4]), float(f[5]), float(f[6]), float(f[7]))
    return out, r.stdout


def compare(label, path, weights, n_layers, want_tied=None):
    """C stats vs numpy stats of `weights`: the float32 values the file encodes."""
    d, text = c_dump(path)
    if d is None:
        check(False, f"{label}: C loader failed: {text.strip()}")
        return None
    bad = []
    for name in canonical(n_layers):
        a = np.asarray(weights[name], dtype=np.float32)
        rows, cols = (a.shape[0], a.shape[1]) if a.ndim == 2 else (a.shape[0], 0)
        flat = a.reshape(-1)
        # position weights as in tests/test_load.c: a transposed or row-permuted tensor
        # keeps its sum, first and last value but not this weighted sum
        pos = np.arange(flat.size, dtype=np.uint64)
        wpos = ((pos * np.uint64(2654435761)) % np.uint64(1009)).astype(np.float64) / 1009.0 - 0.5
        f64 = flat.astype(np.float64)
        want = (rows, cols, float(f64.sum()), float(flat[0]), float(flat[-1]), float((f64 * wpos).sum()))
        got = d["tensors"].get(name)
        if got is None or got[:2] != want[:2]:
            bad.append(f"{name} shape {got and got[:2]} vs {want[:2]}")
            continue
        scale = float(np.abs(flat).astype(np.float64).sum()) + 1e-30
        if abs(got[2] - want[2]) > 1e-9 * scale:
            bad.append(f"{name} sum {got[2]} vs {want[2]}")
        if abs(got[5] - want[5]) > 1e-9 * scale:
            bad.append(f"{name} position-weighted sum {got[5]} vs {want[5]}")
        # %.9g round-trips float32 exactly
        if np.float32(got[3]) != np.float32(want[3]) or np.float32(got[4]) != np.float32(want[4]):
            bad.append(f"{name} first/last {got[3:5]} vs {want[3:5]}")
    check(not bad, f"{label}: {len(canonical(n_layers))} tensors match numpy (shape, sum, position-weighted sum, first, last)"
          + ("" if not bad else ": " + "; ".join(bad[:3])))
    if want_tied is not None:
        check(d["config"]["tied"] == str(want_tied), f"{label}: tied={want_tied} (got {d['config']['tied']})")
    return d


# ---------------------------------------------------------------- writers for the variants

def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, dtype string, numpy array of the storage type)."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, dt, a in tensors:
        b = np.ascontiguousarray(a).tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def to_bf16(a):
    """Round-to-nearest-even float32 -> bfloat16 bits."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_value(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def hf_variants(tmp):
    raw, ref = parse_safetensors_dir(HF)
    L = json.load(open(os.path.join(HF, "config.json")))["num_hidden_layers"]
    names = sorted(raw)

    def make_dir(name):
        d = os.path.join(tmp, name)
        os.makedirs(d)
        shutil.copy(os.path.join(HF, "config.json"), d)
        return d

    # F16: the C loader must give exactly float16 -> float32 of the stored halves.
    d = make_dir("hf_f16")
    halves = {k: raw[k].astype(np.float16) for k in names}
    write_safetensors(os.path.join(d, "model.safetensors"), [(k, "F16", halves[k]) for k in names])
    _, w16 = parse_safetensors_dir(d)
    compare("HF F16 safetensors", d, w16, L, want_tied=1)
    err = max(float(np.max(np.abs(w16[k] - ref[k]) / (np.abs(ref[k]) + 1e-4))) for k in canonical(L))
    # (TinyStories-656K's weights happen to be bf16-exact, so this error is 0; the lossy
    # F16 path is exercised by the GGUF F16 variant below.)
    print(f"NOTE: the F16 test file is within half-precision rounding of the F32 weights (max rel err {err:.2e})")

    # BF16 with an explicit embed_tokens as well: tie_word_embeddings picks it.
    d = make_dir("hf_bf16")
    tensors = [(k, "BF16", to_bf16(raw[k])) for k in names]
    tensors.append(("model.embed_tokens.weight", "BF16", to_bf16(raw["lm_head.weight"])))
    write_safetensors(os.path.join(d, "model.safetensors"), tensors)
    wbf = {k: bf16_value(to_bf16(v)).reshape(v.shape) for k, v in ref.items()}
    compare("HF BF16 safetensors", d, wbf, L, want_tied=1)
    err = max(float(np.max(np.abs(wbf[k] - ref[k]) / (np.abs(ref[k]) + 1e-4))) for k in canonical(L))
    print(f"NOTE: the BF16 test file is within bfloat16 rounding of the F32 weights (max rel err {err:.2e})")

    # Two shards plus index: bit-identical to the original, same fingerprint.
    d = make_dir("hf_sharded")
    half = len(names) // 2
    weight_map = {}
    for i, part in enumerate((names[:half], names[half:])):
        fname = f"model-0000{i + 1}-of-00002.safetensors"
        write_safetensors(os.path.join(d, fname), [(k, "F32", raw[k]) for k in part])
        weight_map.update({k: fname for k in part})
    json.dump({"metadata": {}, "weight_map": weight_map}, open(os.path.join(d, "model.safetensors.index.json"), "w"))
    # The old rule (tests/test_export_ids.c pins its value): the weights hashed in the file's
    # own order, q/k rows not reordered.
    before = fnv1a(ref, L, True)
    check(before == 0xADD20AA9D544C8ED,
          "TinyStories-656K: FNV-1a 64 of its weights in file order (q/k not reordered) is "
          f"add20aa9d544c8ed, its old fingerprint ({before:016x})")
    orig = compare("TinyStories-656K (original)", HF, ref, L, want_tied=1)
    sh = compare("HF 2-shard index", d, ref, L, want_tied=1)
    if orig and sh:
        heads = (int(orig["config"]["n_heads"]), int(orig["config"]["n_kv_heads"]))
        check(orig["fingerprint"] == sh["fingerprint"] == fnv1a(ref, L, True, heads),
              "HF: fingerprint of original and sharded copies equals an independent FNV-1a 64, q/k in interleaved order "
              f"({orig['fingerprint']:016x})")
        c = orig["config"]
        check((c["dim"], c["hidden_dim"], c["n_layers"], c["n_heads"], c["n_kv_heads"], c["vocab_size"], c["rope"])
              == ("128", "384", "2", "8", "4", "2048", "rotate_half"), "HF: configuration from config.json")


def write_ak42(path, cfg, w, shared):
    L = cfg["n_layers"]
    head = struct.pack("<Ii7iB", 0x616B3432, 1, cfg["dim"], cfg["hidden_dim"], L, cfg["n_heads"],
                       cfg["n_kv_heads"], cfg["vocab_size"], cfg["seq_len"], int(shared))
    head += b"\0" * (256 - len(head))
    parts = [w[f"layers.{l}.attn_norm"] for l in range(L)] + [w[f"layers.{l}.ffn_norm"] for l in range(L)]
    parts += [w["final_norm"], w["tok_emb"]]
    for k in ("wq", "wk", "wv", "wo", "w_gate", "w_down", "w_up"):
        parts += [w[f"layers.{l}.{k}"] for l in range(L)]
    if not shared:
        parts.append(w["lm_head"])
    with open(path, "wb") as f:
        f.write(head + b"".join(np.ascontiguousarray(p, dtype="<f4").tobytes() for p in parts))


def llama2c_variants(tmp):
    cfg, w = parse_llama2c(STORIES)
    L = cfg["n_layers"]
    # The fingerprint every checkpoint trained on stories260K.bin or its GGUF holds
    # (tests/test_export_ids.c pins it as bin_old), recomputed here from the file by numpy
    # and this FNV-1a, not read from npt's output.
    bin_old = fnv1a(w, L, True)
    check(bin_old == 0x0A5188D5B35D35AE,
          "stories260K.bin: FNV-1a 64 of its weights in its own (interleaved) order is 0a5188d5b35d35ae, "
          f"the fingerprint tests/test_export_ids.c pins as bin_old ({bin_old:016x})")
    legacy = compare("stories260K.bin", STORIES, w, L, want_tied=1)
    if legacy:
        check(legacy["fingerprint"] == bin_old,
              f"stories260K.bin: fingerprint equals an independent FNV-1a 64 ({legacy['fingerprint']:016x})")
        # The fingerprint npt's HF export of stories260K had before (tests/test_export_ids.c
        # pins it as hf_old): the same weights, q/k rows in rotate-half order, hashed as they are.
        half = dict(w)
        for l in range(L):
            half[f"layers.{l}.wq"] = rotate_half(w[f"layers.{l}.wq"], cfg["n_heads"])
            half[f"layers.{l}.wk"] = rotate_half(w[f"layers.{l}.wk"], cfg["n_kv_heads"])
        old_export = fnv1a(half, L, True)
        check(old_export == 0x7082DED3685989F2,
              "stories260K.bin: wq/wk rows permuted by numpy into rotate-half order hash (FNV-1a 64) to "
              f"7082ded3685989f2, the old HF-export fingerprint ({old_export:016x})")
        c = legacy["config"]
        check((c["rope"], c["format"], c["norm_eps"]) == ("interleaved", "llama2c", "9.99999975e-06"),
              "stories260K.bin: interleaved RoPE, llama2c, eps 1e-5")
    p = os.path.join(tmp, "v1.bin")
    write_ak42(p, cfg, w, True)
    v1 = compare("ak42 version 1 (shared)", p, w, L, want_tied=1)
    if legacy and v1:
        check(v1["fingerprint"] == legacy["fingerprint"] and v1["tensors"] == legacy["tensors"],
              "ak42 v1 file written from stories260K loads identically to the legacy file")
    # Unshared classifier, in both versions: lm_head is its own tensor.
    w2 = dict(w)
    w2["lm_head"] = (w["tok_emb"] * np.float32(0.5)).astype(np.float32)
    p = os.path.join(tmp, "v1_unshared.bin")
    write_ak42(p, cfg, w2, False)
    compare("ak42 version 1 (unshared classifier)", p, w2, L, want_tied=0)
    raw = bytearray(open(STORIES, "rb").read())
    struct.pack_into("<i", raw, 20, -cfg["vocab_size"])
    p = os.path.join(tmp, "legacy_unshared.bin")
    open(p, "wb").write(bytes(raw) + np.ascontiguousarray(w2["lm_head"], "<f4").tobytes())
    compare("legacy llama2.c (negative vocab: unshared classifier)", p, w2, L, want_tied=0)
    return w


def gguf_encode_value(t, v):
    if t == 8:
        b = v.encode()
        return struct.pack("<Q", len(b)) + b
    if t == 9:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(gguf_encode_value(et, x) for x in items)
    return struct.pack("<" + GGUF_SCALAR[t], v)


def write_gguf_v3(path, kvs, tensors, f16):
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += gguf_encode_value(8, k) + struct.pack("<I", t) + gguf_encode_value(t, v)
    data, off = b"", 0
    for name, dims, t, a in tensors:
        b = (a.astype(np.float16) if f16 else a.astype(np.float32)).tobytes()
        out += gguf_encode_value(8, name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", 1 if f16 else 0, off)
        pad = -len(b) % 32
        data += b + b"\0" * pad
        off += len(b) + pad
    out += b"\0" * (-len(out) % 32)
    open(path, "wb").write(out + data)


def gguf_variants(tmp, w_bin):
    version, kvs, tensors, w = parse_gguf(GGUF)
    L = 5
    check(version == 1, f"shared GGUF is version 1 (parsed by numpy: {version})")
    same = all(np.array_equal(w[k], w_bin[k]) for k in canonical(L))
    check(same, "numpy: GGUF and llama2.c files of stories260K hold equal arrays")
    compare("stories260K GGUF v1", GGUF, w, L, want_tied=1)
    p = os.path.join(tmp, "v3.gguf")
    write_gguf_v3(p, kvs, tensors, False)
    compare("GGUF v3 rewrite (uint64 counts, arrays re-encoded)", p, w, L, want_tied=1)
    p = os.path.join(tmp, "v3_f16.gguf")
    write_gguf_v3(p, kvs, tensors, True)
    w16 = {k: v.astype(np.float16).astype(np.float32) for k, v in w.items()}
    compare("GGUF v3 F16", p, w16, L, want_tied=1)


def main():
    if not os.path.exists(TOOL):
        check(False, f"{TOOL} is built")
        return 1
    tmp = tempfile.mkdtemp(prefix="npt_load_")
    try:
        w_bin = llama2c_variants(tmp)
        gguf_variants(tmp, w_bin)
        hf_variants(tmp)
    finally:
        shutil.rmtree(tmp)
    return exit_code()


if __name__ == "__main__":
    sys.exit(main())
