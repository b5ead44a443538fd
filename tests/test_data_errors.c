/* tests/test_data_errors.c — every bad data input gets one clear error naming the file
 * (and line or byte offset), and nothing crashes (run under ASan by `make asan`):
 * unreadable files, invalid UTF-8, NUL bytes, JSONL lines that are not JSON (fatal, or
 * skipped with a warning), missing text fields, HDF5 datasets of the wrong type or
 * shape, token ids outside the vocabulary, odd-sized token files, too little data,
 * bad weights and validation fractions; inputs that are not regular files (a named pipe
 * would block open(), a device or directory is no file to read: npt_open_input). Inputs
 * are written here. */
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/data_internal.h"
#include "test.h"

static char dir[] = "/tmp/npt-data-errors-XXXXXX";
enum { VOCAB = 512, BOS = 1 };

static const char *in_dir(const char *name) {
    static char buf[32][512];
    static int k;
    char *p = buf[k++ & 31];
    snprintf(p, sizeof buf[0], "%s/%s", dir, name);
    return p;
}

static const char *write_bytes(const char *name, const void *data, size_t n) {
    const char *path = in_dir(name);
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
    return path;
}

static const char *write_text(const char *name, const char *s) { return write_bytes(name, s, strlen(s)); }

/* Runs data_prepare; returns its code, err filled. */
static int prepare(const Tokenizer *tok, const char *in, int skip, PrepareStats *st, NptErr *err) {
    PrepareOptions o = {.tok = tok, .bos = BOS, .eos = 2, .skip_bad_records = skip, .log = skip ? stderr : NULL};
    return data_prepare(in, in_dir("out.u16"), &o, st, err);
}

static int says(const NptErr *e, const char *a, const char *b) { return strstr(e->msg, a) && (!b || strstr(e->msg, b)); }

static void test_text(const Tokenizer *tok) {
    NptErr err;
    PrepareStats st;
    int rc = prepare(tok, in_dir("missing.txt"), 0, &st, &err);
    check(rc == -1 && says(&err, "missing.txt", "No such file"), "a missing input is named: %s", err.msg);
    const char *bad = write_text("latin1.txt", "Once upon a time\n<|endoftext|>\nCaf\xe9 au lait\n");
    rc = prepare(tok, bad, 0, &st, &err);
    check(rc == -1 && says(&err, "latin1.txt", "invalid UTF-8 at byte offset 34"),
          "invalid UTF-8 names the file and byte offset 34: %s", err.msg);
    const char *nul = write_bytes("nul.txt", "abc\0def", 7);
    rc = prepare(tok, nul, 0, &st, &err);
    check(rc == -1 && says(&err, "nul.txt", "NUL byte at byte offset 3"), "a NUL byte (binary file) is named: %s", err.msg);
    const char *empty = write_text("empty.txt", "<|endoftext|>\n\n<|endoftext|>\n");
    rc = prepare(tok, empty, 0, &st, &err);
    check(rc == -1 && says(&err, "empty.txt", "no text"), "a file without any document: %s", err.msg);
    mkdir(in_dir("nothing"), 0755);
    rc = prepare(tok, in_dir("nothing"), 0, &st, &err);
    check(rc == -1 && says(&err, "nothing", "no files"), "an empty folder: %s", err.msg);
    PrepareOptions o = {.tok = tok, .bos = BOS, .eos = 2};
    rc = data_prepare(write_text("ok.txt", "Hello."), in_dir("no/such/dir/out.u16"), &o, &st, &err);
    check(rc == -1 && says(&err, "no/such/dir", "cannot create"), "an output in a missing folder: %s", err.msg);
    rc = data_prepare(in_dir("ok.txt"), in_dir("out.txt.json"), &o, &st, &err);
    struct stat out;
    int64_t bytes = rc == 0 && stat(in_dir("out.txt.json"), &out) == 0 ? (int64_t)out.st_size : -1;
    check(rc == 0 && st.tokens > 0 && bytes == 2 * (int64_t)st.tokens,
          "an output of unknown extension gets the vocabulary's width: %lld bytes for %lld tokens (%s)", (long long)bytes,
          (long long)st.tokens, rc ? err.msg : "uint16");
}

/* A document over 64 MiB with no place where the tokenizer's ids would survive a cut
 * (a Replace of two characters allows none): one line naming the file and offset,
 * not a silently different tokenization. The file goes to $BUILD (a disk). */
