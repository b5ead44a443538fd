/* model/debug.h — the debug mode (SPEC section 7): where is the first NaN/Inf born?
 *
 * A checker hooks into the graph's OpObserver: after every op it counts the output's
 * non-finite values, and the FIRST op whose output is non-finite is the producer. If
 * all its inputs were finite, that op made the NaN; if one was not (a weight, since
 * every activation was checked when it was produced), that input is named. With a
 * reduced precision, every op output is rounded in place to bf16/fp16 as it is made
 * (weights are rounded once by debug_round_weights), so low-precision overflow happens
 * on the CPU where it would on an accelerator, and the producer is the op whose output
 * left the format's range; a fused op's intermediates (npt_swiglu's d_add, d_raw and
 * modulated gate) are rounded and checked too, and named as the cause when they overflow
 * (graph.h InnerObserver). The backward pass, on request, is replayed node by node
 * with the same rule applied to gradients. */
#ifndef NPT_DEBUG_H
#define NPT_DEBUG_H

#include "npt.h"

typedef enum { DEBUG_F32 = 0, DEBUG_BF16 = 1, DEBUG_FP16 = 2 } DebugPrecision;

#define DEBUG_MAX_ROWS 32

typedef struct {
    char name[64];
    int ndim, shape[NPT_MAX_DIMS];
    size_t nan, inf;
    float min, max, absmax; /* over the finite values; 0 when there are none */
} DebugStats;

typedef struct {
    int found;
    int backward;       /* 1: found while replaying the backward pass (stats are of gradients) */
    int layer;          /* g->layer when the op ran: -1 outside the decoder layers */
    char op[32];
    long op_index;      /* 0-based count of ops before it in the pass */
    DebugStats out;
    int n_in;
    DebugStats in[NODE_MAX_INPUTS];
    int bad_input;      /* index of an input already non-finite at this op, -1 if none */
    int overflow;       /* reduced precision: finite in float32, out of the format's range */
    float raw_absmax;   /* the output's largest |x| before rounding (reduced precision), or the intermediate's */
    char inner[40];     /* "" or the op's intermediate that turned non-finite first (npt_swiglu's d_add, ...) */
    int rows[DEBUG_MAX_ROWS]; /* rows (token positions) holding a non-finite value */
    int n_rows, rows_total;
} DebugProducer;

/* A multiplicative gate factor of exactly zero switches the MLP gate off without any
 * NaN; the SPEC's bounded factor cannot reach it, older formulations could. */
typedef struct {
    int found, layer;
    char op[32];
    long op_index;
    size_t zeros, n;          /* factors equal to 0, of n */
    int rows[DEBUG_MAX_ROWS]; /* token positions holding a zero factor */
    int n_rows, rows_total;
} DebugZeroFactor;

typedef struct {
    size_t nan, inf;
    float min, max;
} DebugLayerStat;

typedef struct {
    DebugPrecision precision;
    int backward;          /* also replay the backward pass of the loss */
    const char *save_path; /* HDF5 file for the producer's inputs, NULL: none */
    int save_keep_existing; /* no --force: a save_path that appears meanwhile is kept, the save fails */
    /* The block the trainable parameters' gradients accumulate into (NULL: none),
     * zeroed before the backward pass, so a run is judged by its own gradients and not
     * by a previous run's or a skipped training step's (whose NaN would be blamed on
     * the first op that adds to it). */
    float *grads;
    size_t n_grads;
} DebugOptions;

typedef struct {
    DebugProducer first;
    DebugZeroFactor zero_factor; /* first modulation op with a zero factor */
    /* [0] embedding, [1 + l] output of decoder layer l, [n_layers + 1] logits */
    DebugLayerStat *layers;
    int n_stats;
    double loss;       /* NaN when T < 2 */
    long n_ops;
    int saved;         /* save_path was written */
} DebugResult;

/* Runs embedding, every layer (NPT where npt converts it), logits and the next-token
 * loss on one sequence of T tokens with the checker on. Returns 0 (whatever was found;
 * see r->first.found) or -1 on a setup error. Free r with debug_result_free. */
int debug_run(const LlamaModel *m, const NptModel *npt, const int *tokens, int T, const DebugOptions *o,
              DebugResult *r, NptErr *err);
void debug_result_free(DebugResult *r);

/* The checker alone, for a graph the caller drives (r is zeroed; r->layers stays
 * NULL): after attaching, every op on g is checked (and rounded to p). */
typedef struct {
    DebugPrecision prec;
    DebugResult *r;
    Tensor *in[NODE_MAX_INPUTS]; /* the producer's inputs, for the HDF5 save */
    int n_in;
    const char *inner;           /* the running op's first non-finite intermediate, NULL if none */
    int inner_overflow;          /* it was finite in float32 */
    float inner_absmax;
} DebugChecker;
void debug_attach(Graph *g, DebugChecker *c, DebugResult *r, DebugPrecision p);

/* Rounds every base weight (and the adapters when npt is given) to p in place; the
 * caller owns the copy. Returns how many finite weights overflowed to Inf. */
size_t debug_round_weights(LlamaModel *m, NptModel *npt, DebugPrecision p);

/* x = round(x) in p; returns how many finite values became infinite. */
size_t debug_round(float *x, size_t n, DebugPrecision p, float *raw_absmax);
const char *debug_precision_name(DebugPrecision p);
int debug_parse_precision(const char *s, DebugPrecision *p);
float debug_precision_max(DebugPrecision p);


/* 1 when the run found a fault: a non-finite producer or a zero modulation factor. */
int debug_found(const DebugResult *r);

/* Human-readable producer report ("all ops finite" when nothing was found); tokens
 * (may be NULL) are printed at the affected positions. */
void debug_print_producer(FILE *f, const DebugResult *r, const int *tokens);
/* The compressed per-layer table: "embedding OK (min ... max ...)", "layers 1-4 NaN". */
void debug_print_layers(FILE *f, const DebugResult *r);
/* One-word state of a layer stat: OK, NaN or Inf. */
const char *debug_layer_state(const DebugLayerStat *s);

/* For the trainer, when a batch is skipped as non-finite: runs the checker (forward
 * and backward of the next-token loss) on each of the B sequences of tokens [B*T] and
 * writes <stem>.txt (a report per sequence; sample_ids may be NULL) and <stem>.h5
 * (inputs of the first failing sequence's forward producer). grads[0..n_grads) is
 * DebugOptions.grads, zeroed before each sequence.
 * Returns how many sequences failed, or -1 with err set. */
int debug_report_batch(const LlamaModel *m, const NptModel *npt, float *grads, size_t n_grads, const int *tokens, int B,
                       int T, const int64_t *sample_ids, const char *stem, NptErr *err);

/* Re-runs the op saved by debug_run's save_path on its saved inputs, with the checker
 * on, and fills r->first. Supports the ops that can be rebuilt from their inputs and
 * the saved attributes; others are an error naming the op. */
int debug_replay(const char *path, DebugResult *r, NptErr *err);

#endif
