/* data/tokenizer.c — the public tokenizer API: format detection, the per-id tables
 * both loaders fill, encode dispatch, and decoding (which is format-independent once
 * the loaders have computed what each id prints as).
 *
 * Decoding rules (both formats): control tokens (BOS, EOS, HF added tokens marked
 * special other than unk) print nothing; unk prints its piece ("<unk>") so lost text
 * stays visible; <0xXX> byte tokens print one raw byte; up to t->strip_leading spaces
 * are dropped from the first token of a sequence and from the token after BOS (the
 * dummy-prefix space: run.c's rule after BOS, HF's Strip decoder at the start).
 * tokenizer_decode fuses byte tokens into bytes and then replaces every byte that is
 * not part of valid UTF-8 with U+FFFD, so its result is always valid UTF-8. */
#include "tok_internal.h"
#include "../util/path.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int tok_alloc_tables(Tokenizer *t, int vocab_size, NptErr *err) {
    size_t n = (size_t)vocab_size;
    t->vocab_size = vocab_size;
    t->piece_off = npt_try_malloc(n * sizeof *t->piece_off, "tokenizer pieces", err);
    t->piece_len = npt_try_malloc(n * sizeof *t->piece_len, "tokenizer pieces", err);
    t->text_off = npt_try_malloc(n * sizeof *t->text_off, "tokenizer texts", err);
    t->byte_val = npt_try_malloc(n * sizeof *t->byte_val, "tokenizer byte table", err);
    if (!t->piece_off || !t->piece_len || !t->text_off || !t->byte_val) return -1;
    for (size_t i = 0; i < n; i++) {
        t->piece_off[i] = t->text_off[i] = SIZE_MAX;
        t->piece_len[i] = 0;
        t->byte_val[i] = -1;
    }
    return 0;
}

int tok_set_piece(Tokenizer *t, int id, const char *s, size_t len, NptErr *err) {
    if (len > (size_t)INT32_MAX) return npt_fail(err, "token %d is longer than 2 GB", id);
    t->piece_off[id] = t->pieces.n;
    t->piece_len[id] = (int)len;
    return bytebuf_append(&t->pieces, s, len + 1, err); /* keep the NUL: pieces print as strings */
}

