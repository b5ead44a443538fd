/* tests/test_dataset.c — the data pipeline: the O(1)-memory permutation, window
 * layout, seeded order, mixing weights, the validation split, exact cursor restore
 * (with several sources), every source format giving the same windows as the token
 * file it stands for (text via the token cache, JSONL, folders, HDF5), and memory that
 * stays flat as the corpus grows. Documents over 1 MiB (encoded in parts) get the ids
 * of one tokenizer_encode call of the whole text, through data prepare and the token
 * cache, with 1 and 2 threads; CRLF around the separator is the separator's; the
 * cache key tells apart HF tokenizers that differ only in their rules. Token files are written here with known contents.
 *   --rss FILE SEQ_LEN   (for tests/bench/bench_data.sh) open FILE, draw every window
 *                        once, print rss_mb= and seconds= */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <hdf5.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "data/data_internal.h"
#include "test.h"

static char dir[] = "/tmp/npt-dataset-XXXXXX";
enum { VOCAB = 512, BOS = 1 };

static const char *in_dir(const char *name) {
    static char buf[32][512]; /* a ring: results stay valid for 32 calls */
    static int k;
    char *p = buf[k++ & 31];
    snprintf(p, sizeof buf[0], "%s/%s", dir, name);
    return p;
}

/* The one file in dir (the token cache of one source), into out; 0 if not exactly one. */
static int only_file(const char *d, char *out, size_t n) {
    DIR *dir = opendir(d);
    int count = 0;
    out[0] = '\0';
    for (struct dirent *e; dir && (e = readdir(dir));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && count++ == 0) snprintf(out, n, "%s/%s", d, e->d_name);
    if (dir) closedir(dir);
    return count == 1;
}

/* A cursor-mismatch message "... cursor (A) does not fit this data (B) ...": A != B. */
static int sides_differ(const char *msg) {
    const char *a = strstr(msg, "data cursor ("), *b = strstr(msg, "this data (");
    if (!a || !b) return 0;
    a += strlen("data cursor ("), b += strlen("this data (");
    size_t na = strcspn(a, ")"), nb = strcspn(b, ")");
    return na != nb || strncmp(a, b, na) != 0;
}

/* A uint16 token file whose id at position i is value(i). */
static uint16_t value(uint64_t i, int salt) { return (uint16_t)((i * 7 + (uint64_t)salt * 131) % (VOCAB - 3) + 3); }

static const char *write_u16_at(const char *path, uint64_t n, int salt) {
    FILE *f = fopen(path, "wb");
    if (!f) return path;
    uint16_t buf[4096];
    for (uint64_t i = 0; i < n; i += 4096) {
        size_t k = n - i < 4096 ? (size_t)(n - i) : 4096;
        for (size_t j = 0; j < k; j++) buf[j] = value(i + j, salt);
        fwrite(buf, 2, k, f);
    }
    fclose(f);
    return path;
}

static const char *write_u16(const char *name, uint64_t n, int salt) { return write_u16_at(in_dir(name), n, salt); }

static double max_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

static void test_permutation(void) {
    int ok = 1;
    static unsigned char seen[5000];
    const uint64_t sizes[] = {1, 2, 3, 5, 16, 17, 100, 1000, 4097, 5000};
    for (size_t s = 0; s < NPT_ARRAY_LEN(sizes); s++)
        for (uint64_t key = 0; key < 3; key++) {
            uint64_t n = sizes[s];
            memset(seen, 0, n);
            for (uint64_t i = 0; i < n; i++) {
                uint64_t p = data_permute(i, n, key);
                if (p >= n || seen[p]++) ok = 0;
            }
        }
    check(ok, "data_permute is a bijection of [0, n) for n in 1..5000 and several keys");
    int moved = 0, differ = 0;
    for (uint64_t i = 0; i < 1000; i++) {
        moved += data_permute(i, 1000, 7) != i;
        differ += data_permute(i, 1000, 7) != data_permute(i, 1000, 8);
    }
    check(moved > 950 && differ > 950, "it shuffles (%d of 1000 moved) and depends on the key (%d differ)", moved, differ);
}

static void test_windows_and_order(const char *path) {
    enum { N = 1000, T = 11 };
    Dataset a, b;
    NptErr err;
    if (dataset_open(&a, path, DATASET_U16, NULL, VOCAB, BOS, T, 0, 7, 0, &err)) {
        check(0, "open %s: %s", path, err.msg);
        return;
    }
    check(a.n_windows == N / (T - 1), "%d tokens make %zu windows of %d (BOS + %d)", N, a.n_windows, T, T - 1);
    int batch[2 * T];
    int64_t sid[2];
    dataset_next_batch(&a, 2, batch, sid);
    int ok = batch[0] == BOS && batch[T] == BOS;
    for (int t = 1; t < T; t++) ok &= batch[t] == value((uint64_t)t - 1, 0) && batch[T + t] == value((uint64_t)(T - 1 + t - 1), 0);
    check(ok && sid[0] == 0 && sid[1] == 1, "unshuffled windows are BOS + consecutive stream slices");
    int w[T];
    check(dataset_window(&a, 57, w, &err) == 0 && w[0] == BOS && w[1] == value(57 * (T - 1), 0) &&
              w[T - 1] == value(57 * (T - 1) + T - 2, 0),
          "dataset_window(57) is window 57");
    dataset_free(&a);

    dataset_open(&a, path, DATASET_U16, NULL, VOCAB, BOS, T, 1, 42, 0, &err);
    int64_t seq_a[250];
    for (int i = 0; i < 250; i++) dataset_next_batch(&a, 1, batch, &seq_a[i]); /* crosses 2 epochs */
    int differs = 0, perm_ok = 1, seen[100] = {0};
    for (int i = 0; i < 100; i++) {
        differs |= seq_a[i] != i;
        if (seq_a[i] < 0 || seq_a[i] >= 100 || seen[seq_a[i]]++) perm_ok = 0;
    }
    check(differs && perm_ok, "an epoch is a permutation of all windows, not the file order");
    check(memcmp(seq_a, seq_a + 100, 100 * sizeof(int64_t)) != 0, "each epoch has its own order");
    dataset_open(&b, path, DATASET_U16, NULL, VOCAB, BOS, T, 1, 42, 0, &err);
    int64_t same[250];
    for (int i = 0; i < 250; i++) dataset_next_batch(&b, 1, batch, &same[i]);
    check(!memcmp(seq_a, same, sizeof same), "the same seed gives the same order");
    dataset_free(&b);
    dataset_open(&b, path, DATASET_U16, NULL, VOCAB, BOS, T, 1, 43, 0, &err);
    int64_t other[100];
    for (int i = 0; i < 100; i++) dataset_next_batch(&b, 1, batch, &other[i]);
    check(memcmp(other, seq_a, sizeof other) != 0, "another seed gives another order");
    dataset_free(&b);
    dataset_free(&a);
}

