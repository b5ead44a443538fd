/* cli/inspect_model.c — `npt inspect MODEL` (what a model file is) and
 * `npt inspect verify CKPT --model M` (shapes, finiteness, base, a forward pass). */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../model/llama.h"
#include "../model/npt.h"
#include "../train/adapters.h"
#include "commands.h"
#include "inspect.h"

/* ---------------------------------------------------------------- model files */

static int model_tensor_count(const LlamaModel *m) { return 2 + 9 * m->cfg.n_layers + (m->cfg.tied ? 0 : 1); }

int inspect_model(const char *path, int json) {
    NptErr err;
    LlamaModel m;
    if (load_full_model(path, &m, &err)) {
        fprintf(stderr, "npt inspect: error: %s\n", err.msg);
        return 1;
    }
    const LlamaConfig *c = &m.cfg;
    char fp[20];
    snprintf(fp, sizeof fp, "%016llx", (unsigned long long)m.fingerprint);
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "file", path);
        cJSON_AddStringToObject(o, "kind", "model");
        cJSON_AddStringToObject(o, "format", model_format_name(m.format));
        cJSON_AddStringToObject(o, "architecture", "llama");
        int v[8] = {c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab_size, c->seq_len};
        const char *k[8] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "vocab_size", "seq_len"};
        for (int i = 0; i < 8; i++) cJSON_AddNumberToObject(o, k[i], v[i]);
        cJSON_AddBoolToObject(o, "tied", c->tied);
        cJSON_AddStringToObject(o, "rope", rope_style_name(c->rope));
        cJSON_AddNumberToObject(o, "tensors", model_tensor_count(&m));
        cJSON_AddNumberToObject(o, "params", (double)llama_param_count(&m));
        cJSON_AddStringToObject(o, "fingerprint", fp);
        cJSON_AddStringToObject(o, "tokenizer", m.tokenizer_path);
        char *s = cJSON_Print(o);
        if (s) puts(s);
        free(s);
        cJSON_Delete(o);
    } else {
        printf("model        %s\n", path);
        printf("format       %s (llama architecture), weights float32 in memory\n", model_format_name(m.format));
        printf("shape        dim %d, hidden_dim %d, %d layers, %d heads (%d kv heads, head_dim %d), vocab %d, context %d\n",
               c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab_size, c->seq_len);
        printf("embeddings   %s, rope %s, norm eps %g, rope theta %g\n", c->tied ? "tied (lm_head = token embedding)" : "untied",
               rope_style_name(c->rope), c->norm_eps, c->rope_theta);
        printf("tensors      %d, %zu parameters\n", model_tensor_count(&m), llama_param_count(&m));
        printf("fingerprint  %s\n", fp);
        printf("tokenizer    %s\n", m.tokenizer_path[0] ? m.tokenizer_path : "(none beside the model)");
    }
    llama_free(&m);
    return 0;
}

/* ---------------------------------------------------------------- verify */

static int verify_fail(const char *msg) {
    printf("verify: FAIL: %s\n", msg);
    return 1;
}

/* Structure and finiteness of the checkpoint alone, streamed. */
static int verify_file(const char *path, CkptMeta *m, NptErr *err) {
    CkptFile *f = ckpt_open(path, err);
    if (!f) return -1;
    CkptTensor *t = NULL;
    int n = 0, rc = ckpt_read_meta(f, m, err) || ckpt_list_tensors(f, &t, &n, err) || ckpt_validate(path, m, t, n, err);
    for (int i = 0; !rc && i < n; i++) {
        TensorStats s;
        if (inspect_tensor_stats(f, &t[i], &s, err)) rc = 1;
        else if (inspect_value_problem(path, &t[i], &s, err->msg, sizeof err->msg)) rc = 1;
    }
    ckpt_free(NULL, t, n);
    ckpt_close(f);
    return rc ? -1 : 0;
}

/* BOS and 7 more tokens through the NPT model; every logit must be finite. */
static int verify_forward(const LlamaModel *lm, const NptModel *npt, NptErr *err) {
    LlamaInfer s;
    if (llama_infer_init(&s, &lm->cfg, npt, 8, err)) return -1;
    int rc = 0;
    for (int pos = 0; pos < 8 && !rc; pos++) {
        int tok = pos == 0 ? lm->cfg.bos_id : (pos * 37 + 11) % lm->cfg.vocab_size;
        const float *logits = llama_infer_step(&s, lm, npt, tok, pos);
        for (int v = 0; v < lm->cfg.vocab_size; v++)
            if (!isfinite(logits[v])) {
                rc = npt_fail(err, "forward pass: logit %d at position %d is %g (token %d)", v, pos, logits[v], tok);
                break;
            }
    }
    llama_infer_free(&s);
    return rc;
}

