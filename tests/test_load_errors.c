/* tests/test_load_errors.c — every loader error path, on corrupt copies of the shared
 * models built in a mkdtemp directory. Each case must fail with -1, leave the model
 * empty, and name the file or tensor in its message. Runs under ASan (`make asan`). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/llama.h"
#include "test.h"

static char tmp[256];

static const char *tpath(const char *rel) {
    static char buf[8][512];
    static int slot;
    char *out = buf[slot++ & 7];
    snprintf(out, sizeof buf[0], "%s/%s", tmp, rel);
    return out;
}

static char *slurp(const char *path, size_t *len) {
    NptErr err;
    char *p = npt_read_file(path, len, &err);
    if (!p) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    return p;
}

static void spit(const char *path, const void *buf, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

static void spit_text(const char *path, const char *text) { spit(path, text, strlen(text)); }

/* Loading must fail cleanly and the message must contain want1 (and want2). */
static void expect_fail(const char *path, const char *want1, const char *want2, const char *what) {
    LlamaModel m;
    NptErr err = {{0}};
    int rc = llama_load(path, &m, &err);
    int named = strstr(err.msg, want1) && (!want2 || strstr(err.msg, want2));
    check(rc == -1 && named && m.weights_block == NULL && m.layers == NULL, "%s -> error: %s", what,
          rc == 0 ? "(loaded!)" : err.msg);
    if (rc == 0) llama_free(&m);
}

/* ---- HF directories ---- */

static char *hf_config;
static char *st_orig;
static size_t st_len;

/* An HF directory tmp/name with the given config.json and model.safetensors bytes. */
static const char *hf_dir(const char *name, const char *config, const void *st, size_t len) {
    const char *dir = tpath(name);
    char file[600];
    mkdir(dir, 0700);
    snprintf(file, sizeof file, "%s/config.json", dir);
    if (config) spit_text(file, config);
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    if (st) spit(file, st, len);
    return dir;
}

/* The shared model.safetensors with one substring of its JSON header replaced
 * (the header length is rewritten to match). Caller frees. */
static char *st_patch(const char *from, const char *to, size_t *out_len) {
    uint64_t hlen;
    memcpy(&hlen, st_orig, 8);
    char *header = strndup(st_orig + 8, hlen);
    char *at = strstr(header, from);
    if (!at) {
        fprintf(stderr, "test bug: %s not in the header\n", from);
        exit(1);
    }
    size_t nf = strlen(from), nt = strlen(to), nh = hlen - nf + nt;
    *out_len = 8 + nh + (st_len - 8 - hlen);
    char *out = npt_xmalloc(*out_len, "patched safetensors");
    uint64_t nh64 = nh;
    memcpy(out, &nh64, 8);
    size_t pre = (size_t)(at - header);
    memcpy(out + 8, header, pre);
    memcpy(out + 8 + pre, to, nt);
    memcpy(out + 8 + pre + nt, at + nf, hlen - pre - nf);
    memcpy(out + 8 + nh, st_orig + 8 + hlen, st_len - 8 - hlen);
    free(header);
    return out;
}

/* config.json with one substring replaced. Caller frees. */
static char *config_patch(const char *from, const char *to) {
    char *at = strstr(hf_config, from);
    if (!at) {
        fprintf(stderr, "test bug: %s not in config.json\n", from);
        exit(1);
    }
    size_t pre = (size_t)(at - hf_config), n = strlen(hf_config) - strlen(from) + strlen(to);
    char *out = npt_xmalloc(n + 1, "config");
    snprintf(out, n + 1, "%.*s%s%s", (int)pre, hf_config, to, at + strlen(from));
    return out;
}

static void hf_header_case(const char *name, const char *from, const char *to, const char *w1, const char *w2,
                           const char *what) {
    size_t len;
    char *st = st_patch(from, to, &len);
    expect_fail(hf_dir(name, hf_config, st, len), w1, w2, what);
    free(st);
}

