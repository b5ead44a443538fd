#!/usr/bin/python3
"""tests/bench/torch_step.py — the PyTorch side of `make bench` (tests/bench/run_bench.sh).

The same NPT distillation step as tests/bench/bench_step.c, written the way a PyTorch
user would: an nn.Module Llama (llama2.c's model.py style), NPT layers per SPEC
section 2 wrapping the very same frozen base blocks, the teacher under torch.no_grad,
NMSE per SPEC section 3, clip_grad_norm_ and torch.optim.AdamW, float32.

  torch_step.py MODEL|random15m|random110m full|safe THREADS WARMUP STEPS BUDGET

Timed over up to STEPS steps after WARMUP, stopping early once BUDGET seconds have
passed (at least one timed step), as bench_step does.

Every layer converted, rank 16, batch 8 x 256, lambda 0.01, modulation scale 0.1.
Prints one key=value line like bench_step: threads ms tok_s rss_mb cores (CPU time /
wall time over the timed steps: how many cores were busy).
"""
import math
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ref"))
from llama_ref import load_llama2c  # noqa: E402  (numpy-only llama2.c reader)

BATCH, SEQ, RANK, LAMBDA, SCALE = 8, 256, 16, 0.01, 0.1
SHAPE_15M = dict(dim=288, hidden_dim=768, n_layers=6, n_heads=6, n_kv_heads=6, vocab_size=32000,
                 seq_len=256, norm_eps=1e-5, rope_theta=10000.0)
SHAPE_110M = dict(SHAPE_15M, dim=768, hidden_dim=2048, n_layers=12, n_heads=12, n_kv_heads=12)
RANDOM_SHAPES = {"random15m": SHAPE_15M, "random110m": SHAPE_110M}


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(head_dim, T, theta):
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2).float() / head_dim))
    ang = torch.outer(torch.arange(T).float(), freqs)
    return torch.cos(ang), torch.sin(ang)


