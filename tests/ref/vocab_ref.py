#!/usr/bin/python3
"""tests/ref/vocab_ref.py — just enough of the two vocabularies for the parity test.

Owns: reading the pieces of a llama2.c tokenizer .bin and of an HF tokenizer.json,
decoding ids to text (to compare greedy generations with the MANIFEST), and a
longest-match encoder that turns real text into real in-vocabulary ids when the C
tokenizer is not built. That encoder is NOT the canonical BPE (tests/ref/tok_ref.py and
data/ own that); parity only needs realistic ids, not the canonical segmentation.

  vocab_ref.py decode TOKENIZER ID...     prints the text of the ids (after BOS)
"""
import json
import re
import struct
import sys

_BYTE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


class Vocab:
    def __init__(self, path):
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as f:
                tok = json.load(f)
            vocab = dict(tok["model"]["vocab"])
            for a in tok.get("added_tokens", []):
                vocab[a["content"]] = a["id"]
            self.pieces = [""] * (max(vocab.values()) + 1)
            for s, i in vocab.items():
                self.pieces[i] = s
            self.space = "\u2581"  # HF pieces spell a space as U+2581
            self.special = {a["id"] for a in tok.get("added_tokens", []) if a.get("special")}
        else:
            self.pieces = []
            with open(path, "rb") as f:
                blob = f.read()
            pos = 4  # int32 max_token_length, then per token: f32 score, i32 len, bytes
            while pos < len(blob):
                (n,) = struct.unpack_from("<i", blob, pos + 4)
                self.pieces.append(blob[pos + 8:pos + 8 + n].decode("utf-8", "replace"))
                pos += 8 + n
            self.space = " "
            self.special = {0, 1, 2}
        self.ids = {}
        for i, s in enumerate(self.pieces):
            self.ids.setdefault(s, i)
        self.max_len = max(len(s) for s in self.pieces)

    def piece_bytes(self, i):
        m = _BYTE.match(self.pieces[i])
        if m:
            return bytes([int(m.group(1), 16)])
        if i in self.special:
            return b""
        return self.pieces[i].replace(self.space, " ").encode("utf-8")

    def decode(self, ids):
        """Text of ids generated after BOS; the leading space of the first piece is dropped
        (the dummy prefix both tokenizers add)."""
        text = b"".join(self.piece_bytes(i) for i in ids).decode("utf-8", "replace")
        return text[1:] if text.startswith(" ") else text

    def encode_longest_match(self, text, bos):
        """Greedy longest-prefix match over the pieces, byte fallback where available."""
        s = self.space + text.replace(" ", self.space)
        out = [bos]
        pos = 0
        while pos < len(s):
            for n in range(min(self.max_len, len(s) - pos), 0, -1):
                i = self.ids.get(s[pos:pos + n])
                if i is not None and i not in self.special:
                    out.append(i)
                    pos += n
                    break
            else:
                for b in s[pos].encode("utf-8"):
                    out.append(self.ids.get("<0x%02X>" % b, 0))
                pos += 1
        return out


def main(argv):
    if len(argv) >= 3 and argv[1] == "decode":
        print(Vocab(argv[2]).decode([int(x) for x in argv[3:]]))
        return 0
    sys.stderr.write("usage: vocab_ref.py decode TOKENIZER ID...\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
