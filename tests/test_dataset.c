/* tests/test_dataset.c — training windows: layout, deterministic order, exact cursor
 * restore, and bad token files. Token files are written here with known contents. */
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "data/dataset.h"
#include "test.h"

static char dir[] = "/tmp/npt-dataset-XXXXXX";

static const char *write_u16(const char *name, const uint16_t *ids, size_t n) {
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    fwrite(ids, 2, n, f);
    fclose(f);
    return path;
}

int main(void) {
    if (!mkdtemp(dir)) return 1;
    enum { N = 1000, T = 11 };
    uint16_t ids[N];
    for (int i = 0; i < N; i++) ids[i] = (uint16_t)(i % 500 + 3);
    const char *path = write_u16("tokens.u16", ids, N);
    Dataset a, b;
    NptErr err;
    if (dataset_open(&a, path, DATASET_U16, NULL, 512, 1, T, 0, 7, &err)) {
        check(0, "open %s: %s", path, err.msg);
        return test_finish();
    }
    check(a.n_windows == N / (T - 1), "%d tokens make %zu windows of %d (BOS + %d)", N, a.n_windows, T, T - 1);
    int batch[2 * T];
    int64_t sid[2];
    dataset_next_batch(&a, 2, batch, sid);
    int ok = batch[0] == 1 && batch[T] == 1;
    for (int t = 1; t < T; t++) ok &= batch[t] == ids[t - 1] && batch[T + t] == ids[(T - 1) + t - 1];
    check(ok && sid[0] == 0 && sid[1] == 1, "unshuffled windows are BOS + consecutive stream slices");
    dataset_free(&a);

    /* shuffled: same seed, same order; a restored cursor continues the same sequence */
    dataset_open(&a, path, DATASET_U16, NULL, 512, 1, T, 1, 42, &err);
    dataset_open(&b, path, DATASET_U16, NULL, 512, 1, T, 1, 42, &err);
    int64_t seq_a[250], seq_b[250];
    for (int i = 0; i < 250; i++) dataset_next_batch(&a, 1, batch, &seq_a[i]); /* crosses 2 epochs */
    for (int i = 0; i < 130; i++) dataset_next_batch(&b, 1, batch, &seq_b[i]);
    int64_t cursor[4];
    dataset_cursor(&b, cursor);
    dataset_free(&b);
    dataset_open(&b, path, DATASET_U16, NULL, 512, 1, T, 1, 42, &err);
    check(dataset_restore(&b, cursor, &err) == 0, "cursor restores into the same data");
    for (int i = 130; i < 250; i++) dataset_next_batch(&b, 1, batch, &seq_b[i]);
    check(!memcmp(seq_a, seq_b, sizeof seq_a), "after restoring the cursor (epoch 1, mid-epoch) the order is identical");
    int differs = 0, perm_ok = 1, seen[100] = {0};
    for (int i = 0; i < 100; i++) {
        differs |= seq_a[i] != i;
        if (seq_a[i] < 0 || seq_a[i] >= 100 || seen[seq_a[i]]++) perm_ok = 0;
    }
    check(differs && perm_ok, "an epoch is a permutation of all windows, not the file order");
    check(memcmp(seq_a, seq_a + 100, 100 * sizeof(int64_t)) != 0, "each epoch has its own order");
    dataset_free(&b);
    dataset_open(&b, path, DATASET_U16, NULL, 512, 1, T, 1, 43, &err);
    int64_t other[100];
    for (int i = 0; i < 100; i++) dataset_next_batch(&b, 1, batch, &other[i]);
    check(memcmp(other, seq_a, sizeof other) != 0, "another seed gives another order");
    cursor[3] = 99;
    check(dataset_restore(&b, cursor, &err) == -1 && strstr(err.msg, "seed"), "a cursor from another seed is refused: %s", err.msg);
    dataset_free(&b);
    dataset_free(&a);

    /* bad inputs */
    check(dataset_open(&a, path, DATASET_U16, NULL, 400, 1, T, 0, 1, &err) == -1 && strstr(err.msg, "outside the model's vocabulary"),
          "token ids beyond the vocabulary are refused with their position: %s", err.msg);
    const char *odd = write_u16("odd.u16", ids, 3);
    FILE *f = fopen(odd, "ab");
    fputc(7, f);
    fclose(f);
    check(dataset_open(&a, odd, DATASET_U16, NULL, 512, 1, T, 0, 1, &err) == -1 && strstr(err.msg, "whole number"),
          "a file of odd length is not uint16 tokens: %s", err.msg);
    const char *tiny = write_u16("tiny.u16", ids, 5);
    check(dataset_open(&a, tiny, DATASET_U16, NULL, 512, 1, T, 0, 1, &err) == -1 && strstr(err.msg, "fewer than one window"),
          "too little data for one window: %s", err.msg);
    check(dataset_open(&a, "/nonexistent/x.u16", DATASET_U16, NULL, 512, 1, T, 0, 1, &err) == -1 && strstr(err.msg, "/nonexistent/x.u16"),
          "a missing file is named: %s", err.msg);

    /* text: documents split on <|endoftext|> lines, each led by BOS */
    Tokenizer *tok = tokenizer_load(shared_path("models/stories260K/tok512.bin"), 512, &err);
    char tp[256];
    snprintf(tp, sizeof tp, "%s/docs.txt", dir);
    f = fopen(tp, "w");
    fputs("One day a cat sat.\n<|endoftext|>\nThe dog ran.\n<|endoftext|>\n", f);
    fclose(f);
    if (tok && dataset_open(&a, tp, DATASET_TEXT, tok, 512, 1, 4, 0, 1, &err) == 0) {
        int want[64], n1 = tokenizer_encode(tok, "One day a cat sat.", 1, want, 64, &err);
        int n2 = tokenizer_encode(tok, "The dog ran.", 1, want + n1, 64 - n1, &err);
        check(a.n_documents == 2 && a.n_tokens == (size_t)(n1 + n2) && !memcmp(a.tokens, want, (size_t)(n1 + n2) * sizeof(int)),
              "text file: 2 documents, each encoded with BOS, concatenated (%zu tokens)", a.n_tokens);
        dataset_free(&a);
    } else {
        check(0, "text dataset opens: %s", err.msg);
    }
    tokenizer_free(tok);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return test_finish();
}
