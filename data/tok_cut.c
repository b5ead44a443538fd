/* data/tok_cut.c — where a long document can be cut into parts that are encoded one
 * after the other (the later ones as continuations: no dummy-prefix space, no Prepend,
 * no Metaspace prefix) with exactly the ids of encoding it whole. data/prepare.c cuts
 * documents over DATA_MAX_PIECE bytes only at such places, so memory per encode call
 * stays bounded and the cuts are invisible.
 *
 * Why a cut at k (between the characters x = s[..k) and y = s[k..)) is invisible:
 *
 * Merges. Both formats merge with one engine (tok_bpe.c): repeatedly the adjacent pair
 * of lowest rank, leftmost among equals. If no merge can ever join a symbol left of the
 * cut to one right of it, the merges left of it happen in the same order as when the
 * left part is encoded alone (the candidates there are the same; leftmost-first among
 * equal ranks keeps their relative order), and likewise right of it, so the result is
 * the concatenation. A merge (a, b) joining across the cut makes a token whose string
 * is str(a) + str(b), where str(a) ends with the string of the last initial symbol left
 * of the cut (sL: x's piece, its last <0xXX> byte token, or unk) and str(b) starts with
 * that of the first initial symbol right of it (sR). So: the cut is safe for the merges
 * when no entry (a, b) of the merge table has str(a) ending with str(sL) and str(b)
 * starting with str(sR) — checked exactly against the table, indexed by the pair
 * (last byte of str(a), first byte of str(b)). Nothing is assumed about whitespace:
 * TinyStories-656K merges across spaces and newlines (".\nThe▁"), tok512 across a space
 * and a word (" the"); both still have many places no merge crosses (e.g. "▁|J").
 *
 * llama2.c: one initial symbol per character (its piece, else its bytes), so the above
 * is all; the dummy prefix belongs to the first part only.
 *
 * HF, in pipeline order (tok_hf_encode.c):
 *   - added tokens matched in the raw text: no occurrence may contain the cut or end at
 *     it (checked in the text; one that would need text past len is refused);
 *   - normalizer: only Replace patterns of one character are accepted (then Replace is
 *     a map per character, f, and the normalized text is the Prepend prefix plus f of
 *     each character, so normalizing the parts apart gives the same text); f(x) and
 *     f(y) must not be empty;
 *   - added tokens matched in the normalized text: no pattern may contain the byte pair
 *     at the cut (last byte of f(x), first byte of f(y)) nor end with that last byte;
 *   - Metaspace: ' ' becomes its replacement (one character, else no cuts); with split,
 *     a cut where the replacement starts a word is safe for the rest (words are encoded
 *     apart); otherwise the cut is inside a BPE word:
 *   - inside a word: ignore_merges refuses (a part could be a vocabulary word that the
 *     whole is not); the symbols of the last character left and the first right must
 *     exist (not a character dropped for lack of unk) and not be two unknowns that
 *     fuse_unk would fuse; then the merge rule above.
 * A cut never falls inside a UTF-8 character nor between "\r" and "\n" (so a CRLF
 * before a document separator stays whole for the reader to strip). */
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>

struct TokCut {
    const Tokenizer *t;
    int never;        /* this tokenizer has no provably invisible cut: documents stay whole */
    size_t look;      /* bytes past k a check may read */
    uint32_t *first;  /* 65537 offsets into pair, by (last byte of str(a)) << 8 | first byte of str(b) */
    uint64_t *pair;   /* merge table keys (a << 32 | b) */
};

/* 1 when s[0..len) is exactly one valid UTF-8 character. */
static int one_char(const char *s, size_t len) {
    return len > 0 && (size_t)utf8_char_len((const unsigned char *)s, len) == len;
}

static unsigned pair_bucket(const char *a, int la, const char *b) {
    return (unsigned)(unsigned char)a[la - 1] << 8 | (unsigned char)b[0];
}

