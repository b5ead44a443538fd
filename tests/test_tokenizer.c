/* tests/test_tokenizer.c — both tokenizers on the real test assets: hand-derived merge
 * sequences, special tokens, round trips over every TinyStories story, buffer
 * semantics, encoding throughput (a NOTE, not an assertion), and the cuts data/prepare.c
 * makes in long documents (tok_cut.c): at every place one is allowed, the two parts
 * encoded apart give the ids of the whole text, for both real tokenizers and small HF
 * ones written here (Metaspace first/always, byte fallback, ignore_merges, no unk, an
 * added token of several words).
 *
 * Also the C side of tests/py/test_tokenizer_ref.py: with arguments
 *   test_tokenizer --encode TOKENIZER FILE [--max N]
 * it prints the ids of each story of FILE (stories end at a line "<|endoftext|>"),
 * one story per line, without BOS. */
#include "../data/tok_internal.h" /* tok_cut_*, tok_encode_part: encoding in parts */
#include "../data/tokenizer.h"
#include "test.h"

#include <string.h>
#include <unistd.h>

#define LLAMA_TOK "models/stories260K/tok512.bin"
#define HF_TOK "models/TinyStories-656K/tokenizer.json"
#define TRAIN_TXT "data/tinystories-train-head.txt"
#define VALID_TXT "data/tinystories-valid-1000.txt"

/* Splits text in place into stories: a line "<|endoftext|>" ends one; the lines before
 * it, joined by "\n", are its text. Returns the count. */
static int split_stories(char *text, char ***out) {
    int n = 0, cap = 64;
    char **list = malloc((size_t)cap * sizeof *list);
    char *start = text, *line = text;
    while (list && *line) {
        char *nl = strchr(line, '\n');
        char *next = nl ? nl + 1 : line + strlen(line);
        if (strncmp(line, "<|endoftext|>", 13) == 0 && (line[13] == '\n' || line[13] == '\0')) {
            line[line > start ? -1 : 0] = '\0'; /* drop the newline before the separator */
            if (n == cap) list = realloc(list, (size_t)(cap *= 2) * sizeof *list);
            if (list) list[n++] = start;
            start = next;
        }
        line = next;
    }
    if (list && *start) { /* text after the last separator */
        size_t len = strlen(start);
        if (start[len - 1] == '\n') start[len - 1] = '\0';
        if (n == cap) list = realloc(list, (size_t)(cap + 1) * sizeof *list);
        if (list) list[n++] = start;
    }
    *out = list;
    return list ? n : -1;
}

/* Encodes into a malloc'd array, sizing it by a first call; NULL on error. */
static int *encode_all(const Tokenizer *t, const char *text, int add_bos, int *n_out) {
    NptErr err;
    int n = tokenizer_encode(t, text, add_bos, NULL, 0, &err);
    if (n < 0) {
        printf("encode error: %s\n", err.msg);
        return NULL;
    }
    int *ids = malloc((size_t)(n + 1) * sizeof *ids);
    if (!ids || tokenizer_encode(t, text, add_bos, ids, n, &err) != n) {
        free(ids);
        return NULL;
    }
    *n_out = n;
    return ids;
}

