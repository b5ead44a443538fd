/* cli/session.c — model, tokenizer, adapters and data for debug and eval (session.h). */
#include "session.h"

#include <string.h>

#include "../train/adapters.h"
#include "commands.h"

int session_open(Session *s, const char *model, const char *tokenizer, int need_tok, const char *adapters,
                 NptErr *err) {
    memset(s, 0, sizeof *s);
    if (load_full_model(model, &s->m, err)) return -1;
    const char *tp = tokenizer ? tokenizer : s->m.tokenizer_path;
    if (!tp[0] && need_tok) return npt_fail(err, "no tokenizer found beside %s; pass --tokenizer", model);
    if (tp[0] && !(s->tok = tokenizer_load(tp, s->m.cfg.vocab_size, err))) return -1;
    if (s->tok && tokenizer_vocab_size(s->tok) != s->m.cfg.vocab_size)
        return npt_fail(err, "tokenizer %s has %d tokens but model %s has a vocabulary of %d; pass the model's own tokenizer",
                        tp, tokenizer_vocab_size(s->tok), model, s->m.cfg.vocab_size);
    if (adapters) {
        if (adapters_load(adapters, &s->m, &s->npt, err)) return -1;
        s->np = &s->npt;
    }
    return 0;
}

int session_window_len(const Session *s, long seq_len) {
    if (seq_len) return (int)seq_len;
    return s->m.cfg.seq_len < 256 ? s->m.cfg.seq_len : 256;
}

int session_open_data(Session *s, const char *data, const char *format, long seq_len, long max_windows, NptErr *err) {
    int T = session_window_len(s, seq_len);
    if (T > s->m.cfg.seq_len)
        return npt_fail(err, "--seq-len %d is longer than the model's context of %d", T, s->m.cfg.seq_len);
    DatasetFormat fmt;
    if (dataset_parse_format(format, &fmt))
        return npt_fail(err, "unknown data format '%s'; use auto, text, jsonl, u16, u32 or hdf5", format);
    if (fmt == DATASET_AUTO) fmt = dataset_detect_format(data);
    if ((fmt == DATASET_TEXT || fmt == DATASET_JSONL) && !s->tok)
        return npt_fail(err, "%s is %s and no tokenizer was found beside the model; pass --tokenizer", data,
                        dataset_format_name(fmt));
    int bos = s->tok ? tokenizer_bos_id(s->tok) : s->m.cfg.bos_id;
    return dataset_open(&s->ds, data, fmt, s->tok, s->m.cfg.vocab_size, bos, T, 0, 0, (uint64_t)max_windows, err);
}

void session_free(Session *s) {
    dataset_free(&s->ds); /* both free calls are safe on zeroed structs */
    if (s->np) npt_free(s->np);
    tokenizer_free(s->tok);
    llama_free(&s->m);
    memset(s, 0, sizeof *s);
}

int session_refuse_output(const char *out, const char *flag, const char *model, const char *tokenizer,
                          const char *tok_beside, const char *data, const char *adapters, const char *verb) {
    char file[4096] = "";
    if (!out) return 0;
    if (data) dataset_source_file(data, file, sizeof file);
    const char *in[] = {model, tokenizer ? tokenizer : tok_beside, data ? file : NULL, adapters};
    return refuse_output_over_inputs(out, flag, in, (int)NPT_ARRAY_LEN(in), verb);
}