/* Three sources mixed 0.7 / 0.2 / 0.1: shares, resume, validation split. */
static void test_mixing(void) {
    enum { T = 17 };
    const char *p[3] = {write_u16("m0.u16", 16 * 3000, 1), write_u16("m1.u16", 16 * 500, 2), write_u16("m2.u16", 16 * 200, 3)};
    DataSourceSpec specs[3];
    const double weight[3] = {0.7, 0.2, 0.1};
    for (int i = 0; i < 3; i++) specs[i] = (DataSourceSpec){p[i], DATASET_AUTO, weight[i] * 10, NULL};
    DataConfig c = {.sources = specs, .n_sources = 3, .seq_len = T, .shuffle = 1, .seed = 5, .vocab_size = VOCAB, .bos = BOS,
                    .valid_fraction = 0.1};
    Dataset a, b;
    NptErr err;
    if (dataset_open_config(&a, &c, &err)) {
        check(0, "open 3 sources: %s", err.msg);
        return;
    }
    check(a.n_windows == 3700 && a.n_valid == 300 + 50 + 20 && a.n_train == 3700 - 370,
          "windows 3000+500+200, validation = 10%% of each (%llu), training %llu", (unsigned long long)a.n_valid,
          (unsigned long long)a.n_train);
    enum { DRAWS = 20000, B = 8 };
    static int64_t ids[DRAWS];
    int batch[B * T], content_ok = 1;
    long count[3] = {0}, in_valid = 0;
    for (int i = 0; i < DRAWS; i += B) {
        dataset_next_batch(&a, B, batch, ids + i);
        for (int k = 0; k < B; k++) {
            int64_t id = ids[i + k];
            int s = id < 3000 ? 0 : id < 3500 ? 1 : 2;
            int64_t w = id - (s == 0 ? 0 : s == 1 ? 3000 : 3500), n_win = s == 0 ? 3000 : s == 1 ? 500 : 200;
            count[s]++;
            in_valid += w >= n_win - (n_win / 10);
            content_ok &= batch[k * T] == BOS && batch[k * T + 1] == value((uint64_t)w * (T - 1), s + 1) &&
                          batch[k * T + T - 1] == value((uint64_t)w * (T - 1) + T - 2, s + 1);
        }
    }
    double share[3];
    for (int s = 0; s < 3; s++) share[s] = (double)count[s] / DRAWS;
    check(fabs(share[0] - 0.7) < 0.015 && fabs(share[1] - 0.2) < 0.015 && fabs(share[2] - 0.1) < 0.015,
          "%d draws: shares %.3f / %.3f / %.3f for weights 0.7 / 0.2 / 0.1 (tolerance 0.015)", DRAWS, share[0], share[1],
          share[2]);
    check(content_ok, "every drawn window holds its source's tokens at its id's position");
    check(in_valid == 0, "training never draws a validation window (%ld did)", in_valid);
    int vw[T], vok = dataset_valid_window(&a, 0, vw, &err) == 0 && vw[1] == value(2700 * (T - 1), 1);
    vok &= dataset_valid_window(&a, 300, vw, &err) == 0 && vw[1] == value(450 * (T - 1), 2);
    vok &= dataset_valid_window(&a, 369, vw, &err) == 0 && vw[1] == value(199 * (T - 1), 3);
    vok &= dataset_valid_window(&a, 370, vw, &err) == -1;
    check(vok, "validation windows: the last 10%% of each source in order, then out of range: %s", err.msg);

    /* resume: a cursor taken after 1234 draws continues the identical sequence */
    int64_t cur[DATASET_CURSOR_MAX];
    dataset_open_config(&b, &c, &err);
    static int64_t again[DRAWS];
    for (int i = 0; i < 1234; i++) dataset_next_batch(&b, 1, batch, &again[i]);
    int n = dataset_cursor(&b, cur, DATASET_CURSOR_MAX);
    dataset_free(&b);
    dataset_open_config(&b, &c, &err);
    check(n == 13 && dataset_restore(&b, cur, n, &err) == 0, "a 3-source cursor has %d values and restores", n);
    for (int i = 1234; i < DRAWS; i += 1) dataset_next_batch(&b, 1, batch, &again[i]);
    check(!memcmp(ids, again, sizeof ids), "after restoring the cursor the next %d draws are identical (batch size 1 vs %d)",
          DRAWS - 1234, B);
    cur[1] = 6;
    check(dataset_restore(&b, cur, n, &err) == -1 && strstr(err.msg, "seed"), "a cursor from another seed is refused: %s", err.msg);
    dataset_cursor(&b, cur, DATASET_CURSOR_MAX);
    cur[4] += 1;
    check(dataset_restore(&b, cur, n, &err) == -1 && strstr(err.msg, "does not fit"), "a cursor of other data is refused: %s", err.msg);
    /* what differs is what the message shows: never the same figures on both sides */
    check(sides_differ(err.msg), "... and its two sides differ: %s", err.msg);
    dataset_cursor(&b, cur, DATASET_CURSOR_MAX);
    cur[1] = 6;
    check(dataset_restore(&b, cur, n, &err) == -1 && sides_differ(err.msg), "another seed: the sides differ: %s", err.msg);
    dataset_cursor(&b, cur, DATASET_CURSOR_MAX);
    cur[4 + 2 * 2] -= 1;
    check(dataset_restore(&b, cur, n, &err) == -1 && sides_differ(err.msg) && strstr(err.msg, "source 3 (") &&
              strstr(err.msg, p[2]),
          "the third source's windows changed: the sides differ and source 3 is named with its file: %s", err.msg);
    dataset_cursor(&b, cur, DATASET_CURSOR_MAX);
    cur[5] += 1; /* one source's draws no longer add up to the total: only a damaged file does that */
    check(dataset_restore(&b, cur, n, &err) == -1 && strstr(err.msg, "inconsistent") && !strstr(err.msg, "does not fit"),
          "a cursor whose draws do not add up is called inconsistent, not a data mismatch with equal sides: %s", err.msg);
    dataset_cursor(&b, cur, DATASET_CURSOR_MAX);
    check(dataset_restore(&b, cur, n - 2, &err) == -1 && strstr(err.msg, "not one this npt writes"),
          "a cursor of the wrong length: %s", err.msg);
    /* other tokens with the same window counts: only the sources' fingerprints tell */
    dataset_cursor(&b, cur, DATASET_CURSOR_MAX);
    cur[4 + 2 * 3 + 1] ^= 1;
    check(dataset_restore(&b, cur, n, &err) == -1 && strstr(err.msg, "other tokens than") && strstr(err.msg, p[1]),
          "a cursor whose second source held other tokens is refused, naming it: %s", err.msg);
    /* the previous version's cursor (no fingerprints: 4 + 2 per source) still restores, flagged */
    dataset_cursor(&b, cur, DATASET_CURSOR_MAX);
    cur[0] = 2;
    int unchecked = dataset_restore(&b, cur, n - 3, &err);
    check(unchecked == 1 && b.drawn == (uint64_t)cur[2], "a version-2 cursor (no fingerprints) restores, reported unchecked (%d): %s",
          unchecked, unchecked < 0 ? err.msg : "");
    int64_t legacy[4] = {3, 1234, 100, 5};
    check(dataset_restore(&b, legacy, 4, &err) == -1 && strstr(err.msg, "older npt"),
          "a 4-value cursor of the previous loader is refused by name: %s", err.msg);
    dataset_free(&b);
    dataset_free(&a);

    DataSourceSpec valid = {p[2], DATASET_AUTO, 1, NULL};
    DataConfig cv = c;
    cv.valid = &valid;
    cv.n_sources = 2;
    if (dataset_open_config(&a, &cv, &err) == 0) {
        check(a.n_train == 3500 && a.n_valid == 200 && dataset_valid_window(&a, 5, vw, &err) == 0 &&
                  vw[1] == value(5 * (T - 1), 3),
              "data.valid file: all of its 200 windows validate, none of the training sources is held out");
        dataset_free(&a);
    } else {
        check(0, "open with a validation file: %s", err.msg);
    }
    DataConfig ev = {.valid = &valid, .seq_len = T, .vocab_size = VOCAB, .bos = BOS};
    check(dataset_open_config(&a, &ev, &err) == 0 && a.n_valid == 200 && dataset_next_batch(&a, 1, batch, NULL) == -1,
          "validation-only data (npt eval): 200 windows, no training draws (%s)", a.io_err.msg);
    dataset_free(&a);
}

