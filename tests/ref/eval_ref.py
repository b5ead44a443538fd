#!/usr/bin/python3
"""tests/ref/eval_ref.py — the independent PyTorch reference for `npt eval` (train/eval.h).

Owns: the evaluation figures computed from their definitions (docs/eval.md), in float64,
on RefLlama (tests/ref/llama_ref.py parses the model itself) with adapters read from the
npt checkpoint by h5py. Nothing is shared with the C code.

  eval_ref.py MODEL CKPT|- WINDOWS.u32 T
prints one JSON object with the fields of `npt eval --json` (null where not applicable).
WINDOWS.u32: little-endian uint32 token ids, windows x T (`npt eval --save-windows`).

  per layer l, x = NPT model output, y = base output of layer l (residual stream, before
  the final norm), norms per token over the hidden dimension, floor 1e-6:
    nmse  = mean over tokens and dims of (x/|x| - y/|y|)^2     cos = mean over tokens of x.y/(|x||y|)
    e2e   x from the NPT model run end to end (below the first converted layer: the base)
    local x = NPT layer l applied to the base model's input of layer l (NPT layers only)
  ce    = mean over positions 1..T-1 of -log softmax(logits)[token]; ppl = exp(ce)
  modulation on the e2e run, s = modulation_scale, d_mul = 0.5 sigmoid(B_mul A a) + 0.5
  (1 in safe mode), g = W_gate m, m = RMSNorm(h; w_ffn):
    d_add_mean/max = mean/max of |s d_add|; d_mul_min/max/mean over all entries
    dw_fro = ||g (d_mul - 1) + s d_add|| / ||m|| per token: mean, max
"""
import json
import math
import os
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_ref  # noqa: E402
import npt_ref  # noqa: E402

FLOOR = 1e-6


def read_adapters(path):
    """{layer: {A, B_add[, B_mul]}} as float64 tensors, safe_mode, scale."""
    with h5py.File(path, "r") as f:
        g = f["adapters"]
        safe = bool(g.attrs["safe_mode"])
        scale = float(g.attrs["modulation_scale"])
        ads = {}
        for layer in g.attrs["layers"]:
            grp = g["layer_%02d" % int(layer)]
            ads[int(layer)] = {k: torch.from_numpy(grp[k][()].astype(np.float64)) for k in grp.keys()}
    return ads, safe, scale


def compare(x, y):
    """Sums over tokens: NMSE numerator (tokens x dims) and cosine."""
    nx = x.norm(dim=-1, keepdim=True).clamp_min(FLOOR)
    ny = y.norm(dim=-1, keepdim=True).clamp_min(FLOOR)
    nmse = (x / nx - y / ny).pow(2).sum().item()
    cos = ((x * y).sum(-1, keepdim=True) / (nx * ny)).sum().item()
    return nmse, cos


