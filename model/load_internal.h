/* model/load_internal.h — helpers shared by the three format loaders (load_hf.c,
 * load_llama2c.c, load_gguf.c) and the HF writer (save_hf.c), implemented in
 * llama_load.c. Not a public interface.
 *
 * Contract of a format loader: it zeroes m, sets m->path and m->format, fills m->cfg,
 * calls llama_alloc_weights, reads every tensor into its view (llama_read_tensor) and
 * records where it came from (llama_set_source) so that later errors can name the
 * file's own tensor name. On failure it calls llama_free(m). llama_load then runs
 * llama_finish_load (non-finite scan, fingerprint) and finds the tokenizer. */
#ifndef NPT_LOAD_INTERNAL_H
#define NPT_LOAD_INTERNAL_H

#include "llama.h"

/* The nine tensors of a decoder layer in canonical order (the weight block's layout and
 * the fingerprint's order): where each sits in LlamaLayer, npt's name, and its name in
 * an HF file (under model.layers.N.) and a GGUF file (blk.N.<gguf>.weight). */
enum { LLAMA_LAYER_TENSORS = 9 };
typedef struct {
    size_t field;
    const char *name, *hf, *gguf;
} LlamaLayerTensor;
extern const LlamaLayerTensor llama_layer_tensors[LLAMA_LAYER_TENSORS];

static inline Tensor *llama_layer_tensor(const LlamaLayer *L, int k) {
    return (Tensor *)((char *)L + llama_layer_tensors[k].field);
}
/* The heads of layer tensor k if it is a q/k projection, whose rows RoPE rotates in pairs
 * (wq: n_heads, wk: n_kv_heads); 0 for the others (and for k < 0, no layer tensor). */
static inline int llama_rope_heads(const LlamaConfig *c, int k) {
    return k == 1 ? c->n_heads : k == 2 ? c->n_kv_heads : 0; /* wq, wk in llama_layer_tensors */
}

/* Element encodings the loaders convert to float32. */
typedef enum { WDT_F32 = 0, WDT_F16 = 1, WDT_BF16 = 2 } WeightDtype;

/* Bytes per element of a WeightDtype. */
size_t weight_dtype_size(WeightDtype dt);

/* Reads n elements of type dt at byte offset `offset` of fd into dst as float32.
 * file and tensor name the source in the error message. */
int llama_read_tensor(int fd, const char *file, uint64_t offset, WeightDtype dt, float *dst, size_t n,
                      const char *tensor, NptErr *err);

/* Checks a file's tensor shape, given PyTorch order ([out, in]), against the view t. */
int llama_check_shape(const Tensor *t, int ndim, const uint64_t *shape, const char *file, const char *tensor,
                      NptErr *err);

/* Records that view t was read from tensor `name` of `file` (for error messages). */
void llama_set_source(LlamaModel *m, const Tensor *t, const char *file, const char *name);

/* Size of an open file; fails with a message naming path. */
int llama_file_size(int fd, const char *path, uint64_t *size, NptErr *err);

/* Last component of a path (no allocation). */
const char *llama_basename(const char *path);

/* Zeroes m and records the path (rejecting paths that do not fit) and format. */
int llama_begin(LlamaModel *m, const char *path, ModelFormat fmt, NptErr *err);

/* Checks m->cfg for sizes npt can hold and sets head_dim; the error names m->path.
 * llama_alloc_weights calls it too; loaders call it first when they need head_dim or
 * sizes derived from the configuration before allocating. */
int llama_validate_config(LlamaModel *m, NptErr *err);
/* The memory row holding row r of a q/k projection (head_dim hd) in RoPE order want,
 * when memory holds order mem (llama_load.c). */
int rope_row(int r, int hd, RopeStyle mem, RopeStyle want);

#endif