static int encode_file_mode(const char *tok_path, const char *file, int max_stories) {
    NptErr err;
    Tokenizer *t = tokenizer_load(tok_path, 0, &err);
    char *text = t ? npt_read_file(file, NULL, &err) : NULL;
    if (!text) {
        fprintf(stderr, "test_tokenizer: %s\n", err.msg);
        tokenizer_free(t);
        return 1;
    }
    char **stories;
    int n = split_stories(text, &stories);
    for (int s = 0; s < n && (max_stories <= 0 || s < max_stories); s++) {
        int k;
        int *ids = encode_all(t, stories[s], 0, &k);
        if (!ids) return 1;
        for (int i = 0; i < k; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
        free(ids);
    }
    free(stories);
    free(text);
    tokenizer_free(t);
    return 0;
}

static int ids_equal(const Tokenizer *t, const char *text, const int *want, int n_want) {
    int n, ok;
    int *ids = encode_all(t, text, 0, &n);
    ok = ids && n == n_want && (n == 0 || memcmp(ids, want, (size_t)n * sizeof *ids) == 0);
    if (!ok && ids) {
        printf("  got:");
        for (int i = 0; i < n; i++) printf(" %d", ids[i]);
        printf("\n");
    }
    free(ids);
    return ok;
}

static int contains(const int *ids, int n, int id) {
    for (int i = 0; i < n; i++)
        if (ids[i] == id) return 1;
    return 0;
}

/* Hand-derived from tok512.bin's pieces and scores (listed by an independent reader):
 *   " " 410 (-151), "c" 429 (-170), "a" 412 (-153), "t" 413 (-154), "h" 415, "e" 411,
 *   " c" 280 (-21), "at" 294 (-35), " t" 259 (-0.0), "he" 260 (-1), " th" 308 (-49),
 *   " the" 265 (-6); "ca", " ca", "cat", " cat", "th", "the" are not pieces.
 * "cat" -> [" ","c","a","t"]: best pair " c" (-21) -> [" c","a","t"]; then "at" (-35)
 *   -> [" c","at"]; " cat" is no piece: [280, 294].
 * "the" -> [" ","t","h","e"]: " t" (0) -> [" t","h","e"]; "he" (-1) beats " th" (-49)
 *   -> [" t","he"]; " the" (-6) -> [265]. Greedy left-to-right would give " th","e". */
static void test_llama2c(void) {
    NptErr err;
    Tokenizer *t = tokenizer_load(shared_path(LLAMA_TOK), 512, &err);
    check(t != NULL, "load tok512.bin with vocab hint 512%s%s", t ? "" : ": ", t ? "" : err.msg);
    if (!t) return;
    check(tokenizer_vocab_size(t) == 512, "tok512 vocab size 512 (MANIFEST), got %d", tokenizer_vocab_size(t));
    check(tokenizer_bos_id(t) == 1 && tokenizer_eos_id(t) == 2, "tok512 BOS 1, EOS 2");
    check(ids_equal(t, "cat", (int[]){280, 294}, 2), "tok512 \"cat\" -> [280 294] (hand-derived merges)");
    check(ids_equal(t, "the", (int[]){265}, 1), "tok512 \"the\" -> [265]: best score first, not left to right");
    check(ids_equal(t, "", NULL, 0), "tok512 empty text -> no tokens (no dummy prefix)");
    int n, *ids = encode_all(t, "the", 1, &n);
    check(ids && n == 2 && ids[0] == 1 && ids[1] == 265, "tok512 add_bos prepends 1");
    free(ids);
    char buf[16];
    check(strcmp(tokenizer_decode_token(t, 1, 265, buf), "the") == 0, "decode_token strips the space after BOS");
    check(strcmp(tokenizer_decode_token(t, 265, 265, buf), " the") == 0, "decode_token keeps it elsewhere");
    check(strcmp(tokenizer_decode_token(t, 265, 13, buf), "\n") == 0, "decode_token <0x0A> (id 13) -> raw newline");
    check(tokenizer_token_id(t, " the") == 265 && tokenizer_token_id(t, "no such piece") == -1, "token_id lookups");
    /* Buffer contract: returns the needed count, writes at most max_tokens. */
    int small[3] = {-7, -7, -7};
    int need = tokenizer_encode(t, "the cat", 0, small, 2, &err);
    check(need == 3 && small[0] == 265 && small[1] == 280 && small[2] == -7,
          "encode with a short buffer returns the full count (3) and writes only 2");
    tokenizer_free(t);
    t = tokenizer_load(shared_path(LLAMA_TOK), 0, &err);
    check(t && tokenizer_vocab_size(t) == 512, "load tok512.bin without hint reads all 512 tokens");
    tokenizer_free(t);
}

/* Hand-derived from tokenizer.json: vocab "▁" 80, "c" 55, "a" 53, "t" 72, "at" 232,
 * "t▁" 86, "at▁" 143, "cat" 476, "cat▁" 411; merges by rank: "t ▁" 5, "a t▁" 62,
 * "a t" 151, "c a" 214, "c at▁" 330, "c at" 395; no merge makes "▁c" or "▁cat".
 * "cat" -> "▁cat" = [▁,c,a,t]: (a,t) 151 < (c,a) 214 -> [▁,c,at]; (c,at) 395 -> [▁,cat]:
 *   [80, 476].
 * "cat " -> "▁cat▁" = [▁,c,a,t,▁]: (t,▁) 5 -> [▁,c,a,t▁]; (a,t▁) 62 -> [▁,c,at▁];
 *   (c,at▁) 330 -> [▁,cat▁]: [80, 411].
 * Both, and the special-token cases below, agree with HF tokenizers (Rust) itself. */
static void test_hf(void) {
    NptErr err;
    Tokenizer *t = tokenizer_load(shared_path(HF_TOK), 2048, &err);
    check(t != NULL, "load TinyStories-656K tokenizer.json%s%s", t ? "" : ": ", t ? "" : err.msg);
    if (!t) return;
    check(tokenizer_vocab_size(t) == 2048, "HF vocab size 2048 (MANIFEST), got %d", tokenizer_vocab_size(t));
    check(tokenizer_bos_id(t) == 1 && tokenizer_eos_id(t) == 2, "HF BOS 1 <|start_story|>, EOS 2 <|end_story|> (MANIFEST), got %d %d",
          tokenizer_bos_id(t), tokenizer_eos_id(t));
    check(ids_equal(t, "cat", (int[]){80, 476}, 2), "HF \"cat\" -> [80 476] (hand-derived merges)");
    check(ids_equal(t, "cat ", (int[]){80, 411}, 2), "HF \"cat \" -> [80 411]: lowest rank first");
    /* Added tokens are normalized=true here: matched as their normalized form
     * "▁<|end_story|>", i.e. at the start or after a space, as HF does. */
    int n, *ids = encode_all(t, "cat <|end_story|>", 0, &n);
    check(ids && n == 3 && ids[0] == 80 && ids[1] == 476 && ids[2] == 2, "HF \"cat <|end_story|>\" -> [80 476 2]");
    free(ids);
    ids = encode_all(t, "<|start_story|>cat", 0, &n);
    check(ids && n >= 2 && ids[0] == 1 && !contains(ids + 1, n - 1, 1), "HF \"<|start_story|>cat\" starts with BOS id 1");
    free(ids);
    ids = encode_all(t, "cat.<|end_story|>", 0, &n);
    check(ids && !contains(ids, n, 2), "HF \"cat.<|end_story|>\" is spelled out by BPE (no space before it), as in HF");
    free(ids);
    ids = encode_all(t, "\xC3\xA9\xC3\xA9" "a\xC3\xA9", 0, &n); /* "ééaé": no é in vocab, no byte tokens */
    check(ids && n == 4 && ids[0] == 80 && ids[1] == 0 && ids[2] == 53 && ids[3] == 0,
          "HF unknown characters -> unk, a run fused (fuse_unk): [80 0 53 0]");
    char *text = ids ? tokenizer_decode(t, ids, n, &err) : NULL;
    check(text && strcmp(text, "<unk>a<unk>") == 0, "HF decode prints unk as <unk>: \"%s\"", text ? text : "(null)");
    free(text);
    free(ids);
    ids = encode_all(t, "  two  spaces ", 0, &n);
    text = ids ? tokenizer_decode(t, ids, n, &err) : NULL;
    check(text && strcmp(text, "  two  spaces ") == 0, "HF keeps repeated and trailing spaces: \"%s\"", text ? text : "(null)");
    free(text);
    free(ids);
    char buf[16];
    check(strcmp(tokenizer_decode_token(t, 1, 80, buf), "") == 0 && strcmp(tokenizer_decode_token(t, 476, 80, buf), " ") == 0,
          "HF decode_token: \"▁\" prints nothing after BOS, a space elsewhere");
    check(strcmp(tokenizer_decode_token(t, 80, 2, buf), "") == 0, "HF decode_token: EOS prints nothing");
    tokenizer_free(t);
    t = tokenizer_load(shared_path("models/TinyStories-656K"), 0, &err);
    check(t && tokenizer_vocab_size(t) == 2048, "a directory holding tokenizer.json loads as HF");
    tokenizer_free(t);
}

/* Writes a small tokenizer.json into a temporary file and loads it. */
static Tokenizer *load_json_text(const char *json, char *path, size_t path_size) {
    snprintf(path, path_size, "/tmp/npt_tok_XXXXXX.json");
    int fd = mkstemps(path, 5);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f || fputs(json, f) < 0) printf("FAIL: cannot write %s\n", path);
    if (f) fclose(f);
    NptErr err;
    Tokenizer *t = tokenizer_load(path, 0, &err);
    if (!t) printf("  load error: %s\n", err.msg);
    unlink(path);
    return t;
}