/* A copy of the shared model.safetensors with its header length changed by dlen and
 * `extra` zero bytes appended (extra < 0 cuts bytes instead). Caller frees. */
static char *st_reframe(long dlen, long extra, size_t *out_len) {
    *out_len = (size_t)((long)st_len + extra);
    char *out = npt_xmalloc(*out_len > st_len ? *out_len : st_len, "reframed safetensors");
    memcpy(out, st_orig, st_len);
    if (extra > 0) memset(out + st_len, 0, (size_t)extra);
    uint64_t hlen;
    memcpy(&hlen, st_orig, 8);
    hlen = (uint64_t)((long)hlen + dlen);
    memcpy(out, &hlen, 8);
    return out;
}

/* The reference reader's rule (huggingface/safetensors, MetadataIncompleteBuffer and
 * InvalidOffset): the header is exactly N bytes of JSON (trailing spaces allowed) and the
 * tensors tile the data section from 0 to the end of the file. A length off by a few
 * bytes, or bytes appended, loaded weights shifted by that much before. */
static void st_layout_cases(void) {
    /* The numbers in the messages, from the shared file itself (its header length and
     * size), not from npt's output: its tensors tile its data section exactly. */
    uint64_t hlen;
    memcpy(&hlen, st_orig, 8);
    unsigned long long data = (unsigned long long)(st_len - 8 - hlen);
    char want[160];
    size_t len;
    char *st = st_reframe(-5, 0, &len); /* the header ends in 5 spaces: the JSON still parses */
    snprintf(want, sizeof want, "tensors cover %llu bytes but the data section holds %llu", data, data + 5);
    expect_fail(hf_dir("hlen_short", hf_config, st, len), "model.safetensors", want,
                "header length 5 bytes short (weights shifted before)");
    free(st);
    st = st_reframe(-40, 0, &len);
    snprintf(want, sizeof want, "header is not valid JSON of the declared %llu bytes", (unsigned long long)hlen - 40);
    expect_fail(hf_dir("hlen_cut", hf_config, st, len), "model.safetensors", want, "header length cutting the JSON");
    free(st);
    st = st_reframe(+8, 0, &len); /* the JSON is followed by 8 bytes of weights */
    snprintf(want, sizeof want, "header is not valid JSON of the declared %llu bytes", (unsigned long long)hlen + 8);
    expect_fail(hf_dir("hlen_long", hf_config, st, len), "model.safetensors", want,
                "header length taking in weight bytes");
    free(st);
    st = st_reframe(0, 64, &len);
    snprintf(want, sizeof want, "tensors cover %llu bytes but the data section holds %llu", data, data + 64);
    expect_fail(hf_dir("tail", hf_config, st, len), "model.safetensors", want, "64 bytes appended");
    free(st);
    /* model.norm.weight (the last tensor) moved 8 bytes on, the file 8 bytes longer */
    char *moved = st_patch("[2623488,2624000]", "[2623496,2624008]", &len);
    char *longer = npt_xmalloc(len + 8, "gap copy");
    memcpy(longer, moved, len);
    memset(longer + len, 0, 8);
    expect_fail(hf_dir("gap", hf_config, longer, len + 8), "model.norm.weight", "8 bytes",
                "a gap between two tensors");
    free(longer);
    free(moved);
    /* a header padded with spaces, as the reference writer pads it, still loads */
    char *padded = npt_xmalloc(st_len + 8, "padded copy");
    uint64_t hlen8 = hlen + 8;
    memcpy(padded, &hlen8, 8);
    memcpy(padded + 8, st_orig + 8, hlen);
    memset(padded + 8 + hlen, ' ', 8);
    memcpy(padded + 16 + hlen, st_orig + 8 + hlen, st_len - 8 - hlen);
    LlamaModel m;
    NptErr err = {{0}};
    int rc = llama_load(hf_dir("padded", hf_config, padded, st_len + 8), &m, &err);
    check(rc == 0, "control: a header padded with 8 more spaces loads: %s", rc ? err.msg : "ok");
    if (rc == 0) llama_free(&m);
    free(padded);
}

