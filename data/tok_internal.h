/* data/tok_internal.h — the Tokenizer struct and the helpers its source files share:
 * tokenizer.c (public API, decoding), tok_bpe.c (hash tables, UTF-8, the merge
 * engine), tok_llama2c.c (the llama2.c .bin), tok_hf.c (loading tokenizer.json) and
 * tok_hf_encode.c (HF normalization, added tokens, pre-tokenization).
 * Not part of npt's public interface. */
#ifndef NPT_TOK_INTERNAL_H
#define NPT_TOK_INTERNAL_H

#include "tokenizer.h"

#include <stddef.h>
#include <stdint.h>

/* Growable byte buffer: piece arenas, normalized text, decoded text. */
typedef struct {
    char *p;
    size_t n, cap;
} ByteBuf;
int bytebuf_append(ByteBuf *b, const void *src, size_t n, NptErr *err);

/* Growable id list: the output of an encode call. */
typedef struct {
    int *v;
    size_t n, cap;
} IntVec;
int intvec_push(IntVec *v, int x, NptErr *err);

/* Piece string -> id, open addressing. Keys are the pieces of the ids stored, read
 * through the owning Tokenizer, so the table holds only ids. The first id put for a
 * string wins (llama2.c puts ids in increasing order: a duplicate piece maps to its
 * lowest id). */
typedef struct {
    int *slot; /* -1 = empty */
    size_t cap;
} StrMap;

/* (left id, right id) -> (rank, merged id); lower rank merges first. */
typedef struct {
    uint64_t *key; /* UINT64_MAX = empty */
    int *rank, *merged;
    size_t cap, n;
} PairMap;

typedef enum { TOK_LLAMA2C, TOK_HF } TokKind;

/* What HF encoding needs beyond pieces and merges (filled by tok_hf.c, used by
 * tok_hf_encode.c). Strings are owned, NUL-terminated, with explicit lengths. */
typedef struct {
    char *s;
    size_t len;
} TokStr;
typedef struct {
    int prepend;   /* 1: Prepend(a); 0: Replace(String a -> b) */
    TokStr a, b;
} NormOp;
typedef struct {   /* added tokens to match, sorted by first byte */
    TokStr *pat;
    int *id;
    int n;
    int first[257]; /* patterns starting with byte c are [first[c], first[c+1]) */
} PatSet;
typedef struct {
    NormOp *ops;
    int n_ops;
    PatSet raw;       /* added tokens with normalized=false: matched in the input text */
    PatSet norm;      /* normalized=true: their normalized content, matched after normalizing */
    int metaspace;    /* Metaspace pre-tokenizer present */
    TokStr meta_rep;  /* its replacement (U+2581) */
    int meta_prepend; /* 0 never, 1 first, 2 always */
    int meta_split;
    int byte_fallback, fuse_unk, ignore_merges;
    int byte_id[256]; /* id of <0xXX>, -1 when absent */
} HfRules;

/* 1 when byte fallback spells s[0..len) (a character missing from the vocabulary):
 * every byte has its <0xXX> token. encode_word (tok_hf_encode.c) and hf_symbol
 * (tok_cut.c) both ask this, so a cut keeps ids unchanged. */
static inline int hf_bytes_cover(const HfRules *r, const char *s, size_t len) {
    int bytes = r->byte_fallback;
    for (size_t i = 0; bytes && i < len; i++) bytes = r->byte_id[(unsigned char)s[i]] >= 0;
    return bytes;
}

struct Tokenizer {
    TokKind kind;
    int vocab_size;
    ByteBuf pieces;    /* all piece strings, each NUL-terminated */
    size_t *piece_off; /* per id; SIZE_MAX for an id with no piece (HF gaps) */
    int *piece_len;
    ByteBuf texts;     /* what each id prints as, NUL-terminated */
    size_t *text_off;
    int16_t *byte_val; /* 0..255 when the id decodes as one raw byte, else -1 */
    StrMap vocab;      /* pieces the merge model may emit (HF: model.vocab only) */
    PairMap merges;
    int *canon;        /* id to use in merge lookups (llama2.c duplicate pieces), or NULL */
    int bos, eos, unk; /* -1 when absent */
    int strip_leading; /* leading spaces dropped from the first token and after BOS */
    HfRules *hf;
};

/* --- tok_bpe.c --- */
const char *tok_piece(const Tokenizer *t, int id, int *len); /* NULL when id has none */
int strmap_build(StrMap *m, const Tokenizer *t, const int *ids, int n, NptErr *err);
int strmap_get(const StrMap *m, const Tokenizer *t, const char *s, size_t len);
void strmap_free(StrMap *m);
int pairmap_init(PairMap *m, size_t expected, NptErr *err);
int pairmap_put(PairMap *m, int left, int right, int rank, int merged, NptErr *err); /* replaces */
int pairmap_get(const PairMap *m, int left, int right, int *rank, int *merged);
void pairmap_free(PairMap *m);

