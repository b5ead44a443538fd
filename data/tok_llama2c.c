/* data/tok_llama2c.c — the llama2.c tokenizer .bin: loading it, and encoding as
 * llama2.c's run.c `encode` does.
 *
 * File: int32 max_token_length, then per token float32 score, int32 length, bytes.
 * The vocabulary size is not stored: it is the model's (vocab_size_hint), or the whole
 * file when the hint is 0.
 *
 * Encoding (run.c): a dummy-prefix space before non-empty text; one symbol per UTF-8
 * character, or per byte (id = byte + 3) when the character is not a piece; then the
 * adjacent pair whose concatenation is the piece of highest score merges, leftmost
 * among equal scores, until no pair concatenates to a piece. The engine in tok_bpe.c
 * does this with a heap: scores become ranks (equal scores share a rank), and every
 * pair (a, b) with a+b a piece is precomputed from the pieces' split points.
 * Deviations, none of which arise for valid UTF-8 and a vocabulary without duplicate
 * pieces: invalid UTF-8 falls back per byte (run.c glues stray continuation bytes onto
 * the previous character); of duplicate pieces the lowest id is used. Pieces scored
 * NaN or <= -1e10 never merge, as in run.c. BOS is 1, EOS 2, unk 0; BOS and EOS
 * decode to nothing; special tokens in the text are not matched (run.c does not). */
#include "tok_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int32_t rd_i32(const char *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Walks the token records; returns how many there are, or -1 with err set. */
static int count_tokens(const char *path, const char *buf, size_t len, int hint, NptErr *err) {
    int32_t max_len = rd_i32(buf);
    if (max_len <= 0) return npt_fail(err, "tokenizer %s starts with max_token_length %d: not a llama2.c tokenizer .bin", path, max_len);
    size_t off = 4;
    int n = 0;
    for (; hint > 0 ? n < hint : off < len; n++) {
        /* ending right after a whole token is an intact file of a smaller vocabulary */
        if (off == len && n == 0) return npt_fail(err, "tokenizer %s holds no tokens", path);
        if (off == len)
            return npt_fail(err, "tokenizer %s holds %d tokens, fewer than the model's vocabulary of %d: it belongs to "
                            "another model (pass the model's own tokenizer)", path, n, hint);
        if (len - off < 8) return npt_fail(err, "tokenizer %s is truncated: it ends inside token %d", path, n);
        int32_t plen = rd_i32(buf + off + 4);
        if (plen < 0 || plen > max_len)
            return npt_fail(err, "tokenizer %s: token %d has length %d, outside 0..max_token_length %d: not a llama2.c tokenizer .bin",
                            path, n, plen, max_len);
        if (len - off - 8 < (size_t)plen)
            return npt_fail(err, "tokenizer %s is truncated: it ends inside token %d", path, n);
        off += 8 + (size_t)plen;
    }
    if (off < len)
        return npt_fail(err, "tokenizer %s holds more than the model's %d tokens; is it this model's tokenizer?", path, hint);
    if (n == 0) return npt_fail(err, "tokenizer %s holds no tokens", path);
    return n;
}

/* Ranks from scores: higher score, lower rank; equal scores, equal rank. */
static int by_score_desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

static int build_merges(Tokenizer *t, const float *score, NptErr *err) {
    int n = t->vocab_size;
    float *sorted = npt_try_malloc((size_t)n * sizeof *sorted, "token scores", err);
    if (!sorted) return -1;
    int m = 0;
    for (int i = 0; i < n; i++)
        if (score[i] > -1e10f) sorted[m++] = score[i]; /* also drops NaN */
    qsort(sorted, (size_t)m, sizeof *sorted, by_score_desc);
    int rc = pairmap_init(&t->merges, (size_t)n, err);
    for (int id = 0; rc == 0 && id < n; id++) {
        int len;
        const char *s = tok_piece(t, id, &len);
        if (t->canon[id] != id || !(score[id] > -1e10f)) continue;
        int lo = 0, hi = m; /* rank = number of distinct scores above this one */
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (sorted[mid] > score[id]) lo = mid + 1;
            else hi = mid;
        }
        for (int k = 1; rc == 0 && k < len; k++) {
            int a = strmap_get(&t->vocab, t, s, (size_t)k);
            int b = strmap_get(&t->vocab, t, s + k, (size_t)(len - k));
            if (a >= 0 && b >= 0) rc = pairmap_put(&t->merges, a, b, lo, id, err);
        }
    }
    free(sorted);
    return rc;
}