static void hf_cases(void) {
    hf_config = slurp(shared_path("models/TinyStories-656K/config.json"), NULL);
    st_orig = slurp(shared_path("models/TinyStories-656K/model.safetensors"), &st_len);

    mkdir(tpath("empty_dir"), 0700);
    expect_fail(tpath("empty_dir"), "empty_dir", "config.json", "directory without config.json");

    char *c = config_patch("\"hidden_size\"", "\"hidden_sise\"");
    expect_fail(hf_dir("no_hidden", c, st_orig, st_len), "config.json", "hidden_size", "config.json missing hidden_size");
    free(c);
    expect_fail(hf_dir("bad_json", "{\"hidden_size\": 128,", st_orig, st_len), "config.json", "JSON",
                "config.json that is not JSON");
    c = config_patch("\"model_type\": \"llama\"", "\"model_type\": \"gpt2\"");
    expect_fail(hf_dir("gpt2", c, st_orig, st_len), "config.json", "gpt2", "model_type gpt2");
    free(c);
    c = config_patch("\"rope_scaling\": null", "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}");
    expect_fail(hf_dir("rope_scaled", c, st_orig, st_len), "config.json", "rope_scaling", "rope_scaling set");
    free(c);
    c = config_patch("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3");
    expect_fail(hf_dir("three_layers", c, st_orig, st_len), "model.layers.2.input_layernorm.weight", "missing",
                "config with more layers than the file");
    free(c);
    c = config_patch("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1");
    expect_fail(hf_dir("one_layer", c, st_orig, st_len), "model.layers.1.", "num_hidden_layers = 1",
                "config with fewer layers than the file (top layer silently dropped before)");
    free(c);
    c = config_patch("\"bos_token_id\": 1", "\"bos_token_id\": 100000000");
    expect_fail(hf_dir("bos_huge", c, st_orig, st_len), "bos_token_id 100000000", "outside the vocabulary [0, 2048)",
                "BOS id beyond the vocabulary (was read out of bounds)");
    free(c);
    c = config_patch("\"eos_token_id\": 2", "\"eos_token_id\": -1");
    expect_fail(hf_dir("eos_negative", c, st_orig, st_len), "eos_token_id -1", "outside the vocabulary",
                "negative EOS id");
    free(c);
    c = config_patch("\"intermediate_size\": 384", "\"intermediate_size\": 385");
    expect_fail(hf_dir("wrong_ffn", c, st_orig, st_len), "model.safetensors", "[384, 128]",
                "config shape differing from the tensors");
    free(c);
    expect_fail(hf_dir("no_weights", hf_config, NULL, 0), "no_weights", "model.safetensors",
                "directory without safetensors");

    expect_fail(hf_dir("truncated", hf_config, st_orig, st_len / 2), "model.safetensors", "truncated",
                "safetensors truncated to half");
    expect_fail(hf_dir("tiny", hf_config, st_orig, 5), "model.safetensors", "too small", "5-byte safetensors");
    char *big = npt_xmalloc(st_len, "copy");
    memcpy(big, st_orig, st_len);
    uint64_t huge = (uint64_t)1 << 40;
    memcpy(big, &huge, 8);
    expect_fail(hf_dir("huge_header", hf_config, big, st_len), "model.safetensors", "exceeds the file size",
                "header length larger than the file");
    free(big);

    hf_header_case("offsets_eof", "[2623488,2624000]", "[2623488,2724000]", "model.norm.weight", "beyond",
                   "data_offsets beyond EOF");
    hf_header_case("offsets_shape", "\"shape\":[128],\"data_offsets\":[2623488", "\"shape\":[127],\"data_offsets\":[2623488",
                   "model.norm.weight", "inconsistent", "data_offsets not matching the shape");
    hf_header_case("overlap", "[2623488,2624000]", "[2623000,2623512]", "model.norm.weight", "overlap",
                   "overlapping tensors");
    hf_header_case("dtype_unknown", "\"model.norm.weight\":{\"dtype\":\"F32\"", "\"model.norm.weight\":{\"dtype\":\"Q4X\"",
                   "model.norm.weight", "Q4X", "unknown dtype");
    hf_header_case("dtype_f64", "\"model.norm.weight\":{\"dtype\":\"F32\",\"shape\":[128]",
                   "\"model.norm.weight\":{\"dtype\":\"F64\",\"shape\":[64]", "model.norm.weight", "F64",
                   "F64 dtype");
    hf_header_case("missing_tensor", "model.layers.1.mlp.up_proj.weight", "model.layers.1.mlp.up_proj.weigxx",
                   "model.layers.1.mlp.up_proj.weight", "missing", "missing tensor");
    /* [2^40, 2^40] F32 needs 2^82 bytes: reported as too large, not as the wrapped byte count */
    hf_header_case("shape_huge", "\"shape\":[128],\"data_offsets\":[2623488",
                   "\"shape\":[1099511627776,1099511627776],\"data_offsets\":[2623488", "model.norm.weight",
                   "too large for any file", "a shape whose byte count overflows 64 bits");
    hf_header_case("bad_header_json", "{\"__metadata__\"", "[\"__metadata__\"", "model.safetensors", "JSON",
                   "header that is not a JSON object");
    st_layout_cases();

    /* Three NaNs in one tensor: named with the file's own tensor name and the count. */
    char *nan = npt_xmalloc(st_len, "copy");
    memcpy(nan, st_orig, st_len);
    uint64_t hlen;
    memcpy(&hlen, st_orig, 8);
    float bad[3] = {NAN, INFINITY, -NAN};
    memcpy(nan + 8 + hlen + 2229760 + 40, bad, sizeof bad); /* up_proj of layer 1 starts at 2229760 */
    char want[700];
    snprintf(want, sizeof want, "%s/model.safetensors: tensor model.layers.1.mlp.up_proj.weight has 3 non-finite",
             tpath("nan")); /* the path as given, not the bare file name: there may be several copies */
    expect_fail(hf_dir("nan", hf_config, nan, st_len), want, NULL, "NaN/Inf in a weight, named by the file's path");
    free(nan);

    /* A sharded index naming a shard that is not there. */
    const char *dir = hf_dir("sharded_missing", hf_config, NULL, 0);
    char file[600];
    snprintf(file, sizeof file, "%s/model.safetensors.index.json", dir);
    spit_text(file, "{\"weight_map\": {\"lm_head.weight\": \"model-00001-of-00002.safetensors\"}}");
    expect_fail(dir, "model-00001-of-00002.safetensors", NULL, "index naming a missing shard");
    snprintf(file, sizeof file, "%s/model.safetensors.index.json", dir);
    spit_text(file, "{\"weight_map\": {\"lm_head.weight\": \"../../etc/passwd\"}}");
    expect_fail(dir, "../../etc/passwd", "plain file name", "index with a path in a shard name");
    free(st_orig);
    free(hf_config);
}