static void write_text(const char *path, const char *s) {
    FILE *f = fopen(path, "w");
    fputs(s, f);
    fclose(f);
}

static int files_equal(const char *a, const char *b) {
    size_t na, nb;
    NptErr err;
    char *x = npt_read_file(a, &na, &err), *y = npt_read_file(b, &nb, &err);
    int same = x && y && na == nb && !memcmp(x, y, na);
    free(x);
    free(y);
    return same;
}

/* stories260K's tokenizer, or NULL after a failed check saying why. */
static Tokenizer *load_tok512(void) {
    NptErr err;
    Tokenizer *tok = tokenizer_load(shared_path("models/stories260K/tok512.bin"), VOCAB, &err);
    if (!tok) check(0, "tokenizer: %s", err.msg);
    return tok;
}

/* Text via the token cache, JSONL, a folder, HDF5: each gives the token file's windows. */
static void test_formats(void) {
    NptErr err;
    Tokenizer *tok = load_tok512();
    if (!tok) return;
    const char *story = shared_path("data/tinystories-train-head.txt");
    PrepareOptions o = {.tok = tok, .bos = BOS, .eos = 2};
    PrepareStats st;
    const char *prepared = in_dir("train.u16");
    int rp = data_prepare(story, prepared, &o, &st, &err);
    check(rp == 0 && st.documents == 2316,
          "prepare the TinyStories head: %llu documents (MANIFEST: 2,316), %llu tokens", (unsigned long long)st.documents,
          (unsigned long long)st.tokens);

    /* same recipe on text and on the prepared file: identical batches */
    enum { T = 64, B = 4, STEPS = 50 };
    DataSourceSpec text = {story, DATASET_AUTO, 1, NULL}, toks = {prepared, DATASET_AUTO, 1, NULL};
    DataConfig c = {.sources = &text, .n_sources = 1, .seq_len = T, .shuffle = 1, .seed = 9, .tok = tok, .vocab_size = VOCAB,
                    .bos = BOS, .eos = 2, .cache_dir = in_dir("cache"), .valid_fraction = 0.05};
    Dataset a, b;
    int ra = dataset_open_config(&a, &c, &err);
    c.sources = &toks;
    int rb = dataset_open_config(&b, &c, &err);
    if (ra || rb) {
        check(0, "open text and prepared token file: %s", err.msg);
        tokenizer_free(tok);
        return;
    }
    static int x[B * T], y[B * T];
    int same = a.n_windows == b.n_windows && a.n_valid == b.n_valid;
    for (int s = 0; s < STEPS && same; s++) {
        dataset_next_batch(&a, B, x, NULL);
        dataset_next_batch(&b, B, y, NULL);
        same = !memcmp(x, y, sizeof x);
    }
    for (uint64_t i = 0; i < a.n_valid && same; i++)
        same = dataset_valid_window(&a, i, x, &err) == 0 && dataset_valid_window(&b, i, y, &err) == 0 && !memcmp(x, y, T * sizeof(int));
    check(same, "text (tokenized into the cache) and the prepared token file give identical batches (%d batches of %d x %d) and validation windows",
          STEPS, B, T);
    dataset_free(&a);
    dataset_free(&b);
    /* reused, not rewritten: tokenizing again would write a temporary file and rename
     * it over the cache, a new inode */
    char cached[1024];
    struct stat before = {0}, after = {0};
    int one = only_file(in_dir("cache"), cached, sizeof cached) && stat(cached, &before) == 0;
    c.sources = &text;
    c.log = NULL;
    int reopened = dataset_open_config(&a, &c, &err) == 0;
    int still_one = only_file(in_dir("cache"), cached, sizeof cached) && stat(cached, &after) == 0;
    check(one && reopened && still_one && after.st_ino == before.st_ino &&
              after.st_mtim.tv_sec == before.st_mtim.tv_sec && after.st_mtim.tv_nsec == before.st_mtim.tv_nsec,
          "the cache holds one token file, and reopening reads it without writing it again (inode %lu -> %lu)",
          (unsigned long)before.st_ino, (unsigned long)after.st_ino);
    if (reopened) dataset_free(&a);

    /* JSONL with a custom field and a folder of two text files: same tokens */
    const char *jl = in_dir("docs.jsonl");
    write_text(jl, "{\"body\": \"One day a cat sat.\", \"id\": 1}\n\n{\"body\": \"The dog ran.\\nIt was \\u00e9 fun.\"}\n");
    const char *tx = in_dir("docs.txt");
    write_text(tx, "One day a cat sat.\n<|endoftext|>\nThe dog ran.\nIt was \xc3\xa9 fun.<|endoftext|>\n");
    mkdir(in_dir("folder"), 0755);
    write_text(in_dir("folder/a.txt"), "One day a cat sat.");
    write_text(in_dir("folder/b.txt"), "The dog ran.\nIt was \xc3\xa9 fun.\n<|endoftext|>\n\n<|endoftext|>");
    PrepareOptions oj = o;
    oj.text_field = "body";
    int rj = data_prepare(jl, in_dir("j.u16"), &oj, &st, &err);
    uint64_t docs_j = st.documents;
    int rt = data_prepare(tx, in_dir("t.u16"), &o, &st, &err);
    int rf = data_prepare(in_dir("folder"), in_dir("f.u16"), &o, &st, &err);
    if (rj || rt || rf) printf("NOTE: %s\n", err.msg);
    check(rj == 0 && rt == 0 && rf == 0 && docs_j == 2 && st.documents == 2 && files_equal(in_dir("j.u16"), in_dir("t.u16")) &&
              files_equal(in_dir("f.u16"), in_dir("t.u16")),
          "JSONL (field \"body\", a blank line), text and a folder of two files give the same 2 documents' tokens");
    int want[64], n1 = tokenizer_encode(tok, "One day a cat sat.", 1, want, 64, &err);
    int n2 = tokenizer_encode(tok, "The dog ran.\nIt was \xc3\xa9 fun.", 1, want + n1, 64 - n1, &err);
    TokenFile tf;
    int got[64] = {0};
    int ok = token_file_open(&tf, in_dir("t.u16"), DATASET_AUTO, VOCAB, &err) == 0 && tf.n_tokens == (uint64_t)(n1 + n2) &&
             token_file_read(&tf, 0, tf.n_tokens, got, &err) == 0 && !memcmp(got, want, (size_t)(n1 + n2) * sizeof(int));
    token_file_close(&tf);
    check(ok, "the stream is BOS + encode(document) for each document (%d tokens)", n1 + n2);
    PrepareOptions oe = o;
    oe.append_eos = 1;
    ok = data_prepare(tx, in_dir("e.u16"), &oe, &st, &err) == 0 && token_file_open(&tf, in_dir("e.u16"), DATASET_AUTO, VOCAB, &err) == 0 &&
         tf.n_tokens == (uint64_t)(n1 + n2 + 2) && token_file_read(&tf, 0, tf.n_tokens, got, &err) == 0 && got[n1] == 2 &&
         got[n1 + 1] == BOS && got[n1 + n2 + 1] == 2;
    token_file_close(&tf);
    check(ok, "append_eos ends each document with EOS");

    /* HDF5: prepare to .h5, and a hand-written int32 dataset in a group */
    ok = data_prepare(story, in_dir("train.h5"), &o, &st, &err) == 0;
    DataSourceSpec h5 = {in_dir("train.h5"), DATASET_AUTO, 1, NULL};
    c.sources = &h5;
    ra = dataset_open_config(&a, &c, &err);
    c.sources = &toks;
    rb = dataset_open_config(&b, &c, &err);
    same = ok && ra == 0 && rb == 0;
    for (int s = 0; s < STEPS && same; s++) {
        dataset_next_batch(&a, B, x, NULL);
        dataset_next_batch(&b, B, y, NULL);
        same = !memcmp(x, y, sizeof x);
    }
    check(same, "npt data prepare to .h5, read back by hyperslabs: the same batches as the .u16 file");
    if (ra == 0) dataset_free(&a);
    if (rb == 0) dataset_free(&b);
    hid_t f = H5Fcreate(in_dir("hand.h5"), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t g = H5Gcreate2(f, "corpus", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t n = 1000;
    int32_t vals[1000];
    for (int i = 0; i < 1000; i++) vals[i] = value((uint64_t)i, 0);
    hid_t sp = H5Screate_simple(1, &n, NULL), d = H5Dcreate2(g, "ids", H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, vals);
    H5Dclose(d), H5Sclose(sp), H5Gclose(g), H5Fclose(f);
    char spec[600];
    snprintf(spec, sizeof spec, "%s:/corpus/ids", in_dir("hand.h5"));
    int w[11];
    ok = dataset_open(&a, spec, DATASET_AUTO, NULL, VOCAB, BOS, 11, 0, 1, 0, &err) == 0 && a.n_windows == 100 &&
         dataset_window(&a, 42, w, &err) == 0 && w[1] == value(420, 0) && w[10] == value(429, 0);
    check(ok, "an int32 HDF5 dataset FILE.h5:/corpus/ids: 100 windows, window 42 = ids 420..429 (%s)", ok ? "" : err.msg);
    if (ok) dataset_free(&a);
    tokenizer_free(tok);
}

/* Ids of a token file (uint16, no header) or token cache, malloc'd; NULL on error. */
static int *read_ids(const char *path, size_t *n) {
    TokenFile tf;
    NptErr err;
    int *ids = NULL;
    if (token_file_open(&tf, path, DATASET_AUTO, 0, &err) == 0) {
        ids = malloc((tf.n_tokens + 1) * sizeof *ids);
        if (ids && token_file_read(&tf, 0, tf.n_tokens, ids, &err) != 0) free(ids), ids = NULL;
        *n = (size_t)tf.n_tokens;
        token_file_close(&tf);
    }
    if (!ids) printf("  cannot read %s: %s\n", path, err.msg);
    return ids;
}

/* BOS + tokenizer_encode(text) in one call, malloc'd. */
static int *encode_whole(const Tokenizer *tok, const char *text, size_t *n) {
    NptErr err;
    int need = tokenizer_encode(tok, text, 1, NULL, 0, &err);
    int *ids = need > 0 ? malloc((size_t)need * sizeof *ids) : NULL;
    if (!ids || tokenizer_encode(tok, text, 1, ids, need, &err) != need) {
        printf("  encode: %s\n", err.msg);
        free(ids);
        return NULL;
    }
    *n = (size_t)need;
    return ids;
}

static int same_ids(const int *a, size_t na, const int *b, size_t nb, size_t *at) {
    size_t i = 0;
    while (a && b && i < na && i < nb && a[i] == b[i]) i++;
    *at = i;
    return a && b && na == nb && i == na;
}

/* A document over DATA_MAX_PIECE (1 MiB) is encoded in parts, cut where tok_cut.c
 * proves the ids do not change: npt data prepare and the token cache give exactly BOS +
 * one tokenizer_encode call of the whole text, for both tokenizers, with 1 and 2
 * threads. Built from the shared TinyStories text: the stories joined by newlines
 * (1.5 MB; the cut used to add a dummy-prefix space after a newline) and by spaces
 * (1.3 MB, no newline at all; the cut used to split a word). */
static void test_long_documents(void) {
    NptErr err;
    char *all = npt_read_file(shared_path("data/tinystories-train-head.txt"), NULL, &err);
    Tokenizer *toks[2] = {tokenizer_load(shared_path("models/stories260K/tok512.bin"), VOCAB, &err),
                          tokenizer_load(shared_path("models/TinyStories-656K/tokenizer.json"), 2048, &err)};
    const char *tok_names[2] = {"tok512", "TinyStories-656K"};
    if (!all || !toks[0] || !toks[1]) {
        check(0, "read the TinyStories head and both tokenizers: %s", err.msg);
        free(all);
        tokenizer_free(toks[0]);
        tokenizer_free(toks[1]);
        return;
    }
    /* the stories, without their separator lines, joined by "\n" resp. " " (newlines
     * inside a story become spaces too) */
    size_t n_all = strlen(all);
    char *nl = malloc(n_all + 1), *sp = malloc(n_all + 1);
    size_t a = 0, b = 0;
    for (char *p = all; *p;) {
        char *e = strstr(p, "\n<|endoftext|>");
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len && a) nl[a++] = '\n', sp[b++] = ' ';
        for (size_t i = 0; i < len; i++) nl[a++] = p[i], sp[b++] = p[i] == '\n' ? ' ' : p[i];
        if (!e) break;
        p = e + strlen("\n<|endoftext|>");
        if (*p == '\n') p++;
    }
    a = a > 1500000 ? 1500000 : a;
    while (a && nl[a - 1] != '\n') a--; /* end at a story's end */
    nl[a - 1] = '\0';
    sp[b > 1300000 ? 1300000 : b] = '\0';
    write_text(in_dir("long_nl.txt"), nl);
    write_text(in_dir("long_sp.txt"), sp);
    const char *texts[2] = {nl, sp}, *names[2] = {"long_nl.txt", "long_sp.txt"};
    int max_threads = omp_get_max_threads();
    for (int d = 0; d < 2; d++) {
        for (int k = 0; k < 2; k++) {
            size_t nw = 0, nf = 0, at = 0;
            int *whole = encode_whole(toks[k], texts[d], &nw);
            for (int threads = 1; threads <= 2; threads++) {
                omp_set_num_threads(threads);
                PrepareOptions o = {.tok = toks[k], .bos = tokenizer_bos_id(toks[k]), .eos = tokenizer_eos_id(toks[k])};
                PrepareStats st;
                int rc = data_prepare(in_dir(names[d]), in_dir("long.u16"), &o, &st, &err);
                int *got = rc == 0 ? read_ids(in_dir("long.u16"), &nf) : NULL;
                int same = same_ids(got, nf, whole, nw, &at);
                check(rc == 0 && st.documents == 1 && same,
                      "%s (%zu bytes, one document) with %s, %d thread%s: %zu ids from data prepare, %zu from one "
                      "tokenizer_encode call of the whole text, equal up to %zu (%s)",
                      names[d], strlen(texts[d]), tok_names[k], threads, threads > 1 ? "s" : "", nf, nw, at, rc ? err.msg : "ok");
                free(got);
            }
            /* as the one line of a JSONL file (the text decoded from JSON, cut by encode_text) */
            cJSON *rec = cJSON_CreateObject();
            cJSON_AddStringToObject(rec, "text", texts[d]);
            char *line = cJSON_PrintUnformatted(rec);
            if (line) write_text(in_dir("long.jsonl"), line);
            PrepareOptions oj = {.tok = toks[k], .bos = tokenizer_bos_id(toks[k]), .eos = tokenizer_eos_id(toks[k])};
            PrepareStats sj;
            int rj = line ? data_prepare(in_dir("long.jsonl"), in_dir("long_j.u16"), &oj, &sj, &err) : -1;
            int *gj = rj == 0 ? read_ids(in_dir("long_j.u16"), &nf) : NULL;
            int same_j = same_ids(gj, nf, whole, nw, &at);
            check(rj == 0 && same_j, "%s as one JSONL record (%zu bytes) with %s: %zu ids, equal to the whole text's %zu up to %zu",
                  names[d], line ? strlen(line) : 0, tok_names[k], nf, nw, at);
            free(gj);
            free(line);
            cJSON_Delete(rec);
            /* the training token cache: the same code path */
            char cache[600], file[1200];
            snprintf(cache, sizeof cache, "%s-%d-%d", in_dir("long-cache"), d, k);
            PrepareOptions o = {.tok = toks[k], .bos = tokenizer_bos_id(toks[k]), .eos = tokenizer_eos_id(toks[k])};
            int rc = data_cached_tokens(in_dir(names[d]), cache, &o, file, sizeof file, &err);
            int *got = rc == 0 ? read_ids(file, &nf) : NULL;
            int same = same_ids(got, nf, whole, nw, &at);
            check(rc == 0 && same, "%s with %s through the token cache: %zu ids, equal to the whole text's %zu up to %zu",
                  names[d], tok_names[k], nf, nw, at);
            free(got);
            free(whole);
        }
    }
    omp_set_num_threads(max_threads);
    free(nl);
    free(sp);
    free(all);
    tokenizer_free(toks[0]);
    tokenizer_free(toks[1]);
}

/* One newline on each side of <|endoftext|> belongs to it, LF or CRLF: a CRLF file
 * gives exactly the LF file's ids; CRs elsewhere stay text. Also at the end of the
 * reader's first 1 MiB read, between the separator's "\r" and "\n". */
static void test_crlf(void) {
    NptErr err;
    Tokenizer *tok = load_tok512();
    if (!tok) return;
    PrepareOptions o = {.tok = tok, .bos = BOS, .eos = 2};
    PrepareStats st_lf, st_crlf;
    write_text(in_dir("lf.txt"), "One day.\n<|endoftext|>\nTwo day.\n<|endoftext|>\n");
    write_text(in_dir("crlf.txt"), "One day.\r\n<|endoftext|>\r\nTwo day.\r\n<|endoftext|>\r\n");
    int rc = data_prepare(in_dir("lf.txt"), in_dir("lf.u16"), &o, &st_lf, &err) ||
             data_prepare(in_dir("crlf.txt"), in_dir("crlf.u16"), &o, &st_crlf, &err);
    check(rc == 0 && st_lf.documents == 2 && st_crlf.documents == 2 && files_equal(in_dir("lf.u16"), in_dir("crlf.u16")),
          "CRLF around the separators: the LF file's 2 documents, the same %llu ids (CRLF file: %llu documents, %llu ids)",
          (unsigned long long)st_lf.tokens, (unsigned long long)st_crlf.documents, (unsigned long long)st_crlf.tokens);
    size_t n = 0, nw = 0, at;
    write_text(in_dir("inner.txt"), "A.\r\nB.\r\n<|endoftext|>\r\n\r\nC.\r\n");
    int *got = data_prepare(in_dir("inner.txt"), in_dir("inner.u16"), &o, &st_lf, &err) == 0 ? read_ids(in_dir("inner.u16"), &n) : NULL;
    int *w1 = encode_whole(tok, "A.\r\nB.", &nw), *want = malloc((nw + 64) * sizeof *want);
    size_t n2 = 0;
    int *w2 = encode_whole(tok, "\r\nC.\r\n", &n2);
    if (w1 && w2 && want) memcpy(want, w1, nw * sizeof *want), memcpy(want + nw, w2, n2 * sizeof *want);
    check(w1 && w2 && same_ids(got, n, want, nw + n2, &at) && st_lf.documents == 2,
          "CRs inside documents are text: \"A.\\r\\nB.\" and \"\\r\\nC.\\r\\n\" (one CRLF on each side of the separator is its)");
    free(got), free(w1), free(w2), free(want);
    /* the separator's "\r" the last byte of the first read (1 MiB), its "\n" in the next */
    size_t big = 1u << 20;
    const char *tail = "\r\n<|endoftext|>\r";
    char *text = malloc(big + 16);
    for (size_t i = 0; i < big; i++) text[i] = "Once upon a time.\n"[i % 18];
    memcpy(text + big - strlen(tail), tail, strlen(tail));
    strcpy(text + big, "\nEnd.");
    write_text(in_dir("edge.txt"), text);
    text[big - strlen(tail)] = '\0';
    got = data_prepare(in_dir("edge.txt"), in_dir("edge.u16"), &o, &st_lf, &err) == 0 ? read_ids(in_dir("edge.u16"), &n) : NULL;
    w1 = encode_whole(tok, text, &nw), w2 = encode_whole(tok, "End.", &n2);
    want = malloc((nw + n2 + 1) * sizeof *want);
    if (w1 && w2 && want) memcpy(want, w1, nw * sizeof *want), memcpy(want + nw, w2, n2 * sizeof *want);
    check(w1 && w2 && same_ids(got, n, want, nw + n2, &at) && st_lf.documents == 2,
          "a separator whose CRLF straddles the reader's 1 MiB read: 2 documents, the second exactly \"End.\" (%zu ids, want %zu)",
          n, nw + n2);
    free(got), free(w1), free(w2), free(want), free(text);
    tokenizer_free(tok);
}

/* Writes TinyStories-656K's tokenizer.json with one part changed by edit. */
static const char *tokenizer_variant(const char *name, void (*edit)(cJSON *)) {
    NptErr err;
    char *text = npt_read_file(shared_path("models/TinyStories-656K/tokenizer.json"), NULL, &err);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    if (j && edit) edit(j);
    char *out = j ? cJSON_PrintUnformatted(j) : NULL;
    const char *path = in_dir(name);
    if (out) write_text(path, out);
    free(out);
    cJSON_Delete(j);
    free(text);
    return path;
}

static void edit_normalizer(cJSON *j) { /* the brief's tokB.json: no Prepend, Replace only */
    cJSON_ReplaceItemInObjectCaseSensitive(
        j, "normalizer", cJSON_Parse("{\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\\u2581\"}"));
}
static void edit_pre_tokenizer(cJSON *j) {
    cJSON_ReplaceItemInObjectCaseSensitive(
        j, "pre_tokenizer", cJSON_Parse("{\"type\": \"Metaspace\", \"replacement\": \"\\u2581\", \"prepend_scheme\": \"never\", \"split\": true}"));
}
static void edit_fuse_unk(cJSON *j) {
    cJSON_ReplaceItemInObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "model"), "fuse_unk", cJSON_CreateFalse());
}
static void edit_added_normalized(cJSON *j) { /* <|end_story|> matched in the raw text */
    cJSON *t = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "added_tokens"), 2);
    cJSON_ReplaceItemInObjectCaseSensitive(t, "normalized", cJSON_CreateFalse());
}

