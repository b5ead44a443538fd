/* model/llama.h — the Llama-family model: configuration, frozen weights, forward passes.
 *
 * Every format (HF safetensors, llama2.c .bin, GGUF) is loaded into the same float32
 * layout, PyTorch convention: every linear weight is [out_features, in_features]
 * row-major, so y = x W^T. All weights live in one block (weights_block) so the frozen
 * base exists exactly once in memory; teacher and student both point into it. */
#ifndef NPT_LLAMA_H
#define NPT_LLAMA_H

#include "tensor.h"

typedef enum {
    ROPE_INTERLEAVED = 0, /* pairs (2i, 2i+1): llama2.c, Meta, GGUF */
    ROPE_HALF = 1         /* pairs (i, i + hd/2), "rotate_half": Hugging Face */
} RopeStyle;

typedef enum { MODEL_FMT_HF = 0, MODEL_FMT_LLAMA2C = 1, MODEL_FMT_GGUF = 2 } ModelFormat;

typedef struct {
    int dim;         /* d_model */
    int hidden_dim;  /* d_ffn */
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int head_dim;    /* dim / n_heads */
    int vocab_size;
    int seq_len;     /* max context the model was trained with */
    float norm_eps;
    float rope_theta;
    RopeStyle rope;
    int tied;        /* lm_head shares the token embedding storage */
    int bos_id, eos_id;
} LlamaConfig;

typedef struct {
    Tensor attn_norm; /* [dim] */
    Tensor wq;        /* [n_heads*head_dim, dim] */
    Tensor wk;        /* [n_kv_heads*head_dim, dim] */
    Tensor wv;        /* [n_kv_heads*head_dim, dim] */
    Tensor wo;        /* [dim, n_heads*head_dim] */
    Tensor ffn_norm;  /* [dim] */
    Tensor w_gate;    /* [hidden_dim, dim]  (llama2.c w1) */
    Tensor w_up;      /* [hidden_dim, dim]  (llama2.c w3) */
    Tensor w_down;    /* [dim, hidden_dim]  (llama2.c w2) */
} LlamaLayer;

typedef struct {
    LlamaConfig cfg;
    ModelFormat format;
    char path[4096];        /* what the user gave */
    char tokenizer_path[4096]; /* tokenizer found beside the model, "" if none */
    float *weights_block;   /* owns all weights below */
    size_t weights_floats;
    Tensor tok_emb;         /* [vocab, dim] */
    LlamaLayer *layers;     /* n_layers */
    Tensor final_norm;      /* [dim] */
    Tensor lm_head;         /* [vocab, dim]; data == tok_emb.data when tied */
    uint64_t fingerprint;   /* FNV-1a 64 over all weight bytes, q/k rows in interleaved RoPE
                             * order whatever the format's: identifies the base model */
    /* MPI ranks on one machine share one copy (llama_load_shared, llama_attach_shared):
     * then weights_block is a read-only mapping of mapped_bytes instead of heap memory. */
    size_t mapped_bytes;
    const char *share_path; /* set during llama_load_shared only: the file to place the block in */
    int share_errno;        /* llama_load_shared could not create that file (errno): the block is on the heap */
} LlamaModel;

/* Loads any supported format, detected from the path (directory -> HF, .gguf magic ->
 * GGUF, else llama2.c). Reports non-finite weights by tensor name as an error. */
int llama_load(const char *path, LlamaModel *m, NptErr *err);
/* llama_load, with the weight block placed in share_path, a file the caller has claimed
 * (npt_shared_map_claim, util/shared_map.h), mapped read-only once loaded so that other
 * processes of the machine can map it too. If the file cannot be sized (a full
 * /dev/shm), the block goes on the heap and m->share_errno says why: the caller reports
 * it. The caller removes the file in any case. */
int llama_load_shared(const char *path, const char *share_path, LlamaModel *m, NptErr *err);
/* The same model in another process: m becomes `loaded` (as llama_load_shared left it
 * there, sent over), its views pointing into share_path mapped read-only. Nothing is
 * read from the model file. */
int llama_attach_shared(LlamaModel *m, const LlamaModel *loaded, const char *share_path, NptErr *err);
void llama_free(LlamaModel *m);
/* Makes every weight a trainable parameter (the lm objective with train_all_weights):
 * returns their gradients as one zeroed block laid out like weights_block (the caller
 * frees it), NULL with err set if it cannot be allocated. A tied lm_head shares
 * tok_emb's gradient. */
float *llama_make_trainable(LlamaModel *m, NptErr *err);

/* Format-specific loaders (model/load_hf.c, load_llama2c.c, load_gguf.c). Each fills
 * m->cfg and the weights via llama_alloc_weights; llama_load then runs llama_finish_load. */