/* ---- GGUF ---- */

/* orig with the uint32 at `at` set to v, plus `extra` zero bytes, written to tmp/name. */
static const char *gguf_with_u32(const char *orig, size_t len, const char *name, size_t at, uint32_t v, size_t extra) {
    char *g = npt_xmalloc(len + extra, "gguf copy");
    memcpy(g, orig, len);
    memset(g + len, 0, extra);
    memcpy(g + at, &v, 4);
    spit(tpath(name), g, len + extra);
    free(g);
    return tpath(name);
}

/* Where the uint64 data offset of 2-D tensor `tensor` sits in a v1 tensor info: after
 * the name (found with its uint32 length, so output.weight is not attn_output.weight),
 * n_dims, two dims and the type. */
static size_t gguf_offset_at(const char *orig, size_t len, const char *tensor) {
    char key[64];
    uint32_t n = (uint32_t)strlen(tensor);
    memcpy(key, &n, 4);
    memcpy(key + 4, tensor, n);
    const char *at = memmem(orig, len, key, 4 + n);
    if (!at) {
        fprintf(stderr, "test bug: no tensor info %s\n", tensor);
        exit(1);
    }
    return (size_t)(at - orig) + 4 + n + 4 + 2 * 4 + 4;
}

/* Tensor infos that disagree with the data or the metadata: llama.cpp refuses them
 * (offsets must follow each other, padded to general.alignment); npt loaded shifted or
 * missing weights and exited 0. The file: v1, 48 tensors, block_count 5 at byte 247,
 * data at 11456, output.weight last (131072 bytes), its data running to the end. */
