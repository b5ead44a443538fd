/* tests/test_checkpoint_fixture.h — a checkpoint whose every value follows from a formula,
 * shared by tests/test_checkpoint.c, tests/test_checkpoint_errors.c and (recomputed
 * independently in Python) tests/py/test_checkpoint_h5py.py. Keep the three in sync.
 *
 * Tensor k (in the order: for layer in LAYERS, for part in A, B_add, B_mul, for suffix
 * in "", ".m", ".v"; parameters under adapters/, moments under optimizer/) holds at flat
 * index i the value ((i*37 + k*11) % 1001 - 500) / 64, exact in float32; the AdamW second
 * moments (".v") hold its absolute value, since a checkpoint with a negative one is refused. */
#ifndef NPT_TEST_CHECKPOINT_FIXTURE_H
#define NPT_TEST_CHECKPOINT_FIXTURE_H

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train/checkpoint.h"

#define FIX_MAX_TENSORS 27
#define FIX_HISTORY 50

typedef struct {
    CkptMeta meta;
    CkptTensor t[FIX_MAX_TENSORS];
    int n;
    CkptHistoryRow history[FIX_HISTORY];
} Fixture;

static float fix_value(int k, int64_t i) { return (float)((i * 37 + k * 11) % 1001 - 500) / 64.0f; }

/* safe: additive-only adapters (no B_mul). step: the step attribute. */
static void fix_build(Fixture *f, int safe, int64_t step) {
    static const int layers[] = {2, 3, 4};
    static const char *parts[] = {"A", "B_add", "B_mul"};
    static const char *suffix[] = {"", ".m", ".v"};
    memset(f, 0, sizeof *f);
    CkptMeta *m = &f->meta;
    m->step = step;
    m->tokens_seen = step * 2048;
    snprintf(m->kind, sizeof m->kind, "periodic");
    m->recipe_json = "{\"name\": \"fixture\", \"adapters\": {\"rank\": 4, \"layers\": [2, 3, 4]}}";
    snprintf(m->base_path, sizeof m->base_path, "/work/shared/models/stories260K/stories260K.bin");
    snprintf(m->base_arch, sizeof m->base_arch, "llama");
    snprintf(m->base_format, sizeof m->base_format, "llama2c");
    m->base_fingerprint = 0xfedcba9876543210ULL;
    m->dim = 64, m->hidden_dim = 172, m->n_layers = 5, m->n_heads = 8, m->n_kv_heads = 4, m->vocab_size = 512;
    m->norm_eps = 1e-5, m->rope_theta = 10000;
    snprintf(m->tokenizer_path, sizeof m->tokenizer_path, "/work/runs/init1/tokenizer.json");
    m->tokenizer_bytes = 12345, m->tokenizer_fingerprint = 0x0123456789abcdefULL;
    m->rank = 4;
    m->safe_mode = safe;
    m->modulation_scale = 0.1;
    m->n_npt_layers = 3;
    memcpy(m->npt_layers, layers, sizeof layers);
    snprintf(m->optimizer, sizeof m->optimizer, "adamw");
    m->opt_step = step;
    m->rng_state[0] = 1, m->rng_state[1] = 0x8000000000000005ULL, m->rng_state[2] = 0xdeadbeef;
    m->rng_state[3] = UINT64_MAX;
    m->data_cursor[0] = 3, m->data_cursor[1] = 1234, m->data_cursor[2] = -1, m->data_cursor[3] = 7;
    m->skipped_total = 2;
    m->consecutive_skips = 1;
    m->best_loss = 0.125;
    m->last_loss = 0.25;
    for (int i = 0; i < FIX_HISTORY; i++)
        f->history[i] = (CkptHistoryRow){.step = (i + 1) * 10, .loss = 1.0 / (i + 1), .nmse = 0.5 / (i + 1),
                                         .reg = i * 1e-3, .lr = 5e-5 * (i + 1) / FIX_HISTORY,
                                         .grad_norm = 2.0 + i * 0.25, .skipped = i % 7 == 3};
    m->history = f->history;
    /* the rows up to the step attribute: a history never runs past its checkpoint */
    m->n_history = step / 10 < FIX_HISTORY ? step / 10 : FIX_HISTORY;
    int k = 0;
    for (int l = 0; l < 3; l++)
        for (int p = 0; p < 3; p++)
            for (int s = 0; s < 3; s++, k++) {
                if (safe && p == 2) continue;
                CkptTensor *t = &f->t[f->n++];
                snprintf(t->name, sizeof t->name, "%s/layer_%02d/%s%s", s ? "optimizer" : "adapters", layers[l],
                         parts[p], suffix[s]);
                t->ndim = 2;
                t->shape[0] = p == 0 ? m->rank : m->hidden_dim;
                t->shape[1] = p == 0 ? m->dim : m->rank;
                size_t count = (size_t)(t->shape[0] * t->shape[1]);
                t->data = malloc(count * sizeof(float));
                for (size_t i = 0; i < count; i++) t->data[i] = s == 2 ? fabsf(fix_value(k, (int64_t)i)) : fix_value(k, (int64_t)i);
            }
}

