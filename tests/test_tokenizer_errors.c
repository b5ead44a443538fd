/* tests/test_tokenizer_errors.c — bad tokenizer files and bad text (run under ASan by
 * `make asan`): each bad file gives NULL and one error line naming the file and what
 * is wrong; invalid UTF-8 is encoded by byte fallback per invalid byte (or unk when the
 * vocabulary has no byte tokens) and decodes to U+FFFD, never crashing. */
#include "../data/tokenizer.h"
#include "test.h"

#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];
static char paths[32][128];
static int n_paths;

static const char *write_file(const char *name, const void *data, size_t len) {
    char *p = paths[n_paths++];
    snprintf(p, sizeof paths[0], "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(data, 1, len, f) != len) printf("FAIL: cannot write %s\n", p);
    if (f) fclose(f);
    return p;
}

static const char *write_text(const char *name, const char *text) { return write_file(name, text, strlen(text)); }

/* Loading must fail with an error containing every one of the given fragments. */
static void expect_fail(const char *what, const char *path, int hint, const char *frag1, const char *frag2) {
    NptErr err = {{0}};
    Tokenizer *t = tokenizer_load(path, hint, &err);
    int ok = !t && strstr(err.msg, frag1) && (!frag2 || strstr(err.msg, frag2)) && !strchr(err.msg, '\n');
    check(ok, "%s -> error \"%s\"", what, t ? "(loaded!)" : err.msg);
    tokenizer_free(t);
}

/* Byte offset where token k of a llama2.c tokenizer starts, read independently. */
static size_t record_offset(const unsigned char *buf, int k) {
    size_t off = 4;
    for (int i = 0; i < k; i++) {
        int32_t len;
        memcpy(&len, buf + off + 4, 4);
        off += 8 + (size_t)len;
    }
    return off;
}

static void bad_llama2c(void) {
    NptErr err;
    size_t len;
    unsigned char *tok = (unsigned char *)npt_read_file(shared_path("models/stories260K/tok512.bin"), &len, &err);
    check(tok != NULL, "read tok512.bin");
    if (!tok) return;
    expect_fail("missing file", "/nonexistent/tok512.bin", 512, "/nonexistent/tok512.bin", "does not exist");
    expect_fail("directory without tokenizer.json", dir, 0, "no tokenizer.json", NULL);
    size_t cut = record_offset(tok, 100) + 10; /* inside token 100's bytes */
    expect_fail("tok512.bin cut inside token 100 (hint 0)", write_file("cut100.bin", tok, cut), 0, "cut100.bin", "token 100");
    expect_fail("tok512.bin cut after 300 whole tokens, hint 512: intact, another model's",
                write_file("cut300.bin", tok, record_offset(tok, 300)), 512, "cut300.bin",
                "holds 300 tokens, fewer than the model's vocabulary of 512");
    expect_fail("tok512.bin cut inside token 7's header", write_file("cut7.bin", tok, record_offset(tok, 7) + 5), 0,
                "truncated", "token 7");
    expect_fail("a 2-byte file", write_file("tiny.bin", tok, 2), 0, "tiny.bin", "too short");
    expect_fail("tok512.bin with a model vocabulary of 100", shared_path("models/stories260K/tok512.bin"), 100, "more than",
                "100 tokens");
    expect_fail("a model file passed as tokenizer", shared_path("models/stories260K/stories260K.bin"), 512, "stories260K.bin",
                "not a llama2.c tokenizer");
    int cut_ok = 0; /* every prefix of the file is truncated for a 512-token model */
    for (size_t k = 0; k < len; k += 7) {
        const char *p = write_file("prefix.bin", tok, k);
        NptErr e = {{0}};
        Tokenizer *t = tokenizer_load(p, 512, &e);
        cut_ok += !t && strstr(e.msg, "prefix.bin") != NULL;
        tokenizer_free(t);
        unlink(paths[--n_paths]);
    }
    check(cut_ok == (int)((len + 6) / 7), "all %zu prefixes of tok512.bin tried are refused with the file named", (len + 6) / 7);
    unsigned char neg[12] = {7, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF}; /* length -1 */
    expect_fail("negative token length", write_file("neg.bin", neg, sizeof neg), 0, "token 0", "length -1");
    free(tok);
}

static void bad_hf(void) {
    expect_fail("tokenizer.json that is not JSON", write_text("broken.json", "{\"model\": {\"vocab\": "), 0, "broken.json",
                "not valid JSON");
    expect_fail("JSON without model", write_text("nomodel.json", "{\"version\": \"1.0\"}"), 0, "nomodel.json", "no \"model\"");
    expect_fail("model without vocab", write_text("novocab.json", "{\"model\": {\"type\": \"BPE\", \"merges\": []}}"), 0,
                "novocab.json", "model.vocab");
    expect_fail("WordPiece model", write_text("wp.json", "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}"), 0,
                "wp.json", "\"WordPiece\" is not supported");
    expect_fail("Unigram model", write_text("uni.json", "{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]]}}"), 0,
                "\"Unigram\" is not supported", NULL);
    expect_fail("NFKC normalizer",
                write_text("nfkc.json", "{\"normalizer\": {\"type\": \"NFKC\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}"),
                0, "normalizer type \"NFKC\"", NULL);
    expect_fail("Replace normalizer with a Regex",
                write_text("regex.json", "{\"normalizer\": {\"type\": \"Replace\", \"pattern\": {\"Regex\": \" +\"}, \"content\": \" \"},"
                                         " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}"),
                0, "Regex", NULL);
    expect_fail("ByteLevel pre-tokenizer",
                write_text("bl.json", "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}"),
                0, "pre_tokenizer type \"ByteLevel\"", NULL);
    expect_fail("merge of a token missing from the vocab",
                write_text("merge.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}}"), 0,
                "merge 0", "needs \"ab\", which is not in model.vocab");
    expect_fail("vocab id that is not a number",
                write_text("badid.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"zero\"}, \"merges\": []}}"), 0,
                "\"a\" has no valid id", NULL);
    expect_fail("tokenizer ids beyond the model vocabulary",
                write_text("big.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 5}, \"merges\": []}}"), 3,
                "token id 5", "vocabulary is 3");
}

static void bad_config(void) {
    char sub[128];
    snprintf(sub, sizeof sub, "%s/cfg", dir);
    if (mkdir(sub, 0700) != 0) {
        check(0, "mkdir %s", sub);
        return;
    }
    write_text("cfg/tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}");
    write_text("cfg/tokenizer_config.json", "{\"bos_token\": \"<nope>\"}");
    expect_fail("tokenizer_config.json naming an unknown bos_token", sub, 0, "tokenizer_config.json", "\"<nope>\"");
    unlink(paths[--n_paths]);
    unlink(paths[--n_paths]);
    rmdir(sub);
}

/* Prefixes of the real tokenizer.json are not JSON: each must fail cleanly. */
static void truncated_json(void) {
    NptErr err;
    size_t len;
    char *json = npt_read_file(shared_path("models/TinyStories-656K/tokenizer.json"), &len, &err);
    if (!json) {
        check(0, "read TinyStories-656K tokenizer.json: %s", err.msg);
        return;
    }
    int refused = 0, tried = 0;
    for (size_t k = 0; k < len; k += len / 40, tried++) {
        const char *p = write_file("prefix.json", json, k);
        Tokenizer *t = tokenizer_load(p, 0, &err);
        refused += !t && strstr(err.msg, "prefix.json") != NULL;
        tokenizer_free(t);
        unlink(paths[--n_paths]);
    }
    check(refused == tried, "%d of %d prefixes of tokenizer.json refused with the file named", refused, tried);
    free(json);
}

/* RFC 3629 well-formedness, written out for the test: lead byte, continuation bytes,
 * no overlong forms, no surrogates, nothing above U+10FFFF. */
static int valid_utf8(const unsigned char *s) {
    while (*s) {
        unsigned c = *s, cp, n; /* n: continuation bytes */
        if (c < 0x80) n = 0;
        else if (c >= 0xC2 && c < 0xE0) n = 1;
        else if (c >= 0xE0 && c < 0xF0) n = 2;
        else if (c >= 0xF0 && c < 0xF5) n = 3;
        else return 0;
        cp = n ? c & (0x3F >> n) : c;
        for (unsigned i = 1; i <= n; i++) {
            if ((s[i] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (s[i] & 0x3F);
        }
        if ((n == 2 && (cp < 0x800 || (cp >= 0xD800 && cp < 0xE000))) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF))) return 0;
        s += n + 1;
    }
    return 1;
}

/* Random bytes (xorshift, fixed seed) through both tokenizers: encoding and decoding
 * never fail, and the decoded text is always well-formed UTF-8. */
static void random_bytes(void) {
    NptErr err;
    const char *files[2] = {shared_path("models/stories260K/tok512.bin"), shared_path("models/TinyStories-656K/tokenizer.json")};
    for (int k = 0; k < 2; k++) {
        Tokenizer *t = tokenizer_load(files[k], 0, &err);
        if (!t) {
            check(0, "load %s: %s", files[k], err.msg);
            continue;
        }
        uint64_t x = 88172645463325252ull;
        int ok = 1;
        for (int round = 0; round < 200 && ok; round++) {
            char text[300];
            int n = 1 + round % 299;
            for (int i = 0; i < n; i++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                text[i] = (char)(1 + x % 255); /* no NUL inside */
            }
            text[n] = '\0';
            int ids[1024];
            int m = tokenizer_encode(t, text, 1, ids, 1024, &err);
            char *back = m > 0 && m <= 1024 ? tokenizer_decode(t, ids, m, &err) : NULL;
            ok = back && valid_utf8((const unsigned char *)back);
            free(back);
        }
        check(ok, "%s: 200 random byte strings encode, and decode to well-formed UTF-8", k ? "HF" : "tok512");
        tokenizer_free(t);
    }
}

static void invalid_utf8(void) {
    NptErr err;
    Tokenizer *t = tokenizer_load(shared_path("models/stories260K/tok512.bin"), 512, &err);
    int ids[64];
    if (!t) {
        check(0, "load tok512.bin: %s", err.msg);
        return;
    }
    /* 0xFF, a lone continuation byte, an overlong "/" and a cut-off 3-byte sequence. */
    const char *bad = "a\xFF" "b\x80" "c\xC0\xAF" "d\xE2\x82";
    int n = tokenizer_encode(t, bad, 0, ids, 64, &err);
    int bytes = 0;
    for (int i = 0; i < n; i++) bytes += ids[i] == 0xFF + 3 || ids[i] == 0x80 + 3 || ids[i] == 0xC0 + 3 || ids[i] == 0xAF + 3 ||
                                        ids[i] == 0xE2 + 3 || ids[i] == 0x82 + 3;
    check(n > 0 && bytes == 6, "tok512: invalid UTF-8 encodes as one byte token per invalid byte (%d of 6)", bytes);
    char *text = n > 0 ? tokenizer_decode(t, ids, n, &err) : NULL;
    const char *want = "a\xEF\xBF\xBD" "b\xEF\xBF\xBD" "c\xEF\xBF\xBD\xEF\xBF\xBD" "d\xEF\xBF\xBD\xEF\xBF\xBD";
    check(text && strcmp(text, want) == 0, "tok512: decoding them gives U+FFFD per invalid byte");
    free(text);
    char buf[16];
    check(strcmp(tokenizer_decode_token(t, 0, 0xFF + 3, buf), "\xFF") == 0, "decode_token of <0xFF> is the raw byte");
    check(tokenizer_decode(t, (int[]){5, 512}, 2, &err) == NULL && strstr(err.msg, "512"), "decode of id 512 -> error \"%s\"",
          err.msg);
    check(strcmp(tokenizer_decode_token(t, 0, -3, buf), "") == 0, "decode_token of a negative id prints nothing");
    tokenizer_free(t);

    t = tokenizer_load(shared_path("models/TinyStories-656K/tokenizer.json"), 2048, &err);
    if (!t) {
        check(0, "load TinyStories-656K: %s", err.msg);
        return;
    }
    n = tokenizer_encode(t, bad, 0, ids, 64, &err);
    text = n > 0 ? tokenizer_decode(t, ids, n, &err) : NULL;
    check(text && strcmp(text, "a<unk>b<unk>c<unk>d<unk>") == 0, "HF without byte tokens: invalid bytes -> fused unk: \"%s\"",
          text ? text : err.msg);
    free(text);
    tokenizer_free(t);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/npt_tok_errors_XXXXXX");
    if (!mkdtemp(dir)) {
        check(0, "mkdtemp");
        return test_finish();
    }
    bad_llama2c();
    bad_hf();
    bad_config();
    truncated_json();
    random_bytes();
    invalid_utf8();
    while (n_paths > 0) unlink(paths[--n_paths]);
    rmdir(dir);
    return test_finish();
}