static void gguf_layout_cases(const char *orig, size_t len) {
    const char *p = gguf_with_u32(orig, len, "ntensors47.gguf", 8, 47, 0);
    expect_fail(p, "ntensors47.gguf", "131104 bytes after the last tensor",
                "GGUF tensor count one short (weights shifted by 32 bytes before)");
    p = gguf_with_u32(orig, len, "blocks3.gguf", 247, 3, 0);
    expect_fail(p, "blocks3.gguf", "blk.3.attn_q.weight but llama.block_count is 3",
                "GGUF block_count below its layers (top layers dropped before)");
    size_t q = gguf_offset_at(orig, len, "blk.0.attn_q.weight");
    p = gguf_with_u32(orig, len, "overlap.gguf", q, 0, 0);
    expect_fail(p, "token_embd.weight and blk.0.attn_q.weight overlap", "overlap.gguf", "GGUF tensors sharing bytes");
    size_t out = gguf_offset_at(orig, len, "output.weight");
    uint32_t off;
    memcpy(&off, orig + out, 4);
    p = gguf_with_u32(orig, len, "gap.gguf", out, off + 64, 64);
    expect_fail(p, "gap.gguf", "64 bytes between output_norm.weight and output.weight",
                "GGUF with a gap wider than the alignment padding");
    p = gguf_with_u32(orig, len, "misaligned.gguf", out, off + 4, 4);
    expect_fail(p, "misaligned.gguf: tensor output.weight", "not a multiple of the 32-byte alignment",
                "GGUF tensor offset off the alignment");
    p = gguf_with_u32(orig, len, "tail.gguf", 8, 48, 64);
    expect_fail(p, "tail.gguf", "64 bytes after the last tensor", "GGUF with 64 bytes appended");
}

