/* tests/test_load.c — the model loaders on the shared models.
 *
 * Without arguments: configurations against MANIFEST.md, the llama2.c and GGUF copies
 * of stories260K holding bit-identical weights (and so one fingerprint), tied
 * classifiers, tensor names/shapes/alignment, tokenizer discovery.
 * With `--dump MODEL` it prints the configuration, the fingerprint and per-tensor
 * statistics for tests/py/test_load_values.py, which parses the files itself with
 * numpy (and writes F16/BF16/sharded/ak42 variants) and compares. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "model/llama.h"
#include "util/path.h"
#include "util/shared_map.h"
#include "test.h"

/* Every weight view in canonical order; lm_head last. */
static int all_tensors(LlamaModel *m, Tensor **out) {
    int n = 0;
    out[n++] = &m->tok_emb;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        LlamaLayer *L = &m->layers[l];
        Tensor *per[] = {&L->attn_norm, &L->wq, &L->wk, &L->wv, &L->wo, &L->ffn_norm, &L->w_gate, &L->w_up, &L->w_down};
        for (size_t k = 0; k < sizeof per / sizeof per[0]; k++) out[n++] = per[k];
    }
    out[n++] = &m->final_norm;
    out[n++] = &m->lm_head;
    return n;
}

static int dump(const char *path) {
    LlamaModel m;
    NptErr err;
    if (llama_load(path, &m, &err)) {
        printf("error %s\n", err.msg);
        return 1;
    }
    const LlamaConfig *c = &m.cfg;
    printf("config dim=%d hidden_dim=%d n_layers=%d n_heads=%d n_kv_heads=%d head_dim=%d vocab_size=%d seq_len=%d "
           "norm_eps=%.9g rope_theta=%.9g rope=%s tied=%d bos=%d eos=%d format=%s\n",
           c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab_size, c->seq_len,
           c->norm_eps, c->rope_theta, rope_style_name(c->rope), c->tied, c->bos_id, c->eos_id,
           model_format_name(m.format));
    printf("fingerprint %016llx\n", (unsigned long long)m.fingerprint);
    printf("tokenizer %s\n", m.tokenizer_path[0] ? m.tokenizer_path : "-");
    Tensor *t[4096];
    int n = all_tensors(&m, t);
    for (int i = 0; i < n; i++) {
        /* the weighted sum sees a transposed or row-permuted tensor that the sum cannot;
         * weights (j * 2654435761 mod 1009) / 1009 - 0.5, as in test_load_values.py */
        double sum = 0.0, weighted = 0.0;
        for (size_t j = 0; j < t[i]->n; j++) {
            sum += t[i]->data[j];
            weighted += t[i]->data[j] * ((double)((j * 2654435761u) % 1009u) / 1009.0 - 0.5);
        }
        printf("tensor %s %d %d %.17g %.9g %.9g %.17g\n", t[i]->name, t[i]->shape[0],
               t[i]->ndim == 2 ? t[i]->shape[1] : 0, sum, t[i]->data[0], t[i]->data[t[i]->n - 1], weighted);
    }
    llama_free(&m);
    return 0;
}

static int load(const char *rel, LlamaModel *m) {
    NptErr err;
    int rc = llama_load(shared_path(rel), m, &err);
    check(rc == 0, "%s loads (%s)", rel, rc ? err.msg : "ok");
    return rc;
}

/* MANIFEST.md: stories260K is dim 64, hidden 172, 5 layers, 8 heads, 4 kv heads,
 * vocab 512, seq_len 512, shared classifier, Meta (interleaved) RoPE. */
static void check_stories_config(const LlamaModel *m, const char *what, ModelFormat fmt) {
    const LlamaConfig *c = &m->cfg;
    check(c->dim == 64 && c->hidden_dim == 172 && c->n_layers == 5 && c->n_heads == 8 && c->n_kv_heads == 4 &&
              c->head_dim == 8 && c->vocab_size == 512 && c->seq_len == 512,
          "%s: shape 64/172/5/8/4/512/512 as in MANIFEST (got %d/%d/%d/%d/%d/%d/%d)", what, c->dim, c->hidden_dim,
          c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size, c->seq_len);
    check(c->rope == ROPE_INTERLEAVED && m->format == fmt, "%s: interleaved RoPE, format %s", what,
          model_format_name(m->format));
    check(fabsf(c->norm_eps - 1e-5f) < 1e-9f && c->rope_theta == 10000.0f && c->bos_id == 1 && c->eos_id == 2,
          "%s: norm_eps 1e-5, rope_theta 1e4, bos 1, eos 2 (got %g %g %d %d)", what, c->norm_eps, c->rope_theta,
          c->bos_id, c->eos_id);
    check(c->tied && m->lm_head.data == m->tok_emb.data, "%s: classifier shared with the embedding", what);
    check(npt_ends_with(m->tokenizer_path, "/tok512.bin"), "%s: tokenizer tok512.bin found beside it (%s)", what,
          m->tokenizer_path);
}