/* The token cache's key covers everything that decides the ids: tokenizer.json files
 * with the same vocabulary and merges but another normalizer, pre-tokenizer, fuse_unk
 * or added-token matching each get their own cache file; an identical copy shares it. */
static void test_cache_key_rules(void) {
    static const struct { const char *name, *file; void (*edit)(cJSON *); } v[] = {
        {"the tokenizer.json as it is", "tokA.json", NULL},
        {"an identical copy", "tokA2.json", NULL},
        {"normalizer Replace only (no Prepend)", "tokB.json", edit_normalizer},
        {"a Metaspace pre-tokenizer", "tokC.json", edit_pre_tokenizer},
        {"fuse_unk false", "tokD.json", edit_fuse_unk},
        {"<|end_story|> not normalized", "tokE.json", edit_added_normalized},
    };
    enum { N = sizeof v / sizeof *v };
    const char *text = in_dir("key.txt");
    write_text(text, "Once upon a time, Lily saw a \xe2\x80\x9c" "big\xe2\x80\x9d cat. The end. <|end_story|>\n<|endoftext|>\nTom ran.");
    char paths[N][1200];
    int ok = 1;
    for (int i = 0; i < N; i++) {
        NptErr err;
        Tokenizer *t = tokenizer_load(tokenizer_variant(v[i].file, v[i].edit), 2048, &err);
        PrepareOptions o = {.tok = t, .bos = 1, .eos = 2};
        if (!t || data_cached_tokens(text, in_dir("key-cache"), &o, paths[i], sizeof paths[i], &err)) {
            check(0, "%s: load and tokenize into the cache: %s", v[i].name, err.msg);
            ok = 0;
        }
        tokenizer_free(t);
    }
    if (!ok) return;
    check(!strcmp(paths[0], paths[1]), "an identical copy of tokenizer.json reuses the cache (%s)", paths[1]);
    for (int i = 2; i < N; i++) {
        int distinct = 1;
        for (int k = 0; k < i; k++) distinct &= strcmp(paths[i], paths[k]) != 0;
        check(distinct, "the same vocabulary and merges with %s: a cache of its own (%s)", v[i].name, strrchr(paths[i], '/') + 1);
    }
}

