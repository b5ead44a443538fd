#!/usr/bin/python3
"""tests/py/test_data_prepare.py — `npt data` and the data keys of `npt train`, checked
from the outside with independent Python code:
  1. token files written by `npt data prepare` from the shared TinyStories text decode
     back to the original stories (tests/ref/vocab_ref.py decodes; the stories are split
     here with a regex), for the llama2.c tokenizer (.u16) and the HF tokenizer (.h5,
     read with h5py); the first stories' ids equal tests/ref/tok_ref.py's encoder's;
  2. `npt data stats --json` agrees with numpy on the same file;
  3. the same recipe on the text and on the prepared token file gives identical losses;
     the token cache is a header + the prepared file's ids, and one cut short is rebuilt
     with a warning (the same windows and losses);
  4. two sources mixed by data.sources: a run resumed from its step-10 checkpoint ends
     identical to the uninterrupted run (the cursor in the checkpoint is exact);
  5. bad inputs and flags: non-zero exit, one clear line;
  6. a full disk (RLIMIT_FSIZE below the output's size, so writes past it fail with
     EFBIG): exit 1, one line naming the file and the reason, no partial output or
     temporary file, and the file --force would have replaced kept as it was.
  7. documents over 1 MiB (prepare encodes them in parts): with 1 and 2 threads the
     ids decode back to the text exactly (a cut used to add a space and split words),
     equal SentencePiece's ids for the whole text (tok512) and the C tokenizer's for
     the whole text in one call (both tokenizers); a CRLF file gives the LF file's ids.
Run from the repo root: /usr/bin/python3 tests/py/test_data_prepare.py
"""
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ref"))
import tok_ref  # noqa: E402
import vocab_ref  # noqa: E402
from harness import (BUILD, HF656_TOKENIZER as TOK_HF, TOK512, TRAIN_TEXT as TRAIN_TXT, VALID_TEXT as VALID_TXT, check,
                     exit_code, run_npt, set_flags, temp_files)  # noqa: E402

SAFE = "recipes/stories260k-safe.json"
N_ENCODE = 40  # stories compared id by id with the O(n^2) reference encoder


def documents(path):
    """The documented rule, independently: split at <|endoftext|> with one newline (LF
    or CRLF) on each side belonging to the separator; empty documents are dropped."""
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    return [d for d in re.split(r"(?:\r?\n)?<\|endoftext\|>(?:\r?\n)?", text) if d]


UNK = "\ufffd"


def decode(vocab, ids):
    """vocab_ref's decoding, with <unk> (id 0) shown as U+FFFD instead of nothing."""
    text = b"".join(UNK.encode() if i == 0 else vocab.piece_bytes(i) for i in ids).decode("utf-8", "replace")
    return text[1:] if text.startswith(" ") else text


def hf_normalized(vocab, text):
    """What an HF BPE tokenizer without byte tokens keeps of text: each run of characters
    that are no piece becomes one <unk> (fuse_unk); the 656K vocabulary has no <0xXX>."""
    known = set(vocab.ids)
    out, in_unk = [], False
    for c in text:
        ok = (vocab.space if c == " " else c) in known
        if not ok and not in_unk:
            out.append(UNK)
        if ok:
            out.append(c)
        in_unk = not ok
    return "".join(out)


def split_at(ids, bos):
    starts = np.flatnonzero(ids == bos)
    return [ids[a:b] for a, b in zip(starts, list(starts[1:]) + [len(ids)])]