/* An all-weights checkpoint holds the trained model itself: its /weights/block, read over
 * lm's weights (it must have their size), goes through the same forward pass as adapters
 * do, with none. Finite weights can still overflow the logits. */
static int verify_all_weights(const char *ckpt, const char *model, LlamaModel *lm, NptErr *err) {
    CkptFile *f = ckpt_open(ckpt, err);
    if (!f) return -1;
    CkptTensor *t = NULL;
    int n = 0, rc = ckpt_list_tensors(f, &t, &n, err);
    const CkptTensor *block = rc ? NULL : ckpt_find(t, n, "weights/block");
    if (!rc && !block) /* verify_file validated it: only a file changed in between gets here */
        rc = npt_fail(err, "%s: damaged: /weights/block missing; use an earlier checkpoint", ckpt);
    if (!rc) rc = load_trained_weights(f, ckpt, block, lm, model, err);
    ckpt_free(NULL, t, n);
    ckpt_close(f);
    if (rc) return -1;
    printf("verify: ok: /weights/block holds the %zu floats of the model's weights, all finite\n", lm->weights_floats);
    if (verify_forward(lm, NULL, err)) {
        char why[sizeof err->msg];
        snprintf(why, sizeof why, "%s", err->msg);
        return npt_fail(err, "%s: the trained weights fail the %s; the checkpoint is not usable: use an earlier one",
                        ckpt, why);
    }
    printf("verify: ok: forward pass of 8 tokens through the trained weights (%d layers, no adapters) gives finite "
           "logits\n", lm->cfg.n_layers);
    return 0;
}

int inspect_verify(int argc, char **argv) {
    const char *ckpt = NULL, *model = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            puts("usage: npt inspect verify CKPT --model M\n\n"
                 "Checks the checkpoint's structure and finiteness, that M is the base model it was trained on\n"
                 "(fingerprint and shapes), and that BOS + 7 tokens through the NPT model give finite logits.\n"
                 "Prints one line per check; exit 0 pass, 1 fail (the reason on one line), 2 usage.");
            return 0;
        } else if (arg_is(argv[i], "--model")) {
            if (!(model = arg_value(argc, argv, &i, "--model", "inspect"))) return 2;
        } else if (argv[i][0] != '-' && !ckpt) {
            ckpt = argv[i];
        } else {
            fprintf(stderr, "npt inspect: error: unexpected argument '%s' (usage: npt inspect verify CKPT --model M)\n",
                    argv[i]);
            return 2;
        }
    }
    if (!ckpt || !model) {
        fprintf(stderr, "npt inspect: error: usage: npt inspect verify CKPT --model M\n");
        return 2;
    }
    NptErr err;
    CkptMeta cm;
    memset(&cm, 0, sizeof cm);
    if (verify_file(ckpt, &cm, &err)) {
        ckpt_free(&cm, NULL, 0);
        return verify_fail(err.msg);
    }
    printf("verify: ok: %s is structurally sound and every tensor is finite\n", ckpt);
    LlamaModel lm;
    if (load_full_model(model, &lm, &err)) {
        ckpt_free(&cm, NULL, 0);
        return verify_fail(err.msg);
    }
    int rc = adapters_check_base(ckpt, &cm, &lm, &err); /* layer counts agree; the reader bounds adapter layers */
    if (!rc) printf("verify: ok: base model matches (fingerprint %016llx, shapes agree)\n", (unsigned long long)lm.fingerprint);
    if (!rc && ckpt_is_all_weights(&cm)) {
        if (verify_all_weights(ckpt, model, &lm, &err)) rc = -1;
    } else if (!rc) {
        NptModel npt;
        if (adapters_load(ckpt, &lm, &npt, &err)) {
            rc = -1;
        } else {
            if (verify_forward(&lm, &npt, &err)) rc = -1;
            else printf("verify: ok: forward pass of 8 tokens through %d NPT layers gives finite logits\n", npt.n_adapters);
            npt_free(&npt);
        }
    }
    llama_free(&lm);
    ckpt_free(&cm, NULL, 0);
    if (rc) return verify_fail(err.msg);
    printf("verify: PASS\n");
    return 0;
}
