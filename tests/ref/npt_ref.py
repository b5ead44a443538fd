#!/usr/bin/python3
"""tests/ref/npt_ref.py — the independent PyTorch reference for NPT distillation.

Owns: the NPT layer of SPEC section 2 and the distillation objective of SPEC section 3,
written from the SPEC text on top of tests/ref/llama_ref.py's RefLlama (which parses the
model itself; nothing is shared with the C code), in float64 by default.

  teacher  the base model, every layer; its residual output hT_l after each layer l
  student  layers below the first converted one are the teacher's (shared); from the
           first converted layer up: NPT where converted, the base layer elsewhere
  loss     mean over l in [first converted, n_layers) of NMSE(hS_l, hT_l)
           + lambda * mean over NPT layers of reg_l
  NMSE     mean over tokens and dims of (x/max(|x|,1e-6) - y/max(|y|,1e-6))^2, per-token norms
  reg      mean of the present terms {mean_tokens ||d_add||^2, mean_tokens ||d_raw||^2}

Adapter parameters travel as one flat vector in the layout of the C test driver
(`build/tests/test_npt --dump`, see tests/test_npt.c): per converted layer, ascending,
A [rank, dim], B_add [hidden, rank], then B_mul [hidden, rank] in full mode.
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_ref  # noqa: E402

NMSE_FLOOR = 1e-6


def select_layers(n_layers, spec):
    """'all', 'upper_half' ([n//2, n)), 'lower_half' ([0, n//2)) or a comma list."""
    if spec == "all":
        return list(range(n_layers))
    if spec == "upper_half":
        return list(range(n_layers // 2, n_layers))
    if spec == "lower_half":
        return list(range(n_layers // 2))
    ids = sorted({int(x) for x in spec.split(",")})
    if not ids or ids[0] < 0 or ids[-1] >= n_layers:
        raise llama_ref.RefError(f"layer list {spec!r} does not fit a {n_layers}-layer model")
    return ids


def nmse(x, y):
    nx = x.norm(dim=-1, keepdim=True).clamp_min(NMSE_FLOOR)
    ny = y.norm(dim=-1, keepdim=True).clamp_min(NMSE_FLOOR)
    return (x / nx - y / ny).pow(2).mean()


class RefNPT:
    def __init__(self, base, layers, rank, safe, scale=0.1, lam=0.01):
        """base: a llama_ref.RefLlama; layers: a selection spec (see select_layers)."""
        self.base, self.rank, self.safe, self.scale, self.lam = base, rank, safe, scale, lam
        c = base.cfg
        self.layers = select_layers(c["n_layers"], layers)
        self.kinds = ("A", "B_add") if safe else ("A", "B_add", "B_mul")
        shapes = {"A": (rank, c["dim"]), "B_add": (c["hidden_dim"], rank), "B_mul": (c["hidden_dim"], rank)}
        self.shapes = [(layer, k, shapes[k]) for layer in self.layers for k in self.kinds]
        self.n_params = sum(s[0] * s[1] for _, _, s in self.shapes)

    def unpack(self, flat):
        """Flat vector -> {layer: {kind: view}} (views keep autograd to flat)."""
        if flat.numel() != self.n_params:
            raise llama_ref.RefError(f"{flat.numel()} adapter floats, the configuration has {self.n_params}")
        out, pos = {}, 0
        for layer, kind, (r, c) in self.shapes:
            out.setdefault(layer, {})[kind] = flat[pos:pos + r * c].view(r, c)
            pos += r * c
        return out

    def kind_slices(self):
        """kind -> list of (start, stop) of that kind's tensors in the flat vector."""
        out, pos = {}, 0
        for _, kind, (r, c) in self.shapes:
            out.setdefault(kind, []).append((pos, pos + r * c))
            pos += r * c
        return out

    def base_layer(self, h, L):
        b = self.base
        h = h + b.attention(b.rmsnorm(h, L["attn_norm"]), L)
        m = b.rmsnorm(h, L["ffn_norm"])
        return h + (F.silu(m @ L["w_gate"].T) * (m @ L["w_up"].T)) @ L["w_down"].T

    def npt_layer(self, h, L, ad):
        """SPEC section 2, line by line. Returns (out, reg)."""
        b = self.base
        a = b.attention(b.rmsnorm(h, L["attn_norm"]), L)  # includes the output projection
        z = a @ ad["A"].T
        d_add = z @ ad["B_add"].T
        m = b.rmsnorm(h, L["ffn_norm"])  # on h, not h + a
        g, u = m @ L["w_gate"].T, m @ L["w_up"].T
        terms = [d_add.pow(2).sum(-1).mean()]
        if self.safe:
            g2 = g + self.scale * d_add
        else:
            d_raw = z @ ad["B_mul"].T
            d_mul = 0.5 * torch.sigmoid(d_raw) + 0.5
            g2 = g * d_mul + self.scale * d_add
            terms.append(d_raw.pow(2).sum(-1).mean())
        out = h + (F.silu(g2) * u) @ L["w_down"].T
        return out, sum(terms) / len(terms)

    def teacher(self, tokens):
        """Residual outputs of every base layer, and the input h0."""
        with torch.no_grad():
            h = self.base.embed(tokens)
            outs = [h]
            for L in self.base.layers:
                h = self.base_layer(h, L)
                outs.append(h)
        return outs  # outs[l + 1] is the output of layer l

    def loss(self, tokens, flat, teacher=None):
        """tokens: LongTensor [B, T]; flat: adapter vector. Returns (loss, nmse, reg) tensors."""
        hT = teacher if teacher is not None else self.teacher(tokens)
        ads = self.unpack(flat)
        first = self.layers[0]
        h = hT[first]
        fid, regs = [], []
        for layer in range(first, len(self.base.layers)):
            L = self.base.layers[layer]
            if layer in ads:
                h, r = self.npt_layer(h, L, ads[layer])
                regs.append(r)
            else:
                h = self.base_layer(h, L)
            fid.append(nmse(h, hT[layer + 1]))
        fid = torch.stack(fid).mean()
        reg = torch.stack(regs).mean()
        return fid + self.lam * reg, fid, reg

    def loss_and_grad(self, tokens, flat, teacher=None):
        p = flat.detach().clone().requires_grad_(True)
        loss, fid, reg = self.loss(tokens, p, teacher)
        loss.backward()
        return loss.item(), fid.item(), reg.item(), p.grad.detach()

    def adamw(self, tokens, flat, steps, lr):
        """`steps` torch.optim.AdamW updates (betas 0.9/0.999, eps 1e-8, no decay) on the
        same batch. Returns the loss after each update and the final parameters."""
        hT = self.teacher(tokens)
        p = flat.detach().clone().requires_grad_(True)
        opt = torch.optim.AdamW([p], lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
        losses = []
        for s in range(steps + 1):
            opt.zero_grad()
            loss = self.loss(tokens, p, hT)[0]
            if s > 0:
                losses.append(loss.item())
            if s == steps:
                break
            loss.backward()
            opt.step()
        return losses, p.detach()
