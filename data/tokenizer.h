/* data/tokenizer.h — one interface over the two tokenizer formats npt reads:
 * the llama2.c tokenizer .bin (pieces + scores, merged greedily by score) and the
 * Hugging Face tokenizer.json (BPE with ranked merges, byte fallback, Prepend/Replace
 * normalizer, added/special tokens). */
#ifndef NPT_TOKENIZER_H
#define NPT_TOKENIZER_H

#include "../util/common.h"

typedef struct Tokenizer Tokenizer;

/* Detects the format: a path ending in .json (or a directory holding tokenizer.json)
 * is HF, anything else a llama2.c .bin. vocab_size_hint is the model's vocabulary
 * (llama2.c .bin files do not store it); pass 0 when unknown. */
Tokenizer *tokenizer_load(const char *path, int vocab_size_hint, NptErr *err);
void tokenizer_free(Tokenizer *t);

int tokenizer_vocab_size(const Tokenizer *t);
int tokenizer_bos_id(const Tokenizer *t);
int tokenizer_eos_id(const Tokenizer *t);

/* Encodes UTF-8 text. Writes at most max_tokens ids into out and returns how many the
 * text needs (so a caller can retry with a larger buffer), or -1 with err set.
 * add_bos prepends BOS. Special tokens written literally in the text (e.g.
 * "<|end_story|>" for HF) are matched as their ids. */
int tokenizer_encode(const Tokenizer *t, const char *text, int add_bos, int *out, int max_tokens,
                     NptErr *err);

/* Text of one token as it should be printed after token prev (handles the leading-space
 * strip after BOS and byte-fallback tokens such as <0x0A>). Returns a pointer into the
 * tokenizer or into buf (at least 8 bytes); for byte tokens the returned string may be a
 * single raw byte which alone may not be valid UTF-8. */
const char *tokenizer_decode_token(const Tokenizer *t, int prev, int token, char *buf);

/* Decodes a whole sequence into a malloc'd UTF-8 string (caller frees). Byte-fallback
 * tokens are fused into bytes first, as HF's decoder does. */
char *tokenizer_decode(const Tokenizer *t, const int *ids, int n, NptErr *err);

/* Id of a token string, -1 when absent (for tests and special-token lookup). */
int tokenizer_token_id(const Tokenizer *t, const char *piece);

#endif
