/* train/objective.c — distillation and LM losses of one micro-batch (see objective.h). */
#include "objective.h"

#include <math.h>
#include <string.h>

#include "../model/ops.h"

/* Copies t into the student's arena so the teacher's scratch can be reset. */
static Tensor *keep(Graph *g, const Tensor *t, const char *name) {
    Tensor *k = tensor_new(g->act, name, t->ndim, t->shape);
    memcpy(k->data, t->data, t->n * sizeof(float));
    return k;
}

static ObjectiveValues distill(ObjectiveGraphs *gr, const LlamaModel *m, const NptModel *npt, const ObjectiveConfig *oc,
                               const int *tokens, int B, int T, float grad_scale, int poison) {
    Graph *sg = gr->student, *tg = gr->teacher;
    int L = m->cfg.n_layers, first = npt->first_layer, N = B * T;
    Tensor **teacher_out = arena_alloc(sg->act, (size_t)L * sizeof(Tensor *));
    graph_reset(tg);
    Tensor *h = keep(sg, llama_embed(tg, m, tokens, N), "h0");
    if (poison) h->data[0] = NAN;
    Tensor *student_in = first == 0 ? h : NULL, *first_attn = NULL;
    for (int l = 0; l < L; l++) {
        arena_reset(tg->act);
        if (l == first) { /* the student's first layer sees this very input: its attention is this one */
            Tensor *a = llama_attention_block(tg, m, l, h, B, T);
            first_attn = keep(sg, a, "teacher_attention");
            h = keep(sg, llama_layer_rest(tg, m, l, h, a), "teacher_hidden");
        } else {
            h = keep(sg, llama_layer(tg, m, l, h, B, T), "teacher_hidden");
        }
        teacher_out[l] = h;
        if (l + 1 == first) student_in = h;
    }
    arena_reset(tg->act);
    Tensor *fid = NULL, *reg = NULL;
    h = student_in;
    int n_compared = 0;
    for (int l = first; l < L; l++) {
        Tensor *r;
        h = l == first ? npt_layer_forward(sg, npt, l, h, first_attn, B, T, &r) : npt_student_layer(sg, npt, l, h, B, T, &r);
        Tensor *d = oc->use_mse ? op_mse(sg, h, teacher_out[l]) : op_nmse(sg, h, teacher_out[l]);
        fid = fid ? op_add(sg, fid, d) : d;
        if (r) reg = reg ? op_add(sg, reg, r) : r;
        n_compared++;
    }
    fid = op_scale(sg, fid, 1.0f / (float)n_compared);
    reg = op_scale(sg, reg, 1.0f / (float)npt->n_adapters);
    Tensor *loss = op_add(sg, fid, op_scale(sg, reg, oc->lambda));
    ObjectiveValues v = {loss->data[0], fid->data[0], reg->data[0]};
    if (isfinite(v.loss) && sg->recording) graph_backward(sg, loss, grad_scale);
    return v;
}

static ObjectiveValues language_model(ObjectiveGraphs *gr, const LlamaModel *m, const NptModel *npt, const int *tokens,
                                      int B, int T, float grad_scale, int poison) {
    Graph *sg = gr->student;
    int N = B * T;
    int *targets = arena_alloc(sg->act, (size_t)N * sizeof(int));
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) targets[b * T + t] = t + 1 < T ? tokens[b * T + t + 1] : -1;
    Tensor *h = llama_embed(sg, m, tokens, N);
    if (poison) h->data[0] = NAN;
    Tensor *reg_sum = NULL;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        Tensor *r = NULL;
        h = npt ? npt_student_layer(sg, npt, l, h, B, T, &r) : llama_layer(sg, m, l, h, B, T);
        if (r) reg_sum = reg_sum ? op_add(sg, reg_sum, r) : r;
    }
    Tensor *loss = op_cross_entropy(sg, llama_logits(sg, m, h), targets);
    ObjectiveValues v = {loss->data[0], loss->data[0], reg_sum ? reg_sum->data[0] / npt->n_adapters : 0.0};
    if (isfinite(v.loss) && sg->recording) graph_backward(sg, loss, grad_scale);
    return v;
}

ObjectiveValues objective_step(ObjectiveGraphs *gr, const LlamaModel *m, const NptModel *npt, const ObjectiveConfig *oc,
                               const int *tokens, int B, int T, float grad_scale, int poison) {
    graph_reset(gr->student);
    if (oc->distill) return distill(gr, m, npt, oc, tokens, B, T, grad_scale, poison);
    return language_model(gr, m, oc->train_all_weights ? NULL : npt, tokens, B, T, grad_scale, poison);
}
