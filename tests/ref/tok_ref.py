"""tests/ref/tok_ref.py — independent Python reference tokenizers for the tests.

Written from the format descriptions (llama2.c run.c's encode; Hugging Face tokenizers'
BPE model, normalizers and added-token handling), not from npt's C code, and with
deliberately plain algorithms: the C code merges with a heap over a linked list; here
every step scans the list of all adjacent pairs' scores for the best (O(n^2), fine
for stories).

    Llama2cRef(path).encode(text) -> ids    llama2.c tokenizer .bin
    HFRef(path).encode(text) -> ids         tokenizer.json (BPE, no pre-tokenizer)
    stories(path) -> [str]                  stories of a TinyStories text file
"""
import json
import re
import struct


def stories(path):
    """Stories end at a line '<|endoftext|>'; the lines before it, joined by '\\n'."""
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    out, cur = [], []
    for line in lines:
        if line == "<|endoftext|>":
            out.append("\n".join(cur))
            cur = []
        else:
            cur.append(line)
    if "\n".join(cur):
        out.append("\n".join(cur))
    return out


class Llama2cRef:
    """run.c's encode: dummy-prefix space, one symbol per character (or per UTF-8 byte,
    id byte+3, when the character is no piece), then merge the adjacent pair whose
    concatenation is the highest-scored piece, leftmost on ties, until none is."""

    def __init__(self, path, vocab_size=0):
        data = open(path, "rb").read()
        off = 4
        self.pieces, self.scores = [], []
        while off < len(data) and (vocab_size == 0 or len(self.pieces) < vocab_size):
            score, n = struct.unpack_from("<fi", data, off)
            self.pieces.append(data[off + 8:off + 8 + n])
            self.scores.append(score)
            off += 8 + n
        self.index = {}
        for i, p in enumerate(self.pieces):
            self.index.setdefault(p, i)

    def _pair(self, a, b):
        i = self.index.get(self.pieces[a] + self.pieces[b])
        return (float("-inf"), None) if i is None else (self.scores[i], i)

    def encode(self, text):
        if not text:
            return []
        toks = []
        for ch in " " + text:
            b = ch.encode("utf-8")
            if b in self.index:
                toks.append(self.index[b])
            else:
                toks.extend(x + 3 for x in b)
        pairs = [self._pair(toks[i], toks[i + 1]) for i in range(len(toks) - 1)]
        while pairs:
            scores = [p[0] for p in pairs]
            best = max(scores)
            if best <= -1e10:
                break
            i = scores.index(best)  # leftmost of the best
            toks[i:i + 2] = [pairs[i][1]]
            del pairs[i]
            if i > 0:
                pairs[i - 1] = self._pair(toks[i - 1], toks[i])
            if i < len(toks) - 1:
                pairs[i] = self._pair(toks[i], toks[i + 1])
        return toks


class HFRef:
    """HF tokenizers' pipeline for a BPE tokenizer.json without pre-tokenizer:
    added tokens (normalized=false matched in the raw text, normalized=true matched by
    their normalized content in each normalized segment, leftmost then longest),
    normalizer (Sequence / Prepend / Replace String), then BPE over the characters of
    each piece: vocab, else <0xXX> byte tokens, else unk (fused), merged by rank."""

    def __init__(self, path):
        j = json.load(open(path, encoding="utf-8"))
        m = j["model"]
        if m.get("type", "BPE") != "BPE" or j.get("pre_tokenizer") is not None:
            raise NotImplementedError("reference handles BPE without pre-tokenizer only")
        self.vocab = m["vocab"]
        self.ranks = {}
        for r, mg in enumerate(m["merges"]):
            a, b = mg.split(" ") if isinstance(mg, str) else mg
            self.ranks[(a, b)] = r  # a repeated pair keeps its last rank, as in HF
        self.unk = m.get("unk_token")
        self.fuse_unk = m.get("fuse_unk", False)
        self.byte_fallback = m.get("byte_fallback", False)
        self.ops = []
        self._flatten(j.get("normalizer"))
        self.raw, self.norm = {}, {}
        for t in j.get("added_tokens", []):
            if t.get("normalized", not t.get("special", False)):
                self.norm[self.normalize(t["content"])] = t["id"]
            else:
                self.raw[t["content"]] = t["id"]

    def _flatten(self, n):
        if n is None:
            return
        if n["type"] == "Sequence":
            for x in n["normalizers"]:
                self._flatten(x)
        elif n["type"] == "Prepend":
            self.ops.append(("prepend", n["prepend"]))
        elif n["type"] == "Replace":
            self.ops.append(("replace", n["pattern"]["String"], n["content"]))
        else:
            raise NotImplementedError(n["type"])

    def normalize(self, s):
        for op in self.ops:
            if op[0] == "prepend":
                s = op[1] + s if s else s
            else:
                s = s.replace(op[1], op[2])
        return s

    @staticmethod
    def _split(s, table):
        """[str or id]: s cut at the tokens of table, leftmost then longest."""
        if not table:
            return [s]
        rx = re.compile("|".join(re.escape(p) for p in sorted(table, key=len, reverse=True)))
        out, pos = [], 0
        for mt in rx.finditer(s):
            out += [s[pos:mt.start()], table[mt.group()]]
            pos = mt.end()
        return out + [s[pos:]]

    def _symbols(self, word):
        syms, unk_pending = [], False
        for ch in word:
            byte_names = ["<0x%02X>" % b for b in ch.encode("utf-8")]
            if ch in self.vocab or (self.byte_fallback and all(n in self.vocab for n in byte_names)):
                if unk_pending:
                    syms.append(self.unk)
                unk_pending = False
                syms += [ch] if ch in self.vocab else byte_names
            elif self.unk is not None:
                if unk_pending and not self.fuse_unk:
                    syms.append(self.unk)
                unk_pending = True
        if unk_pending:
            syms.append(self.unk)
        return syms

    def _bpe(self, word):
        syms = self._symbols(word)
        inf = float("inf")
        rank = [self.ranks.get((syms[i], syms[i + 1]), inf) for i in range(len(syms) - 1)]
        while rank:
            best = min(rank)
            if best == inf:
                break
            i = rank.index(best)  # leftmost of the lowest rank
            syms[i:i + 2] = [syms[i] + syms[i + 1]]
            del rank[i]
            if i > 0:
                rank[i - 1] = self.ranks.get((syms[i - 1], syms[i]), inf)
            if i < len(syms) - 1:
                rank[i] = self.ranks.get((syms[i], syms[i + 1]), inf)
        return [self.vocab[s] for s in syms]

    def encode(self, text):
        ids = []
        for seg in self._split(text, self.raw):
            if isinstance(seg, int):
                ids.append(seg)
                continue
            if not seg:
                continue
            for piece in self._split(self.normalize(seg), self.norm):
                if isinstance(piece, int):
                    ids.append(piece)
                elif piece:
                    ids += self._bpe(piece)
        return ids