/* Peak RSS while drawing `draws` windows of a corpus of n tokens. */
static double rss_after(const char *path, int T, long draws, double *secs) {
    Dataset ds;
    NptErr err;
    double t0 = npt_now_seconds();
    if (dataset_open(&ds, path, DATASET_AUTO, NULL, VOCAB, BOS, T, 1, 3, 0, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    int *batch = malloc((size_t)64 * T * sizeof(int));
    for (long i = 0; i < draws; i += 64) dataset_next_batch(&ds, 64, batch, NULL);
    free(batch);
    dataset_free(&ds);
    if (secs) *secs = npt_now_seconds() - t0;
    return max_rss_mb();
}

/* rss_after in a fresh child process: ru_maxrss is a high-water mark, so measured in
 * this process it would hide growth below what earlier tests already reached. */
static double rss_in_child(const char *path, int T, long draws, double *secs) {
    double out[2] = {-1, 0};
    int fd[2];
    if (pipe(fd)) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        out[0] = rss_after(path, T, draws, &out[1]);
        _exit(write(fd[1], out, sizeof out) == (ssize_t)sizeof out ? 0 : 1);
    }
    close(fd[1]);
    if (pid < 0 || read(fd[0], out, sizeof out) != (ssize_t)sizeof out) out[0] = -1;
    close(fd[0]);
    if (pid > 0) waitpid(pid, NULL, 0);
    if (secs) *secs = out[1];
    return out[0];
}

/* Opens the text through the cache with warnings into a buffer; returns the windows
 * (0 on error, then err says why) and the first batch in first. */
static size_t open_cached(const DataConfig *c0, int *first, int n, char *log, size_t log_n, NptErr *err) {
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    DataConfig c = *c0;
    c.log = mem;
    Dataset ds;
    size_t windows = 0;
    if (dataset_open_config(&ds, &c, err) == 0) {
        windows = ds.n_windows;
        if (dataset_next_batch(&ds, n, first, NULL)) windows = 0, *err = ds.io_err;
        dataset_free(&ds);
    }
    fclose(mem);
    snprintf(log, log_n, "%s", buf ? buf : "");
    free(buf);
    return windows;
}

/* A token cache cut short, without its header, or damaged is made again from the text
 * (with a warning saying why), never read as a shorter corpus; a source that is gone is
 * an error naming it. */
static void test_cache_damage(void) {
    NptErr err;
    Tokenizer *tok = load_tok512();
    if (!tok) return;
    const char *story = in_dir("story.txt"), *cache = in_dir("cache-damage"), *prepared = in_dir("story.u16");
    char cmd[1200], path[600], log[8192];
    snprintf(cmd, sizeof cmd, "cp %s %s", shared_path("data/tinystories-train-head.txt"), story);
    if (system(cmd) != 0) {
        check(0, "copy the TinyStories head to %s", story);
        tokenizer_free(tok);
        return;
    }
    enum { T = 64, B = 8 };
    DataSourceSpec text = {story, DATASET_AUTO, 1, NULL};
    DataConfig c = {.sources = &text, .n_sources = 1, .seq_len = T, .shuffle = 1, .seed = 3, .tok = tok, .vocab_size = VOCAB,
                    .bos = BOS, .eos = 2, .cache_dir = cache};
    static int want[B * T], got[B * T];
    /* the corpus as npt data prepare writes it (no cache): the windows the cache must give */
    PrepareOptions o = {.tok = tok, .bos = BOS, .eos = 2};
    PrepareStats ps;
    int made = data_prepare(story, prepared, &o, &ps, &err) == 0;
    size_t full = open_cached(&c, want, B, log, sizeof log, &err);
    struct stat st;
    int one = only_file(cache, path, sizeof path) && stat(path, &st) == 0;
    check(made && full > 0 && full == ps.tokens / (T - 1) && one,
          "the text through a new cache: %zu windows (%llu tokens of data prepare / %d) in one file %s (%s)", full,
          (unsigned long long)ps.tokens, T - 1, path, full ? "ok" : err.msg);
    if (!one) {
        tokenizer_free(tok);
        return;
    }
    off_t whole = st.st_size;

    /* cut short: as if a crash, a full disk or a user's truncate hit it */
    if (truncate(path, whole / 2) != 0) perror("truncate");
    size_t again = open_cached(&c, got, B, log, sizeof log, &err);
    check(again == full && !memcmp(got, want, sizeof want) && strstr(log, "warning") && strstr(log, "cut short") &&
              strstr(log, path) && strstr(log, "rebuilding it from") && strstr(log, story),
          "a cache cut to half its size: rebuilt with a warning, %zu windows (want %zu), the same batch: %.300s", again, full, log);
    int alone = only_file(cache, path, sizeof path);
    if (stat(path, &st) != 0) st.st_size = -1;
    check(st.st_size == whole && alone, "the rebuilt cache is whole again (%lld bytes, want %lld) and alone in its folder", (long long)st.st_size,
          (long long)whole);
    again = open_cached(&c, got, B, log, sizeof log, &err);
    check(again == full && !strstr(log, "warning") && strstr(log, "using cached tokens"),
          "a whole cache is used as it is, without a warning: %.200s", log);
    if (truncate(path, 30) != 0) perror("truncate"); /* inside its header */
    again = open_cached(&c, got, B, log, sizeof log, &err);
    check(again == full && !memcmp(got, want, sizeof want) && strstr(log, "cut short") && strstr(log, "rebuilding it from"),
          "a cache cut inside its header (30 bytes): rebuilt, %zu windows: %.300s", again, log);

    /* a file at the cache's name with the raw ids alone, no header (a copy, or cut
     * before its header's end); older npt versions' caches have other names */
    snprintf(cmd, sizeof cmd, "cp %s %s", prepared, path);
    made = made && system(cmd) == 0;
    again = made ? open_cached(&c, got, B, log, sizeof log, &err) : 0;
    check(made && again == full && !memcmp(got, want, sizeof want) && strstr(log, "warning") && strstr(log, "does not start with a token-cache header") &&
              strstr(log, "rebuilding it from"),
          "a cache file without header is rebuilt, %zu windows: %.300s", again, log);
    if (stat(path, &st) != 0) st.st_size = -1;
    check(st.st_size == whole, "... and has its header again (%lld bytes)", (long long)st.st_size);

    /* the same size but damaged bytes in the middle */
    FILE *f = fopen(path, "r+b");
    if (f) {
        fseek(f, whole / 2, SEEK_SET);
        fputc('\x7f', f);
        fputc('\x01', f);
        fclose(f);
    }
    again = open_cached(&c, got, B, log, sizeof log, &err);
    check(again == full && !memcmp(got, want, sizeof want) && strstr(log, "checksum") && strstr(log, "rebuilding it from"),
          "a cache with two bytes overwritten fails its checksum and is rebuilt: %.300s", log);

    /* the source gone: nothing to rebuild from */
    unlink(story);
    again = open_cached(&c, got, B, log, sizeof log, &err);
    check(again == 0 && strstr(err.msg, story) && strstr(err.msg, "No such file") && !strchr(err.msg, '\n'),
          "the text gone: one line naming it: %s", err.msg);
    tokenizer_free(tok);
}

/* The corpora go to $BUILD (a disk), not /tmp (often RAM). */
static void test_flat_memory(void) {
    enum { T = 256 };
    const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
    char small[512], large[512];
    snprintf(small, sizeof small, "%s/test_dataset_small.u16", build);
    snprintf(large, sizeof large, "%s/test_dataset_large.u16", build);
    write_u16_at(small, 1000000, 4);
    write_u16_at(large, 100000000, 5);
    double before = rss_in_child(small, T, 1000000 / (T - 1), NULL);
    double secs, after = rss_in_child(large, T, 100000000 / (T - 1), &secs);
    check(before > 0 && after > 0 && after - before < 16,
          "peak RSS %.1f MB for a 2 MB corpus, %.1f MB for 200 MB (fresh processes, every window drawn once, %.1f s): "
          "+%.1f MB < 16 MB",
          before, after, secs, after - before);
    unlink(small);
    unlink(large);
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "--rss")) {
        TokenFile f;
        NptErr err;
        if (token_file_open(&f, argv[2], DATASET_AUTO, 0, &err)) return fprintf(stderr, "%s\n", err.msg), 1;
        int T = atoi(argv[3]);
        long draws = (long)(f.n_tokens / (uint64_t)(T - 1));
        token_file_close(&f);
        double secs, rss = rss_after(argv[2], T, draws, &secs);
        printf("rss_mb=%.1f seconds=%.2f windows=%ld\n", rss, secs, draws);
        return rss < 0;
    }
    if (!mkdtemp(dir)) return 1;
    test_permutation();
    test_windows_and_order(write_u16("tokens.u16", 1000, 0));
    test_mixing();
    test_formats();
    test_cache_damage();
    test_long_documents();
    test_crlf();
    test_cache_key_rules();
    test_flat_memory();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return test_finish();
}
