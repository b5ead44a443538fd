#!/usr/bin/python3
"""tests/py/test_parity.py — the C Llama against the independent PyTorch reference.

For stories260K (llama2.c .bin and GGUF) and TinyStories-656K (HF) on real TinyStories
text: logits, dLoss/dh0 and the loss of `$BUILD/tests/test_llama --dump` against
tests/ref/llama_ref.py (float64); greedy generation from BOS against the MANIFEST text
and the reference's ids. The reference is first checked on its own (MANIFEST text, GGUF
weights == .bin weights, dx against a finite difference), so a FAIL in the comparisons
points at the C side. Run from the repo root: /usr/bin/python3 tests/py/test_parity.py
"""
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ref"))
import llama_ref  # noqa: E402
import write_variants  # noqa: E402
from vocab_ref import Vocab  # noqa: E402
from harness import BUILD, HF656 as S656, NPT, STORIES260K_DIR as S260, check, exit_code, run_npt, shared_path  # noqa: E402

DRIVER = os.path.join(BUILD, "tests", "test_llama")
ENCODER = os.path.join(BUILD, "tests", "test_tokenizer")
REF_CLI = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ref", "llama_ref.py")

B, T = 3, 128
TOL_LOGITS, TOL_DX, TOL_LOSS = 1e-4, 1e-4, 1e-5  # observed: logits ~1.4e-6, dx <= 4.8e-6
GEN_STEPS_260K = 80          # the MANIFEST text ends after about 60 tokens
GEN_STEPS_656K = 160
MIN_TIE_FREE_STEPS = 100     # greedy ids must agree at least this far
TIE_GAP = 1e-4               # top-1 minus top-2 logit below which float32 may pick either

MODELS = [  # name, model, tokenizer
    ("stories260K.bin", os.path.join(S260, "stories260K.bin"), os.path.join(S260, "tok512.bin")),
    ("stories260K.gguf", os.path.join(S260, "tinyllamas-stories-260k-f32.gguf"), os.path.join(S260, "tok512.bin")),
    ("TinyStories-656K", S656, os.path.join(S656, "tokenizer.json")),
]


def squash(s):
    return " ".join(s.split())


def manifest_text():
    """The greedy stories260K text, read from the MANIFEST itself."""
    with open(shared_path("models", "MANIFEST.md"), encoding="utf-8") as f:
        m = re.search(r'Greedy decoding from BOS.*?"(.*?)"', f.read(), re.S)
    return squash(m.group(1))


def stories(n):
    with open(shared_path("data", "tinystories-valid-1000.txt"), encoding="utf-8") as f:
        parts = f.read().split("<|endoftext|>")
    return [p.strip() for p in parts if p.strip()][:n]