def apply_rope(x, cos, sin):
    """Interleaved pairs (2i, 2i+1), llama2.c / Meta layout. x: [B, T, H, hd]."""
    xr, xi = x.reshape(x.shape[:-1] + (-1, 2)).unbind(-1)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    return torch.stack((xr * cos - xi * sin, xr * sin + xi * cos), dim=-1).flatten(3)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.n_heads, self.n_kv = c["n_heads"], c["n_kv_heads"]
        self.hd = c["dim"] // c["n_heads"]
        self.wq = nn.Linear(c["dim"], self.n_heads * self.hd, bias=False)
        self.wk = nn.Linear(c["dim"], self.n_kv * self.hd, bias=False)
        self.wv = nn.Linear(c["dim"], self.n_kv * self.hd, bias=False)
        self.wo = nn.Linear(self.n_heads * self.hd, c["dim"], bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        q = apply_rope(self.wq(x).view(B, T, self.n_heads, self.hd), cos, sin)
        k = apply_rope(self.wk(x).view(B, T, self.n_kv, self.hd), cos, sin)
        v = self.wv(x).view(B, T, self.n_kv, self.hd)
        rep = self.n_heads // self.n_kv
        if rep > 1:
            k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        scores = q @ k.transpose(2, 3) / math.sqrt(self.hd) + mask
        out = F.softmax(scores, dim=-1) @ v
        return self.wo(out.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.w1 = nn.Linear(c["dim"], c["hidden_dim"], bias=False)  # gate
        self.w2 = nn.Linear(c["hidden_dim"], c["dim"], bias=False)  # down
        self.w3 = nn.Linear(c["dim"], c["hidden_dim"], bias=False)  # up

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention_norm = RMSNorm(c["dim"], c["norm_eps"])
        self.attention = Attention(c)
        self.ffn_norm = RMSNorm(c["dim"], c["norm_eps"])
        self.feed_forward = FeedForward(c)

    def forward(self, h, cos, sin, mask):
        h = h + self.attention(self.attention_norm(h), cos, sin, mask)
        return h + self.feed_forward(self.ffn_norm(h))


class Llama(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.tok_embeddings = nn.Embedding(c["vocab_size"], c["dim"])
        self.layers = nn.ModuleList(Block(c) for _ in range(c["n_layers"]))
        self.norm = RMSNorm(c["dim"], c["norm_eps"])
        self.output = nn.Linear(c["dim"], c["vocab_size"], bias=False)
        self.output.weight = self.tok_embeddings.weight  # tied, as in llama2.c


class NPTBlock(nn.Module):
    """SPEC section 2: the attention output modulates the MLP gate; no attention residual.
    The base block is shared with the teacher (frozen); only A, B_add, B_mul train."""

    def __init__(self, base, rank, safe):
        super().__init__()
        self.base, self.safe = base, safe
        dim, hidden = base.feed_forward.w1.in_features, base.feed_forward.w1.out_features
        self.A = nn.Linear(dim, rank, bias=False)
        self.B_add = nn.Linear(rank, hidden, bias=False)
        nn.init.normal_(self.A.weight, std=0.02)
        nn.init.normal_(self.B_add.weight, std=0.001)
        if not safe:
            self.B_mul = nn.Linear(rank, hidden, bias=False)
            nn.init.zeros_(self.B_mul.weight)

    def forward(self, h, cos, sin, mask):
        b, ff = self.base, self.base.feed_forward
        z = self.A(b.attention(b.attention_norm(h), cos, sin, mask))
        d_add = self.B_add(z)
        m = b.ffn_norm(h)
        g, u = ff.w1(m), ff.w3(m)
        if self.safe:
            g = g + SCALE * d_add
            reg = d_add.pow(2).sum(-1).mean()
        else:
            d_raw = self.B_mul(z)
            g = g * (0.5 * torch.sigmoid(d_raw) + 0.5) + SCALE * d_add
            reg = 0.5 * (d_add.pow(2).sum(-1).mean() + d_raw.pow(2).sum(-1).mean())
        return h + ff.w2(F.silu(g) * u), reg


def nmse(x, y):
    return (F.normalize(x, dim=-1, eps=1e-6) - F.normalize(y, dim=-1, eps=1e-6)).pow(2).mean()


def build_model(which):
    if which in RANDOM_SHAPES:
        c = dict(RANDOM_SHAPES[which])
        model = Llama(c)
        for name, p in model.named_parameters():
            if "norm" not in name:
                nn.init.normal_(p, std=0.02)
        return model
    cfg, w = load_llama2c(which)
    model = Llama(cfg)
    with torch.no_grad():
        model.tok_embeddings.weight.copy_(torch.from_numpy(w["tok_emb"].copy()))
        model.norm.weight.copy_(torch.from_numpy(w["final_norm"].copy()))
        names = {"attn_norm": "attention_norm.weight", "wq": "attention.wq.weight", "wk": "attention.wk.weight",
                 "wv": "attention.wv.weight", "wo": "attention.wo.weight", "ffn_norm": "ffn_norm.weight",
                 "w_gate": "feed_forward.w1.weight", "w_down": "feed_forward.w2.weight",
                 "w_up": "feed_forward.w3.weight"}
        for blk, lw in zip(model.layers, w["layers"]):
            params = dict(blk.named_parameters())
            for k, n in names.items():
                params[n].copy_(torch.from_numpy(lw[k].copy()))
    return model


def main(argv):
    which, mode, threads, steps = argv[1], argv[2], int(argv[3]), int(argv[5])
    warmup = max(1, int(argv[4]))  # the first step is always a warm-up
    budget = float(argv[6])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(which)
    model.requires_grad_(False)  # the base is frozen
    c = model.c
    student = nn.ModuleList(NPTBlock(b, RANK, mode == "safe") for b in model.layers)
    adapters = [p for p in student.parameters() if p.requires_grad]  # A, B_add, B_mul only
    opt = torch.optim.AdamW(adapters, lr=1e-4, weight_decay=0.01)
    cos, sin = rope_tables(c["dim"] // c["n_heads"], SEQ, c["rope_theta"])
    mask = torch.full((SEQ, SEQ), float("-inf")).triu(1)
    tokens = torch.randint(0, c["vocab_size"], (BATCH, SEQ))

    def step():
        with torch.no_grad():
            h = model.tok_embeddings(tokens)
            teacher = []
            for blk in model.layers:
                h = blk(h, cos, sin, mask)
                teacher.append(h)
        h = model.tok_embeddings(tokens)
        fid, reg = 0.0, 0.0
        for blk, t in zip(student, teacher):
            h, r = blk(h, cos, sin, mask)
            fid, reg = fid + nmse(h, t), reg + r
        loss = fid / len(student) + LAMBDA * reg / len(student)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(adapters, 0.5)
        if torch.isfinite(loss) and torch.isfinite(norm):
            opt.step()
        return loss.item(), norm.item()

    first_loss, first_norm = step()
    for _ in range(warmup - 1):
        step()
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    done = 0
    while done < steps and not (done > 0 and time.perf_counter() - t0 > budget):
        last_loss, _ = step()
        done += 1
    r1, sec = resource.getrusage(resource.RUSAGE_SELF), (time.perf_counter() - t0) / done
    cpu = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / (sec * done)
    print(f"kind=train threads={threads} ms={sec * 1e3:.1f} tok_s={BATCH * SEQ / sec:.0f} "
          f"rss_mb={r1.ru_maxrss / 1024:.0f} cores={cpu:.2f} steps={done} "
          f"loss_first={first_loss:.6g} loss_last={last_loss:.6g} grad_norm_first={first_norm:.4g}")


if __name__ == "__main__":
    main(sys.argv)