static void test_uncuttable(void) {
    char tok_path[600], big[600];
    snprintf(tok_path, sizeof tok_path, "%s", write_text("never.json",
             "{\"normalizer\": {\"type\": \"Replace\", \"pattern\": {\"String\": \"ab\"}, \"content\": \"b\"},"
             " \"pre_tokenizer\": null, \"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\","
             " \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"a\": 2, \"b\": 3, \"ab\": 4}, \"merges\": [\"a b\"]}}"));
    snprintf(big, sizeof big, "%s/test_data_errors_uncut.txt", getenv("BUILD") ? getenv("BUILD") : "build");
    NptErr err;
    Tokenizer *t = tokenizer_load(tok_path, 0, &err);
    FILE *f = fopen(big, "wb");
    static char chunk[1 << 16];
    for (size_t i = 0; i < sizeof chunk; i++) chunk[i] = "ab ba\n"[i % 6];
    for (int i = 0; f && i < 65 * 16 + 1; i++) fwrite(chunk, 1, sizeof chunk, f);
    if (f) fwrite("\n<|endoftext|>\nab\n", 1, 18, f), fclose(f);
    PrepareStats st;
    int rc = t && f ? prepare(t, big, 0, &st, &err) : 0;
    check(rc == -1 && says(&err, "test_data_errors_uncut.txt: the document text from byte offset 0 runs over 64 MiB", "<|endoftext|>") &&
              !strchr(err.msg, '\n'),
          "a 65 MiB document a tokenizer offers no invisible cut in: %s", rc || !t ? err.msg : "accepted");
    unlink(big);
    tokenizer_free(t);
}