#define ADDED_STOP_TOKENS                                                                                              \
    "\"added_tokens\": [{\"id\": 1, \"content\": \"<s>\", \"special\": true, \"normalized\": false},"                    \
    " {\"id\": 2, \"content\": \"</s>\", \"special\": true, \"normalized\": false}],"

/* A Metaspace pre-tokenizer (no normalizer), vocab <unk> <s> </s> ▁ a b ▁a ab ▁ab = 0..8,
 * merges "▁ a" (rank 0), "a b" (1), "▁a b" (2). Hand-derived, and what HF tokenizers gives:
 *   "aab"  -> ▁aab: [▁,a,a,b], (▁,a) 0 -> [▁a,a,b], (a,b) 1 -> [▁a,ab]: [6 7]
 *   "b a"  -> ▁b▁a, split before each ▁: [▁,b] [▁a]: [3 5 6]
 *   " a"   -> ▁a already starts with ▁, nothing prepended: [6]
 *   "<s>b" -> [1], then "b" (not at the text's start: scheme "first" prepends nothing): [1 5];
 *            with scheme "always": [1 3 5]
 *   "xxa"  -> [▁, unk (xx fused), a]: [3 0 4] */
static void test_metaspace(void) {
    const char *json =
        "{" ADDED_STOP_TOKENS " \"normalizer\": null,"
        " \"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"\xE2\x96\x81\", \"prepend_scheme\": \"%s\", \"split\": true},"
        " \"decoder\": {\"type\": \"Metaspace\", \"replacement\": \"\xE2\x96\x81\", \"prepend_scheme\": \"%s\", \"split\": true},"
        " \"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"fuse_unk\": true, \"byte_fallback\": false,"
        " \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2, \"\xE2\x96\x81\": 3, \"a\": 4, \"b\": 5, \"\xE2\x96\x81" "a\": 6,"
        " \"ab\": 7, \"\xE2\x96\x81" "ab\": 8},"
        " \"merges\": [\"\xE2\x96\x81 a\", \"a b\", \"\xE2\x96\x81" "a b\"]}}";
    char text[2048], path[64];
    snprintf(text, sizeof text, json, "first", "first");
    Tokenizer *t = load_json_text(text, path, sizeof path);
    check(t != NULL, "load a Metaspace tokenizer.json");
    if (!t) return;
    check(ids_equal(t, "aab", (int[]){6, 7}, 2), "Metaspace \"aab\" -> [6 7]");
    check(ids_equal(t, "b a", (int[]){3, 5, 6}, 3), "Metaspace \"b a\" -> [3 5 6] (split into words at ▁)");
    check(ids_equal(t, " a", (int[]){6}, 1), "Metaspace \" a\" -> [6] (no second ▁ prepended)");
    check(ids_equal(t, "<s>b", (int[]){1, 5}, 2), "Metaspace scheme first: \"<s>b\" -> [1 5]");
    check(ids_equal(t, "xxa", (int[]){3, 0, 4}, 3), "Metaspace \"xxa\" -> [3 0 4] (unknown run fused)");
    check(tokenizer_bos_id(t) == 1 && tokenizer_eos_id(t) == 2, "BOS/EOS found by name among special added tokens (<s>, </s>)");
    NptErr err;
    char *back = tokenizer_decode(t, (int[]){3, 5, 6}, 3, &err);
    check(back && strcmp(back, "b a") == 0, "Metaspace decoder: [3 5 6] -> \"b a\"");
    free(back);
    tokenizer_free(t);
    snprintf(text, sizeof text, json, "always", "always");
    t = load_json_text(text, path, sizeof path);
    check(t && ids_equal(t, "<s>b", (int[]){1, 3, 5}, 3), "Metaspace scheme always: \"<s>b\" -> [1 3 5]");
    tokenizer_free(t);
}