class Evaluator:
    def __init__(self, model, ckpt):
        self.base = llama_ref.RefLlama(model)
        self.ads, self.safe, self.scale = read_adapters(ckpt) if ckpt != "-" else ({}, True, 0.0)
        layers = ",".join(str(x) for x in sorted(self.ads)) if self.ads else "0"
        self.npt = npt_ref.RefNPT(self.base, layers, 1, self.safe, self.scale)  # for base_layer only

    def npt_layer(self, h, L, ad, mod=None):
        """SPEC section 2 with the modulation figures accumulated into mod."""
        b = self.base
        a = b.attention(b.rmsnorm(h, L["attn_norm"]), L)
        z = a @ ad["A"].T
        d_add = z @ ad["B_add"].T
        m = b.rmsnorm(h, L["ffn_norm"])
        g, u = m @ L["w_gate"].T, m @ L["w_up"].T
        d_mul = torch.ones_like(g) if self.safe else 0.5 * torch.sigmoid(z @ ad["B_mul"].T) + 0.5
        g2 = g * d_mul + self.scale * d_add
        if mod is not None:
            add = (self.scale * d_add).abs()
            dw = (g * (d_mul - 1) + self.scale * d_add).norm(dim=-1) / m.norm(dim=-1).clamp_min(FLOOR)
            mod["add_sum"] += add.sum().item()
            mod["add_max"] = max(mod["add_max"], add.max().item())
            mod["mul_sum"] += d_mul.sum().item()
            mod["mul_min"] = min(mod["mul_min"], d_mul.min().item())
            mod["mul_max"] = max(mod["mul_max"], d_mul.max().item())
            mod["dw_sum"] += dw.sum().item()
            mod["dw_max"] = max(mod["dw_max"], dw.max().item())
        return h + (F.silu(g2) * u) @ L["w_down"].T

    def nll_sum(self, h, tokens):
        """Positions 1..T-2 predict the next token; not position 0, the window's BOS (the
        token after it, a cut into the stream, would be predicted from BOS alone)."""
        logits = self.base.rmsnorm(h, self.base.final_norm) @ self.base.lm_head.T
        V = logits.shape[-1]
        return F.cross_entropy(logits[:, 1:-1].reshape(-1, V), tokens[:, 2:].reshape(-1), reduction="sum").item()

    @torch.no_grad()
    def run(self, tokens):
        c = self.base.cfg
        n_layers, (W, T) = c["n_layers"], tokens.shape
        first = min(self.ads) if self.ads else n_layers
        keys = ("nmse_e2e", "cos_e2e", "nmse_local", "cos_local")
        sums = [dict.fromkeys(keys, 0.0) for _ in range(n_layers)]
        mods = [dict(add_sum=0.0, add_max=0.0, mul_sum=0.0, mul_min=math.inf, mul_max=-math.inf, dw_sum=0.0,
                     dw_max=0.0) for _ in range(n_layers)]
        ht = self.base.embed(tokens)
        hs = ht
        for layer in range(n_layers):
            L = self.base.layers[layer]
            to = self.npt.base_layer(ht, L)
            if layer in self.ads:
                so = self.npt_layer(hs, L, self.ads[layer], mods[layer])
                lo = self.npt_layer(ht, L, self.ads[layer])
                sums[layer]["nmse_local"], sums[layer]["cos_local"] = compare(lo, to)
            else:
                so = self.npt.base_layer(hs, L) if layer >= first else to
            sums[layer]["nmse_e2e"], sums[layer]["cos_e2e"] = compare(so, to)
            ht, hs = to, so
        n_tok, n_tgt = W * T, W * (T - 2)
        out = dict(windows=W, seq_len=T, tokens=n_tok, targets=n_tgt, has_npt=bool(self.ads))
        out["ce_base"] = self.nll_sum(ht, tokens) / n_tgt
        out["ppl_base"] = math.exp(out["ce_base"])
        if not self.ads:
            return out
        out["ce_npt"] = self.nll_sum(hs, tokens) / n_tgt
        out["ppl_npt"] = math.exp(out["ce_npt"])
        el, fel = n_tok * c["dim"], n_tok * c["hidden_dim"]
        layers = []
        for layer in range(n_layers):
            s, mo, is_npt = sums[layer], mods[layer], layer in self.ads
            e = dict(layer=layer, npt=is_npt, compared=layer >= first,
                     nmse_e2e=s["nmse_e2e"] / el, cos_e2e=s["cos_e2e"] / n_tok)
            if is_npt:
                e.update(nmse_local=s["nmse_local"] / el, cos_local=s["cos_local"] / n_tok,
                         d_add_mean=mo["add_sum"] / fel, d_add_max=mo["add_max"],
                         dw_fro_mean=mo["dw_sum"] / n_tok, dw_fro_max=mo["dw_max"])
                if not self.safe:
                    e.update(d_mul_min=mo["mul_min"], d_mul_max=mo["mul_max"], d_mul_mean=mo["mul_sum"] / fel)
            layers.append(e)
        out["layers"] = layers
        out["nmse_e2e_mean"] = float(np.mean([e["nmse_e2e"] for e in layers if e["compared"]]))
        out["nmse_local_mean"] = float(np.mean([e["nmse_local"] for e in layers if e["npt"]]))
        return out


def main(argv):
    if len(argv) != 5:
        sys.stderr.write("usage: eval_ref.py MODEL CKPT|- WINDOWS.u32 T\n")
        return 2
    _, model, ckpt, windows, T = argv
    T = int(T)
    toks = np.fromfile(windows, dtype="<u4").astype(np.int64)
    if toks.size == 0 or toks.size % T:
        raise llama_ref.RefError(f"{windows}: {toks.size} tokens is not a whole number of windows of {T}")
    ev = Evaluator(model, ckpt)
    print(json.dumps(ev.run(torch.from_numpy(toks).view(-1, T))))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except (llama_ref.RefError, OSError, KeyError) as e:
        sys.stderr.write(f"eval_ref.py: {e}\n")
        sys.exit(1)
