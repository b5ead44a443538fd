/* data/dataset.c — tokenized windows and their deterministic order (see dataset.h). */
#include "dataset.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char DOC_SEPARATOR[] = "<|endoftext|>";

static int push_tokens(Dataset *ds, size_t *cap, const int *ids, int n, NptErr *err) {
    if (ds->n_tokens + (size_t)n > *cap) {
        size_t nc = (*cap ? *cap * 2 : 1 << 16);
        while (nc < ds->n_tokens + (size_t)n) nc *= 2;
        int *p = realloc(ds->tokens, nc * sizeof(int));
        if (!p) return npt_fail(err, "out of memory holding %zu tokens", nc);
        ds->tokens = p;
        *cap = nc;
    }
    memcpy(ds->tokens + ds->n_tokens, ids, (size_t)n * sizeof(int));
    ds->n_tokens += (size_t)n;
    return 0;
}

/* Splits on lines that are exactly the separator; each document gets BOS in front. */
static int load_text(Dataset *ds, const char *path, const Tokenizer *tok, NptErr *err) {
    size_t len, cap = 0;
    char *text = npt_read_file(path, &len, err);
    if (!text) return -1;
    size_t buf_cap = 0;
    int *buf = NULL, rc = 0;
    char *doc = text;
    while (doc && *doc) {
        char *sep = strstr(doc, DOC_SEPARATOR);
        while (sep && !((sep == text || sep[-1] == '\n') && (sep[sizeof DOC_SEPARATOR - 1] == '\n' || !sep[sizeof DOC_SEPARATOR - 1])))
            sep = strstr(sep + 1, DOC_SEPARATOR);
        char *next = NULL;
        if (sep) {
            next = sep + sizeof DOC_SEPARATOR - 1;
            if (*next == '\n') next++;
            *sep = '\0';
            if (sep > doc && sep[-1] == '\n') sep[-1] = '\0'; /* the newline before the separator */
        }
        size_t doc_len = strlen(doc);
        if (doc_len > 0) {
            if (doc_len + 8 > buf_cap) {
                buf_cap = doc_len + 8;
                int *p = realloc(buf, buf_cap * sizeof(int));
                if (!p) {
                    rc = npt_fail(err, "out of memory tokenizing %s", path);
                    break;
                }
                buf = p;
            }
            int n = tokenizer_encode(tok, doc, 1, buf, (int)buf_cap, err);
            if (n < 0 || n > (int)buf_cap) {
                if (n > (int)buf_cap) npt_fail(err, "%s: document %d needs more tokens than bytes", path, ds->n_documents + 1);
                rc = -1;
                break;
            }
            if (push_tokens(ds, &cap, buf, n, err)) {
                rc = -1;
                break;
            }
            ds->n_documents++;
        }
        doc = next;
    }
    free(buf);
    free(text);
    return rc;
}

static int load_raw(Dataset *ds, const char *path, int width, int vocab_size, NptErr *err) {
    size_t len;
    char *raw = npt_read_file(path, &len, err);
    if (!raw) return -1;
    if (len % (size_t)width) {
        free(raw);
        return npt_fail(err, "%s: %zu bytes is not a whole number of uint%d tokens; is data.format right?", path, len, width * 8);
    }
    ds->n_tokens = len / (size_t)width;
    ds->tokens = malloc((ds->n_tokens ? ds->n_tokens : 1) * sizeof(int));
    if (!ds->tokens) {
        free(raw);
        return npt_fail(err, "out of memory holding %zu tokens of %s", ds->n_tokens, path);
    }
    for (size_t i = 0; i < ds->n_tokens; i++) {
        uint32_t v;
        if (width == 2) {
            uint16_t h;
            memcpy(&h, raw + 2 * i, 2);
            v = h;
        } else {
            memcpy(&v, raw + 4 * i, 4);
        }
        if (v >= (uint32_t)vocab_size) {
            free(raw);
            return npt_fail(err, "%s: token %u at position %zu is outside the model's vocabulary of %d; the file was made with another tokenizer",
                            path, v, i, vocab_size);
        }
        ds->tokens[i] = (int)v;
    }
    free(raw);
    return 0;
}

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Fisher-Yates from a generator seeded by (seed, epoch): any epoch's order can be
 * rebuilt from the cursor alone. */
