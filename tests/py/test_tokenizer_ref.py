"""tests/py/test_tokenizer_ref.py — npt's C tokenizers against independent references:
the Python reimplementations in tests/ref/tok_ref.py (both formats) and Google's
SentencePiece (python3-sentencepiece) running a BPE model built from tok512.bin's own
pieces and scores. Compares token ids story by story on TinyStories and on a file of
awkward texts (spaces, newlines, non-ASCII, emoji, special-token spellings).

The C side is `$BUILD/tests/test_tokenizer --encode TOKENIZER FILE [--max N]`."""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ref"))
import tok_ref  # noqa: E402
from harness import BUILD, HF656_TOKENIZER as HF_TOK, TOK512 as LLAMA_TOK, check, exit_code, shared_path  # noqa: E402

FILES = [shared_path("data", "tinystories-train-head.txt"), shared_path("data", "tinystories-valid-1000.txt")]
N_REF = 300  # stories per file for the O(n^2) Python references

AWKWARD = [
    "", " ", "a", "  leading and trailing  ", "tabs\tand\nnew\n\nlines\n", "Hello, world!",
    "naïve café — “quoted” it’s … ¡sí! ñandú", "emoji 🙂🚀 and CJK 日本語", "€100 ™ â€œmojibakeâ€\x9d",
    "<|start_story|>Once upon a time", "The end. <|end_story|>", "The end.<|end_story|> next",
    "<unk> <s> </s> <0x41>", "123456789 0.5", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "the the the the the", "Lily and Ben played in the park. They were happy!",
]


def c_encode(tok, path, max_n=0):
    cmd = [f"{BUILD}/tests/test_tokenizer", "--encode", tok, path] + (["--max", str(max_n)] if max_n else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [[int(x) for x in line.split()] for line in out.split("\n")[:-1]]


def compare(name, got, want, texts):
    bad = [i for i in range(len(want)) if i >= len(got) or got[i] != want[i]]
    detail = ""
    if bad:
        i = bad[0]
        g = got[i] if i < len(got) else None
        detail = f"; first mismatch story {i} {texts[i][:60]!r}: C {g[:20] if g else g} ref {want[i][:20]}"
    check(not bad and len(got) == len(want),
          f"{name}: {len(want) - len(bad)}/{len(want)} stories identical ({sum(map(len, want))} tokens){detail}")


def sentencepiece_model(path):
    """A SentencePiece BPE model with tok512.bin's pieces and scores: the same merge rule
    (highest score first) in Google's implementation. Spaces become U+2581 inside SP."""
    try:
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2 as pb
    except ImportError:
        return None
    ref = tok_ref.Llama2cRef(path)
    m = pb.ModelProto()
    P = pb.ModelProto.SentencePiece
    for i, (piece, score) in enumerate(zip(ref.pieces, ref.scores)):
        p = m.pieces.add()
        p.score = score
        if i < 3:
            p.piece, p.type = ["<unk>", "<s>", "</s>"][i], [P.UNKNOWN, P.CONTROL, P.CONTROL][i]
        elif i < 259:
            p.piece, p.type = piece.decode(), P.BYTE
        else:
            p.piece, p.type = piece.decode("utf-8").replace(" ", "\u2581"), P.NORMAL
    m.trainer_spec.model_type = pb.TrainerSpec.BPE
    m.trainer_spec.vocab_size = len(ref.pieces)
    m.trainer_spec.byte_fallback = True
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = True
    m.normalizer_spec.remove_extra_whitespaces = False
    m.normalizer_spec.escape_whitespaces = True
    return spm.SentencePieceProcessor(model_proto=m.SerializeToString())


def main():
    if not os.path.exists(f"{BUILD}/tests/test_tokenizer"):
        check(False, f"{BUILD}/tests/test_tokenizer is not built")
        return 1
    llama, hf = tok_ref.Llama2cRef(LLAMA_TOK), tok_ref.HFRef(HF_TOK)
    sp = sentencepiece_model(LLAMA_TOK)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as f:
        f.write("".join(s + "\n<|endoftext|>\n" for s in AWKWARD))
        awkward_path = f.name
    try:
        for path, n in [(p, N_REF) for p in FILES] + [(awkward_path, 0)]:
            texts = tok_ref.stories(path)[: n or None]
            label = "awkward texts" if path == awkward_path else os.path.basename(path)
            compare(f"tok512 C vs Python ref, {label}", c_encode(LLAMA_TOK, path, n), [llama.encode(s) for s in texts], texts)
            compare(f"HF C vs Python ref, {label}", c_encode(HF_TOK, path, n), [hf.encode(s) for s in texts], texts)
        for path in FILES + [awkward_path]:
            texts = tok_ref.stories(path)
            label = "awkward texts" if path == awkward_path else os.path.basename(path) + ", every story"
            if sp is None:
                print("SKIP: python3-sentencepiece / python3-protobuf not installed: no SentencePiece cross-check")
                break
            compare(f"tok512 C vs SentencePiece, {label}", c_encode(LLAMA_TOK, path), [sp.encode(s) for s in texts], texts)
    finally:
        os.unlink(awkward_path)
    return exit_code()


if __name__ == "__main__":
    sys.exit(main())
