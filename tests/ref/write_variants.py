#!/usr/bin/python3
"""tests/ref/write_variants.py — writes the shared models in the other layouts npt reads.

Owns: numpy writers for the llama2.c .bin (legacy and "ak42" version 1), GGUF v2/v3
(F32/F16) and HF safetensors (F32/F16/BF16, sharded, either tied name), and the q/k row
permutation between the HF (rotate-half) and Meta (interleaved) RoPE layouts. The parity
test converts the shared models with these so the C loaders are compared with the
reference on every format, not only on the three files in ../shared.

Weights are the dicts of llama_ref.load_model: {"tok_emb", "final_norm", "lm_head",
"layers": [{attn_norm, wq, ..., w_down}]}, every linear [out, in].
"""
import json
import os
import struct

import numpy as np

AK42_MAGIC = 0x616B3432
LLAMA2C_LAYER_ORDER = ("attn_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w_gate", "w_down", "w_up")


def _f32(a):
    return np.ascontiguousarray(a, dtype="<f4").tobytes()


def write_llama2c(cfg, w, path, version, tied):
    """version 0: legacy 7-int header (negative vocab = separate classifier, freq_cis block
    before it); version 1: llama2.c export.py's version1_export layout."""
    dims = (cfg["dim"], cfg["hidden_dim"], cfg["n_layers"], cfg["n_heads"], cfg["n_kv_heads"])
    seq, hd = cfg["seq_len"], cfg["head_dim"]
    with open(path, "wb") as f:
        if version == 0:
            f.write(struct.pack("<7i", *dims, cfg["vocab_size"] * (1 if tied else -1), seq))
            f.write(_f32(w["tok_emb"]))
            for key in LLAMA2C_LAYER_ORDER:
                for layer in w["layers"]:
                    f.write(_f32(layer[key]))
            f.write(_f32(w["final_norm"]))
            f.write(_f32(np.zeros(seq * hd)))  # freq_cis (cos, sin): unused by readers
        else:
            head = struct.pack("<Ii7iB", AK42_MAGIC, 1, *dims, cfg["vocab_size"], seq, int(tied))
            f.write(head + b"\0" * (256 - len(head)))
            for key in ("attn_norm", "ffn_norm"):
                for layer in w["layers"]:
                    f.write(_f32(layer[key]))
            f.write(_f32(w["final_norm"]))
            f.write(_f32(w["tok_emb"]))
            for key in ("wq", "wk", "wv", "wo", "w_gate", "w_down", "w_up"):
                for layer in w["layers"]:
                    f.write(_f32(layer[key]))
        if not tied:
            f.write(_f32(w["lm_head"]))


GGUF_NAMES = {"attn_norm": "attn_norm", "wq": "attn_q", "wk": "attn_k", "wv": "attn_v", "wo": "attn_output",
              "ffn_norm": "ffn_norm", "w_gate": "ffn_gate", "w_up": "ffn_up", "w_down": "ffn_down"}


def write_gguf(cfg, w, path, version, ftype, tied):
    """GGUF v2/v3 (uint64 counts). ftype 0 = F32, 1 = F16 for the 2-D weights (norms stay
    F32, as llama.cpp writes them). The weights must already be in Meta (interleaved) layout."""
    assert version in (2, 3)
    s = lambda x: struct.pack("<Q", len(x.encode())) + x.encode()
    u32 = lambda k, v: s(k) + struct.pack("<II", 4, v)
    kv = [s("general.architecture") + struct.pack("<I", 8) + s("llama"),
          u32("general.alignment", 32),
          u32("llama.context_length", cfg["seq_len"]), u32("llama.embedding_length", cfg["dim"]),
          u32("llama.block_count", cfg["n_layers"]), u32("llama.feed_forward_length", cfg["hidden_dim"]),
          u32("llama.rope.dimension_count", cfg["head_dim"]), u32("llama.attention.head_count", cfg["n_heads"]),
          u32("llama.attention.head_count_kv", cfg["n_kv_heads"]),
          s("llama.attention.layer_norm_rms_epsilon") + struct.pack("<If", 6, cfg["norm_eps"]),
          s("llama.rope.freq_base") + struct.pack("<If", 6, cfg["rope_theta"]),
          u32("tokenizer.ggml.bos_token_id", cfg["bos_id"])]
    tensors = [("token_embd.weight", w["tok_emb"]), ("output_norm.weight", w["final_norm"])]
    if not tied:
        tensors.append(("output.weight", w["lm_head"]))
    for i, layer in enumerate(w["layers"]):
        tensors += [(f"blk.{i}.{GGUF_NAMES[k]}.weight", layer[k]) for k in GGUF_NAMES]
    infos, blobs, off = [], [], 0
    for name, a in tensors:
        typ = ftype if a.ndim == 2 else 0
        raw = np.ascontiguousarray(a, dtype="<f2" if typ == 1 else "<f4").tobytes()
        infos.append(s(name) + struct.pack("<I", a.ndim) + struct.pack(f"<{a.ndim}Q", *reversed(a.shape))
                     + struct.pack("<IQ", typ, off))
        pad = -len(raw) % 32
        blobs.append(raw + b"\0" * pad)
        off += len(raw) + pad
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kv)) + b"".join(kv) + b"".join(infos)
    with open(path, "wb") as f:
        f.write(head + b"\0" * (-len(head) % 32) + b"".join(blobs))