static void build_order(Dataset *ds) {
    for (size_t i = 0; i < ds->n_windows; i++) ds->order[i] = (uint32_t)i;
    if (!ds->shuffle) return;
    uint64_t state = mix64(ds->seed ^ mix64((uint64_t)ds->epoch + 0x51ED27ull));
    for (size_t i = ds->n_windows - 1; i > 0; i--) {
        state = mix64(state + 0x9E3779B97F4A7C15ull);
        size_t j = (size_t)(state % (i + 1));
        uint32_t t = ds->order[i];
        ds->order[i] = ds->order[j];
        ds->order[j] = t;
    }
}

int dataset_open(Dataset *ds, const char *path, DatasetFormat fmt, const Tokenizer *tok, int vocab_size, int bos,
                 int seq_len, int shuffle, uint64_t seed, NptErr *err) {
    memset(ds, 0, sizeof *ds);
    ds->seq_len = seq_len, ds->bos = bos, ds->shuffle = shuffle, ds->seed = seed;
    int rc = fmt == DATASET_TEXT ? load_text(ds, path, tok, err)
                                 : load_raw(ds, path, fmt == DATASET_U16 ? 2 : 4, vocab_size, err);
    if (rc) {
        dataset_free(ds);
        return -1;
    }
    ds->n_windows = ds->n_tokens / (size_t)(seq_len - 1);
    if (ds->n_windows == 0) {
        size_t have = ds->n_tokens;
        dataset_free(ds);
        return npt_fail(err, "%s holds %zu tokens, fewer than one window of data.seq_len %d", path, have, seq_len);
    }
    if (ds->n_windows > UINT32_MAX) {
        dataset_free(ds);
        return npt_fail(err, "%s: too many windows for this minimal loader", path);
    }
    ds->order = malloc(ds->n_windows * sizeof(uint32_t));
    if (!ds->order) {
        dataset_free(ds);
        return npt_fail(err, "out of memory for the sample order of %s", path);
    }
    build_order(ds);
    return 0;
}

void dataset_free(Dataset *ds) {
    free(ds->tokens);
    free(ds->order);
    memset(ds, 0, sizeof *ds);
}

void dataset_next_batch(Dataset *ds, int B, int *tokens, int64_t *sample_ids) {
    int T = ds->seq_len;
    for (int b = 0; b < B; b++) {
        if ((size_t)ds->pos == ds->n_windows) {
            ds->epoch++;
            ds->pos = 0;
            build_order(ds);
        }
        uint32_t w = ds->order[ds->pos++];
        int *dst = tokens + (size_t)b * T;
        dst[0] = ds->bos;
        memcpy(dst + 1, ds->tokens + (size_t)w * (T - 1), (size_t)(T - 1) * sizeof(int));
        if (sample_ids) sample_ids[b] = w;
    }
}

void dataset_cursor(const Dataset *ds, int64_t cursor[4]) {
    cursor[0] = ds->epoch;
    cursor[1] = ds->pos;
    cursor[2] = (int64_t)ds->n_windows;
    cursor[3] = (int64_t)ds->seed;
}

int dataset_restore(Dataset *ds, const int64_t cursor[4], NptErr *err) {
    if (cursor[2] != (int64_t)ds->n_windows || cursor[3] != (int64_t)ds->seed || cursor[1] < 0 ||
        cursor[1] > (int64_t)ds->n_windows)
        return npt_fail(err, "the checkpoint's data cursor (%lld windows, seed %lld) does not fit this data (%zu windows, seed %llu); resume with the same data and recipe",
                        (long long)cursor[2], (long long)cursor[3], ds->n_windows, (unsigned long long)ds->seed);
    ds->epoch = cursor[0];
    ds->pos = cursor[1];
    build_order(ds);
    return 0;
}