static void fix_free(Fixture *f) {
    for (int i = 0; i < f->n; i++) free(f->t[i].data);
    f->n = 0;
}

/* The fixture's parameters alone (the tensors under adapters/, no optimizer moments),
 * copied into out (FIX_MAX_TENSORS entries; the data stays the fixture's); their count. */
static int __attribute__((unused)) fix_adapters_only(const Fixture *f, CkptTensor *out) {
    int n = 0;
    for (int i = 0; i < f->n; i++)
        if (strncmp(f->t[i].name, "adapters/", 9) == 0) out[n++] = f->t[i];
    return n;
}

/* Number of entries of dir whose name contains needle. */
static int fix_count_entries(const char *dir, const char *needle) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, needle)) n++;
    closedir(d);
    return n;
}

/* Every metadata field the writer was given comes back identical. */
static int __attribute__((unused)) meta_equal(const CkptMeta *a, const CkptMeta *b, char *why, size_t size) {
#define FIELD(f)                                                                                    \
    if (memcmp(&a->f, &b->f, sizeof a->f) != 0) return snprintf(why, size, "field %s differs", #f), 0;
#define STR(f)                                                                                      \
    if (strcmp(a->f, b->f) != 0) return snprintf(why, size, "field %s: \"%.60s\" vs \"%.60s\"", #f, a->f, b->f), 0;
    FIELD(step) FIELD(tokens_seen) STR(kind) STR(recipe_json) STR(base_path) STR(base_arch) STR(base_format)
    FIELD(base_fingerprint) FIELD(dim) FIELD(hidden_dim) FIELD(n_layers) FIELD(n_heads) FIELD(n_kv_heads)
    FIELD(vocab_size) FIELD(norm_eps) FIELD(rope_theta) STR(tokenizer_path) FIELD(tokenizer_bytes) FIELD(tokenizer_fingerprint) FIELD(rank) FIELD(safe_mode) FIELD(modulation_scale) FIELD(n_npt_layers)
    FIELD(npt_layers) STR(optimizer) FIELD(opt_step) FIELD(rng_state) FIELD(data_cursor) FIELD(skipped_total)
    FIELD(consecutive_skips) FIELD(best_loss) FIELD(last_loss) FIELD(n_history)
#undef FIELD
#undef STR
    for (int64_t i = 0; i < a->n_history; i++) {
        const CkptHistoryRow *x = &a->history[i], *y = &b->history[i];
        if (x->step != y->step || memcmp(&x->loss, &y->loss, 8) || memcmp(&x->lr, &y->lr, 8) ||
            memcmp(&x->grad_norm, &y->grad_norm, 8) || memcmp(&x->nmse, &y->nmse, 8) || memcmp(&x->reg, &y->reg, 8) ||
            x->skipped != y->skipped)
            return snprintf(why, size, "history row %lld differs", (long long)i), 0;
    }
    return 1;
}

/* Loaded tensors are exactly the fixture's: same set, shapes, dtype and bits. */
static int __attribute__((unused)) tensors_equal(const Fixture *fx, const CkptTensor *t, int n, char *why, size_t size) {
    if (n != fx->n) return snprintf(why, size, "%d tensors, expected %d", n, fx->n), 0;
    for (int i = 0; i < fx->n; i++) {
        const CkptTensor *want = &fx->t[i], *got = ckpt_find(t, n, want->name);
        if (!got) return snprintf(why, size, "tensor %s missing", want->name), 0;
        if (got->ndim != want->ndim || memcmp(got->shape, want->shape, sizeof got->shape) ||
            strcmp(got->dtype, "float32"))
            return snprintf(why, size, "tensor %s: shape or dtype differs", want->name), 0;
        if (memcmp(got->data, want->data, (size_t)(want->shape[0] * want->shape[1]) * sizeof(float)))
            return snprintf(why, size, "tensor %s: values differ", want->name), 0;
    }
    return 1;
}

#endif