/* Length of the valid UTF-8 character at s (1..4), or 0 if the bytes there are not
 * one (an invalid byte is then treated as a character of its own by the callers). */
int utf8_char_len(const unsigned char *s, size_t n);

/* Scratch buffers of the merge engine, reused across the words of one encode call. */
typedef struct {
    int *prev, *next;
    uint64_t *heap; /* (rank << 32) | position */
    size_t cap, heap_cap;
} BpeScratch;
void bpe_scratch_free(BpeScratch *s);

/* Applies t->merges to ids[0..n) in place: repeatedly the adjacent pair of lowest rank,
 * leftmost among equals, is replaced by its merged id. O(n log n) with a heap. Returns
 * the new count, or -1 on out of memory. */
int bpe_merge(const Tokenizer *t, int *ids, int n, BpeScratch *s, NptErr *err);

/* --- tokenizer.c --- */
/* Allocates the per-id tables of a vocab_size tokenizer (pieces empty, no byte tokens). */
int tok_alloc_tables(Tokenizer *t, int vocab_size, NptErr *err);
int tok_set_piece(Tokenizer *t, int id, const char *s, size_t len, NptErr *err);
/* Sets what id prints as when decoded (ids left unset print nothing). */
int tok_set_text(Tokenizer *t, int id, const char *s, size_t len, NptErr *err);
/* Marks <0xXX> pieces as raw bytes for decoding. */
void tok_find_byte_tokens(Tokenizer *t);

/* --- tok_llama2c.c --- */
/* llama2.c: the id of a byte of a character missing from the vocabulary (ids 3..258
 * are <0x00>..<0xFF>; unk past the vocabulary). push_char (tok_llama2c.c) and
 * l2c_symbol (tok_cut.c) both use it, so a cut keeps ids unchanged. */
static inline int l2c_byte_id(const Tokenizer *t, unsigned char byte) {
    int b = byte + 3;
    return b < t->vocab_size ? b : t->unk;
}

Tokenizer *tok_llama2c_load(const char *path, int vocab_size_hint, NptErr *err);
/* cont: text continues an earlier part of the same document (no dummy-prefix space). */
int tok_llama2c_encode(const Tokenizer *t, const char *text, size_t len, int cont, IntVec *out, BpeScratch *s,
                       NptErr *err);

/* --- tok_hf.c --- */
Tokenizer *tok_hf_load(const char *json_path, int vocab_size_hint, NptErr *err);
void tok_hf_free_rules(HfRules *r);

/* --- tok_hf_encode.c --- */
/* Applies the normalizer ops to s[0..len) into out (cleared first); no_prepend skips
 * the Prepend ops. */
int hf_normalize(const HfRules *r, const char *s, size_t len, int no_prepend, ByteBuf *out, NptErr *err);
/* cont: text continues an earlier part of the same document: its first segment gets no
 * Prepend normalizer and no Metaspace prefix. */
int tok_hf_encode(const Tokenizer *t, const char *text, size_t len, int cont, IntVec *out, BpeScratch *s,
                  NptErr *err);

/* --- tokenizer.c: encoding a long document in parts (data/prepare.c) --- */
/* Encodes text[0..len) (NUL bytes allowed, no BOS) into out (at most cap ids); returns
 * how many ids it needs, or -1 with err set. cont: the text continues a part that
 * ended at a cut tok_cut_find chose, so the ids of the parts, concatenated, are the ids
 * of the whole text encoded at once. */
int tok_encode_part(const Tokenizer *t, const char *text, size_t len, int cont, int *out, size_t cap, NptErr *err);
/* A hash of everything encoding reads: equal hashes, equal ids for every text. */
uint64_t tok_encoding_hash(const Tokenizer *t);

/* --- tok_cut.c --- */
/* Where a long text can be cut without changing its ids (see tok_cut.c). */
typedef struct TokCut TokCut;
TokCut *tok_cut_new(const Tokenizer *t, NptErr *err);
void tok_cut_free(TokCut *c);
/* 1 when encoding s[0..k) and then s[k..) as a continuation gives exactly the ids of
 * encoding s whole, judged from s[0..len) (text past len unknown, so a cut that would
 * need it is refused). */
int tok_cut_ok(const TokCut *c, const char *s, size_t len, size_t k);
/* A cut of s[0..len) (0 < k < len) that tok_cut_ok accepts: when *from is 0, the
 * largest at most want, else (and then) the smallest from max(*from, want + 1) on.
 * Returns 0 when there is none, with *from set to where a later call with more text
 * needs to look again. */
size_t tok_cut_find(const TokCut *c, const char *s, size_t len, size_t want, size_t *from);

#endif