static void gguf_cases(void) {
    size_t len;
    char *orig = slurp(shared_path("models/stories260K/tinyllamas-stories-260k-f32.gguf"), &len);
    char *g = npt_xmalloc(len, "gguf copy");

    /* v1 tensor info: name, uint32 n_dims, n_dims x uint32, uint32 type, uint64 offset */
    memcpy(g, orig, len);
    const char *name = "blk.0.attn_q.weight";
    char *at = memmem(g, len, name, strlen(name));
    uint32_t q4_0 = 2;
    memcpy(at + strlen(name) + 4 + 2 * 4, &q4_0, 4);
    spit(tpath("quant.gguf"), g, len);
    char want[600];
    snprintf(want, sizeof want, "%s: tensor blk.0.attn_q.weight", tpath("quant.gguf"));
    expect_fail(tpath("quant.gguf"), want, "Q4_0", "GGUF with a Q4_0 tensor, named by the file's path");

    spit(tpath("meta_cut.gguf"), orig, 3000);
    expect_fail(tpath("meta_cut.gguf"), "meta_cut.gguf", "truncated", "GGUF truncated inside its metadata");
    spit(tpath("data_cut.gguf"), orig, len - 1000);
    expect_fail(tpath("data_cut.gguf"), "output.weight", "truncated", "GGUF truncated inside its data");

    memcpy(g, orig, len);
    uint32_t lie = 0xfffffff0u;
    memcpy(g + 16, &lie, 4); /* length of the first key */
    spit(tpath("strlen.gguf"), g, len);
    expect_fail(tpath("strlen.gguf"), "strlen.gguf", "corrupt", "GGUF with a huge string length");

    memcpy(g, orig, len);
    uint32_t many = 0xffffffffu;
    memcpy(g + 8, &many, 4); /* tensor count */
    spit(tpath("count.gguf"), g, len);
    expect_fail(tpath("count.gguf"), "count.gguf", NULL, "GGUF with a huge tensor count");

    memcpy(g, orig, len);
    uint32_t v9 = 9;
    memcpy(g + 4, &v9, 4);
    spit(tpath("v9.gguf"), g, len);
    expect_fail(tpath("v9.gguf"), "v9.gguf", "version 9", "GGUF version 9");

    memcpy(g, orig, len);
    at = memmem(g, len, "llama.embedding_length", 22);
    memcpy(at, "llama.embedding_lengtX", 22);
    spit(tpath("nodim.gguf"), g, len);
    expect_fail(tpath("nodim.gguf"), "nodim.gguf", "llama.embedding_length", "GGUF without embedding_length");

    /* v1 key: the name, uint32 value type (4 = uint32), the value. Sizes are reported as
     * read: 2^30 fits an int and is judged against the limit; 2^31 and 2^32 - 1 do not,
     * and were reported as "dim = -1". */
    const uint32_t dims[] = {1u << 30, 1u << 31, 0xffffffffu};
    const char *said[] = {"dim = 1073741824 (must be 1..65536)", "llama.embedding_length = 2147483648 is too large",
                          "llama.embedding_length = 4294967295 is too large"};
    for (int i = 0; i < 3; i++) {
        memcpy(g, orig, len);
        at = memmem(g, len, "llama.embedding_length", 22);
        memcpy(at + 22 + 4, &dims[i], 4);
        spit(tpath("bigdim.gguf"), g, len);
        expect_fail(tpath("bigdim.gguf"), "bigdim.gguf", said[i], "GGUF embedding_length out of range, said as read");
    }

    memcpy(g, orig, len);
    float nan = NAN;
    memcpy(g + 11456 + 312832 + 4 * 7, &nan, 4); /* blk.1.attn_q.weight data, from the numpy parse */
    spit(tpath("nan.gguf"), g, len);
    snprintf(want, sizeof want, "%s: tensor blk.1.attn_q.weight has 1 non-finite", tpath("nan.gguf"));
    expect_fail(tpath("nan.gguf"), want, NULL, "GGUF with a NaN, named by the file's path");

    gguf_layout_cases(orig, len);

    spit(tpath("fake.gguf"), "GGUX", 4);
    expect_fail(tpath("fake.gguf"), "fake.gguf", "GGUF magic", ".gguf name without the magic");
    free(g);
    free(orig);
}

/* ---- llama2.c ---- */

