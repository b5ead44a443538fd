/* model/npt.h — NPT layers: adapters that turn attention into a modulation of the MLP
 * gate (SPEC section 2), on top of a frozen LlamaModel they share with the teacher.
 *
 *   a = Attn(RMSNorm(h)); z = A a; d_add = B_add z; d_raw = B_mul z (full mode only)
 *   g' = g * (0.5 sigmoid(d_raw) + 0.5) + s d_add    (safe mode: g' = g + s d_add)
 *   out = h + W_down(SiLU(g') * W_up RMSNorm(h; w_ffn))
 *
 * All adapter parameters live in one contiguous block (and their gradients in another
 * of the same layout), so the optimizer, clipping, finiteness checks and checkpoints
 * treat them as one flat vector; the per-layer Tensors are views into it. */
#ifndef NPT_NPT_H
#define NPT_NPT_H

#include "llama.h"

typedef struct {
    int layer;    /* index of the decoder layer this adapter converts */
    Tensor A;     /* [rank, dim] */
    Tensor B_add; /* [hidden_dim, rank] */
    Tensor B_mul; /* [hidden_dim, rank]; data == NULL in safe mode */
} NptAdapter;

typedef enum { NPT_LAYERS_ALL, NPT_LAYERS_UPPER_HALF, NPT_LAYERS_LOWER_HALF, NPT_LAYERS_LIST } NptLayerMode;

typedef struct {
    int rank;
    int safe_mode;
    float modulation_scale;
    NptLayerMode layer_mode;
    const int *layer_list; /* NPT_LAYERS_LIST */
    int n_layer_list;
    float init_a_std, init_b_add_std, init_b_mul_std;
} NptConfig;

typedef struct NptModel {
    const LlamaModel *base;
    int rank, safe_mode;
    float scale;
    int n_adapters;
    NptAdapter *adapters;   /* ascending layer order */
    int *adapter_of_layer;  /* [n_layers]: adapter index or -1 */
    int first_layer;        /* lowest converted layer */
    float *params, *grads;  /* contiguous blocks of n_params floats */
    size_t n_params;
    int test_tanh_mul;      /* tests only: the pre-SPEC d_mul = tanh(d_raw) (op_npt_modulate_tanh) */
} NptModel;

/* Resolves the layer selection (explicit ids are validated against the model) and
 * allocates the adapters; weights are left for npt_init_weights or a checkpoint. */
int npt_create(NptModel *n, const LlamaModel *base, const NptConfig *cfg, NptErr *err);
void npt_free(NptModel *n);
/* SPEC default init: A ~ N(0, a_std^2), B_add ~ N(0, b_add_std^2), B_mul ~ N(0, b_mul_std^2)
 * (b_mul_std 0 gives B_mul = 0), from a seeded generator: same seed, same weights. */
void npt_init_weights(NptModel *n, const NptConfig *cfg, uint64_t seed);
void npt_zero_grads(NptModel *n);

/* One NPT decoder layer; *reg gets the layer's regularizer (SPEC section 2) when reg
 * is not NULL. attn (may be NULL) is the layer's attention block output on h when the
 * caller already has it: the teacher's, for the first converted layer, whose input is
 * the teacher's own and frozen (train/objective.c). Otherwise z = A a is computed as
 * (A Wo) c from the heads' output c, unless an observer watches the graph. */
Tensor *npt_layer_forward(Graph *g, const NptModel *n, int layer, Tensor *h, Tensor *attn, int B, int T, Tensor **reg);
/* Layer `layer` of the student: NPT if converted, the base layer otherwise. */
Tensor *npt_student_layer(Graph *g, const NptModel *n, int layer, Tensor *h, int B, int T, Tensor **reg);

/* Single-token NPT MLP for generation with a KV cache: given a (attention output with
 * Wo applied) and m = RMSNorm(h; w_ffn), writes W_down(SiLU(g') * u) into out. */
void npt_infer_mlp(const NptModel *n, int layer, const float *a, const float *m, float *out, float *scratch);
/* scratch floats npt_infer_mlp needs */
size_t npt_infer_scratch(const NptModel *n);

#endif