static void check_views(LlamaModel *m, const char *what) {
    Tensor *t[4096];
    int n = all_tensors(m, t), aligned = 1, inside = 1;
    for (int i = 0; i < n; i++) {
        aligned &= (uintptr_t)t[i]->data % 64 == 0;
        inside &= t[i]->data >= m->weights_block && t[i]->data + t[i]->n <= m->weights_block + m->weights_floats;
    }
    check(aligned && inside, "%s: every tensor 64-byte aligned and inside the one weight block", what);
    const LlamaLayer *L = &m->layers[m->cfg.n_layers - 1];
    int kvd = m->cfg.n_kv_heads * m->cfg.head_dim;
    check(L->wk.ndim == 2 && L->wk.shape[0] == kvd && L->wk.shape[1] == m->cfg.dim && L->w_down.shape[0] == m->cfg.dim &&
              L->w_down.shape[1] == m->cfg.hidden_dim && L->attn_norm.ndim == 1 && L->attn_norm.shape[0] == m->cfg.dim,
          "%s: wk [kv_dim, dim], w_down [dim, hidden], norms 1-D", what);
    char want[64];
    snprintf(want, sizeof want, "layers.%d.wq", m->cfg.n_layers - 1);
    check(!strcmp(L->wq.name, want) && !strcmp(m->tok_emb.name, "tok_emb") && !strcmp(m->lm_head.name, "lm_head") &&
              !strcmp(m->final_norm.name, "final_norm"),
          "%s: tensor names (%s, %s)", what, L->wq.name, m->tok_emb.name);
}

static void check_stories(void) {
    LlamaModel bin, gguf;
    if (load("models/stories260K/stories260K.bin", &bin)) return;
    if (load("models/stories260K/tinyllamas-stories-260k-f32.gguf", &gguf)) return;
    check_stories_config(&bin, "stories260K.bin", MODEL_FMT_LLAMA2C);
    check_stories_config(&gguf, "stories260K gguf", MODEL_FMT_GGUF);
    check_views(&bin, "stories260K.bin");
    check_views(&gguf, "stories260K gguf");
    /* Two independently written files of the same network. */
    Tensor *a[4096], *b[4096];
    int n = all_tensors(&bin, a);
    all_tensors(&gguf, b);
    int same = 1;
    for (int i = 0; i < n; i++) {
        int eq = a[i]->n == b[i]->n && !memcmp(a[i]->data, b[i]->data, a[i]->n * sizeof(float));
        if (!eq) printf("  differs: %s\n", a[i]->name);
        same &= eq;
    }
    check(same, "llama2.c and GGUF copies of stories260K hold bit-identical weights (%d tensors)", n);
    check(bin.fingerprint == gguf.fingerprint && bin.fingerprint != 0,
          "same weights give the same fingerprint across formats (%016llx vs %016llx)",
          (unsigned long long)bin.fingerprint, (unsigned long long)gguf.fingerprint);
    check(bin.weights_floats == gguf.weights_floats, "GGUF's stored copy of the embedding is shared, not kept twice");
    llama_free(&bin);
    llama_free(&gguf);
}

/* llama_load_shared + llama_attach_shared, as two ranks of a machine use them, here in
 * one process: the attached model is the loaded one, bit for bit, read from the file
 * alone. The GGUF copy stores its classifier, which the loader drops as identical to
 * the embedding: the attaching side must arrive at the shortened layout. */