static void test_jsonl(const Tokenizer *tok) {
    NptErr err;
    PrepareStats st;
    const char *jl = write_text("bad.jsonl", "{\"text\": \"One day.\"}\n{\"text\": \"Two.\"}\n{text: oops}\n{\"text\": \"Four.\"}\n");
    int rc = prepare(tok, jl, 0, &st, &err);
    check(rc == -1 && says(&err, "bad.jsonl:3: not valid JSON", "on_bad_record"),
          "a line that is not JSON is fatal by default, named file:line: %s", err.msg);
    rc = prepare(tok, jl, 1, &st, &err);
    check(rc == 0 && st.bad_records == 1 && st.documents == 3, "with skip it is warned about and skipped: 3 documents, 1 bad line");
    const char *nofield = write_text("nofield.jsonl", "{\"text\": \"A.\"}\n[1, 2]\n{\"txt\": \"typo\"}\n{\"text\": 7}\n");
    rc = prepare(tok, nofield, 0, &st, &err);
    check(rc == -1 && says(&err, "nofield.jsonl:2", "not a JSON object"), "a JSON array line: %s", err.msg);
    rc = prepare(tok, nofield, 1, &st, &err);
    check(rc == 0 && st.bad_records == 3 && st.documents == 1, "skip: the array, the missing field and the number are skipped");
    PrepareOptions o = {.tok = tok, .bos = BOS, .eos = 2, .text_field = "body"};
    rc = data_prepare(nofield, in_dir("out.u16"), &o, &st, &err);
    check(rc == -1 && says(&err, "nofield.jsonl:1", "no field \"body\""), "a missing configured field: %s", err.msg);
    /* one JSON value per line: more after it (a second record, junk, records separated
     * by a bare CR) is a bad line, never silently dropped */
    static const struct { const char *file, *text, *says, *what; } more[] = {
        {"two.jsonl", "{\"text\": \"zero\"}\n{\"text\": \"one\"}{\"text\": \"two\"}\n", "two.jsonl:2: not valid JSON",
         "two records on one line"},
        {"junk.jsonl", "{\"text\": \"zero\"}\n{\"text\": \"one\"} xyz\n", "junk.jsonl:2: not valid JSON", "text after the record"},
        {"cr.jsonl", "{\"text\": \"zero\"}\n{\"text\":\"one\"}\r{\"text\":\"two\"}\r", "cr.jsonl:2: not valid JSON",
         "records separated by a bare CR"},
    };
    for (size_t i = 0; i < sizeof more / sizeof *more; i++) {
        const char *f = write_text(more[i].file, more[i].text);
        rc = prepare(tok, f, 0, &st, &err);
        check(rc == -1 && says(&err, more[i].says, "more text after the JSON value") && (i != 2 || says(&err, "bare CR", NULL)),
              "%s: an error naming file:line: %s", more[i].what, err.msg);
        rc = prepare(tok, f, 1, &st, &err);
        check(rc == 0 && st.bad_records == 1 && st.documents == 1, "... with skip: the line is warned about, skipped and counted (%llu bad, %llu documents)",
              (unsigned long long)st.bad_records, (unsigned long long)st.documents);
    }
    const char *ws = write_text("ws.jsonl", "{\"text\": \"one\"}  \t\r\n{\"text\": \"two\"}\t\n");
    rc = prepare(tok, ws, 0, &st, &err);
    check(rc == 0 && st.documents == 2, "spaces, tabs and CRLF after a record are fine: 2 documents (%s)", rc ? err.msg : "ok");
    /* \u0000 in the text field: cJSON's strings end at a NUL, so the text would be cut */
    const char *nul = write_text("nul.jsonl", "{\"text\": \"fine\"}\n{\"id\": 2, \"text\": \"before\\u0000after\"}\n");
    rc = prepare(tok, nul, 0, &st, &err);
    check(rc == -1 && says(&err, "nul.jsonl:2", "NUL"), "\\u0000 in the text field: an error naming file:line: %s", err.msg);
    rc = prepare(tok, nul, 1, &st, &err);
    check(rc == 0 && st.bad_records == 1 && st.documents == 1, "... with skip: skipped and counted");
    const char *ok = write_text("nul_ok.jsonl", "{\"text\": \"a\\\\u0000b\", \"meta\": \"x\\u0000y\"}\n");
    PrepareOptions po = {.tok = tok, .bos = BOS, .eos = 2};
    rc = data_prepare(ok, in_dir("nul_ok.u16"), &po, &st, &err);
    int ids[64], want[64];
    int n = tokenizer_encode(tok, "a\\u0000b", 1, want, 64, &err);
    FILE *f = fopen(in_dir("nul_ok.u16"), "rb");
    uint16_t raw[64];
    size_t got = f ? fread(raw, 2, 64, f) : 0;
    if (f) fclose(f);
    for (size_t i = 0; i < got; i++) ids[i] = raw[i];
    check(rc == 0 && (int)got == n && !memcmp(ids, want, (size_t)n * sizeof *ids),
          "an escaped backslash before u0000 is text (\"a\\\\u0000b\"), and \\u0000 in another field is no concern (%s)", rc ? err.msg : "ok");
    const char *utf = write_text("utf.jsonl", "{\"text\": \"fine\"}\n{\"text\": \"bad \xc3\x28 byte\"}\n");
    rc = prepare(tok, utf, 1, &st, &err);
    check(rc == -1 && says(&err, "utf.jsonl:2", "invalid UTF-8 at byte offset 31"),
          "invalid UTF-8 in JSONL is fatal even with skip, with line and offset: %s", err.msg);
}

static int open_u16(const char *path, int vocab, NptErr *err) {
    Dataset ds;
    int rc = dataset_open(&ds, path, DATASET_AUTO, NULL, vocab, BOS, 8, 1, 1, 0, err);
    if (rc == 0) dataset_free(&ds);
    return rc;
}