int tok_set_text(Tokenizer *t, int id, const char *s, size_t len, NptErr *err) {
    t->text_off[id] = t->texts.n;
    if (bytebuf_append(&t->texts, s, len, err)) return -1;
    return bytebuf_append(&t->texts, "", 1, err);
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

void tok_find_byte_tokens(Tokenizer *t) {
    for (int id = 0; id < t->vocab_size; id++) {
        int len;
        const char *p = tok_piece(t, id, &len);
        if (!p || len != 6 || memcmp(p, "<0x", 3) != 0 || p[5] != '>') continue;
        int hi = hex_digit(p[3]), lo = hex_digit(p[4]);
        if (hi >= 0 && lo >= 0) t->byte_val[id] = (int16_t)(hi * 16 + lo);
    }
}

Tokenizer *tokenizer_load(const char *path, int vocab_size_hint, NptErr *err) {
    struct stat st;
    if (stat(path, &st) != 0) {
        npt_fail(err, "tokenizer %s does not exist", path);
        return NULL;
    }
    if (S_ISDIR(st.st_mode)) {
        char json[4096];
        if ((size_t)snprintf(json, sizeof json, "%s/tokenizer.json", path) >= sizeof json) {
            npt_fail(err, "tokenizer path %s is too long", path);
            return NULL;
        }
        if (stat(json, &st) != 0) {
            npt_fail(err, "directory %s has no tokenizer.json; pass the tokenizer file itself", path);
            return NULL;
        }
        return tok_hf_load(json, vocab_size_hint, err);
    }
    if (npt_ends_with(path, ".json")) return tok_hf_load(path, vocab_size_hint, err);
    return tok_llama2c_load(path, vocab_size_hint, err);
}

void tokenizer_free(Tokenizer *t) {
    if (!t) return;
    free(t->pieces.p);
    free(t->piece_off);
    free(t->piece_len);
    free(t->texts.p);
    free(t->text_off);
    free(t->byte_val);
    free(t->canon);
    strmap_free(&t->vocab);
    pairmap_free(&t->merges);
    tok_hf_free_rules(t->hf);
    free(t);
}

int tokenizer_vocab_size(const Tokenizer *t) { return t->vocab_size; }
int tokenizer_bos_id(const Tokenizer *t) { return t->bos; }
int tokenizer_eos_id(const Tokenizer *t) { return t->eos; }

int tokenizer_token_id(const Tokenizer *t, const char *piece) {
    size_t len = strlen(piece);
    int id = strmap_get(&t->vocab, t, piece, len);
    if (id >= 0) return id;
    for (id = 0; id < t->vocab_size; id++) { /* ids outside the merge vocabulary: HF added tokens */
        int plen;
        const char *p = tok_piece(t, id, &plen);
        if (p && (size_t)plen == len && memcmp(p, piece, len) == 0) return id;
    }
    return -1;
}

int tokenizer_encode(const Tokenizer *t, const char *text, int add_bos, int *out, int max_tokens,
                     NptErr *err) {
    if (!text) {
        npt_fail(err, "no text to encode (NULL)");
        return -1;
    }
    if (add_bos && t->bos < 0) {
        npt_fail(err, "this tokenizer defines no BOS token; encode without BOS");
        return -1;
    }
    size_t cap = max_tokens > 0 ? (size_t)max_tokens : 0, bos = add_bos ? 1 : 0;
    if (bos && cap) out[0] = t->bos;
    int n = tok_encode_part(t, text, strlen(text), 0, out + (cap ? bos : 0), cap > bos ? cap - bos : 0, err);
    return n < 0 ? -1 : n + (int)bos;
}

/* The ids never include BOS: the callers (tokenizer_encode, data/prepare.c) put it first. */
int tok_encode_part(const Tokenizer *t, const char *text, size_t len, int cont, int *out, size_t cap, NptErr *err) {
    if (len > (size_t)INT32_MAX / 2)
        return npt_fail(err, "text of %zu bytes is too long to encode at once; split it into documents", len);
    IntVec ids = {0};
    BpeScratch scratch = {0};
    int rc = t->kind == TOK_HF ? tok_hf_encode(t, text, len, cont, &ids, &scratch, err)
                               : tok_llama2c_encode(t, text, len, cont, &ids, &scratch, err);
    bpe_scratch_free(&scratch);
    if (rc == 0 && ids.n > (size_t)INT32_MAX) rc = npt_fail(err, "text needs more than 2^31 tokens");
    if (rc == 0 && ids.n && cap) memcpy(out, ids.v, (ids.n < cap ? ids.n : cap) * sizeof *out);
    free(ids.v);
    return rc == 0 ? (int)ids.n : -1;
}

static uint64_t hash_int(uint64_t h, int64_t v) { return npt_hash_bytes(h, &v, sizeof v); }
static uint64_t hash_str(uint64_t h, const char *s, size_t len) {
    return npt_hash_bytes(hash_int(h, (int64_t)len), s ? s : "", s ? len : 0);
}

/* Every field tok_*_encode reads, each with its length, so no two different
 * tokenizers share the byte stream: kind, special ids, pieces, the piece lookup (which
 * ids the merge model may emit), the merge table, duplicate-piece mapping, and for HF
 * the normalizer, the added tokens matched (raw and normalized, with their ids), the
 * pre-tokenizer, byte fallback, unk fusing and ignore_merges. (Decoding-only fields,
 * such as the decoder and what each id prints as, are left out.) */
uint64_t tok_encoding_hash(const Tokenizer *t) {
    uint64_t h = 0x6e70742d746f6b31ull; /* "npt-tok1" */
    int head[5] = {t->kind, t->vocab_size, t->bos, t->eos, t->unk};
    for (int i = 0; i < 5; i++) h = hash_int(h, head[i]);
    for (int id = 0; id < t->vocab_size; id++) {
        int len;
        const char *p = tok_piece(t, id, &len);
        h = p ? hash_str(h, p, (size_t)len) : hash_int(h, -1);
        if (t->canon) h = hash_int(h, t->canon[id]);
    }
    h = hash_int(h, (int64_t)t->vocab.cap);
    if (t->vocab.slot) h = npt_hash_bytes(h, t->vocab.slot, t->vocab.cap * sizeof *t->vocab.slot);
    h = hash_int(h, (int64_t)t->merges.n);
    for (size_t i = 0; t->merges.key && i < t->merges.cap; i++) { /* only the slots in use: the others hold garbage */
        if (t->merges.key[i] == UINT64_MAX) continue;
        int64_t e[4] = {(int64_t)i, (int64_t)t->merges.key[i], t->merges.rank[i], t->merges.merged[i]};
        h = npt_hash_bytes(h, e, sizeof e);
    }
    const HfRules *r = t->hf;
    if (!r) return h;
    h = hash_int(h, r->n_ops);
    for (int i = 0; i < r->n_ops; i++) {
        h = hash_int(h, r->ops[i].prepend);
        h = hash_str(h, r->ops[i].a.s, r->ops[i].a.len);
        h = hash_str(h, r->ops[i].b.s, r->ops[i].b.len);
    }
    const PatSet *sets[2] = {&r->raw, &r->norm};
    for (int k = 0; k < 2; k++) {
        h = hash_int(h, sets[k]->n);
        for (int i = 0; i < sets[k]->n; i++) {
            h = hash_str(h, sets[k]->pat[i].s, sets[k]->pat[i].len);
            h = hash_int(h, sets[k]->id[i]);
        }
    }
    int flags[6] = {r->metaspace, r->meta_prepend, r->meta_split, r->byte_fallback, r->fuse_unk, r->ignore_merges};
    for (int i = 0; i < 6; i++) h = hash_int(h, flags[i]);
    h = hash_str(h, r->meta_rep.s, r->meta_rep.len);
    h = npt_hash_bytes(h, r->byte_id, sizeof r->byte_id);
    return h;
}

const char *tokenizer_decode_token(const Tokenizer *t, int prev, int token, char *buf) {
    if (token < 0 || token >= t->vocab_size) return "";
    if (t->byte_val[token] >= 0) {
        buf[0] = (char)t->byte_val[token];
        buf[1] = '\0';
        return buf;
    }
    if (t->text_off[token] == SIZE_MAX) return "";
    const char *s = t->texts.p + t->text_off[token];
    if (prev < 0 || prev == t->bos)
        for (int k = 0; k < t->strip_leading && *s == ' '; k++) s++;
    return s;
}

/* Copies src to a new string, each byte outside valid UTF-8 replaced by U+FFFD. */
static char *utf8_sanitize(const char *src, size_t n, NptErr *err) {
    ByteBuf out = {0};
    size_t i = 0;
    while (i < n) {
        int len = utf8_char_len((const unsigned char *)src + i, n - i);
        int rc = len ? bytebuf_append(&out, src + i, (size_t)len, err)
                     : bytebuf_append(&out, "\xEF\xBF\xBD", 3, err);
        if (rc) {
            free(out.p);
            return NULL;
        }
        i += len ? (size_t)len : 1;
    }
    if (!out.p && bytebuf_append(&out, "", 0, err)) return NULL;
    return out.p;
}

char *tokenizer_decode(const Tokenizer *t, const int *ids, int n, NptErr *err) {
    ByteBuf raw = {0};
    char buf[8];
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->vocab_size) {
            npt_fail(err, "token id %d at position %d is outside the vocabulary (0..%d)", ids[i], i,
                     t->vocab_size - 1);
            free(raw.p);
            return NULL;
        }
        const char *s = tokenizer_decode_token(t, i ? ids[i - 1] : -1, ids[i], buf);
        if (bytebuf_append(&raw, s, strlen(s), err)) {
            free(raw.p);
            return NULL;
        }
    }
    char *text = utf8_sanitize(raw.p ? raw.p : "", raw.n, err);
    free(raw.p);
    return text;
}