static void llama2c_cases(void) {
    size_t len;
    char *orig = slurp(shared_path("models/stories260K/stories260K.bin"), &len);
    spit(tpath("cut.bin"), orig, 500000);
    expect_fail(tpath("cut.bin"), "cut.bin", "1056540", "llama2.c file truncated (names the expected size)");

    char *b = npt_xmalloc(len + 8, "copy");
    memcpy(b, orig, len);
    memset(b + len, 0, 8);
    spit(tpath("long.bin"), b, len + 8);
    expect_fail(tpath("long.bin"), "long.bin", "implies 1056540", "llama2.c file with trailing bytes");

    /* w1 of layer 2: header, tok_emb, rms_att, wq, wk, wv, wo, rms_ffn, two layers of w1 */
    size_t w1_l2 = 32768 + 320 + 20480 + 10240 + 10240 + 20480 + 320 + 2 * 172 * 64;
    float inf = INFINITY;
    memcpy(b, orig, len);
    memcpy(b + 28 + 4 * (w1_l2 + 5), &inf, 4);
    spit(tpath("nan.bin"), b, len);
    char want[600];
    snprintf(want, sizeof want, "%s: tensor w1[layer 2] has 1 non-finite", tpath("nan.bin"));
    expect_fail(tpath("nan.bin"), want, NULL, "llama2.c with an Inf, named by the file's path");

    int32_t v2[9] = {0x616b3432, 2, 64, 172, 5, 8, 4, 512, 512};
    char head[256] = {0};
    memcpy(head, v2, sizeof v2);
    spit(tpath("q80.bin"), head, sizeof head);
    expect_fail(tpath("q80.bin"), "q80.bin", "quantized llama2.c v2 files are not supported", "llama2.c version 2");
    v2[1] = 7;
    memcpy(head, v2, sizeof v2);
    spit(tpath("v7.bin"), head, sizeof head);
    expect_fail(tpath("v7.bin"), "v7.bin", "version 7", "llama2.c version 7");
    v2[1] = 1;
    memcpy(head, v2, sizeof v2);
    spit(tpath("v1_short.bin"), head, 100);
    expect_fail(tpath("v1_short.bin"), "v1_short.bin", "256-byte", "ak42 file shorter than its header");

    int32_t odd[7] = {64, 172, 5, 7, 4, 512, 512};
    memcpy(b, orig, len);
    memcpy(b, odd, sizeof odd);
    spit(tpath("heads.bin"), b, len);
    expect_fail(tpath("heads.bin"), "heads.bin", "n_heads 7", "llama2.c header with dim not divisible by heads");

    spit_text(tpath("notes.txt"), "These are my notes about the model, not the model itself.\n");
    expect_fail(tpath("notes.txt"), "notes.txt", "not a model file", "a text file");
    spit(tpath("x.bin"), orig, 10);
    expect_fail(tpath("x.bin"), "x.bin", "too small", "10-byte file");
    spit(tpath("ckpt.h5"), "\211HDF\r\n\032\n\0\0\0\0", 12);
    expect_fail(tpath("ckpt.h5"), "ckpt.h5", "HDF5", "an HDF5 checkpoint given as the model");
    expect_fail(tpath("does_not_exist.bin"), "does_not_exist.bin", "No such file", "missing file");
    free(b);
    free(orig);
}

/* ---- mutation: random byte flips in the header region and random truncations ---- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}

/* Each corrupted copy must either load or fail with a message; ASan catches the rest. */
static void mutate_cases(const char *rel, const char *copy_name, size_t header_bytes, int rounds) {
    size_t len;
    char *orig = slurp(shared_path(rel), &len);
    char *b = npt_xmalloc(len, "mutation copy");
    const char *path = tpath(copy_name);
    int loaded = 0, rejected = 0, silent = 0;
    for (int i = 0; i < rounds; i++) {
        memcpy(b, orig, len);
        size_t n = len;
        if (i % 4 == 3) {
            n = next_rand() % len; /* truncation */
        } else {
            for (int k = 0; k <= i % 4; k++) b[next_rand() % header_bytes] = (char)next_rand();
        }
        spit(path, b, n);
        LlamaModel m;
        NptErr err = {{0}};
        if (llama_load(path, &m, &err) == 0) {
            loaded++;
            llama_free(&m);
        } else if (err.msg[0]) {
            rejected++;
        } else {
            silent++;
        }
    }
    check(silent == 0, "%d corrupted copies of %s: %d loaded, %d rejected with a message, %d without", rounds, rel,
          loaded, rejected, silent);
    free(b);
    free(orig);
}

int main(void) {
    snprintf(tmp, sizeof tmp, "/tmp/npt_load_errors_XXXXXX");
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    hf_cases();
    gguf_cases();
    llama2c_cases();
    mutate_cases("models/stories260K/tinyllamas-stories-260k-f32.gguf", "mut.gguf", 11456, 120);
    mutate_cases("models/stories260K/stories260K.bin", "mut.bin", 28, 60);
    char *config = slurp(shared_path("models/TinyStories-656K/config.json"), NULL);
    hf_dir("mut_hf", config, NULL, 0);
    free(config);
    mutate_cases("models/TinyStories-656K/model.safetensors", "mut_hf/model.safetensors", 2168, 100);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    return test_finish();
}
