/* data/tok_bpe.c — the machinery both tokenizer formats share: the piece and pair
 * hash tables, UTF-8 character splitting, and the merge engine.
 *
 * Merge engine. llama2.c's encode rescans the whole sequence for the best pair after
 * every merge (O(n^2)), and HF's BPE pops pairs from a priority queue. Both orders are
 * "best pair first, leftmost among equals", so one engine serves both once llama2.c's
 * scores are turned into ranks (tok_llama2c.c). Symbols live in a doubly linked list
 * over the input array; the heap holds candidate pairs as one 64-bit key, rank then
 * position of the left symbol. Entries go stale when a neighbour merges; a popped
 * entry is used only if its left symbol is alive and the pair starting there now still
 * merges at that rank (then it is, or ties exactly with, the live pair's own entry —
 * HF's Word::merge_all makes the same check). Every adjacency that appears is pushed
 * when it forms, so the heap sees every live pair: exact, O(n log n). */
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>

int bytebuf_append(ByteBuf *b, const void *src, size_t n, NptErr *err) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return npt_fail(err, "out of memory growing a tokenizer buffer to %zu bytes", cap);
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, src, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

int intvec_push(IntVec *v, int x, NptErr *err) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 256;
        int *p = realloc(v->v, cap * sizeof *p);
        if (!p) return npt_fail(err, "out of memory growing the token list to %zu ids", cap);
        v->v = p;
        v->cap = cap;
    }
    v->v[v->n++] = x;
    return 0;
}

const char *tok_piece(const Tokenizer *t, int id, int *len) {
    if (id < 0 || id >= t->vocab_size || t->piece_off[id] == SIZE_MAX) return NULL;
    if (len) *len = t->piece_len[id];
    return t->pieces.p + t->piece_off[id];
}

/* FNV-1a: pieces are short, and the table is read far more than it is built. */
static uint64_t hash_bytes(const char *s, size_t n) { return npt_fnv1a(NPT_FNV1A_OFFSET, s, n); }

static size_t table_cap(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n + 2) cap *= 2; /* load factor at most 1/2 */
    return cap;
}

int strmap_build(StrMap *m, const Tokenizer *t, const int *ids, int n, NptErr *err) {
    m->cap = table_cap((size_t)n);
    m->slot = npt_try_malloc(m->cap * sizeof *m->slot, "the vocabulary table", err);
    if (!m->slot) return -1;
    for (size_t i = 0; i < m->cap; i++) m->slot[i] = -1;
    for (int k = 0; k < n; k++) {
        int len;
        const char *s = tok_piece(t, ids[k], &len);
        if (!s || strmap_get(m, t, s, (size_t)len) >= 0) continue;
        size_t i = hash_bytes(s, (size_t)len) & (m->cap - 1);
        while (m->slot[i] >= 0) i = (i + 1) & (m->cap - 1);
        m->slot[i] = ids[k];
    }
    return 0;
}

int strmap_get(const StrMap *m, const Tokenizer *t, const char *s, size_t len) {
    if (!m->slot) return -1;
    for (size_t i = hash_bytes(s, len) & (m->cap - 1); m->slot[i] >= 0; i = (i + 1) & (m->cap - 1)) {
        int plen = 0;
        const char *p = tok_piece(t, m->slot[i], &plen);
        if ((size_t)plen == len && memcmp(p, s, len) == 0) return m->slot[i];
    }
    return -1;
}

void strmap_free(StrMap *m) {
    free(m->slot);
    m->slot = NULL;
}

static uint64_t pair_key(int left, int right) {
    return ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
}

int pairmap_init(PairMap *m, size_t expected, NptErr *err) {
    memset(m, 0, sizeof *m);
    m->cap = table_cap(expected);
    m->key = npt_try_malloc(m->cap * sizeof *m->key, "the merge table", err);
    m->rank = npt_try_malloc(m->cap * sizeof *m->rank, "the merge table", err);
    m->merged = npt_try_malloc(m->cap * sizeof *m->merged, "the merge table", err);
    if (!m->key || !m->rank || !m->merged) {
        pairmap_free(m);
        return -1;
    }
    for (size_t i = 0; i < m->cap; i++) m->key[i] = UINT64_MAX;
    return 0;
}

static size_t pair_slot(const PairMap *m, uint64_t key) {
    size_t i = npt_mix64(key) & (m->cap - 1);
    while (m->key[i] != UINT64_MAX && m->key[i] != key) i = (i + 1) & (m->cap - 1);
    return i;
}

