/* data/tok_hf_encode.c — HF encoding up to the merges, in the order of HF tokenizers'
 * pipeline:
 *   1. added tokens with normalized=false are matched in the raw text (leftmost, then
 *      longest);
 *   2. each text segment between them is normalized on its own (so a Prepend applies
 *      to every segment, as in HF);
 *   3. added tokens with normalized=true are matched in the normalized segment by their
 *      normalized content (TinyStories-656K: "<|end_story|>" normalizes to
 *      "▁<|end_story|>", so, exactly as in HF, it is recognised at the start of a text
 *      or after a space, and elsewhere is spelled out by BPE);
 *   4. the pre-tokenizer: none (the piece is one word) or Metaspace (spaces become the
 *      replacement, which is prepended per prepend_scheme; with split, a word starts at
 *      each replacement);
 *   5. per word: one symbol per character — its vocab id, else its UTF-8 bytes as
 *      <0xXX> ids when byte_fallback and all exist, else unk (a run of unknown
 *      characters is one unk when fuse_unk), else nothing — then the merges.
 * A byte that is not part of valid UTF-8 is a character of its own (HF never sees one:
 * Rust strings are valid UTF-8), so it takes the byte-fallback or unk path. */
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>

static int starts_with(const char *s, size_t len, const TokStr *p) {
    return len >= p->len && memcmp(s, p->s, p->len) == 0;
}

int hf_normalize(const HfRules *r, const char *s, size_t len, int no_prepend, ByteBuf *out, NptErr *err) {
    out->n = 0;
    if (bytebuf_append(out, s, len, err)) return -1;
    ByteBuf tmp = {0};
    for (int k = 0; k < r->n_ops; k++) {
        const NormOp *op = &r->ops[k];
        tmp.n = 0;
        if (op->prepend) {
            if (out->n == 0 || no_prepend) continue; /* HF prepends only to non-empty text */
            if (bytebuf_append(&tmp, op->a.s, op->a.len, err) || bytebuf_append(&tmp, out->p, out->n, err)) goto fail;
        } else {
            for (size_t i = 0; i < out->n;) {
                int hit = starts_with(out->p + i, out->n - i, &op->a);
                if (bytebuf_append(&tmp, hit ? op->b.s : out->p + i, hit ? op->b.len : 1, err)) goto fail;
                i += hit ? op->a.len : 1;
            }
        }
        ByteBuf swap = *out;
        *out = tmp;
        tmp = swap;
    }
    free(tmp.p);
    return 0;
fail:
    free(tmp.p);
    return -1;
}

/* Leftmost, then longest, occurrence of a pattern of p in s[from..len). */
static int next_match(const PatSet *p, const char *s, size_t len, size_t from, size_t *at, size_t *mlen, int *id) {
    if (p->n == 0) return 0;
    for (size_t i = from; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        int best = -1;
        for (int k = p->first[c]; k < p->first[c + 1]; k++)
            if (starts_with(s + i, len - i, &p->pat[k]) && (best < 0 || p->pat[k].len > p->pat[best].len)) best = k;
        if (best >= 0) {
            *at = i;
            *mlen = p->pat[best].len;
            *id = p->id[best];
            return 1;
        }
    }
    return 0;
}

/* Step 5. (HF leaves a pending unk behind byte-fallback tokens that follow it; here it
 * keeps its place. Only a vocabulary with some but not all byte tokens can tell.) */