Tokenizer *tok_llama2c_load(const char *path, int vocab_size_hint, NptErr *err) {
    size_t len;
    char *buf = npt_read_input(path, "tokenizer", &len, err);
    if (!buf) return NULL;
    Tokenizer *t = calloc(1, sizeof *t);
    float *score = NULL;
    int *all = NULL;
    int n = len < 4 ? npt_fail(err, "tokenizer %s is %zu bytes: too short for a llama2.c tokenizer .bin", path, len)
                    : count_tokens(path, buf, len, vocab_size_hint, err);
    if (!t) npt_fail(err, "out of memory for the tokenizer");
    if (!t || n < 0 || tok_alloc_tables(t, n, err)) goto fail;
    t->kind = TOK_LLAMA2C;
    score = npt_try_malloc((size_t)n * sizeof *score, "token scores", err);
    all = npt_try_malloc((size_t)n * sizeof *all, "token ids", err);
    t->canon = npt_try_malloc((size_t)n * sizeof *t->canon, "token ids", err);
    if (!score || !all || !t->canon) goto fail;
    size_t off = 4;
    for (int id = 0; id < n; id++) {
        memcpy(&score[id], buf + off, 4);
        int32_t plen = rd_i32(buf + off + 4);
        if (tok_set_piece(t, id, buf + off + 8, (size_t)plen, err)) goto fail;
        off += 8 + (size_t)plen;
        all[id] = id;
    }
    if (strmap_build(&t->vocab, t, all, n, err)) goto fail;
    for (int id = 0; id < n; id++) {
        int plen;
        const char *p = tok_piece(t, id, &plen);
        t->canon[id] = strmap_get(&t->vocab, t, p, (size_t)plen);
        int control = id == 1 || id == 2; /* <s>, </s> */
        if (tok_set_text(t, id, p, control ? 0 : (size_t)plen, err)) goto fail;
    }
    if (build_merges(t, score, err)) goto fail;
    tok_find_byte_tokens(t);
    t->unk = 0;
    t->bos = n > 1 ? 1 : -1;
    t->eos = n > 2 ? 2 : -1;
    t->strip_leading = 1;
    free(buf);
    free(score);
    free(all);
    return t;
fail:
    free(buf);
    free(score);
    free(all);
    tokenizer_free(t);
    return NULL;
}

/* One UTF-8 character (or invalid byte) as its piece, else as byte tokens. */
static int push_char(const Tokenizer *t, const char *c, int len, IntVec *out, NptErr *err) {
    int id = strmap_get(&t->vocab, t, c, (size_t)len);
    if (id >= 0) return intvec_push(out, id, err);
    for (int i = 0; i < len; i++)
        if (intvec_push(out, l2c_byte_id(t, (unsigned char)c[i]), err)) return -1;
    return 0;
}

int tok_llama2c_encode(const Tokenizer *t, const char *text, size_t len, int cont, IntVec *out, BpeScratch *s,
                       NptErr *err) {
    if (len == 0) return 0;
    size_t start = out->n;
    if (!cont && push_char(t, " ", 1, out, err)) return -1; /* add_dummy_prefix */
    for (size_t i = 0; i < len;) {
        int clen = utf8_char_len((const unsigned char *)text + i, len - i);
        if (clen == 0) clen = 1;
        if (push_char(t, text + i, clen, out, err)) return -1;
        i += (size_t)clen;
    }
    int n = bpe_merge(t, out->v + start, (int)(out->n - start), s, err);
    if (n < 0) return -1;
    out->n = start + (size_t)n;
    return 0;
}