int llama_load_hf(const char *dir, LlamaModel *m, NptErr *err);
int llama_load_llama2c(const char *path, LlamaModel *m, NptErr *err);
int llama_load_gguf(const char *path, LlamaModel *m, NptErr *err);

/* Shared by the loaders: validates cfg, allocates one block for every weight and
 * points the Tensors into it (lm_head aliases tok_emb when cfg.tied). */
int llama_alloc_weights(LlamaModel *m, NptErr *err);
/* The size in floats of the weights block (LlamaModel.weights_block) of a model whose
 * config has c's dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size and tied (the
 * other fields are not used); 0 if llama_validate_config refuses those. */
size_t llama_block_floats(const LlamaConfig *c);
/* The model's parameters: the sum of its tensors' sizes (a tied lm_head counted once),
 * without the padding weights_floats includes. */
size_t llama_param_count(const LlamaModel *m);
/* After loading: non-finite scan by tensor name, fingerprint. */
int llama_finish_load(LlamaModel *m, NptErr *err);
/* llama_finish_load without its scan, for weights the caller has found finite: an lm_head
 * identical to the embedding is tied to it, and the fingerprint set. */
void llama_finish_finite(LlamaModel *m);
/* The fingerprint with the q/k rows hashed in RoPE order `order`. ROPE_INTERLEAVED is
 * m->fingerprint; ROPE_HALF is what npt stored for HF models before the fingerprint had
 * one order (checkpoints holding it stay loadable: train/adapters.h). */
uint64_t llama_fingerprint_in(const LlamaModel *m, RopeStyle order);

const char *rope_style_name(RopeStyle r);
const char *model_format_name(ModelFormat f);

/* ---- Forward pass on the tape (model/llama.c) ----
 * The pieces are exposed separately because the NPT layer (model/npt.c) reuses the
 * attention block and the MLP projections of the very same frozen weights. */
#include "graph.h"

Tensor *llama_embed(Graph *g, const LlamaModel *m, const int *tokens, int n);
/* The heads' outputs before the output projection, [B T, n_heads head_dim]:
 * Attn(RoPE(Wq x), RoPE(Wk x), Wv x) with x = RMSNorm(h; attn_norm) */
Tensor *llama_attention_heads(Graph *g, const LlamaModel *m, int layer, Tensor *h, int B, int T);
/* The same with the value projection wv [v_heads v_dim, dim] in place of the layer's
 * (v_heads: n_kv_heads or n_heads, see op_attention_values): [B T, n_heads v_dim]. */
Tensor *llama_attention_heads_values(Graph *g, const LlamaModel *m, int layer, Tensor *h, int B, int T, Tensor *wv,
                                     int v_heads, int v_dim);
/* a = Wo llama_attention_heads(h) */
Tensor *llama_attention_block(Graph *g, const LlamaModel *m, int layer, Tensor *h, int B, int T);
/* Base decoder layer: h1 = h + a; out = h1 + W_down(SiLU(W_gate m) * W_up m), m = RMSNorm(h1) */
Tensor *llama_layer(Graph *g, const LlamaModel *m, int layer, Tensor *h, int B, int T);
/* The same layer after its attention block a (computed by the caller, who may keep a copy;
 * a's storage is overwritten by h + a) */
Tensor *llama_layer_rest(Graph *g, const LlamaModel *m, int layer, Tensor *h, Tensor *a);
/* final RMSNorm + lm_head: [n, vocab] */
Tensor *llama_logits(Graph *g, const LlamaModel *m, Tensor *h);

/* Activation arena bytes one forward (+ backward when with_grad) of B x T tokens needs
 * at most, with or without logits. Used to size arenas up front. */
size_t llama_activation_bytes(const LlamaConfig *c, int B, int T, int with_logits);

/* ---- Token-by-token inference with a KV cache (model/llama_infer.c) ---- */
struct NptModel;
typedef struct {
    int max_seq;
    float *key_cache, *value_cache; /* [n_layers, max_seq, kv_dim] */
    float *x, *xb, *xb2, *q, *k, *v, *att, *hb, *hb2, *logits;
    float *npt_scratch; /* only when created with an NptModel */
} LlamaInfer;

int llama_infer_init(LlamaInfer *s, const LlamaConfig *c, const struct NptModel *npt, int max_seq, NptErr *err);
void llama_infer_free(LlamaInfer *s);
/* Logits for `token` at position pos (0-based) given the cache of positions < pos.
 * With npt non-NULL, converted layers run as NPT layers (model/npt.h). */
float *llama_infer_step(LlamaInfer *s, const LlamaModel *m, const struct NptModel *npt, int token, int pos);

#endif