def test_roundtrip(tmp):
    for src, tok, out, count in [(TRAIN_TXT, TOK512, "train.u16", 2316), (VALID_TXT, TOK_HF, "valid.h5", 1000)]:
        path = os.path.join(tmp, out)
        r = run_npt("data", "prepare", src, "-o", path, "--tokenizer", tok, "--json")
        if r.returncode != 0:
            check(False, f"npt data prepare {src}: {r.stderr.strip()[-300:]}")
            continue
        summary = json.loads(r.stdout)
        progress = [line for line in r.stderr.splitlines() if line.startswith("prepare [")]
        check(progress and "100%" in progress[-1] and "MB/s" in progress[-1] and "tok/s" in progress[-1],
              f"{out}: progress lines on a non-tty stderr end with 100% and the rates: {progress[-1] if progress else None!r}")
        if out.endswith(".h5"):
            with h5py.File(path, "r") as f:
                check(f["tokens"].dtype == np.uint16, f"{out}: /tokens is uint16 (vocabulary 2048)")
                ids = f["tokens"][()].astype(np.int64)
                attrs = dict(f["tokens"].attrs)
        else:
            ids = np.fromfile(path, dtype="<u2").astype(np.int64)
            attrs = {}
        vocab = vocab_ref.Vocab(tok)
        bos = 1
        docs = split_at(ids, bos)
        want = documents(src)
        if tok == TOK_HF:
            want = [hf_normalized(vocab, d) for d in want]
        decoded = [decode(vocab, [int(i) for i in d[1:]]) for d in docs]
        bad = [k for k in range(min(len(want), len(decoded))) if decoded[k] != want[k]]
        detail = f"; first mismatch story {bad[0]}: {decoded[bad[0]][:60]!r} vs {want[bad[0]][:60]!r}" if bad else ""
        check(len(docs) == len(want) == count == summary["documents"] and not bad and summary["tokens"] == len(ids),
              f"{out}: {len(ids)} tokens, {len(docs)} documents (MANIFEST: {count}), every one decodes to its story"
              f" with the independent decoder{' (characters outside the vocabulary: <unk>)' if tok == TOK_HF else ''}"
              f"{detail}")
        if attrs:
            check(int(attrs["documents"]) == count and int(attrs["bos_id"]) == 1 and int(attrs["vocab_size"]) == 2048,
                  f"{out}: /tokens attributes documents, bos_id, vocab_size")
        enc = tok_ref.Llama2cRef(tok, 512) if tok == TOK512 else tok_ref.HFRef(tok)
        stories = documents(src)
        same = all([bos] + enc.encode(stories[k]) == [int(i) for i in docs[k]] for k in range(N_ENCODE))
        check(same, f"{out}: the first {N_ENCODE} documents are BOS + the reference encoder's ids")
        r = run_npt("data", "stats", path, "--json", "--seq-len", "128")
        st = json.loads(r.stdout) if r.returncode == 0 else {}
        lens = [len(d) for d in docs]
        check(st.get("tokens") == len(ids) and st.get("documents") == len(docs) and st["doc_len"]["min"] == min(lens)
              and st["doc_len"]["max"] == max(lens) and st.get("max_id") == int(ids.max())
              and st.get("windows") == len(ids) // 127
              and sum(h["documents"] for h in st["histogram"]) == len(docs),
              f"{out}: npt data stats agrees with numpy (documents {len(docs)}, lengths {min(lens)}..{max(lens)})")
    return os.path.join(tmp, "train.u16")


