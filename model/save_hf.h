/* model/save_hf.h — writing Hugging Face model directories that npt (model/load_hf.c),
 * transformers and any safetensors reader load: config.json, model.safetensors (F32)
 * and the tokenizer files. Every file is written under a temporary name and renamed
 * into place; a whole directory is built beside its target and renamed in at the end,
 * so a failed or interrupted save leaves nothing half-written and never touches an
 * existing model. */
#ifndef NPT_SAVE_HF_H
#define NPT_SAVE_HF_H

#include "llama.h"

/* The byte-level tokenizer npt makes itself (hf_write_byte_tokenizer): <unk>, <s>, </s>
 * at ids 0-2, then the 256 byte tokens <0x00>..<0xFF> at ids 3-258, no merges, so every
 * byte of the text is one token (id = byte + HF_BYTE_OFFSET). */
enum { HF_BYTE_UNK = 0, HF_BYTE_BOS = 1, HF_BYTE_EOS = 2, HF_BYTE_OFFSET = 3, HF_BYTE_VOCAB = 259 };

/* The whole directory: config.json, model.safetensors and a tokenizer: tokenizer_json
 * (an HF tokenizer.json, copied with the tokenizer_config.json / special_tokens_map.json
 * beside it), when NULL the byte-level one, when "" none (the model's tokenizer is not
 * one an HF directory can hold: a llama2.c .bin). dir must not exist or be empty; an
 * existing non-empty directory is refused and left as it was. Before the directory is
 * renamed into place it is loaded back with llama_load and tokenizer_load, and its
 * weights must have m->fingerprint (call llama_finish_load after changing weights). */
int hf_save_dir(const LlamaModel *m, const char *dir, const char *tokenizer_json, NptErr *err);

/* 0 when path does not exist or is an empty directory; otherwise -1 with a message
 * saying why npt will not write a model there. Commands call it before any work. */
int hf_check_out_dir(const char *dir, NptErr *err);

#endif