int pairmap_put(PairMap *m, int left, int right, int rank, int merged, NptErr *err) {
    if (2 * (m->n + 1) > m->cap) { /* grow: rehash into a table twice the size */
        PairMap big;
        if (pairmap_init(&big, m->cap, err)) return -1;
        for (size_t i = 0; i < m->cap; i++) {
            if (m->key[i] == UINT64_MAX) continue;
            size_t j = pair_slot(&big, m->key[i]);
            big.key[j] = m->key[i];
            big.rank[j] = m->rank[i];
            big.merged[j] = m->merged[i];
            big.n++;
        }
        pairmap_free(m);
        *m = big;
    }
    uint64_t key = pair_key(left, right);
    size_t i = pair_slot(m, key);
    if (m->key[i] == UINT64_MAX) m->n++;
    m->key[i] = key;
    m->rank[i] = rank;
    m->merged[i] = merged;
    return 0;
}

int pairmap_get(const PairMap *m, int left, int right, int *rank, int *merged) {
    if (!m->key) return 0;
    size_t i = pair_slot(m, pair_key(left, right));
    if (m->key[i] == UINT64_MAX) return 0;
    *rank = m->rank[i];
    *merged = m->merged[i];
    return 1;
}

void pairmap_free(PairMap *m) {
    free(m->key);
    free(m->rank);
    free(m->merged);
    m->key = NULL;
    m->rank = m->merged = NULL;
    m->cap = m->n = 0;
}

int utf8_char_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int len;
    unsigned min;
    if (c >= 0xC2 && c <= 0xDF) len = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, min = 0x10000;
    else return 0;
    if ((size_t)len > n) return 0;
    unsigned cp = c & (0x7F >> len);
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

void bpe_scratch_free(BpeScratch *s) {
    free(s->prev);
    free(s->next);
    free(s->heap);
    memset(s, 0, sizeof *s);
}

static int pair_of(const Tokenizer *t, int left, int right, int *rank, int *merged) {
    if (t->canon) left = t->canon[left], right = t->canon[right];
    return pairmap_get(&t->merges, left, right, rank, merged);
}

static int heap_push(BpeScratch *s, size_t *n, uint64_t e, NptErr *err) {
    if (*n == s->heap_cap) {
        size_t cap = s->heap_cap ? s->heap_cap * 2 : 1024;
        uint64_t *h = realloc(s->heap, cap * sizeof *h);
        if (!h) return npt_fail(err, "out of memory growing the merge queue to %zu entries", cap);
        s->heap = h;
        s->heap_cap = cap;
    }
    size_t i = (*n)++;
    while (i > 0 && e < s->heap[(i - 1) / 2]) {
        s->heap[i] = s->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    s->heap[i] = e;
    return 0;
}

static uint64_t heap_pop(BpeScratch *s, size_t *n) {
    uint64_t top = s->heap[0], last = s->heap[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && s->heap[c + 1] < s->heap[c]) c++;
        if (s->heap[c] >= last) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (*n) s->heap[i] = last;
    return top;
}

/* Queues the pair starting at symbol pos, if it merges at all. */
static int push_pair(const Tokenizer *t, const int *ids, BpeScratch *s, size_t *hn, int pos, NptErr *err) {
    int right = s->next[pos], rank, merged;
    if (right < 0 || !pair_of(t, ids[pos], ids[right], &rank, &merged)) return 0;
    return heap_push(s, hn, ((uint64_t)(uint32_t)rank << 32) | (uint32_t)pos, err);
}

int bpe_merge(const Tokenizer *t, int *ids, int n, BpeScratch *s, NptErr *err) {
    if (n < 2) return n;
    if ((size_t)n > s->cap) {
        int *prev = realloc(s->prev, (size_t)n * sizeof *prev);
        if (prev) s->prev = prev;
        int *next = realloc(s->next, (size_t)n * sizeof *next);
        if (next) s->next = next;
        if (!prev || !next) return npt_fail(err, "out of memory for the merge lists of %d symbols", n);
        s->cap = (size_t)n;
    }
    for (int i = 0; i < n; i++) {
        s->prev[i] = i - 1;
        s->next[i] = i + 1 < n ? i + 1 : -1;
    }
    size_t hn = 0;
    for (int i = 0; i + 1 < n; i++)
        if (push_pair(t, ids, s, &hn, i, err)) return -1;
    while (hn > 0) {
        uint64_t e = heap_pop(s, &hn);
        int left = (int)(uint32_t)e, right = s->next[left], rank, merged;
        if (ids[left] < 0 || right < 0 || !pair_of(t, ids[left], ids[right], &rank, &merged) || (uint32_t)rank != e >> 32)
            continue; /* stale: a neighbour merged since this pair was queued */
        ids[left] = merged;
        ids[right] = -1;
        s->next[left] = s->next[right];
        if (s->next[right] >= 0) s->prev[s->next[right]] = left;
        if (s->prev[left] >= 0 && push_pair(t, ids, s, &hn, s->prev[left], err)) return -1;
        if (push_pair(t, ids, s, &hn, left, err)) return -1;
    }
    int out = 0;
    for (int i = 0; i >= 0; i = s->next[i]) ids[out++] = ids[i];
    return out;
}
