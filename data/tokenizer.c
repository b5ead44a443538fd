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
    size_t len = strlen(text);
    if (len > (size_t)INT32_MAX / 2) {
        npt_fail(err, "text of %zu bytes is too long to encode at once; split it into documents", len);
        return -1;
    }
    if (add_bos && t->bos < 0) {
        npt_fail(err, "this tokenizer defines no BOS token; encode without BOS");
        return -1;
    }
    IntVec ids = {0};
    BpeScratch scratch = {0};
    int rc = add_bos ? intvec_push(&ids, t->bos, err) : 0;
    if (rc == 0)
        rc = t->kind == TOK_HF ? tok_hf_encode(t, text, len, &ids, &scratch, err)
                               : tok_llama2c_encode(t, text, len, &ids, &scratch, err);
    bpe_scratch_free(&scratch);
    if (rc == 0 && ids.n > (size_t)INT32_MAX) rc = npt_fail(err, "text needs more than 2^31 tokens");
    if (rc == 0) {
        size_t cap = max_tokens > 0 ? (size_t)max_tokens : 0;
        if (ids.n && cap) memcpy(out, ids.v, (ids.n < cap ? ids.n : cap) * sizeof *out);
    }
    free(ids.v);
    return rc == 0 ? (int)ids.n : -1;
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
