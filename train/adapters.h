/* train/adapters.h — the bridge between NPT adapters in memory (model/npt.h) and
 * checkpoints on disk (train/checkpoint.h): naming, base-model identity, loading
 * adapters onto a base model for generate/eval/inspect. */
#ifndef NPT_ADAPTERS_H
#define NPT_ADAPTERS_H

#include "../model/npt.h"
#include "../optim/optim.h"
#include "checkpoint.h"

/* Base model identity and adapter configuration into meta (other fields untouched). */
void adapters_fill_meta(CkptMeta *meta, const LlamaModel *m, const NptModel *n);

/* ckpt_check_base of the checkpoint ckpt (read from ckpt_path) against model m. Also
 * accepts the fingerprint npt stored before it hashed q/k in one RoPE order (an HF
 * model's rows in rotate-half order), so adapters trained then stay loadable, now on
 * the same weights in any format. */
int adapters_check_base(const char *ckpt_path, const CkptMeta *ckpt, const LlamaModel *m, NptErr *err);

/* Views of the adapter tensors (and, when opt is given, their AdamW moments) named
 * adapters/layer_NN/{A,B_add,B_mul} and optimizer/layer_NN/X.{m,v}. *out is malloc'd;
 * the data pointers alias n and opt. */
int adapters_tensor_list(const NptModel *n, const Optimizer *opt, CkptTensor **out, int *count, NptErr *err);

/* Copies every adapter (and moment, when opt is given) tensor from a loaded checkpoint
 * into n / opt; a missing or misshaped tensor is an error naming it. */
int adapters_restore(NptModel *n, Optimizer *opt, const char *path, const CkptTensor *t, int count, NptErr *err);

/* Opens an adapter checkpoint for base model m: checks it belongs to m (error names
 * both models), builds n with the checkpoint's rank/layers/mode and fills the weights. */
int adapters_load(const char *path, const LlamaModel *m, NptModel *n, NptErr *err);

/* An all-weights checkpoint's /weights/block (block, listed from f) read over the weights
 * of m, its base model (model_name, for the error): it must have exactly m's size (the
 * file alone cannot say whether lm_head is tied) and finite values; m's fingerprint is
 * then that of the trained weights. Shared by export and inspect verify. */
int load_trained_weights(CkptFile *f, const char *path, const CkptTensor *block, LlamaModel *m, const char *model_name,
                         NptErr *err);

/* llama_load for every command that expects a full model: a file or directory that
 * holds adapters only (an npt checkpoint, or a PEFT adapter directory with
 * adapter_config.json) is refused with what it is and the base model it needs. */
int load_full_model(const char *path, LlamaModel *m, NptErr *err);
/* The same through llama_load_shared (the weight block in the new file share_path). */
int load_full_model_shared(const char *path, const char *share_path, LlamaModel *m, NptErr *err);

#endif
