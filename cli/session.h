/* cli/session.h — what `npt debug` and `npt eval` both open before they run: a full
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
    Dataset ds;
    int have_model, have_ds;
} Session;

/* Model, tokenizer (tokenizer may be NULL: the one beside the model, if any; need_tok
 * makes its absence an error) and adapters (NULL: none). */
int session_open(Session *s, const char *model, const char *tokenizer, int need_tok, const char *adapters,
                 NptErr *err);
/* data cut into windows of T tokens, in file order, no shuffle; format is a name for
 * dataset_parse_format ("auto" detects it from the path). Text and JSONL need the tokenizer. */
int session_open_data(Session *s, const char *data, const char *format, int T, NptErr *err);
void session_free(Session *s);

#endif