static int encode_word(const Tokenizer *t, const char *w, size_t len, IntVec *out, BpeScratch *s, NptErr *err) {
    const HfRules *r = t->hf;
    if (r->ignore_merges) {
        int id = strmap_get(&t->vocab, t, w, len);
        if (id >= 0) return intvec_push(out, id, err);
    }
    size_t start = out->n;
    int pending_unk = 0;
    for (size_t i = 0; i < len;) {
        int clen = utf8_char_len((const unsigned char *)w + i, len - i);
        if (clen == 0) clen = 1;
        int id = strmap_get(&t->vocab, t, w + i, (size_t)clen), bytes = hf_bytes_cover(r, w + i, (size_t)clen);
        if (id >= 0 || bytes) {
            if (pending_unk && intvec_push(out, t->unk, err)) return -1;
            pending_unk = 0;
            if (id >= 0 && intvec_push(out, id, err)) return -1;
            for (int k = 0; id < 0 && k < clen; k++)
                if (intvec_push(out, r->byte_id[(unsigned char)w[i + k]], err)) return -1;
        } else if (t->unk >= 0) {
            if (pending_unk && !r->fuse_unk && intvec_push(out, t->unk, err)) return -1;
            pending_unk = 1;
        }
        i += (size_t)clen;
    }
    if (pending_unk && intvec_push(out, t->unk, err)) return -1;
    int n = bpe_merge(t, out->v + start, (int)(out->n - start), s, err);
    if (n < 0) return -1;
    out->n = start + (size_t)n;
    return 0;
}

/* Step 4; tmp holds the Metaspace-rewritten text. at_start: 1 at the start of the text,
 * -1 at the start of a continuation part (no prepending), else 0. */
static int encode_piece(const Tokenizer *t, const char *p, size_t len, int at_start, IntVec *out, BpeScratch *s,
                        ByteBuf *tmp, NptErr *err) {
    const HfRules *r = t->hf;
    if (!r->metaspace) return encode_word(t, p, len, out, s, err);
    const TokStr *rep = &r->meta_rep;
    tmp->n = 0;
    int prepend = at_start >= 0 && (r->meta_prepend == 2 || (r->meta_prepend == 1 && at_start));
    if (prepend && !(len && p[0] == ' ') && !starts_with(p, len, rep) && bytebuf_append(tmp, rep->s, rep->len, err))
        return -1;
    for (size_t i = 0; i < len; i++)
        if (bytebuf_append(tmp, p[i] == ' ' ? rep->s : p + i, p[i] == ' ' ? rep->len : 1, err)) return -1;
    if (!r->meta_split) return encode_word(t, tmp->p, tmp->n, out, s, err);
    size_t word = 0;
    for (size_t i = 1; i <= tmp->n; i++) {
        if (i < tmp->n && !starts_with(tmp->p + i, tmp->n - i, rep)) continue;
        if (encode_word(t, tmp->p + word, i - word, out, s, err)) return -1;
        word = i;
    }
    return 0;
}

/* Steps 2-4 for one segment of the raw text; at_start as for encode_piece (-1: the
 * segment continues one of an earlier part, so no Prepend either). */
static int encode_segment(const Tokenizer *t, const char *seg, size_t len, int at_start, IntVec *out, BpeScratch *s,
                          ByteBuf *norm, ByteBuf *tmp, NptErr *err) {
    if (hf_normalize(t->hf, seg, len, at_start < 0, norm, err)) return -1;
    size_t pos = 0;
    while (pos < norm->n) {
        size_t at, mlen;
        int id, found = next_match(&t->hf->norm, norm->p, norm->n, pos, &at, &mlen, &id);
        size_t end = found ? at : norm->n;
        if (end > pos && encode_piece(t, norm->p + pos, end - pos, pos == 0 ? at_start : 0, out, s, tmp, err)) return -1;
        if (found && intvec_push(out, id, err)) return -1;
        pos = found ? at + mlen : norm->n;
    }
    return 0;
}

int tok_hf_encode(const Tokenizer *t, const char *text, size_t len, int cont, IntVec *out, BpeScratch *s, NptErr *err) {
    ByteBuf norm = {0}, tmp = {0};
    size_t pos = 0;
    int rc = 0;
    while (rc == 0 && pos < len) {
        size_t at, mlen;
        int id, found = next_match(&t->hf->raw, text, len, pos, &at, &mlen, &id);
        size_t end = found ? at : len;
        if (end > pos) rc = encode_segment(t, text + pos, end - pos, pos ? 0 : cont ? -1 : 1, out, s, &norm, &tmp, err);
        if (rc == 0 && found) rc = intvec_push(out, id, err);
        pos = found ? at + mlen : len;
    }
    free(norm.p);
    free(tmp.p);
    return rc;
}