TokCut *tok_cut_new(const Tokenizer *t, NptErr *err) {
    TokCut *c = calloc(1, sizeof *c);
    if (!c) {
        npt_fail(err, "out of memory for the tokenizer's cut table");
        return NULL;
    }
    c->t = t;
    c->look = 4;
    const HfRules *r = t->hf;
    if (r) {
        for (int i = 0; i < r->n_ops; i++)
            if (!r->ops[i].prepend && !one_char(r->ops[i].a.s, r->ops[i].a.len)) c->never = 1;
        if (r->metaspace && !one_char(r->meta_rep.s, r->meta_rep.len)) c->never = 1;
        for (int i = 0; i < r->raw.n; i++)
            if (r->raw.pat[i].len > c->look) c->look = r->raw.pat[i].len;
    }
    c->first = calloc(65537, sizeof *c->first);
    c->pair = malloc((t->merges.n ? t->merges.n : 1) * sizeof *c->pair);
    if (!c->first || !c->pair) {
        tok_cut_free(c);
        npt_fail(err, "out of memory for the tokenizer's cut table");
        return NULL;
    }
    for (int pass = 0; pass < 2; pass++) { /* count per bucket, then place */
        for (size_t i = 0; i < t->merges.cap; i++) {
            uint64_t key = t->merges.key[i];
            if (key == UINT64_MAX) continue;
            int la, lb;
            const char *a = tok_piece(t, (int)(key >> 32), &la), *b = tok_piece(t, (int)(uint32_t)key, &lb);
            if (!a || !b || la == 0 || lb == 0) continue; /* an empty string ends no symbol */
            unsigned k = pair_bucket(a, la, b);
            if (pass == 0) c->first[k + 1]++;
            else c->pair[c->first[k]++] = key;
        }
        if (pass == 0)
            for (int k = 0; k < 65536; k++) c->first[k + 1] += c->first[k];
    }
    for (int k = 65536; k > 0; k--) c->first[k] = c->first[k - 1]; /* placing advanced each start to its end */
    c->first[0] = 0;
    return c;
}

void tok_cut_free(TokCut *c) {
    if (!c) return;
    free(c->first);
    free(c->pair);
    free(c);
}

/* 1 when some merge can join a token ending with symbol l to one starting with r. */
static int merge_joins(const TokCut *c, int l, int r) {
    const Tokenizer *t = c->t;
    int ll, lr;
    const char *sl = tok_piece(t, l, &ll), *sr = tok_piece(t, r, &lr);
    if (!sl || !sr || ll == 0 || lr == 0) return 1;
    unsigned k = pair_bucket(sl, ll, sr);
    for (uint32_t i = c->first[k]; i < c->first[k + 1]; i++) {
        int la, lb;
        const char *a = tok_piece(t, (int)(c->pair[i] >> 32), &la), *b = tok_piece(t, (int)(uint32_t)c->pair[i], &lb);
        if (la >= ll && lb >= lr && !memcmp(a + la - ll, sl, (size_t)ll) && !memcmp(b, sr, (size_t)lr)) return 1;
    }
    return 0;
}

/* llama2.c: the initial symbol of character ch that touches the cut (its last when
 * last, else its first), as push_char in tok_llama2c.c makes them. */
static int l2c_symbol(const Tokenizer *t, const char *ch, size_t len, int last) {
    int id = strmap_get(&t->vocab, t, ch, len);
    if (id >= 0) return id;
    return l2c_byte_id(t, (unsigned char)ch[last ? len - 1 : 0]);
}

/* HF: the same as encode_word in tok_hf_encode.c makes them; -1 when the character
 * makes no symbol; *unknown set when it is unk. */
static int hf_symbol(const Tokenizer *t, const char *ch, size_t len, int last, int *unknown) {
    const HfRules *r = t->hf;
    *unknown = 0;
    int id = strmap_get(&t->vocab, t, ch, len);
    if (id >= 0) return id;
    if (hf_bytes_cover(r, ch, len)) return r->byte_id[(unsigned char)ch[last ? len - 1 : 0]];
    *unknown = 1;
    return t->unk;
}

/* f: one character through the normalizer's Replace ops (hf_normalize without Prepend,
 * which acts on the text's start only) into out; its length, or -1 when it does not fit
 * cap (or memory ran out: the cut is then refused, never wrongly allowed). */
static int normalize_char(const HfRules *r, const char *ch, size_t len, char *out, size_t cap) {
    ByteBuf b = {0};
    NptErr err;
    int n = hf_normalize(r, ch, len, 1, &b, &err) || b.n > cap ? -1 : (int)b.n;
    if (n > 0) memcpy(out, b.p, (size_t)n);
    free(b.p);
    return n;
}

