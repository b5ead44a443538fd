/* train/eval.h — how far an NPT model is from its base model, on a set of token windows
 * (`npt eval`, and the trainer's periodic eval).
 *
 * For every decoder layer l the base model (teacher) and the NPT model (student) are
 * compared on their residual-stream outputs h_l (before the final norm), per token t:
 *   NMSE   mean over tokens and dims of (x/max(|x|,1e-6) - y/max(|y|,1e-6))^2 (SPEC 3)
 *   cos    mean over tokens of x.y / (max(|x|,1e-6) max(|y|,1e-6))
 * in two variants:
 *   e2e    the NPT model run end to end: drift from the layers below accumulates. Its mean
 *          over the compared layers (first converted .. last) is the fidelity term of the
 *          distillation loss (train/objective.c).
 *   local  layer l of the student fed the teacher's input to layer l: the error this layer
 *          adds by itself (NPT layers only; a base layer fed the same input is identical).
 * Perplexity: exp of the mean next-token cross-entropy over positions 1..T-1 of every
 * window, base and NPT; log-sum-exp in double, so a huge vocabulary or huge logits cannot
 * overflow.
 * Modulation, per NPT layer on the e2e run, over all tokens:
 *   |s d_add|  mean over tokens and d_ffn entries, and max: the additive term actually
 *              added to the gate (s = modulation_scale)
 *   d_mul      min / max / mean of 0.5 sigmoid(d_raw) + 0.5 (full mode only)
 *   ||dW||_F   the NPT gate g' equals (W_gate + dW) m with the rank-1, per-token update
 *              dW = v m^T / ||m||^2,  v = g (d_mul - 1) + s d_add,  m = RMSNorm(h; w_ffn),
 *              so ||dW||_F = ||v|| / ||m||: mean and max over tokens.
 * Every sum accumulates in double; results are means, independent of the batch size. */
#ifndef NPT_EVAL_H
#define NPT_EVAL_H

#include <stdio.h>

#include "../model/npt.h"

typedef struct {
    int is_npt;                      /* converted by the adapters */
    int compared;                    /* layer >= first converted layer (part of the loss) */
    double nmse_e2e, cos_e2e;
    double nmse_local, cos_local;    /* NPT layers only */
    double d_add_mean, d_add_max;    /* |s d_add|; NPT layers only */
    double d_mul_min, d_mul_max, d_mul_mean; /* full-mode NPT layers only */
    double dw_fro_mean, dw_fro_max;  /* NPT layers only */
} EvalLayer;

typedef struct {
    int has_npt, safe_mode, n_layers, seq_len, n_windows;
    long long n_tokens;              /* windows x seq_len: tokens whose hidden states are compared */
    long long n_targets;             /* windows x (seq_len - 2): scored positions (not the one after BOS) */
    float modulation_scale;
    double ce_base, ppl_base;        /* nats per token, exp(ce) */
    double ce_npt, ppl_npt;          /* has_npt only */
    double nmse_e2e_mean;            /* mean over compared layers: the distillation fidelity */
    int bad_window_base;             /* first window with a non-finite NLL (the model overflows */
    int bad_window_npt;              /*   float32 there), base / NPT model; -1 if none */
    double nmse_local_mean;          /* mean over NPT layers */
    EvalLayer *layers;               /* [n_layers], malloc'd */
    double seconds;
} EvalResult;

/* Evaluates base model m, and when npt is not NULL the NPT model, on n_windows windows
 * of T tokens (tokens[n_windows * T], each window starting with BOS), `batch` windows
 * at a time; memory is sized once from (batch, T). Fills r (free with
 * eval_result_free). Token ids outside the vocabulary are an error. A model whose
 * logits are not finite is not: its perplexity is NaN and bad_window_* says where. */
int eval_run(const LlamaModel *m, const NptModel *npt, const int *tokens, int n_windows, int T, int batch,
             EvalResult *r, NptErr *err);
void eval_result_free(EvalResult *r);

/* Human-readable report: perplexities, then one row per layer. */
void eval_print_table(FILE *f, const EvalResult *r);
/* One JSON object on one line (no trailing newline); figures that do not apply, or are
 * not finite, are null. Field names as in EvalResult/EvalLayer. */
void eval_write_json(FILE *f, const EvalResult *r);

/* -log softmax(logits)[target] over V entries, in double with the max subtracted. */
double eval_token_nll(const float *logits, int V, int target);

#endif