static void check_shared_copy(const char *rel) {
    char path[256];
    snprintf(path, sizeof path, "/tmp/npt-test-weights-%d", (int)getpid());
    LlamaModel plain, loaded, attached;
    NptErr err;
    if (load(rel, &plain)) return;
    int why = 0, claim = npt_shared_map_claim(path, &why);
    check(claim >= 0, "%s: the shared file is claimed (%s)", rel, claim < 0 ? strerror(why) : "ok");
    if (claim < 0) {
        llama_free(&plain);
        return;
    }
    int rc = llama_load_shared(shared_path(rel), path, &loaded, &err);
    check(rc == 0 && loaded.mapped_bytes >= loaded.weights_floats * sizeof(float) && loaded.share_errno == 0,
          "%s: loads into the shared file (%s)", rel, rc ? err.msg : "ok");
    if (rc) {
        unlink(path);
        close(claim);
        llama_free(&plain);
        return;
    }
    rc = llama_attach_shared(&attached, &loaded, path, &err);
    check(rc == 0, "%s: another model attaches to the shared file (%s)", rel, rc ? err.msg : "ok");
    if (rc == 0) {
        Tensor *a[4096], *b[4096];
        int n = all_tensors(&plain, a), same = all_tensors(&attached, b) == n;
        for (int i = 0; same && i < n; i++)
            same = a[i]->n == b[i]->n && !strcmp(a[i]->name, b[i]->name) &&
                   !memcmp(a[i]->data, b[i]->data, a[i]->n * sizeof(float));
        check(same && attached.fingerprint == plain.fingerprint && attached.cfg.tied == plain.cfg.tied &&
                  attached.weights_floats == plain.weights_floats &&
                  !strcmp(attached.tokenizer_path, plain.tokenizer_path),
              "%s: the attached model is the plainly loaded one (%d tensors bit-identical, fingerprint, tied, tokenizer)",
              rel, n);
        check(attached.weights_block != loaded.weights_block && attached.lm_head.data == attached.tok_emb.data,
              "%s: it has its own mapping, its classifier tied to its embedding", rel);
        check_views(&attached, rel);
        llama_free(&attached);
    }
    LlamaModel wrong = loaded;
    wrong.mapped_bytes += 4096;
    rc = llama_attach_shared(&attached, &wrong, path, &err);
    check(rc == -1 && strstr(err.msg, "not the") && attached.weights_block == NULL,
          "%s: a shared file of another size is refused (%s)", rel, rc ? err.msg : "attached");
    LlamaModel again;
    rc = llama_load_shared(shared_path(rel), path, &again, &err); /* the file is sized already: EEXIST */
    check(rc == 0 && again.share_errno == EEXIST && again.mapped_bytes == 0 && again.fingerprint == plain.fingerprint,
          "%s: a shared file that cannot be made leaves the weights on the heap, saying why (errno %d)", rel,
          again.share_errno);
    if (rc == 0) llama_free(&again);
    rc = llama_load_shared(shared_path(rel), "/tmp/npt-test-weights-unclaimed", &again, &err);
    check(rc == 0 && again.share_errno == ENOENT && again.mapped_bytes == 0 && access("/tmp/npt-test-weights-unclaimed", F_OK) != 0,
          "%s: an unclaimed shared file is not created: the weights stay on the heap (errno %d)", rel, again.share_errno);
    if (rc == 0) llama_free(&again);
    unlink(path);
    close(claim);
    llama_free(&loaded);
    llama_free(&plain);
}

/* MANIFEST.md: hidden 128, intermediate 384, 2 layers, 8 heads, 4 kv heads, vocab 2048,
 * rms_norm_eps 1e-6, rope_theta 1e4, tied (only lm_head.weight stored), BOS 1, EOS 2. */
static void check_tinystories(void) {
    LlamaModel m, viafile;
    if (load("models/TinyStories-656K", &m)) return;
    const LlamaConfig *c = &m.cfg;
    check(c->dim == 128 && c->hidden_dim == 384 && c->n_layers == 2 && c->n_heads == 8 && c->n_kv_heads == 4 &&
              c->head_dim == 16 && c->vocab_size == 2048 && c->seq_len == 512,
          "TinyStories-656K: shape 128/384/2/8/4/2048/512 as in config.json");
    check(c->norm_eps == 1e-6f && c->rope_theta == 10000.0f && c->rope == ROPE_HALF && c->bos_id == 1 &&
              c->eos_id == 2 && m.format == MODEL_FMT_HF,
          "TinyStories-656K: eps 1e-6, theta 1e4, rotate-half RoPE, bos 1, eos 2, format hf");
    check(c->tied && m.lm_head.data == m.tok_emb.data, "TinyStories-656K: tied (embedding read from lm_head.weight)");
    check(npt_ends_with(m.tokenizer_path, "TinyStories-656K/tokenizer.json"), "TinyStories-656K: tokenizer.json found (%s)",
          m.tokenizer_path);
    check_views(&m, "TinyStories-656K");
    if (load("models/TinyStories-656K/model.safetensors", &viafile) == 0) {
        check(viafile.fingerprint == m.fingerprint && viafile.format == MODEL_FMT_HF &&
                  npt_ends_with(viafile.path, "model.safetensors"),
              "a .safetensors path loads its directory, keeping the given path");
        llama_free(&viafile);
    }
    llama_free(&m);
    llama_free(&m); /* freeing twice is harmless: llama_free zeroes the struct */
    check(m.weights_block == NULL && m.layers == NULL, "llama_free leaves an empty model");
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--dump")) return dump(argv[2]);
    if (argc != 1) {
        fprintf(stderr, "usage: test_load [--dump MODEL]\n");
        return 2;
    }
    check_stories();
    check_tinystories();
    check_shared_copy("models/stories260K/tinyllamas-stories-260k-f32.gguf");
    check_shared_copy("models/TinyStories-656K");
    check(!strcmp(rope_style_name(ROPE_HALF), "rotate_half") && !strcmp(rope_style_name(ROPE_INTERLEAVED), "interleaved") &&
              !strcmp(model_format_name(MODEL_FMT_GGUF), "gguf"),
          "rope_style_name / model_format_name");
    return test_finish();
}