def _st_encode(a, dtype):
    a = np.ascontiguousarray(a, dtype=np.float32)
    if dtype == "F32":
        return a.astype("<f4").tobytes()
    if dtype == "F16":
        return a.astype("<f2").tobytes()
    u = a.view(np.uint32).astype(np.uint64)  # BF16: round to nearest even
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2").tobytes()


def write_safetensors(path, tensors, dtype):
    header, blobs, off = {}, [], 0
    for name, a in tensors:
        raw = _st_encode(a, dtype)
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


HF_NAMES = {"attn_norm": "input_layernorm", "wq": "self_attn.q_proj", "wk": "self_attn.k_proj",
            "wv": "self_attn.v_proj", "wo": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
            "w_gate": "mlp.gate_proj", "w_up": "mlp.up_proj", "w_down": "mlp.down_proj"}


def write_hf(cfg, w, d, dtype, shards, tied_as):
    """tied_as: "lm_head" or "embed" (the one name a tied model stores), None = untied.
    The weights must be in HF (rotate-half) layout."""
    os.makedirs(d, exist_ok=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": cfg["dim"],
              "intermediate_size": cfg["hidden_dim"], "num_hidden_layers": cfg["n_layers"],
              "num_attention_heads": cfg["n_heads"], "num_key_value_heads": cfg["n_kv_heads"],
              "vocab_size": cfg["vocab_size"], "max_position_embeddings": cfg["seq_len"],
              "rms_norm_eps": cfg["norm_eps"], "rope_theta": cfg["rope_theta"], "bos_token_id": cfg["bos_id"],
              "eos_token_id": 2, "hidden_act": "silu", "tie_word_embeddings": tied_as is not None,
              "torch_dtype": {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[dtype]}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    tensors = []
    if tied_as != "lm_head":
        tensors.append(("model.embed_tokens.weight", w["tok_emb"]))
    if tied_as != "embed":
        tensors.append(("lm_head.weight", w["lm_head"]))
    for i, layer in enumerate(w["layers"]):
        tensors += [(f"model.layers.{i}.{HF_NAMES[k]}.weight", layer[k]) for k in HF_NAMES]
    tensors.append(("model.norm.weight", w["final_norm"]))
    if shards == 1:
        write_safetensors(os.path.join(d, "model.safetensors"), tensors, dtype)
        return
    weight_map = {}
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = tensors[s::shards]
        write_safetensors(os.path.join(d, fname), part, dtype)
        weight_map.update({name: fname for name, _ in part})
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2)


def hf_to_meta(cfg, w):
    """Reorders q/k rows from rotate-half pairs (i, i + hd/2) to interleaved pairs
    (2i, 2i + 1): the inverse of the permute in HF's convert_llama_weights_to_hf.py."""
    hd = cfg["head_dim"]

    def perm(a, heads):
        return a.reshape(heads, 2, hd // 2, a.shape[1]).transpose(0, 2, 1, 3).reshape(a.shape)

    layers = [dict(layer, wq=perm(layer["wq"], cfg["n_heads"]), wk=perm(layer["wk"], cfg["n_kv_heads"]))
              for layer in w["layers"]]
    return dict(w, layers=layers)