/* Start of the last UTF-8 character of s[0..n) (n > 0), or -1 when it is not valid. */
static long last_char(const char *s, size_t n) {
    size_t j = n - 1;
    while (j > 0 && n - j < 4 && ((unsigned char)s[j] & 0xC0) == 0x80) j--;
    return one_char(s + j, n - j) ? (long)j : -1;
}

static int contains_pair(const TokStr *p, char x, char y) {
    for (size_t i = 0; i + 1 < p->len; i++)
        if (p->s[i] == x && p->s[i + 1] == y) return 1;
    return 0;
}

static int hf_cut_ok(const TokCut *c, const char *s, size_t len, size_t k, size_t xs, size_t ylen) {
    const Tokenizer *t = c->t;
    const HfRules *r = t->hf;
    /* added tokens in the raw text: none may contain the cut or end at it */
    for (int i = 0; i < r->raw.n; i++) {
        const TokStr *p = &r->raw.pat[i];
        for (size_t at = k > p->len ? k - p->len : 0; at < k; at++) {
            if (at + p->len > len) return 0; /* would need unread text */
            if (!memcmp(s + at, p->s, p->len)) return 0;
        }
    }
    char fx[64], fy[64];
    int nx = normalize_char(r, s + xs, k - xs, fx, sizeof fx), ny = normalize_char(r, s + k, ylen, fy, sizeof fy);
    if (nx <= 0 || ny <= 0) return 0;
    /* added tokens in the normalized text */
    for (int i = 0; i < r->norm.n; i++) {
        const TokStr *p = &r->norm.pat[i];
        if (contains_pair(p, fx[nx - 1], fy[0]) || p->s[p->len - 1] == fx[nx - 1]) return 0;
    }
    /* the last character left of the cut and the first right of it, pre-tokenized */
    long lx = last_char(fx, (size_t)nx);
    int ly = utf8_char_len((const unsigned char *)fy, (size_t)ny);
    if (lx < 0 || ly <= 0) return 0;
    const char *cx = fx + lx, *cy = fy;
    size_t ncx = (size_t)nx - (size_t)lx, ncy = (size_t)ly;
    if (r->metaspace) {
        const TokStr *rep = &r->meta_rep;
        if (ncx == 1 && cx[0] == ' ') cx = rep->s, ncx = rep->len;
        if (ncy == 1 && cy[0] == ' ') cy = rep->s, ncy = rep->len;
        if (r->meta_split && ncy == rep->len && !memcmp(cy, rep->s, ncy)) return 1; /* a word starts here */
    }
    if (r->ignore_merges) return 0;
    int ux, uy;
    int sl = hf_symbol(t, cx, ncx, 1, &ux), sr = hf_symbol(t, cy, ncy, 0, &uy);
    if (sl < 0 || sr < 0 || (ux && uy && r->fuse_unk)) return 0;
    return !merge_joins(c, sl, sr);
}

int tok_cut_ok(const TokCut *c, const char *s, size_t len, size_t k) {
    if (c->never || k == 0 || k >= len || k + c->look > len) return 0;
    if (((unsigned char)s[k] & 0xC0) == 0x80 || (s[k - 1] == '\r' && s[k] == '\n')) return 0;
    long xs = last_char(s, k);
    int ylen = utf8_char_len((const unsigned char *)s + k, len - k);
    if (xs < 0 || ylen <= 0) return 0;
    const Tokenizer *t = c->t;
    if (t->kind == TOK_HF) return hf_cut_ok(c, s, len, k, (size_t)xs, (size_t)ylen);
    int sl = l2c_symbol(t, s + xs, k - (size_t)xs, 1), sr = l2c_symbol(t, s + k, (size_t)ylen, 0);
    return !merge_joins(c, sl, sr);
}

size_t tok_cut_find(const TokCut *c, const char *s, size_t len, size_t want, size_t *from) {
    if (c->never || len < 2) return 0;
    if (*from == 0) {
        for (size_t k = want < len ? want : len - 1; k > 0; k--)
            if (tok_cut_ok(c, s, len, k)) return k;
        *from = want + 1;
    }
    for (size_t k = *from; k < len; k++)
        if (tok_cut_ok(c, s, len, k)) return k;
    size_t again = len > c->look ? len - c->look : 0; /* refused for want of text */
    if (again > *from) *from = again;
    return 0;
}