static void test_token_files(const Tokenizer *tok) {
    NptErr err;
    uint16_t ids[100];
    for (int i = 0; i < 100; i++) ids[i] = (uint16_t)(i + 3);
    ids[77] = 600;
    const char *p = write_bytes("big_ids.u16", ids, sizeof ids);
    check(open_u16(p, VOCAB, &err) == -1 && says(&err, "big_ids.u16: token 600 at position 77", "vocabulary of 512"),
          "an id beyond the vocabulary is refused with its position: %s", err.msg);
    check(open_u16(write_bytes("odd.u16", ids, 7), VOCAB, &err) == -1 && says(&err, "odd.u16", "whole number"),
          "a file of odd length is not uint16 tokens: %s", err.msg);
    check(open_u16(write_bytes("tiny.u16", ids, 10), VOCAB, &err) == -1 && says(&err, "tiny.u16", "fewer than one window"),
          "too little data for one window: %s", err.msg);
    check(open_u16(in_dir("absent.u16"), VOCAB, &err) == -1 && says(&err, "absent.u16", "No such file"), "a missing file: %s", err.msg);
    Dataset ds;
    /* text read through the token cache: the message names the user's file first */
    const char *short_text = write_text("short.txt", "Once upon a time.");
    DataSourceSpec st = {short_text, DATASET_AUTO, 1, NULL};
    DataConfig ct = {.sources = &st, .n_sources = 1, .seq_len = 64, .vocab_size = VOCAB, .bos = BOS, .eos = 2, .tok = tok,
                     .cache_dir = in_dir("cache")};
    check(dataset_open_config(&ds, &ct, &err) == -1 && !strncmp(err.msg, short_text, strlen(short_text)) &&
              says(&err, "fewer than one window", "token cache"),
          "too little text for one window names the text file, then its token cache: %s", err.msg);
    check(dataset_open(&ds, in_dir("nothing"), DATASET_U16, NULL, VOCAB, BOS, 8, 0, 1, 0, &err) == -1 &&
              says(&err, "nothing", "directory"),
          "a folder given as a token file: %s", err.msg);
    check(dataset_open(&ds, write_text("t.txt", "Hello there."), DATASET_AUTO, NULL, VOCAB, BOS, 8, 0, 1, 0, &err) == -1 &&
              says(&err, "t.txt", "needs a tokenizer"),
          "text without a tokenizer: %s", err.msg);
    DataSourceSpec s[2] = {{in_dir("big_ids.u16"), DATASET_U16, 1, NULL}, {in_dir("odd.u16"), DATASET_AUTO, 0, NULL}};
    ids[77] = 77;
    write_bytes("big_ids.u16", ids, sizeof ids);
    DataConfig c = {.sources = s, .n_sources = 2, .seq_len = 8, .vocab_size = VOCAB, .bos = BOS, .tok = tok};
    check(dataset_open_config(&ds, &c, &err) == -1 && says(&err, "weight 0", "> 0"), "a weight of 0: %s", err.msg);
    c.n_sources = 1;
    s[0].format = DATASET_U32;
    check(dataset_open_config(&ds, &c, &err) == -1 && says(&err, "big_ids.u16: token", "outside"),
          "uint16 ids read as uint32 (wrong format) fail the vocabulary check: %s", err.msg);
    s[0].format = DATASET_U16;
    c.valid_fraction = 0.99;
    check(dataset_open_config(&ds, &c, &err) == -1 && says(&err, "valid_fraction", "no training window"),
          "a validation fraction leaving no training window: %s", err.msg);
    c.valid_fraction = 0;
    c.n_sources = DATASET_MAX_SOURCES + 1;
    check(dataset_open_config(&ds, &c, &err) == -1 && says(&err, "at most", NULL), "too many sources: %s", err.msg);
    c.n_sources = 1;
    c.seq_len = 1;
    check(dataset_open_config(&ds, &c, &err) == -1 && says(&err, "seq_len", NULL), "windows of one token: %s", err.msg);
}

