/* cli/session.h — what `npt generate`, `npt debug` and `npt eval` open before they run: a full
 * model (adapter-only files refused), its tokenizer, adapters checked against that
 * model, and a dataset read in file order. */
#ifndef NPT_CLI_SESSION_H
#define NPT_CLI_SESSION_H

#include "../data/dataset.h"
#include "../model/npt.h"

typedef struct {
    LlamaModel m;
    Tokenizer *tok;    /* the given one or the one beside the model; NULL if there is none */
    NptModel npt, *np; /* np = &npt when adapters were loaded */
    Dataset ds;        /* zeroed until session_open_data */
} Session;

/* Model, tokenizer (tokenizer may be NULL: the one beside the model, if any; need_tok
 * makes its absence an error; one of another vocabulary size is refused) and adapters
 * (NULL: none). On failure the caller still calls session_free. */
int session_open(Session *s, const char *model, const char *tokenizer, int need_tok, const char *adapters,
                 NptErr *err);
/* data cut into windows in file order, no shuffle; format is a name for
 * dataset_parse_format ("auto" detects it from the path). Text and JSONL need the
 * tokenizer. seq_len is the window length asked for (--seq-len): 0 gives
 * session_window_len's default; longer than the model's context is an error. The
 * windows' length is then s->ds.seq_len. Text is tokenized only as far as the first
 * max_windows windows (0: all of it): eval and debug read no further. */
int session_open_data(Session *s, const char *data, const char *format, long seq_len, long max_windows, NptErr *err);
/* Window length for a --seq-len value: itself, or 0 -> min(256, the model's context). */
int session_window_len(const Session *s, long seq_len);
void session_free(Session *s);
/* Prints the error and returns -1 when out, the command's output (given with flag; NULL
 * if none), is one of the files a session reads, even with --force: it would be
 * replaced by what the command writes. The inputs are the model, the tokenizer (the
 * given one, else tok_beside: the one found beside the model, NULL until it is loaded),
 * data (NULL if none; FILE.h5:/DATASET reads FILE.h5) and adapters (NULL if none). */
int session_refuse_output(const char *out, const char *flag, const char *model, const char *tokenizer,
                          const char *tok_beside, const char *data, const char *adapters, const char *verb);

#endif
