/* tests/test_export_ids.c — one model, one fingerprint, whatever its format: stories260K
 * as llama2.c .bin, GGUF and npt's own HF export (whose q/k rows export permutes to
 * rotate-half RoPE) all fingerprint alike, and checkpoints holding the fingerprint npt
 * stored before (q/k in the file's own order) are still accepted on the same weights.
 *
 * With `--strip-tokenizer IN OUT` it rewrites checkpoint IN as OUT without the recorded
 * tokenizer, as npt wrote checkpoints before recording it (tests/py/test_export_ids.py). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/save_hf.h"
#include "train/adapters.h"
#include "test.h"

static int load(const char *path, LlamaModel *m) {
    NptErr err;
    int rc = llama_load(path, m, &err);
    check(rc == 0, "load %s%s%s", path, rc ? ": " : "", rc ? err.msg : "");
    return rc;
}

/* A checkpoint's base identity as npt records it, with the given fingerprint. */
static CkptMeta ckpt_for(const LlamaModel *m, uint64_t fingerprint) {
    CkptMeta c;
    memset(&c, 0, sizeof c);
    adapters_fill_meta(&c, m, NULL);
    c.base_fingerprint = fingerprint;
    c.n_npt_layers = 1;
    return c;
}

static int accepted(const CkptMeta *c, const LlamaModel *m) {
    NptErr err;
    return adapters_check_base("old.h5", c, m, &err) == 0;
}

/* The fingerprints of the three copies, and which stored values each accepts. */
static void check_formats(const LlamaModel *bin, const LlamaModel *gguf, const LlamaModel *hf) {
    /* the value every checkpoint trained on stories260K.bin or its GGUF holds; recomputed
     * independently of npt (numpy and a Python FNV-1a over the file's weights) by
     * tests/py/test_load_values.py's check "FNV-1a 64 of its weights in its own
     * (interleaved) order is 0a5188d5b35d35ae" */
    const uint64_t bin_old = 0x0a5188d5b35d35aeULL, hf_old = 0x7082ded3685989f2ULL; /* hf_old: the export, before */
    check(bin->fingerprint == bin_old && gguf->fingerprint == bin_old,
          ".bin and GGUF keep their fingerprint %016llx (%016llx, %016llx)", (unsigned long long)bin_old,
          (unsigned long long)bin->fingerprint, (unsigned long long)gguf->fingerprint);
    check(hf->fingerprint == bin->fingerprint, "npt's HF export of stories260K.bin has its fingerprint (%016llx vs %016llx)",
          (unsigned long long)hf->fingerprint, (unsigned long long)bin->fingerprint);
    check(llama_fingerprint_in(hf, ROPE_HALF) == hf_old && llama_fingerprint_in(bin, ROPE_HALF) == hf_old,
          "q/k hashed in rotate-half order give what npt stored for the export before (%016llx)", (unsigned long long)hf_old);
    const LlamaModel *all[3] = {bin, gguf, hf};
    const char *names[3] = {".bin", "GGUF", "HF export"};
    for (int k = 0; k < 3; k++) {
        CkptMeta now = ckpt_for(all[k], bin_old), before = ckpt_for(all[k], hf_old), other = ckpt_for(all[k], bin_old ^ 1);
        check(accepted(&now, all[k]) && accepted(&before, all[k]) && !accepted(&other, all[k]),
              "%s: adapters fingerprinted %016llx (now) and %016llx (an HF export, before) are accepted, others refused",
              names[k], (unsigned long long)bin_old, (unsigned long long)hf_old);
    }
}

/* An HF model's own fingerprint from before (its rows in file order) stays accepted. */
static void check_hf_before(void) {
    LlamaModel m;
    if (load(shared_path("models/TinyStories-656K"), &m)) return;
    const uint64_t before = 0xadd20aa9d544c8edULL; /* docs/models.md, until this change */
    check(llama_fingerprint_in(&m, ROPE_HALF) == before && m.fingerprint != before,
          "TinyStories-656K: its fingerprint of before is its rotate-half-order hash (%016llx; now %016llx)",
          (unsigned long long)before, (unsigned long long)m.fingerprint);
    CkptMeta c = ckpt_for(&m, before);
    check(accepted(&c, &m), "TinyStories-656K: adapters trained before on it are still accepted");
    llama_free(&m);
}

static int strip_tokenizer(const char *in, const char *out) {
    CkptMeta meta;
    CkptTensor *t = NULL;
    int n = 0;
    NptErr err;
    if (ckpt_load(in, &meta, &t, &n, &err)) return fprintf(stderr, "%s\n", err.msg), 1;
    meta.tokenizer_path[0] = '\0';
    int rc = ckpt_save(out, &meta, t, n, &err);
    if (rc) fprintf(stderr, "%s\n", err.msg);
    ckpt_free(&meta, t, n);
    return rc ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "--strip-tokenizer")) return strip_tokenizer(argv[2], argv[3]);
    LlamaModel bin, gguf, hf;
    char dir[] = "/tmp/npt_export_ids_XXXXXX", out[64];
    if (!mkdtemp(dir)) return check(0, "mkdtemp"), 1;
    snprintf(out, sizeof out, "%s/hf", dir);
    NptErr err;
    if (load(shared_path("models/stories260K/stories260K.bin"), &bin) ||
        load(shared_path("models/stories260K/tinyllamas-stories-260k-f32.gguf"), &gguf))
        return 1;
    int saved = hf_save_dir(&bin, out, "", &err);
    check(saved == 0, "export stories260K.bin as HF (its read-back compares fingerprints)%s%s", saved ? ": " : "",
          saved ? err.msg : "");
    if (saved == 0 && load(out, &hf) == 0) {
        check(hf.cfg.rope == ROPE_HALF, "the export is read as rotate-half RoPE");
        check_formats(&bin, &gguf, &hf);
        llama_free(&hf);
    }
    check_hf_before();
    llama_free(&bin);
    llama_free(&gguf);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", dir);
    return test_finish();
}