/* Byte fallback: vocab <unk> <s> </s>, <0x00>..<0xFF> = 3..258, ▁ 259, a 260, ▁a 261,
 * merge "▁ a"; the TinyStories-656K normalizer and decoder. "aé a" -> ▁aé▁a ->
 * [▁,a,<0xC3>,<0xA9>,▁,a] (é is no piece: its two UTF-8 bytes) -> [261 198 172 261],
 * as HF tokenizers gives; decoding fuses the bytes back into "é". */
static void test_byte_fallback(void) {
    char json[16384], path[64];
    int n = snprintf(json, sizeof json,
                     "{" ADDED_STOP_TOKENS
                     " \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"\xE2\x96\x81\"},"
                     " {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\xE2\x96\x81\"}]},"
                     " \"pre_tokenizer\": null,"
                     " \"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": {\"String\": \"\xE2\x96\x81\"},"
                     " \"content\": \" \"}, {\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"}, {\"type\": \"Strip\", \"content\": \" \","
                     " \"start\": 1, \"stop\": 0}]},"
                     " \"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"fuse_unk\": true, \"byte_fallback\": true,"
                     " \"merges\": [[\"\xE2\x96\x81\", \"a\"]], \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2,");
    for (int b = 0; b < 256; b++) n += snprintf(json + n, sizeof json - (size_t)n, " \"<0x%02X>\": %d,", b, b + 3);
    snprintf(json + n, sizeof json - (size_t)n, " \"\xE2\x96\x81\": 259, \"a\": 260, \"\xE2\x96\x81" "a\": 261}}}");
    Tokenizer *t = load_json_text(json, path, sizeof path);
    check(t != NULL, "load a byte-fallback tokenizer.json (merges as [a, b] pairs)");
    if (!t) return;
    int ids[8];
    NptErr err;
    int k = tokenizer_encode(t, "a\xC3\xA9 a", 0, ids, 8, &err);
    check(k == 4 && ids[0] == 261 && ids[1] == 198 && ids[2] == 172 && ids[3] == 261, "byte fallback: \"aé a\" -> [261 198 172 261]");
    char *back = k == 4 ? tokenizer_decode(t, ids, k, &err) : NULL;
    check(back && strcmp(back, "a\xC3\xA9 a") == 0, "byte fallback: decoding fuses <0xC3><0xA9> back into \"é\"");
    free(back);
    tokenizer_free(t);
}

/* What decode(encode(s)) must give. The llama2.c vocabulary has all 256 byte tokens:
 * s itself. The HF test vocabulary has none, so a character that is not a piece (e.g.
 * the curly quotes of some stories) becomes unk, a run of them one unk (fuse_unk),
 * which decodes as "<unk>": s with each such run replaced by "<unk>". */
static char *expected_roundtrip(const Tokenizer *t, const char *s, int hf) {
    size_t n = strlen(s);
    char *out = malloc(n * 5 + 1), *o = out;
    int in_unk = 0;
    if (!out) return NULL;
    for (size_t i = 0; i < n;) {
        size_t len = 1;
        while (i + len < n && ((unsigned char)s[i + len] & 0xC0) == 0x80) len++;
        char ch[8] = {0};
        memcpy(ch, s + i, len < 5 ? len : 4);
        int known = !hf || s[i] == ' ' || tokenizer_token_id(t, ch) >= 0;
        if (known) memcpy(o, s + i, len), o += len;
        else if (!in_unk) memcpy(o, "<unk>", 5), o += 5;
        in_unk = !known;
        i += len;
    }
    *o = '\0';
    return out;
}

static void roundtrip_file(const Tokenizer *t, const char *name, const char *file, int hf) {
    NptErr err;
    char *text = npt_read_file(shared_path(file), NULL, &err);
    check(text != NULL, "read %s", file);
    if (!text) return;
    char **stories;
    int n = split_stories(text, &stories), bad = 0, exact = 0, tokens = 0, first_bad = -1;
    for (int s = 0; s < n; s++) {
        int k;
        int *ids = encode_all(t, stories[s], 1, &k);
        char *back = ids ? tokenizer_decode(t, ids, k, &err) : NULL;
        char *want = expected_roundtrip(t, stories[s], hf);
        int ok = back && want && ids[0] == tokenizer_bos_id(t) && strcmp(back, want) == 0;
        exact += back && strcmp(back, stories[s]) == 0;
        if (!ok && first_bad < 0) first_bad = s;
        bad += !ok;
        tokens += ids ? k : 0;
        free(ids);
        free(back);
        free(want);
    }
    check(n >= 1000 && bad == 0, "%s: decode(encode(story)) over all %d stories of %s (%d tokens with BOS; %d identical, the rest differ only by <unk>)",
          name, n, file, tokens, exact);
    if (bad) printf("  %d stories fail, the first is number %d\n", bad, first_bad);
    free(stories);
    free(text);
}

/* MB/s of encoding file per story (as `npt data` does) or in one call. */
static double encode_mb_s(const Tokenizer *t, const char *name, const char *file, int whole) {
    NptErr err;
    char *text = npt_read_file(shared_path(file), NULL, &err);
    if (!text) return 0;
    size_t bytes = strlen(text);
    double t0 = npt_now_seconds();
    if (whole) {
        int n = tokenizer_encode(t, text, 0, NULL, 0, &err);
        check(n > 0, "%s encodes the whole %zu-byte file in one call (%d tokens)", name, bytes, n);
    } else {
        char **stories;
        int n = split_stories(text, &stories);
        for (int s = 0; s < n; s++) tokenizer_encode(t, stories[s], 1, NULL, 0, &err);
        free(stories);
    }
    double dt = npt_now_seconds() - t0;
    free(text);
    return bytes / 1e6 / dt;
}

static void test_roundtrips_and_speed(void) {
    NptErr err;
    Tokenizer *l = tokenizer_load(shared_path(LLAMA_TOK), 512, &err);
    Tokenizer *h = tokenizer_load(shared_path(HF_TOK), 2048, &err);
    if (!l || !h) {
        check(0, "load both tokenizers for round trips");
        tokenizer_free(l);
        tokenizer_free(h);
        return;
    }
    roundtrip_file(l, "tok512", TRAIN_TXT, 0);
    roundtrip_file(l, "tok512", VALID_TXT, 0);
    roundtrip_file(h, "HF", TRAIN_TXT, 1);
    roundtrip_file(h, "HF", VALID_TXT, 1);
    double l_story = encode_mb_s(l, "tok512", TRAIN_TXT, 0), h_story = encode_mb_s(h, "HF", TRAIN_TXT, 0);
    double l_whole = encode_mb_s(l, "tok512", TRAIN_TXT, 1), h_whole = encode_mb_s(h, "HF", TRAIN_TXT, 1);
    printf("NOTE: encoding %s per story: tok512 %.1f MB/s, HF %.1f MB/s; all 2 MB in one call: tok512 %.1f MB/s, HF %.1f MB/s\n",
           TRAIN_TXT, l_story, h_story, l_whole, h_whole);
    tokenizer_free(l);
    tokenizer_free(h);
}

/* Ids of text[0..len) encoded in parts at the given cuts (the later parts as
 * continuations, as data/prepare.c does); malloc'd, count in *n. */
static int *encode_parts(const Tokenizer *t, const char *text, size_t len, const size_t *cuts, int n_cuts, int *n) {
    int *ids = malloc((len + 8) * sizeof *ids);
    size_t at = 0, got = 0;
    NptErr err;
    for (int i = 0; ids && i <= n_cuts; i++) {
        size_t end = i < n_cuts ? cuts[i] : len;
        int m = tok_encode_part(t, text + at, end - at, i > 0, ids + got, len + 8 - got, &err);
        if (m < 0) {
            printf("  encode error: %s\n", err.msg);
            free(ids);
            return NULL;
        }
        got += (size_t)m, at = end;
    }
    *n = (int)got;
    return ids;
}

static int same_ids(const int *a, int na, const int *b, int nb) {
    return a && b && na == nb && (na == 0 || !memcmp(a, b, (size_t)na * sizeof *a));
}

/* Every place of text tok_cut_ok accepts: text[0..k) then text[k..) as a continuation
 * gives the whole text's ids; and a chain of cuts tok_cut_find picks every ~want bytes
 * (as prepare.c does every 1 MiB) too. Also counts the places where a cut would change
 * the ids, to show the text puts the rule to work. */
static void check_cuts(const char *name, const Tokenizer *t, const char *text, size_t want, int min_ok) {
    NptErr err;
    TokCut *c = tok_cut_new(t, &err);
    size_t len = strlen(text);
    int nw, *whole = encode_parts(t, text, len, NULL, 0, &nw);
    if (!c || !whole) {
        check(0, "%s: cut table and whole encoding", name);
        tok_cut_free(c);
        free(whole);
        return;
    }
    int ok = 0, bad = 0, visible = 0;
    size_t first_bad = 0;
    for (size_t k = 1; k < len; k++) {
        int n, *ids = encode_parts(t, text, len, &k, 1, &n);
        int same = same_ids(ids, n, whole, nw);
        free(ids);
        if (!tok_cut_ok(c, text, len, k)) {
            visible += !same;
            continue;
        }
        ok++;
        if (!same && bad++ == 0) first_bad = k;
    }
    check(bad == 0 && ok >= min_ok,
          "%s: all %d places (of %zu) where a cut is allowed leave the %d ids unchanged (%d changed them, the first at byte %zu); "
          "a cut at %d of the other places would change them",
          name, ok, len - 1, nw, bad, first_bad, visible);
    size_t cuts[4096];
    int n_cuts = 0;
    for (size_t at = 0; n_cuts < 4096;) {
        size_t from = 0, k = len - at > want ? tok_cut_find(c, text + at, len - at, want, &from) : 0;
        if (k == 0) break;
        at += k;
        cuts[n_cuts++] = at;
    }
    int n, *ids = encode_parts(t, text, len, cuts, n_cuts, &n);
    check(same_ids(ids, n, whole, nw) && n_cuts >= (int)(len / want) / 2,
          "%s: cut every ~%zu bytes where tok_cut_find chooses (%d cuts), the parts give the whole text's %d ids", name, want,
          n_cuts, nw);
    free(ids);
    free(whole);
    tok_cut_free(c);
}

/* Text over a small alphabet, from a fixed LCG: runs of letters, spaces, newlines
 * (LF and CRLF), unknown characters, a two-byte character and added tokens. */
static char *random_text(size_t len, unsigned seed) {
    static const char *const bits[] = {"a", "b", "a", "b", "ab", " ", " ", "  ", "x", "\xC3\xA9", "\n", "\r\n", "<s>", "</s>",
                                       "b a", "ba"};
    char *s = malloc(len + 8);
    size_t n = 0;
    while (s && n < len) {
        seed = seed * 1103515245u + 12345u;
        const char *b = bits[(seed >> 16) % (sizeof bits / sizeof *bits)];
        size_t k = strlen(b);
        if (n + k > len) break;
        memcpy(s + n, b, k), n += k;
    }
    if (s) s[n] = '\0';
    return s;
}

static void test_cuts(void) {
    NptErr err;
    Tokenizer *l = tokenizer_load(shared_path(LLAMA_TOK), 512, &err), *h = tokenizer_load(shared_path(HF_TOK), 2048, &err);
    char *stories = npt_read_file(shared_path(TRAIN_TXT), NULL, &err);
    if (!l || !h || !stories || strlen(stories) < 200000) {
        check(0, "load both tokenizers and %s", TRAIN_TXT);
    } else {
        /* 3 KB from the middle of the stories (newlines, quotes, the separator line) with
         * awkward text added */
        char text[4096];
        snprintf(text, sizeof text, "%.2900s  x\r\n\r\nnaïve “café” 🙂 <|end_story|> The end. <|end_story|>\n\n<s> a", stories + 100000);
        check_cuts("tok512", l, text, 64, 100);
        check_cuts("TinyStories-656K", h, text, 64, 50);
    }
    free(stories);
    tokenizer_free(l);
    tokenizer_free(h);

    const char *meta =
        "{\"added_tokens\": [{\"id\": 1, \"content\": \"<s>\", \"special\": true, \"normalized\": false},"
        " {\"id\": 2, \"content\": \"</s>\", \"special\": true, \"normalized\": false},"
        " {\"id\": 9, \"content\": \"b a\", \"special\": false, \"normalized\": true}], \"normalizer\": null,"
        " \"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"\xE2\x96\x81\", \"prepend_scheme\": \"%s\", \"split\": %s},"
        " \"model\": {\"type\": \"BPE\", %s \"fuse_unk\": true, \"byte_fallback\": false, \"ignore_merges\": %s,"
        " \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2, \"\xE2\x96\x81\": 3, \"a\": 4, \"b\": 5, \"\xE2\x96\x81" "a\": 6,"
        " \"ab\": 7, \"\xE2\x96\x81" "ab\": 8},"
        " \"merges\": [\"\xE2\x96\x81 a\", \"a b\", \"\xE2\x96\x81" "a b\"]}}";
    static const struct { const char *name, *scheme, *split, *unk, *ignore; } v[] = {
        {"Metaspace first", "first", "true", "\"unk_token\": \"<unk>\",", "false"},
        {"Metaspace always", "always", "true", "\"unk_token\": \"<unk>\",", "false"},
        {"Metaspace always, no split", "always", "false", "\"unk_token\": \"<unk>\",", "false"},
        {"Metaspace first, ignore_merges", "first", "true", "\"unk_token\": \"<unk>\",", "true"},
        {"Metaspace first, no unk (unknown characters dropped)", "first", "true", "", "false"},
    };
    char json[16384], path[64];
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        snprintf(json, sizeof json, meta, v[i].scheme, v[i].split, v[i].unk, v[i].ignore);
        Tokenizer *t = load_json_text(json, path, sizeof path);
        char *text = random_text(1500, 7 + (unsigned)i);
        if (t && text) check_cuts(v[i].name, t, text, 40, 20);
        else check(0, "load the %s tokenizer", v[i].name);
        free(text);
        tokenizer_free(t);
    }
    /* byte fallback and the TinyStories-656K normalizer (Prepend ▁, Replace " " -> ▁) */
    int n = snprintf(json, sizeof json,
                     "{\"added_tokens\": [{\"id\": 1, \"content\": \"<s>\", \"special\": true, \"normalized\": false},"
                     " {\"id\": 2, \"content\": \"</s>\", \"special\": true, \"normalized\": false},"
                     " {\"id\": 262, \"content\": \"b a\", \"special\": false, \"normalized\": true}],"
                     " \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"\xE2\x96\x81\"},"
                     " {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\xE2\x96\x81\"}]},"
                     " \"pre_tokenizer\": null, \"decoder\": null,"
                     " \"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"fuse_unk\": true, \"byte_fallback\": true,"
                     " \"merges\": [[\"\xE2\x96\x81\", \"a\"], [\"a\", \"<0x0A>\"], [\"<0x0A>\", \"b\"]],"
                     " \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2,");
    for (int b = 0; b < 256; b++) n += snprintf(json + n, sizeof json - (size_t)n, " \"<0x%02X>\": %d,", b, b + 3);
    snprintf(json + n, sizeof json - (size_t)n,
             " \"\xE2\x96\x81\": 259, \"a\": 260, \"\xE2\x96\x81" "a\": 261, \"a<0x0A>\": 263, \"<0x0A>b\": 264, \"b\": 265}}}");
    Tokenizer *t = load_json_text(json, path, sizeof path);
    char *text = random_text(1500, 3);
    if (t && text) check_cuts("byte fallback, Prepend + Replace", t, text, 40, 20);
    else check(0, "load the byte-fallback tokenizer");
    tokenizer_free(t);
    /* a Replace of two characters: no provably invisible cut, so none is made */
    n = snprintf(json, sizeof json,
                 "{\"normalizer\": {\"type\": \"Replace\", \"pattern\": {\"String\": \"ab\"}, \"content\": \"b\"},"
                 " \"pre_tokenizer\": null, \"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\","
                 " \"vocab\": {\"<unk>\": 0, \"a\": 1, \"b\": 2}, \"merges\": []}}");
    t = load_json_text(json, path, sizeof path);
    TokCut *c = t ? tok_cut_new(t, &err) : NULL;
    size_t from = 0, k = c && text ? tok_cut_find(c, text, strlen(text), 40, &from) : 1;
    int any = 0;
    for (size_t i = 1; c && text && i < strlen(text); i++) any |= tok_cut_ok(c, text, strlen(text), i);
    check(c && k == 0 && !any, "a Replace pattern of two characters: no place is allowed, documents are encoded whole");
    tok_cut_free(c);
    tokenizer_free(t);
    free(text);
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "--encode") == 0)
        return encode_file_mode(argv[2], argv[3], argc >= 6 && strcmp(argv[4], "--max") == 0 ? atoi(argv[5]) : 0);
    if (argc > 1) {
        fprintf(stderr, "usage: test_tokenizer [--encode TOKENIZER FILE [--max N]]\n");
        return 2;
    }
    test_llama2c();
    test_hf();
    test_metaspace();
    test_byte_fallback();
    test_cuts();
    test_roundtrips_and_speed();
    return test_finish();
}
