#!/usr/bin/python3
"""tests/py/test_npt_parity.py — NPT adapter gradients and AdamW steps against PyTorch.

For stories260K on real TinyStories ids (B=2, T=64), for safe/full modes and several
layer selections: `$BUILD/tests/test_npt --dump` writes its initial adapters, the
distillation loss and its gradient, and the losses of 10 AdamW steps on the same batch;
tests/ref/npt_ref.py (float64, written from SPEC sections 2-3) recomputes them from the
same initial adapters. The reference is first checked against a central finite
difference, so a FAIL in the comparisons points at the C side.
Run from the repo root: /usr/bin/python3 tests/py/test_npt_parity.py
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ref"))
import llama_ref  # noqa: E402
import npt_ref  # noqa: E402
from harness import BUILD, STORIES260K_BIN as MODEL, TOK512 as TOKENIZER, VALID_TEXT as TEXT, built, check, exit_code  # noqa: E402

DRIVER = os.path.join(BUILD, "tests", "test_npt")
ENCODER = os.path.join(BUILD, "tests", "test_tokenizer")

B, T = 2, 64
SEED = 1234
STEPS, LR = 10, 1e-2
LAMBDA, SCALE = 0.01, 0.1   # what the C driver uses
# Gradients: worst over layers of max|C - ref| / max|ref| within one layer's tensor of
# a kind (observed <= 1.3e-6, so a wrong gradient in a layer whose gradients are small
# beside another layer's cannot hide). Curve: relative loss difference at each of the
# 10 steps (observed <= 1.4e-7, while the 10 steps move the loss by 3e-3..7e-3).
TOL_LOSS, TOL_GRAD, TOL_CURVE = 1e-5, 2e-5, 1e-5
# Final adapters after 10 AdamW steps (lr 1e-2, so each weight moves up to ~1e-1).
# Adam divides each gradient element by its own RMS, so the step error of a weight is
# the relative error of its gradient times lr: float32 gradients are good to ~1e-6 of
# max|g|, which gave final differences <= 1e-6 (weights with gradients far below max|g|
# see the largest relative errors). A wrong gradient changes steps by their own size:
# references with a deliberately wrong reg or d_mul differed by 7e-2..1e-1. 1e-4 (1% of
# one step) sits two orders of magnitude from each.
TOL_FINAL = 1e-4
CONFIGS = [  # mode, layers, rank
    ("safe", "all", 16),
    ("full", "all", 16),
    ("full", "upper_half", 16),
    ("safe", "lower_half", 16),
    ("full", "1,3", 8),
    # ranks below the head width: A Wo is folded into the values too (model/npt.c)
    ("full", "all", 2),
    ("safe", "upper_half", 3),
]


def token_window(bos, vocab_size):
    """B*T ids of consecutive TinyStories stories from the C tokenizer, BOS before each."""
    r = subprocess.run([ENCODER, "--encode", TOKENIZER, TEXT, "--max", "12"], capture_output=True, text=True,
                       timeout=120)
    if r.returncode != 0:
        raise SystemExit(f"FAIL: {ENCODER} --encode exited {r.returncode}: {r.stderr.strip()[-200:]}")
    stream = []
    for line in r.stdout.splitlines():
        if line.strip():
            stream += [bos] + [int(x) for x in line.split()]
    if len(stream) < B * T or not all(0 <= i < vocab_size for i in stream):
        raise SystemExit(f"FAIL: {ENCODER} gave {len(stream)} ids (need {B * T} in [0, {vocab_size}))")
    return np.array(stream[:B * T], dtype="<i4")


def check_reference(base, tokens, layers="1,3", rank=4, std=0.05, seed=5):
    """The reference's gradient against a central finite difference (float64), full mode;
    by default with a base layer between two NPT layers so every path is exercised."""
    ref = npt_ref.RefNPT(base, layers, rank, safe=False, scale=SCALE, lam=LAMBDA)
    g = torch.Generator().manual_seed(seed)
    p = std * torch.randn(ref.n_params, generator=g, dtype=torch.float64)
    _, _, _, grad = ref.loss_and_grad(tokens, p)
    v = torch.randn(ref.n_params, generator=g, dtype=torch.float64)
    eps = 1e-6
    with torch.no_grad():
        lp = ref.loss(tokens, p + eps * v)[0].item()
        lm = ref.loss(tokens, p - eps * v)[0].item()
    fd, an = (lp - lm) / (2 * eps), float(grad @ v)
    rel = abs(fd - an) / abs(fd)
    check(rel < 1e-6, f"reference: NPT loss gradient (full/{layers} rank {rank}) matches a finite difference "
          f"(rel {rel:.1e})")


def run_driver(mode, layers, rank, tok_path, out):
    argv = [DRIVER, "--dump", MODEL, tok_path, str(B), str(T), mode, layers, str(rank), str(SEED), str(STEPS),
            repr(LR), out]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        check(False, f"{mode}/{layers}: {DRIVER} --dump exited {r.returncode}: {r.stderr.strip()[-300:]}")
        return None
    load = lambda f: np.fromfile(os.path.join(out, f), dtype="<f4")
    with open(os.path.join(out, "losses.txt")) as f:
        lines = f.read().split("\n")
    return dict(params=load("params.f32"), grads=load("grads.f32"), final=load("final.f32"),
                init=[float(x) for x in lines[0].split()], curve=[float(x) for x in lines[1:] if x.strip()])


def check_config(base, tokens, tok_path, mode, layers, rank, tmp):
    name = f"{mode}/{layers} rank {rank}"
    out = os.path.join(tmp, f"{mode}_{layers.replace(',', '-')}_rank{rank}")
    os.makedirs(out)
    c = run_driver(mode, layers, rank, tok_path, out)
    if c is None:
        return
    ref = npt_ref.RefNPT(base, layers, rank, safe=(mode == "safe"), scale=SCALE, lam=LAMBDA)
    if c["params"].size != ref.n_params:
        check(False, f"{name}: C wrote {c['params'].size} adapter floats, the reference expects {ref.n_params}")
        return
    p0 = torch.from_numpy(c["params"].astype(np.float64))
    loss, fid, reg, grad = ref.loss_and_grad(tokens, p0)
    c_loss, c_fid, c_reg = c["init"]
    rel = abs(c_loss - loss) / abs(loss)
    check(rel < TOL_LOSS, f"{name}: loss C {c_loss:.8f} ref {loss:.8f} rel {rel:.1e} (nmse {c_fid:.6f}/{fid:.6f}, "
          f"reg {c_reg:.3e}/{reg:.3e}) (< {TOL_LOSS:g})")
    cg = torch.from_numpy(c["grads"].astype(np.float64))
    figs, ok = [], True
    for kind, spans in ref.kind_slices().items():
        rel, top = 0.0, 0.0
        for a, b in spans:
            r, k = grad[a:b], cg[a:b]
            rel = max(rel, float((k - r).abs().max() / r.abs().max()) if torch.isfinite(k).all() else float("inf"))
            top = max(top, float(r.abs().max()))
        ok = ok and rel < TOL_GRAD
        figs.append(f"{kind} {rel:.1e} (max|g| {top:.1e})")
    check(ok, f"{name}: gradient max-rel per layer " + ", ".join(figs) + f" (< {TOL_GRAD:g})")

    r_curve, r_final = ref.adamw(tokens, p0, STEPS, LR)
    if len(c["curve"]) != STEPS:
        check(False, f"{name}: C wrote {len(c['curve'])} AdamW losses, expected {STEPS}")
        return
    rels = [abs(a - b) / abs(b) for a, b in zip(c["curve"], r_curve)]
    check(max(rels) < TOL_CURVE, f"{name}: {STEPS} AdamW steps (lr {LR:g}) loss {loss:.5f} -> C {c['curve'][-1]:.5f} "
          f"ref {r_curve[-1]:.5f}, worst step rel {max(rels):.1e} (< {TOL_CURVE:g})")
    diff = np.abs(c["final"].astype(np.float64) - r_final.numpy())
    moved = np.abs(r_final.numpy() - c["params"].astype(np.float64)).max()
    worst = float(diff.max()) if np.all(np.isfinite(c["final"])) else float("inf")
    check(worst < TOL_FINAL, f"{name}: final adapters max abs diff {worst:.1e} (largest move {moved:.1e}; "
          f"< {TOL_FINAL:g})")


def load_base_and_window():
    """Torch threads as OMP_NUM_THREADS says, the C drivers present, then stories260K's
    float64 reference and the token window; None (with a failed check) without a driver."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    if not built(DRIVER, ENCODER):
        return None
    base = llama_ref.RefLlama(MODEL)
    return base, token_window(base.cfg["bos_id"], base.cfg["vocab_size"])


def main():
    loaded = load_base_and_window()
    if not loaded:
        return 1
    base, ids = loaded
    tokens = torch.from_numpy(ids.astype(np.int64)).view(B, T)
    print(f"NOTE: stories260K, {B} x {T} TinyStories ids from the C tokenizer, lambda {LAMBDA}, scale {SCALE}")
    check_reference(base, tokens)
    with tempfile.TemporaryDirectory(prefix="npt-npt-parity-") as tmp:
        tok_path = os.path.join(tmp, "tokens.i32")
        ids.tofile(tok_path)
        for mode, layers, rank in CONFIGS:
            check_config(base, tokens, tok_path, mode, layers, rank, tmp)
    return exit_code()


if __name__ == "__main__":
    sys.exit(main())
