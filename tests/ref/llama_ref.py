#!/usr/bin/python3
"""tests/ref/llama_ref.py — the independent PyTorch reference for the Llama model.

Owns: reading the three model formats with numpy alone (nothing is shared with the C
code), a plain PyTorch Llama (float64 by default), the parity quantities the C driver
`build/tests/test_llama --dump` also writes, and greedy generation from BOS.

  llama_ref.py forward MODEL TOKENS.i32 B T OUTDIR [--float32]
      writes OUTDIR/ref_logits.f32  float32 [B,T,V] row-major
             OUTDIR/ref_dx.f32      float32 [B,T,dim]: dLoss/dh0, h0 = embedding lookup
             OUTDIR/ref_loss.txt    "%.9g"
      loss = mean over b < B, t < T-1 of cross_entropy(logits[b,t], tokens[b,t+1])
  llama_ref.py generate MODEL STEPS [--float32]
      prints STEPS greedy token ids after BOS, space-separated, on one line

Formats: an HF directory (config.json + model.safetensors or a sharded
model.safetensors.index.json; F32/F16/BF16; tied embeddings stored under either name),
a llama2.c .bin (legacy 7-int header, or the "ak42" version-1 header of llama2.c's
export.py), GGUF v1/v2/v3 with F32/F16 tensors. RoPE: interleaved pairs (2i, 2i+1) for
llama2.c and GGUF (Meta layout), rotate-half (i, i + hd/2) for HF.
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

LAYER_KEYS = ("attn_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w_gate", "w_up", "w_down")


class RefError(Exception):
    pass


# ---------------------------------------------------------------------------
# Hugging Face directory


def _decode_dtype(raw, dtype, name):
    if dtype == "F32":
        return np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if dtype == "F16":
        return np.frombuffer(raw, dtype="<f2").astype(np.float32)
    if dtype == "BF16":
        # bf16 is the top half of an IEEE float32.
        return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    raise RefError(f"{name}: unsupported safetensors dtype {dtype}")


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack_from("<Q", blob, 0)
    header = json.loads(blob[8:8 + n])
    data = memoryview(blob)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        out[name] = _decode_dtype(data[a:b], info["dtype"], f"{path}: {name}").reshape(info["shape"])
    return out


def load_hf(d):
    with open(os.path.join(d, "config.json")) as f:
        c = json.load(f)
    index = os.path.join(d, "model.safetensors.index.json")
    tensors = {}
    if os.path.exists(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        for s in shards:
            tensors.update(read_safetensors(os.path.join(d, s)))
    else:
        tensors = read_safetensors(os.path.join(d, "model.safetensors"))
    n_heads = c["num_attention_heads"]
    cfg = dict(dim=c["hidden_size"], hidden_dim=c["intermediate_size"], n_layers=c["num_hidden_layers"],
               n_heads=n_heads, n_kv_heads=c.get("num_key_value_heads") or n_heads,
               head_dim=c.get("head_dim") or c["hidden_size"] // n_heads, vocab_size=c["vocab_size"],
               seq_len=c.get("max_position_embeddings", 2048), norm_eps=c["rms_norm_eps"],
               rope_theta=c.get("rope_theta", 10000.0), rope="half", bos_id=c.get("bos_token_id", 1))
    emb = tensors.get("model.embed_tokens.weight")
    head = tensors.get("lm_head.weight")
    if emb is None:
        emb = head  # tied embeddings stored only as lm_head
    if head is None:
        head = emb
    names = {"attn_norm": "input_layernorm", "wq": "self_attn.q_proj", "wk": "self_attn.k_proj",
             "wv": "self_attn.v_proj", "wo": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
             "w_gate": "mlp.gate_proj", "w_up": "mlp.up_proj", "w_down": "mlp.down_proj"}
    layers = [{k: tensors[f"model.layers.{i}.{names[k]}.weight"] for k in LAYER_KEYS}
              for i in range(cfg["n_layers"])]
    return cfg, dict(tok_emb=emb, layers=layers, final_norm=tensors["model.norm.weight"], lm_head=head)


# ---------------------------------------------------------------------------
# llama2.c .bin

AK42_MAGIC = 0x616B3432


def _shapes_llama2c(cfg):
    d, hd, hid = cfg["dim"], cfg["head_dim"], cfg["hidden_dim"]
    return {"attn_norm": (d,), "wq": (cfg["n_heads"] * hd, d), "wk": (cfg["n_kv_heads"] * hd, d),
            "wv": (cfg["n_kv_heads"] * hd, d), "wo": (d, cfg["n_heads"] * hd), "ffn_norm": (d,),
            "w_gate": (hid, d), "w_down": (d, hid), "w_up": (hid, d)}


def load_llama2c(path):
    data = np.fromfile(path, dtype="<f4")
    ints = np.frombuffer(data[:9].tobytes(), dtype="<i4")
    if int(np.uint32(ints[0])) == AK42_MAGIC:
        if ints[1] != 1:
            raise RefError(f"{path}: llama2.c version {ints[1]} (only float32 version 1 is supported)")
        dim, hid, nl, nh, nkv, vocab, seq = (int(x) for x in ints[2:9])
        with open(path, "rb") as f:
            f.seek(36)
            shared = f.read(1)[0] != 0
        order = ["attn_norm", "ffn_norm", "FINAL", "EMB", "wq", "wk", "wv", "wo", "w_gate", "w_down", "w_up"]
        pos = 256 // 4
    else:
        dim, hid, nl, nh, nkv, vocab, seq = (int(x) for x in ints[:7])
        shared = vocab > 0  # legacy: a negative vocab_size flags a separate classifier
        vocab = abs(vocab)
        order = ["EMB", "attn_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w_gate", "w_down", "w_up", "FINAL",
                 "FREQ"]
        pos = 7
    cfg = dict(dim=dim, hidden_dim=hid, n_layers=nl, n_heads=nh, n_kv_heads=nkv, head_dim=dim // nh,
               vocab_size=vocab, seq_len=seq, norm_eps=1e-5, rope_theta=10000.0, rope="interleaved", bos_id=1)
    shapes = _shapes_llama2c(cfg)
    layers = [{} for _ in range(nl)]
    w = {}

    def take(shape):
        nonlocal pos
        n = int(np.prod(shape))
        if pos + n > data.size:
            raise RefError(f"{path}: file too short for the weights its header announces")
        a = data[pos:pos + n].reshape(shape)
        pos += n
        return a

    for key in order:
        if key == "EMB":
            w["tok_emb"] = take((vocab, dim))
        elif key == "FINAL":
            w["final_norm"] = take((dim,))
        elif key == "FREQ":
            take((2, seq * (dim // nh) // 2))  # legacy precomputed freq_cis, unused
        else:
            for layer in layers:
                layer[key] = take(shapes[key])
    w["lm_head"] = w["tok_emb"] if shared else take((vocab, dim))
    w["layers"] = layers
    return cfg, w


# ---------------------------------------------------------------------------
# GGUF

_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
                 12: "<d"}


class _Reader:
    def __init__(self, blob, version):
        self.b, self.pos = blob, 0
        # v1 stores counts and lengths as uint32, v2+ as uint64.
        self.count_fmt = "<I" if version == 1 else "<Q"

    def scalar(self, fmt):
        (v,) = struct.unpack_from(fmt, self.b, self.pos)
        self.pos += struct.calcsize(fmt)
        return v

    def count(self):
        return self.scalar(self.count_fmt)

    def string(self):
        n = self.count()
        s = bytes(self.b[self.pos:self.pos + n]).decode("utf-8", "replace")
        self.pos += n
        return s

    def value(self, t):
        if t == 8:
            return self.string()
        if t == 9:
            et = self.scalar("<I")
            return [self.value(et) for _ in range(self.count())]
        if t not in _GGUF_SCALARS:
            raise RefError(f"unknown GGUF value type {t}")
        return self.scalar(_GGUF_SCALARS[t])


def read_gguf(path):
    with open(path, "rb") as f:
        blob = f.read()
    if blob[:4] != b"GGUF":
        raise RefError(f"{path}: not a GGUF file")
    (version,) = struct.unpack_from("<I", blob, 4)
    if version not in (1, 2, 3):
        raise RefError(f"{path}: GGUF version {version}")
    r = _Reader(blob, version)
    r.pos = 8
    n_tensors, n_kv = r.count(), r.count()
    meta = {}
    for _ in range(n_kv):
        key = r.string()
        meta[key] = r.value(r.scalar("<I"))
    infos = []
    for _ in range(n_tensors):
        name = r.string()
        dims = [r.count() for _ in range(r.scalar("<I"))]
        infos.append((name, dims, r.scalar("<I"), r.scalar("<Q")))
    align = int(meta.get("general.alignment", 32))
    base = (r.pos + align - 1) // align * align
    tensors = {}
    for name, dims, typ, off in infos:
        n = int(np.prod(dims))
        if typ == 0:
            a = np.frombuffer(blob, dtype="<f4", count=n, offset=base + off).astype(np.float32)
        elif typ == 1:
            a = np.frombuffer(blob, dtype="<f2", count=n, offset=base + off).astype(np.float32)
        else:
            raise RefError(f"{path}: tensor {name} has ggml type {typ} (only F32/F16)")
        tensors[name] = a.reshape(list(reversed(dims)))  # ne[0] varies fastest
    return version, meta, tensors


def load_gguf(path):
    _, meta, t = read_gguf(path)
    arch = meta.get("general.architecture", "llama")
    emb = t["token_embd.weight"]
    nh = int(meta[f"{arch}.attention.head_count"])
    dim = int(meta[f"{arch}.embedding_length"])
    cfg = dict(dim=dim, hidden_dim=int(meta[f"{arch}.feed_forward_length"]),
               n_layers=int(meta[f"{arch}.block_count"]), n_heads=nh,
               n_kv_heads=int(meta.get(f"{arch}.attention.head_count_kv", nh)), head_dim=dim // nh,
               vocab_size=emb.shape[0], seq_len=int(meta.get(f"{arch}.context_length", 2048)),
               norm_eps=float(meta.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
               rope_theta=float(meta.get(f"{arch}.rope.freq_base", 10000.0)), rope="interleaved",
               bos_id=int(meta.get("tokenizer.ggml.bos_token_id", 1)))
    names = {"attn_norm": "attn_norm", "wq": "attn_q", "wk": "attn_k", "wv": "attn_v", "wo": "attn_output",
             "ffn_norm": "ffn_norm", "w_gate": "ffn_gate", "w_up": "ffn_up", "w_down": "ffn_down"}
    layers = [{k: t[f"blk.{i}.{names[k]}.weight"] for k in LAYER_KEYS} for i in range(cfg["n_layers"])]
    return cfg, dict(tok_emb=emb, layers=layers, final_norm=t["output_norm.weight"],
                     lm_head=t.get("output.weight", emb))


def load_model(path):
    """Returns (cfg, weights) with every linear weight [out, in] as numpy float32."""
    if os.path.isdir(path):
        return load_hf(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        return load_gguf(path)
    return load_llama2c(path)


# ---------------------------------------------------------------------------
# the model


class RefLlama:
    def __init__(self, path, dtype=torch.float64):
        self.cfg, w = load_model(path)
        self.dtype = dtype
        as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dtype)
        self.tok_emb = as_t(w["tok_emb"])
        self.lm_head = as_t(w["lm_head"])
        self.final_norm = as_t(w["final_norm"])
        self.layers = [{k: as_t(layer[k]) for k in LAYER_KEYS} for layer in w["layers"]]

    def rmsnorm(self, x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.cfg["norm_eps"]) * w

    def rope(self, x):
        """x: [B, H, T, hd]; position = index in the sequence."""
        T, hd = x.shape[2], x.shape[3]
        i = torch.arange(hd // 2, dtype=torch.float64)
        freq = self.cfg["rope_theta"] ** (-2.0 * i / hd)
        ang = torch.arange(T, dtype=torch.float64)[:, None] * freq[None, :]
        cos, sin = torch.cos(ang).to(self.dtype), torch.sin(ang).to(self.dtype)
        if self.cfg["rope"] == "interleaved":
            x0, x1 = x[..., 0::2], x[..., 1::2]
            return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)
        x0, x1 = x[..., :hd // 2], x[..., hd // 2:]
        return torch.cat((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)

    def attention(self, x, L):
        c = self.cfg
        B, T, _ = x.shape
        H, KV, hd = c["n_heads"], c["n_kv_heads"], c["head_dim"]
        q = (x @ L["wq"].T).view(B, T, H, hd).transpose(1, 2)
        k = (x @ L["wk"].T).view(B, T, KV, hd).transpose(1, 2)
        v = (x @ L["wv"].T).view(B, T, KV, hd).transpose(1, 2)
        q, k = self.rope(q), self.rope(k)
        # GQA: query head h reads kv head h // (H / KV).
        k = k.repeat_interleave(H // KV, dim=1)
        v = v.repeat_interleave(H // KV, dim=1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        s = s.masked_fill(~causal, float("-inf"))
        a = torch.softmax(s, dim=-1) @ v
        return a.transpose(1, 2).reshape(B, T, H * hd) @ L["wo"].T

    def forward_from_h0(self, h):
        for L in self.layers:
            h = h + self.attention(self.rmsnorm(h, L["attn_norm"]), L)
            m = self.rmsnorm(h, L["ffn_norm"])
            h = h + (F.silu(m @ L["w_gate"].T) * (m @ L["w_up"].T)) @ L["w_down"].T
        return self.rmsnorm(h, self.final_norm) @ self.lm_head.T

    def embed(self, tokens):
        return self.tok_emb[tokens]

    def loss(self, logits, tokens):
        V = logits.shape[-1]
        return F.cross_entropy(logits[:, :-1].reshape(-1, V), tokens[:, 1:].reshape(-1))

    def forward_backward(self, tokens):
        """tokens: LongTensor [B, T]. Returns (logits, dLoss/dh0, loss)."""
        h0 = self.embed(tokens).detach().requires_grad_(True)
        logits = self.forward_from_h0(h0)
        loss = self.loss(logits, tokens)
        loss.backward()
        return logits.detach(), h0.grad, loss.item()

    @torch.no_grad()
    def generate(self, steps):
        """Greedy ids after BOS (no stop token), and per step the top-1 minus top-2 logit
        gap: where it is tiny, a float32 implementation may fairly pick the other token."""
        if steps + 1 > self.cfg["seq_len"]:
            raise RefError(f"{steps} steps exceed the model's context of {self.cfg['seq_len']}")
        ids = [self.cfg["bos_id"]]
        gaps = []
        for _ in range(steps):
            logits = self.forward_from_h0(self.embed(torch.tensor([ids])))[0, -1]
            top = torch.topk(logits, 2).values
            gaps.append((top[0] - top[1]).item())
            ids.append(int(torch.argmax(logits)))
        return ids[1:], gaps


# ---------------------------------------------------------------------------
# CLI


def _write_f32(path, t):
    t.detach().to(torch.float32).contiguous().numpy().astype("<f4").tofile(path)


def main(argv):
    dtype = torch.float64
    if "--float32" in argv:
        argv = [a for a in argv if a != "--float32"]
        dtype = torch.float32
    if len(argv) == 7 and argv[1] == "forward":
        _, _, model, tok_path, B, T, outdir = argv
        B, T = int(B), int(T)
        toks = np.fromfile(tok_path, dtype="<i4")
        if toks.size != B * T:
            raise RefError(f"{tok_path}: {toks.size} tokens, expected B*T = {B * T}")
        ref = RefLlama(model, dtype)
        if toks.min() < 0 or toks.max() >= ref.cfg["vocab_size"]:
            raise RefError(f"{tok_path}: token id out of the vocabulary [0, {ref.cfg['vocab_size']})")
        logits, dx, loss = ref.forward_backward(torch.from_numpy(toks.astype(np.int64)).view(B, T))
        os.makedirs(outdir, exist_ok=True)
        _write_f32(os.path.join(outdir, "ref_logits.f32"), logits)
        _write_f32(os.path.join(outdir, "ref_dx.f32"), dx)
        with open(os.path.join(outdir, "ref_loss.txt"), "w") as f:
            f.write("%.9g\n" % loss)
        return 0
    if len(argv) == 4 and argv[1] == "generate":
        ids, _ = RefLlama(argv[2], dtype).generate(int(argv[3]))
        print(" ".join(map(str, ids)))
        return 0
    sys.stderr.write("usage: llama_ref.py forward MODEL TOKENS.i32 B T OUTDIR [--float32]\n"
                     "       llama_ref.py generate MODEL STEPS [--float32]\n")
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except (RefError, OSError) as e:
        sys.stderr.write(f"llama_ref.py: {e}\n")
        sys.exit(1)
    except KeyError as e:
        sys.stderr.write(f"llama_ref.py: missing tensor or config key {e}\n")
        sys.exit(1)