def run(argv, timeout=600):
    """The C drivers and the reference CLI (npt itself goes through run_npt)."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def c_encode(tokenizer, texts):
    """Ids from the C tokenizer (one story per output line), None when unavailable."""
    if not os.access(ENCODER, os.X_OK):
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as f:
        f.write("".join(t + "\n<|endoftext|>\n" for t in texts))
    try:
        r = run([ENCODER, "--encode", tokenizer, f.name])
    finally:
        os.unlink(f.name)
    lines = [ln.split() for ln in r.stdout.splitlines() if ln.strip()]
    if r.returncode != 0 or not lines:
        print(f"NOTE: {ENCODER} --encode failed (status {r.returncode}); using the longest-match encoder")
        return None
    try:
        return [[int(x) for x in ln] for ln in lines]
    except ValueError:
        print(f"NOTE: {ENCODER} --encode printed non-ids; using the longest-match encoder")
        return None


def token_windows(tokenizer, vocab_size, bos):
    """B windows of T ids cut from consecutive stories, each story starting with BOS."""
    texts = stories(12)
    encoded = c_encode(tokenizer, texts)
    if encoded and not all(0 <= i < vocab_size for ids in encoded for i in ids):
        print(f"NOTE: {ENCODER} --encode gave ids outside [0, {vocab_size}); using the longest-match encoder")
        encoded = None
    source = "C tokenizer" if encoded else "longest-match vocab encoder (tests/ref/vocab_ref.py)"
    if encoded is None:
        vocab = Vocab(tokenizer)
        encoded = [vocab.encode_longest_match(t, bos) for t in texts]
    stream = []
    for ids in encoded:
        stream += ids if ids and ids[0] == bos else [bos] + ids
    if len(stream) < B * T:
        raise SystemExit(f"FAIL: only {len(stream)} ids from {len(texts)} stories, {B * T} needed")
    return np.array(stream[:B * T], dtype="<i4"), source


def compare(name, what, c, r, tol):
    if c.size != r.size:
        check(False, f"{name} {what}: C wrote {c.size} floats, reference {r.size}")
        return
    diff = np.abs(c.astype(np.float64) - r.astype(np.float64))
    mabs = float(diff.max()) if np.all(np.isfinite(c)) else float("inf")
    rel = mabs / float(np.abs(r).max())
    check(rel <= tol, f"{name} {what} max abs {mabs:.1e} rel {rel:.1e} (<= {tol:g})")


def check_reference():
    """The reference alone: proves its parsing, RoPE and gradient independently of C."""
    want = manifest_text()
    ref = llama_ref.RefLlama(MODELS[0][1])
    ids, _ = ref.generate(GEN_STEPS_260K)
    got = squash(Vocab(MODELS[0][2]).decode(ids))
    check(got.startswith(want), f"reference: stories260K greedy text is the MANIFEST text ({got[:40]!r}...)")

    _, wb = llama_ref.load_model(MODELS[0][1])
    _, wg = llama_ref.load_model(MODELS[1][1])
    pairs = [(wb[k], wg[k]) for k in ("tok_emb", "final_norm", "lm_head")]
    pairs += [(lb[k], lg[k]) for lb, lg in zip(wb["layers"], wg["layers"]) for k in llama_ref.LAYER_KEYS]
    same = len(wb["layers"]) == len(wg["layers"]) and all(
        a.shape == b.shape and np.array_equal(a, b) for a, b in pairs)
    check(same, f"reference: GGUF and llama2.c .bin weights are identical ({len(pairs)} tensors)")

    # dLoss/dh0 along a random direction against a central difference (float64).
    for name, path, _ in (MODELS[0], MODELS[2]):
        ref = llama_ref.RefLlama(path)
        g = torch.Generator().manual_seed(7)
        toks = torch.randint(3, ref.cfg["vocab_size"], (2, 16), generator=g)
        _, dx, _ = ref.forward_backward(toks)
        h0 = ref.embed(toks)
        v = torch.randn(h0.shape, generator=g, dtype=torch.float64)
        eps = 1e-5
        with torch.no_grad():
            lp = ref.loss(ref.forward_from_h0(h0 + eps * v), toks)
            lm = ref.loss(ref.forward_from_h0(h0 - eps * v), toks)
        fd, an = ((lp - lm) / (2 * eps)).item(), float((dx * v).sum())
        rel = abs(fd - an) / abs(fd)
        check(rel < 1e-6, f"reference: {name} dx matches a finite difference (rel {rel:.1e})")


def check_forward(name, model, toks, tmp):
    out = os.path.join(tmp, name.replace(" ", "_"))
    os.makedirs(out)
    tok_path = os.path.join(out, "tokens.i32")
    toks.tofile(tok_path)
    rr = run([sys.executable, REF_CLI, "forward", model, tok_path, str(B), str(T), out])
    if rr.returncode != 0:
        check(False, f"{name}: reference forward failed: {rr.stderr.strip()[-300:]}")
        return
    rc = run([DRIVER, "--dump", model, tok_path, str(B), str(T), out])
    if rc.returncode != 0:
        check(False, f"{name}: {DRIVER} --dump exited {rc.returncode}: {rc.stderr.strip()[-300:]}")
        return
    load = lambda f: np.fromfile(os.path.join(out, f), dtype="<f4")
    compare(name, "logits", load("logits.f32"), load("ref_logits.f32"), TOL_LOGITS)
    compare(name, "dx", load("dx.f32"), load("ref_dx.f32"), TOL_DX)
    with open(os.path.join(out, "loss.txt")) as f:
        c_loss = float(f.read())
    with open(os.path.join(out, "ref_loss.txt")) as f:
        r_loss = float(f.read())
    rel = abs(c_loss - r_loss) / abs(r_loss)
    check(rel <= TOL_LOSS, f"{name} loss C {c_loss:.7f} ref {r_loss:.7f} rel {rel:.1e} (<= {TOL_LOSS:g})")


def flat_weights(w):
    out = {k: w[k] for k in ("tok_emb", "final_norm", "lm_head")}
    for i, layer in enumerate(w["layers"]):
        out.update({f"layers.{i}.{k}": a for k, a in layer.items()})
    return out


def make_variants(tmp):
    """Writes the shared models in the other layouts; checks the reference reads each back.
    Returns [(name, path, base model index)]."""
    c0, w0 = llama_ref.load_model(MODELS[0][1])
    untied = dict(w0, lm_head=w0["tok_emb"][::-1].copy())  # a distinct classifier
    c2, w2 = llama_ref.load_model(MODELS[2][1])
    meta = write_variants.hf_to_meta(c2, w2)
    j = lambda f: os.path.join(tmp, f)
    table = [  # name, path, writer, base, expected weights, relative precision of the dtype
        ("stories260K ak42-v1 untied .bin", j("v1.bin"), lambda p: write_variants.write_llama2c(c0, untied, p, 1, False),
         0, untied, 0.0),
        ("stories260K legacy untied .bin", j("v0.bin"), lambda p: write_variants.write_llama2c(c0, untied, p, 0, False),
         0, untied, 0.0),
        ("stories260K GGUF-v3 F16", j("v3f16.gguf"), lambda p: write_variants.write_gguf(c0, w0, p, 3, 1, True),
         0, w0, 2.0 ** -11),
        ("TinyStories-656K GGUF-v2 F32", j("656k.gguf"), lambda p: write_variants.write_gguf(c2, meta, p, 2, 0, True),
         2, meta, 0.0),
        ("TinyStories-656K HF BF16 2-shards", j("bf16"), lambda p: write_variants.write_hf(c2, w2, p, "BF16", 2, "lm_head"),
         2, w2, 2.0 ** -8),
        ("TinyStories-656K HF F16 tied-as-embed", j("f16"), lambda p: write_variants.write_hf(c2, w2, p, "F16", 1, "embed"),
         2, w2, 2.0 ** -11),
    ]
    dims = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")
    base_cfg = {0: c0, 2: c2}
    out = []
    for name, path, writer, base, want, prec in table:
        writer(path)
        cfg, w = llama_ref.load_model(path)
        got, exp = flat_weights(w), flat_weights(want)
        worst = max(float(np.abs(got[k] - exp[k]).max() / max(np.abs(exp[k]).max(), 1e-30)) for k in exp)
        ok = all(cfg[k] == base_cfg[base][k] for k in dims) and worst <= prec
        check(ok, f"reference: reads back {name} (worst weight error {worst:.1e} of max, dtype step {prec:.1e})")
        out.append((name, path, base))
    return out


def check_meta_layout_rope(path, toks):
    """The same HF model with q/k permuted to the Meta layout and interleaved RoPE gives the
    same logits: the two RoPE conventions of the reference agree with each other."""
    t = torch.from_numpy(toks.astype(np.int64)).view(B, T)
    a = llama_ref.RefLlama(MODELS[2][1]).forward_backward(t)[0]
    b = llama_ref.RefLlama(path).forward_backward(t)[0]
    rel = float((a - b).abs().max() / a.abs().max())
    check(rel < 1e-9, f"reference: TinyStories-656K rotate-half (HF) == interleaved (Meta layout) logits (rel {rel:.1e})")


def c_generate(model, steps):
    r = run([DRIVER, "--generate", model, str(steps)])
    if r.returncode != 0:
        return None, f"exited {r.returncode}: {r.stderr.strip()[-300:]}"
    try:
        return [int(x) for x in r.stdout.split()], ""
    except ValueError:
        return None, f"printed non-ids: {r.stdout[:100]!r}"


def check_generation():
    want = manifest_text()
    for name, model, tokenizer in MODELS[:2]:
        ids, why = c_generate(model, GEN_STEPS_260K)
        if ids is None:
            check(False, f"{name}: {DRIVER} --generate {why}")
            continue
        got = squash(Vocab(tokenizer).decode(ids))
        check(got.startswith(want), f"{name}: C greedy text from BOS is the MANIFEST text"
              + ("" if got.startswith(want) else f" (got {got[:120]!r})"))

    name, model, tokenizer = MODELS[2]
    ref_ids, gaps = llama_ref.RefLlama(model).generate(GEN_STEPS_656K)
    # Compare up to the first near-tie of the reference: past it either token is right.
    horizon = next((i for i, g in enumerate(gaps) if g < TIE_GAP), len(gaps))
    ids, why = c_generate(model, GEN_STEPS_656K)
    if ids is None:
        check(False, f"{name}: {DRIVER} --generate {why}")
        return
    n = min(horizon, len(ids))
    first_diff = next((i for i in range(n) if ids[i] != ref_ids[i]), None)
    ok = n >= MIN_TIE_FREE_STEPS and first_diff is None
    tie = f", reference near-tie (gap {gaps[horizon]:.1e}) at step {horizon}" if horizon < len(gaps) else ""
    check(ok, f"{name}: C greedy ids == reference ids for {n} steps (>= {MIN_TIE_FREE_STEPS}{tie})"
          + ("" if first_diff is None else f"; first difference at step {first_diff}"))
    text = Vocab(tokenizer).decode(ids[:n])
    print(f"NOTE: {name} greedy: {squash(text)[:160]}...")


def check_npt_generate():
    if not os.access(NPT, os.X_OK):
        print(f"SKIP: {NPT} not built: npt generate not compared with the MANIFEST")
        return
    name, model, tokenizer = MODELS[0]
    r = run_npt("generate", "--model", model, "--tokenizer", tokenizer, "--temperature", "0",
                "--steps", str(GEN_STEPS_260K))
    want = manifest_text()
    ok = r.returncode == 0 and want in squash(r.stdout)
    check(ok, f"npt generate --temperature 0 with {name} prints the MANIFEST text"
          + ("" if ok else f" (status {r.returncode}: {(r.stdout + r.stderr).strip()[:200]!r})"))


def main():
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    check_reference()
    windows = []
    for name, model, tokenizer in MODELS:
        cfg, _ = llama_ref.load_model(model)
        toks, source = token_windows(tokenizer, cfg["vocab_size"], cfg["bos_id"])
        print(f"NOTE: {name}: {B} x {T} ids from {source}")
        windows.append(toks)
    with tempfile.TemporaryDirectory(prefix="npt-parity-") as tmp:
        variants = make_variants(tmp)
        check_meta_layout_rope(os.path.join(tmp, "656k.gguf"), windows[2])
        if not os.access(DRIVER, os.X_OK):
            check(False, f"{DRIVER} missing (build it: make {DRIVER})")
        else:
            for (name, model, _), toks in zip(MODELS, windows):
                check_forward(name, model, toks, tmp)
            for name, path, base in variants:
                check_forward(name, path, windows[base], tmp)
    if os.access(DRIVER, os.X_OK):
        check_generation()
    check_npt_generate()
    return exit_code()


if __name__ == "__main__":
    sys.exit(main())