def metrics(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def train(sets, out, extra=()):
    return run_npt("train", SAFE, *set_flags(sets + [f"output_dir={out}"]), *extra)


SHORT = ["train.max_steps=12", "train.warmup_steps=2", "checkpoint.every=6", "data.seq_len=64", "train.batch_size=4",
         "threads=1", "log.every=6"]


def test_text_vs_tokens(tmp, prepared):
    cache = os.path.join(tmp, "cache")
    a = train(SHORT + [f"data.cache_dir={cache}"], os.path.join(tmp, "run_text"))
    b = train(SHORT + [f"data.train={prepared}"], os.path.join(tmp, "run_tokens"))
    if a.returncode or b.returncode:
        check(False, f"train on text / tokens: {a.stderr.strip()[-300:]} {b.stderr.strip()[-300:]}")
        return
    la = [row["loss"] for row in metrics(os.path.join(tmp, "run_text", "metrics.jsonl"))]
    lb = [row["loss"] for row in metrics(os.path.join(tmp, "run_tokens", "metrics.jsonl"))]
    check(len(la) == 12 and la == lb, f"text and its prepared token file: identical losses over 12 steps ({la[-1]:.6g})")
    cached = os.listdir(cache) if os.path.isdir(cache) else []
    blob = open(os.path.join(cache, cached[0]), "rb").read() if len(cached) == 1 else b""
    ids = open(prepared, "rb").read()
    # the cache: a 64-byte header (magic, version, id width, tokens, ...; data/data_internal.h), then the ids
    magic, version, width, n_tokens = (blob[:8], *struct.unpack("<IIQ", blob[8:24])) if len(blob) >= 64 else (b"", 0, 0, 0)
    check(magic == b"NPTTOKEN" and version == 1 and width == 2 and n_tokens * 2 == len(ids) and blob[64:] == ids,
          f"the text run's token cache ({cached}): a header declaring {n_tokens} uint{8 * width} tokens, then ids "
          f"byte-identical to npt data prepare's output")
    if len(cached) != 1:
        return
    # cut short (a crash, a full disk, a truncate): the next run says so and tokenizes the text again
    path = os.path.join(cache, cached[0])
    os.truncate(path, len(blob) // 2)
    c = train(SHORT + [f"data.cache_dir={cache}"], os.path.join(tmp, "run_text_again"))
    warn = [line for line in c.stderr.splitlines() if "warning" in line and "token cache" in line]
    windows = [re.search(r"(\d+) training \+", e) for e in (a.stderr, c.stderr)]
    windows = [int(w.group(1)) if w else None for w in windows]
    lc = [row["loss"] for row in metrics(os.path.join(tmp, "run_text_again", "metrics.jsonl"))] if c.returncode == 0 else []
    check(c.returncode == 0 and len(warn) == 1 and "cut short" in warn[0] and "rebuilding it from" in warn[0]
          and windows[0] == windows[1] == n_tokens // 63 and lc == la and open(path, "rb").read() == blob,
          f"a token cache cut to half: warned ({warn[0] if warn else c.stderr.strip()[-300:]!r}), rebuilt whole, "
          f"{windows[1]} training windows as before ({windows[0]}), the same 12 losses")


def test_mixed_resume(tmp, prepared):
    jl = os.path.join(tmp, "valid.jsonl")
    with open(jl, "w", encoding="utf-8") as f:
        for d in documents(VALID_TXT):
            f.write(json.dumps({"story": d}) + "\n")
    sources = json.dumps([{"path": prepared, "weight": 3}, {"path": jl, "weight": 1, "text_field": "story"}])
    sets = SHORT + ["data.train=", f"data.sources={sources}", "data.valid_fraction=0.05"]
    full = os.path.join(tmp, "mix_full")
    r = train(sets, full)
    if r.returncode:
        check(False, f"train on two mixed sources: {r.stderr.strip()[-400:]}")
        return
    check("training + " in r.stderr and "validation windows" in r.stderr,
          "the run header counts training and validation windows")
    part = os.path.join(tmp, "mix_resumed")
    os.makedirs(part)
    shutil.copy(os.path.join(full, "ckpt-00000006.h5"), part)
    r = train(sets, part, ["--resume", "auto"])
    if r.returncode:
        check(False, f"resume the mixed run: {r.stderr.strip()[-400:]}")
        return
    with h5py.File(os.path.join(full, "final.h5"), "r") as fa, h5py.File(os.path.join(part, "final.h5"), "r") as fb:
        ca, cb = list(fa["state"].attrs["data_cursor"]), list(fb["state"].attrs["data_cursor"])
        la, lb = fa["history/loss"][()], fb["history/loss"][()]
        names = [f"adapters/{layer}/{t}" for layer in fa["adapters"] for t in fa["adapters"][layer]]
        same_adapters = bool(names) and all(np.array_equal(fa[k][()], fb[k][()]) for k in names)
    check(ca == cb and len(ca) == 10 and ca[3] == 2 and ca[2] == 12 * 4 and ca[5] + ca[7] == 48 and ca[8] != ca[9],
          f"the 2-source cursor: 10 int64 values, 48 windows drawn ({ca[5]} + {ca[7]}), the sources' two fingerprints, "
          f"equal after resume")
    check(np.array_equal(la, lb) and same_adapters,
          "resumed from step 6: the same losses and adapters at step 12 as without the interruption")


def test_errors(tmp):
    bad = os.path.join(tmp, "bad.txt")
    with open(bad, "wb") as f:
        f.write(b"Once upon a time.\n<|endoftext|>\nA caf\xe9.\n")
    cases = [
        (["data", "prepare", bad, "-o", os.path.join(tmp, "x.u16"), "--tokenizer", TOK512], 1, "invalid UTF-8 at byte offset 37"),
        (["data", "prepare", TRAIN_TXT, "-o", os.path.join(tmp, "x.u16")], 2, "--tokenizer is required"),
        (["data", "prepare", "/nonexistent.txt", "-o", os.path.join(tmp, "x.u16"), "--tokenizer", TOK512], 1, "No such file"),
        (["data", "stats", os.path.join(tmp, "nothing.u16")], 1, "No such file"),
        (["data", "stats", TRAIN_TXT], 1, "is a text source, not a token file"),
        (["data", "shuffle", "x"], 2, "unknown subcommand"),
        (["data", "prepare", TRAIN_TXT, "--frobnicate"], 2, "unknown option"),
        (["validate", SAFE, "--set", 'data.sources=[{"path": "a.txt", "weight": -1}]'], 1,
         "data.sources[0].weight: expected a number > 0"),
        (["validate", SAFE, "--set", 'data.sources=[{"path": "a.txt"}]'], 1, "data.train (one source) or data.sources"),
        (["validate", SAFE, "--set", "data.on_bad_record=ignore"], 1, "data.on_bad_record: expected one of"),
    ]
    for argv, code, text in cases:
        r = run_npt(*argv)
        lines = [line for line in r.stderr.splitlines() if "error" in line]
        check(r.returncode == code and text in r.stderr and "Traceback" not in r.stderr and len(lines) >= 1,
              f"npt {' '.join(argv[:2])} ...: exit {r.returncode}, {lines[0] if lines else r.stderr.strip()[:200]!r}")
    r = train(SHORT + ["data.train=" + bad], os.path.join(tmp, "bad_run"))
    check(r.returncode == 1 and "invalid UTF-8 at byte offset 37" in r.stderr and bad in r.stderr,
          f"npt train on invalid UTF-8 stops with the file and offset: {r.stderr.strip().splitlines()[-1]!r}")


def test_stats_edges(tmp):
    """npt data stats without a model: tokens ahead of the first BOS belong to no document
    (a document starts at each BOS); an id no int holds is named as the file has it (an
    unsigned HDF5 2^63 + 5 is not clamped to 2^63 - 1), and not blamed on a vocabulary."""
    lead = os.path.join(tmp, "lead.u16")
    np.array([5, 6, 1, 7, 8, 1, 9], "<u2").tofile(lead)
    r = run_npt("data", "stats", lead, "--bos", "1", "--json")
    st = json.loads(r.stdout) if r.returncode == 0 else {}
    check(st.get("documents") == 2 and st.get("before_first_bos") == 2 and st.get("doc_len") == {"min": 2, "mean": 2.5, "max": 3},
          f"[5 6 | 1 7 8 | 1 9]: 2 documents of 3 and 2 tokens, 2 tokens before the first BOS: {r.stdout.strip()}")
    cases = [("neg.h5", np.array([1, 2, -3], "i2"), "token -3 at position 2 is not a token id"),
             ("u64.h5", np.array([1, 2, 2**63 + 5], "u8"), f"token {2**63 + 5} at position 2 is not a token id")]
    for name, ids, want in cases:
        path = os.path.join(tmp, name)
        with h5py.File(path, "w") as f:
            f["tokens"] = ids
        r = run_npt("data", "stats", path)
        check(r.returncode == 1 and want in r.stderr and "vocabulary" not in r.stderr,
              f"data stats of {ids.dtype} ids {list(ids)}: {r.stderr.strip()}")


def test_full_disk(tmp):
    """valid.h5 from test_roundtrip is ~390 KB (194481 uint16 ids); the limit is 100 KB."""
    good = os.path.join(tmp, "valid.h5")
    before = open(good, "rb").read() if os.path.exists(good) else None
    cases = [("a new .h5", os.path.join(tmp, "full.h5"), [], "token file "),
             ("a new .u16", os.path.join(tmp, "full.u16"), [], "token file "),
             ("--force over a good .h5", good, ["--force"], "token file ")]
    for label, out, extra, what in cases:
        r = run_npt("data", "prepare", VALID_TXT, "-o", out, "--tokenizer", TOK_HF, *extra, fsize=100_000)
        errors = [line for line in r.stderr.splitlines() if "error" in line]
        left = temp_files(tmp)
        kept = open(out, "rb").read() == before if out == good else not os.path.exists(out)
        check(r.returncode == 1 and len(errors) == 1 and f"cannot write {what}{out}: File too large" in errors[0]
              and kept and not left and before is not None,
              f"data prepare to {label} on a full disk: exit {r.returncode} (want 1), "
              f"{'the previous file unchanged' if out == good else 'no output'}, no temporary file {left}: "
              f"{errors[0] if errors else r.stderr.strip()[-200:]!r}")


def test_long_documents(tmp):
    """One document of 1.5 MB (the stories joined by newlines) and one of 1.3 MB (joined
    by spaces, no newline at all), built here from the shared text."""
    stories = [d.strip("\n") for d in documents(TRAIN_TXT) if d.strip()]
    nl = "\n".join(stories)[:1500000]
    nl = nl[:nl.rfind("\n")]
    sp = " ".join(d.replace("\n", " ") for d in stories)[:1300000]
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from test_tokenizer_ref import sentencepiece_model
    sp_model = sentencepiece_model(TOK512)
    if sp_model is None:
        print("SKIP: python3-sentencepiece / python3-protobuf not installed: no SentencePiece cross-check")
    for name, text in [("long_nl.txt", nl), ("long_sp.txt", sp)]:
        src = os.path.join(tmp, name)
        with open(src, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        for tok in [TOK512, TOK_HF]:
            vocab = vocab_ref.Vocab(tok)
            out = subprocess.run([f"{BUILD}/tests/test_tokenizer", "--encode", tok, src], capture_output=True, text=True)
            whole = [int(x) for x in out.stdout.split()] if out.returncode == 0 else None
            want_text = text if tok == TOK512 else hf_normalized(vocab, text)
            for threads in ["1", "2"]:
                path = os.path.join(tmp, "long.u16")
                r = run_npt("data", "prepare", src, "-o", path, "--tokenizer", tok, "--threads", threads, "--quiet", "--force")
                if r.returncode != 0:
                    check(False, f"npt data prepare {name}: {r.stderr.strip()[-300:]}")
                    continue
                ids = [int(i) for i in np.fromfile(path, dtype="<u2")]
                back = decode(vocab, ids[1:])
                at = next((k for k in range(min(len(back), len(want_text))) if back[k] != want_text[k]), None)
                where = f"; first difference at character {at}: {back[max(0, at - 20):at + 20]!r}" if at is not None else ""
                label = f"{name} ({len(text)} characters, one document), {os.path.basename(tok)}, {threads} thread(s)"
                check(ids[0] == 1 and ids.count(1) == 1 and back == want_text,
                      f"{label}: {len(ids)} ids decode back to the text exactly{where}")
                check(ids[1:] == whole, f"{label}: the ids of the C tokenizer encoding the whole text in one call"
                      f" ({len(whole) if whole else None} ids + BOS)")
                if tok == TOK512 and sp_model is not None and threads == "1":
                    ref = sp_model.encode(text)
                    check(ids[1:] == ref, f"{label}: SentencePiece's ids for the whole text ({len(ref)} ids + BOS)")
    lf, crlf = os.path.join(tmp, "lf.txt"), os.path.join(tmp, "crlf.txt")
    with open(lf, "w", newline="") as f:
        f.write("One day.\n<|endoftext|>\nTwo day.\n<|endoftext|>\n")
    with open(crlf, "w", newline="") as f:
        f.write("One day.\r\n<|endoftext|>\r\nTwo day.\r\n<|endoftext|>\r\n")
    got = []
    for src in [lf, crlf]:
        r = run_npt("data", "prepare", src, "-o", src + ".u16", "--tokenizer", TOK512, "--json", "--quiet")
        got.append((json.loads(r.stdout)["documents"] if r.returncode == 0 else None,
                    open(src + ".u16", "rb").read() if r.returncode == 0 else None))
    check(got[0] == got[1] and got[0][0] == 2 and documents(crlf) == documents(lf) == ["One day.", "Two day."],
          f"CRLF around the separators: the LF file's {got[0][0]} documents and ids ({got[1][0]} documents)")


def main():
    tmp = tempfile.mkdtemp(prefix="npt-data-")
    try:
        prepared = test_roundtrip(tmp)
        test_text_vs_tokens(tmp, prepared)
        test_mixed_resume(tmp, prepared)
        test_errors(tmp)
        test_stats_edges(tmp)
        test_full_disk(tmp)
        test_long_documents(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return exit_code()


if __name__ == "__main__":
    sys.exit(main())