static void write_h5(const char *name, hid_t type, int rank, const void *data, hid_t mem) {
    hid_t f = H5Fcreate(in_dir(name), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims[2] = {rank == 1 ? 64 : 8, 8};
    hid_t sp = H5Screate_simple(rank, dims, NULL), d = H5Dcreate2(f, "tokens", type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    H5Dclose(d), H5Sclose(sp), H5Fclose(f);
}

/* The suite has no timeout of its own: a blocking open() of the pipe fails the test
 * after 20 s instead of hanging it. */
static void on_alarm(int sig) {
    static const char msg[] = "FAIL: npt_open_input or a reader blocked on a named pipe for 20 s\n";
    ssize_t ignored = write(STDOUT_FILENO, msg, sizeof msg - 1); /* nothing else is safe in a handler */
    (void)sig, (void)ignored;
    _exit(1);
}

/* npt_open_input: a regular file opens (blocking reads again); anything else is -2 with a
 * message naming it, a failed open -1 with errno kept. The pipe has no writer: a blocking
 * open() would hang here, so this also proves the open does not block. */
static void test_not_regular(const Tokenizer *tok) {
    NptErr err;
    const char *fifo = in_dir("pipe.u16"), *file = write_text("plain.txt", "Once upon a time.\n");
    check(mkfifo(fifo, 0600) == 0, "mkfifo %s", fifo);
    int fd = npt_open_input(file, "text", &err);
    int fl = fd >= 0 ? fcntl(fd, F_GETFL) : -1, fdfl = fd >= 0 ? fcntl(fd, F_GETFD) : -1;
    check(fd >= 0 && fl >= 0 && !(fl & O_NONBLOCK) && (fdfl & FD_CLOEXEC), "a regular file opens, blocking, close-on-exec");
    if (fd >= 0) close(fd);
    check(npt_check_input(file, "text", &err) == 0, "npt_check_input passes a regular file");
    errno = 0;
    check(npt_open_input(in_dir("absent"), "text", &err) == -1 && errno == ENOENT && says(&err, "cannot open", "absent: No such file"),
          "a missing file: -1, errno ENOENT: %s", err.msg);
    check(npt_open_input(fifo, "token file", &err) == -2 && errno != EISDIR &&
              says(&err, "pipe.u16: is a named pipe, not a regular file; give the token file as a regular file", NULL),
          "a named pipe: -2, at once: %s", err.msg);
    check(npt_check_input(dir, "text", &err) == -2 && errno == EISDIR && says(&err, "is a directory, not a regular file", NULL),
          "a directory: -2, errno EISDIR: %s", err.msg);
    check(npt_open_input("/dev/null", "model", &err) == -2 && says(&err, "/dev/null: is a character device", "give the model"),
          "a character device: %s", err.msg);
    size_t len;
    check(npt_read_input(fifo, "recipe", &len, &err) == NULL && says(&err, "named pipe", "give the recipe"),
          "npt_read_input refuses a pipe: %s", err.msg);
    check(open_u16(fifo, VOCAB, &err) == -1 && says(&err, "pipe.u16: is a named pipe", NULL), "a pipe as a token file: %s", err.msg);
    PrepareStats st;
    check(prepare(tok, fifo, 0, &st, &err) == -1 && says(&err, "pipe.u16: is a named pipe", "text input"),
          "a pipe as text to tokenize: %s", err.msg);
    unlink(fifo);
}

static void test_hdf5(void) {
    NptErr err;
    float fl[64];
    int32_t neg[64];
    for (int i = 0; i < 64; i++) fl[i] = (float)i, neg[i] = i + 3;
    neg[40] = -5;
    write_h5("float.h5", H5T_IEEE_F32LE, 1, fl, H5T_NATIVE_FLOAT);
    write_h5("matrix.h5", H5T_STD_I32LE, 2, neg, H5T_NATIVE_INT32);
    write_h5("neg.h5", H5T_STD_I32LE, 1, neg, H5T_NATIVE_INT32);
    char spec[600];
    snprintf(spec, sizeof spec, "%s:/tokens", in_dir("float.h5"));
    check(open_u16(spec, VOCAB, &err) == -1 && says(&err, "float.h5:/tokens is a float dataset", "integer ids"),
          "a float HDF5 dataset is refused: %s", err.msg);
    check(open_u16(in_dir("matrix.h5"), VOCAB, &err) == -1 && says(&err, "matrix.h5:/tokens has 2 dimensions", "1-D"),
          "a 2-D dataset is refused: %s", err.msg);
    check(open_u16(in_dir("neg.h5"), VOCAB, &err) == -1 && says(&err, "token -5 at position 40", NULL),
          "a negative id is refused with its position: %s", err.msg);
    snprintf(spec, sizeof spec, "%s:/nope", in_dir("neg.h5"));
    check(open_u16(spec, VOCAB, &err) == -1 && says(&err, "has no dataset /nope", NULL), "a missing dataset: %s", err.msg);
    check(open_u16(write_text("fake.h5", "not hdf5"), VOCAB, &err) == -1 && says(&err, "fake.h5 is not an HDF5 file", NULL),
          "a file that is not HDF5: %s", err.msg);
    snprintf(spec, sizeof spec, "%s:/tokens", in_dir("gone.h5"));
    check(open_u16(spec, VOCAB, &err) == -1 && says(&err, "gone.h5", "No such file"), "a missing HDF5 file: %s", err.msg);
}

int main(void) {
    if (!mkdtemp(dir)) return 1;
    NptErr err;
    Tokenizer *tok = tokenizer_load(shared_path("models/stories260K/tok512.bin"), VOCAB, &err);
    check(tok != NULL, "tokenizer loads (%s)", tok ? "tok512.bin" : err.msg);
    if (tok) {
        test_text(tok);
        test_jsonl(tok);
        test_uncuttable();
        test_token_files(tok);
        signal(SIGALRM, on_alarm);
        alarm(20);
        test_not_regular(tok);
        alarm(0);
    }
    test_hdf5();
    tokenizer_free(tok);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return test_finish();
}
