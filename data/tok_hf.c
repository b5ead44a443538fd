/* data/tok_hf.c — loading a Hugging Face tokenizer.json into the shared tables.
 *
 * Supported: model BPE (vocab; merges as "a b" strings or [a, b] pairs; byte_fallback,
 * unk_token, fuse_unk, ignore_merges); normalizer null, Prepend, Replace with a String
 * pattern, Sequence of them; pre_tokenizer null or Metaspace; added_tokens; decoder
 * null, Replace (String), ByteFallback, Fuse, Strip (leading spaces), Metaspace,
 * Sequence of them. Anything else is refused by name rather than tokenized wrongly.
 * BOS/EOS: bos_token/eos_token of tokenizer_config.json or special_tokens_map.json
 * beside the file, else the TemplateProcessing post-processor's special tokens, else
 * an added special token named like <s>/</s> (ids -1 when none is found). */
#include "tok_internal.h"

#include <cJSON.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* What the decoder does to each piece (texts are precomputed per id at load). */
typedef struct {
    TokStr from[8], to[8];
    int n_replace;
    int byte_fallback;
    int strip;
} DecodeRules;

static const char *str_field(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int bool_field(const cJSON *o, const char *key, int dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

static const char *type_of(const cJSON *o) {
    const char *t = str_field(o, "type");
    return t ? t : "(no type)";
}

static int tokstr_set(TokStr *d, const char *s, NptErr *err) {
    d->len = strlen(s);
    d->s = npt_try_malloc(d->len + 1, "a tokenizer string", err);
    if (!d->s) return -1;
    memcpy(d->s, s, d->len + 1);
    return 0;
}

static void patset_free(PatSet *p) {
    for (int i = 0; i < p->n; i++) free(p->pat[i].s);
    free(p->pat);
    free(p->id);
}

void tok_hf_free_rules(HfRules *r) {
    if (!r) return;
    for (int i = 0; i < r->n_ops; i++) {
        free(r->ops[i].a.s);
        free(r->ops[i].b.s);
    }
    free(r->ops);
    patset_free(&r->raw);
    patset_free(&r->norm);
    free(r->meta_rep.s);
    free(r);
}

static int add_norm_op(HfRules *r, int prepend, const char *a, const char *b, NptErr *err) {
    NormOp *ops = realloc(r->ops, (size_t)(r->n_ops + 1) * sizeof *ops);
    if (!ops) return npt_fail(err, "out of memory for the tokenizer normalizer");
    r->ops = ops;
    NormOp *op = &ops[r->n_ops++];
    memset(op, 0, sizeof *op);
    op->prepend = prepend;
    if (tokstr_set(&op->a, a, err)) return -1;
    return b ? tokstr_set(&op->b, b, err) : 0;
}

static int parse_normalizer(HfRules *r, const cJSON *n, const char *path, NptErr *err) {
    if (!n || cJSON_IsNull(n)) return 0;
    const char *type = type_of(n);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers"), *it;
        if (!cJSON_IsArray(list)) return npt_fail(err, "tokenizer %s: normalizer Sequence has no \"normalizers\" list", path);
        cJSON_ArrayForEach(it, list) if (parse_normalizer(r, it, path, err)) return -1;
        return 0;
    }
    if (strcmp(type, "Prepend") == 0) {
        const char *p = str_field(n, "prepend");
        if (!p) return npt_fail(err, "tokenizer %s: normalizer Prepend has no \"prepend\" string", path);
        return add_norm_op(r, 1, p, NULL, err);
    }
    if (strcmp(type, "Replace") == 0) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(n, "pattern");
        const char *from = str_field(pat, "String"), *to = str_field(n, "content");
        if (!from || !from[0] || !to)
            return npt_fail(err, "tokenizer %s: normalizer Replace needs a non-empty String pattern and a content"
                                 " (Regex patterns are not supported)", path);
        return add_norm_op(r, 0, from, to, err);
    }
    return npt_fail(err, "tokenizer %s: normalizer type \"%s\" is not supported"
                         " (npt supports Prepend, Replace with a String pattern, and Sequence of them)", path, type);
}

static int parse_pre_tokenizer(HfRules *r, const cJSON *p, const char *path, NptErr *err) {
    if (!p || cJSON_IsNull(p)) return 0;
    if (strcmp(type_of(p), "Metaspace") != 0)
        return npt_fail(err, "tokenizer %s: pre_tokenizer type \"%s\" is not supported (npt supports none or Metaspace)", path, type_of(p));
    const char *rep = str_field(p, "replacement"), *scheme = str_field(p, "prepend_scheme");
    r->metaspace = 1;
    r->meta_split = bool_field(p, "split", 1);
    r->meta_prepend = bool_field(p, "add_prefix_space", 1) ? 2 : 0;
    if (scheme) r->meta_prepend = strcmp(scheme, "always") == 0 ? 2 : strcmp(scheme, "first") == 0 ? 1 : 0;
    return tokstr_set(&r->meta_rep, rep && rep[0] ? rep : "\xE2\x96\x81", err);
}

static int parse_decoder(DecodeRules *d, const cJSON *n, const char *path, NptErr *err) {
    if (!n || cJSON_IsNull(n)) return 0;
    const char *type = type_of(n);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "decoders"), *it;
        if (!cJSON_IsArray(list)) return npt_fail(err, "tokenizer %s: decoder Sequence has no \"decoders\" list", path);
        cJSON_ArrayForEach(it, list) if (parse_decoder(d, it, path, err)) return -1;
        return 0;
    }
    if (strcmp(type, "ByteFallback") == 0) return d->byte_fallback = 1, 0;
    if (strcmp(type, "Fuse") == 0) return 0; /* decoding concatenates anyway */
    if (strcmp(type, "Strip") == 0) {
        const char *c = str_field(n, "content");
        const cJSON *start = cJSON_GetObjectItemCaseSensitive(n, "start"), *stop = cJSON_GetObjectItemCaseSensitive(n, "stop");
        if (!c || strcmp(c, " ") != 0 || !cJSON_IsNumber(start) || (cJSON_IsNumber(stop) && stop->valueint != 0))
            return npt_fail(err, "tokenizer %s: decoder Strip is supported only for leading spaces (content \" \", stop 0)", path);
        d->strip = start->valueint;
        return 0;
    }
    const char *from = NULL, *to = " ";
    if (strcmp(type, "Replace") == 0) {
        from = str_field(cJSON_GetObjectItemCaseSensitive(n, "pattern"), "String");
        to = str_field(n, "content");
        if (!from || !from[0] || !to)
            return npt_fail(err, "tokenizer %s: decoder Replace needs a non-empty String pattern and a content", path);
    } else if (strcmp(type, "Metaspace") == 0) {
        const char *scheme = str_field(n, "prepend_scheme");
        from = str_field(n, "replacement");
        if (!from || !from[0]) from = "\xE2\x96\x81";
        if (scheme ? strcmp(scheme, "never") != 0 : bool_field(n, "add_prefix_space", 1)) d->strip = 1;
    } else {
        return npt_fail(err, "tokenizer %s: decoder type \"%s\" is not supported"
                             " (npt supports Replace, ByteFallback, Fuse, Strip, Metaspace and Sequence)", path, type);
    }
    if (d->n_replace == (int)NPT_ARRAY_LEN(d->from)) return npt_fail(err, "tokenizer %s: too many decoder Replace steps", path);
    int k = d->n_replace++; /* counted first so that the caller frees a half-set pair */
    return tokstr_set(&d->from[k], from, err) || tokstr_set(&d->to[k], to, err) ? -1 : 0;
}

/* Largest id in model.vocab and added_tokens, or -1 with err set on a bad id. */
static int max_token_id(const cJSON *vocab, const cJSON *added, const char *path, NptErr *err) {
    int max_id = -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble > (1 << 26))
            return npt_fail(err, "tokenizer %s: model.vocab entry \"%s\" has no valid id", path, it->string);
        if (it->valueint > max_id) max_id = it->valueint;
    }
    cJSON_ArrayForEach(it, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > (1 << 26) || !str_field(it, "content"))
            return npt_fail(err, "tokenizer %s: an added_tokens entry lacks a valid id or content", path);
        if (id->valueint > max_id) max_id = id->valueint;
    }
    if (max_id < 0) return npt_fail(err, "tokenizer %s: model.vocab is empty", path);
    return max_id;
}

static int load_vocab(Tokenizer *t, const cJSON *vocab, const char *path, NptErr *err) {
    int n = cJSON_GetArraySize(vocab), k = 0;
    int *ids = npt_try_malloc((size_t)n * sizeof *ids, "vocabulary ids", err);
    if (!ids) return -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        int id = it->valueint;
        if (t->piece_off[id] != SIZE_MAX) {
            free(ids);
            return npt_fail(err, "tokenizer %s: model.vocab gives id %d to two tokens", path, id);
        }
        if (tok_set_piece(t, id, it->string, strlen(it->string), err)) {
            free(ids);
            return -1;
        }
        ids[k++] = id;
    }
    int rc = strmap_build(&t->vocab, t, ids, k, err);
    free(ids);
    return rc;
}

static int load_merges(Tokenizer *t, const cJSON *merges, const char *path, NptErr *err) {
    if (pairmap_init(&t->merges, (size_t)cJSON_GetArraySize(merges), err)) return -1;
    ByteBuf both = {0};
    const cJSON *it;
    int rank = 0, rc = 0;
    cJSON_ArrayForEach(it, merges) {
        const char *a = NULL, *b = NULL, *space;
        size_t alen = 0;
        if (cJSON_IsString(it) && (space = strchr(it->valuestring, ' ')) && !strchr(space + 1, ' ')) {
            a = it->valuestring, alen = (size_t)(space - a), b = space + 1;
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(it->child) &&
                   cJSON_IsString(it->child->next)) {
            a = it->child->valuestring, alen = strlen(a), b = it->child->next->valuestring;
        } else {
            rc = npt_fail(err, "tokenizer %s: merge %d is neither \"a b\" nor [\"a\", \"b\"]", path, rank);
            break;
        }
        both.n = 0;
        if ((rc = bytebuf_append(&both, a, alen, err)) || (rc = bytebuf_append(&both, b, strlen(b), err))) break;
        int ia = strmap_get(&t->vocab, t, a, alen), ib = strmap_get(&t->vocab, t, b, strlen(b));
        int iab = strmap_get(&t->vocab, t, both.p, both.n);
        if (ia < 0 || ib < 0 || iab < 0) {
            const char *miss = ia < 0 ? a : ib < 0 ? b : both.p;
            int mlen = ia < 0 ? (int)alen : (int)strlen(miss);
            rc = npt_fail(err, "tokenizer %s: merge %d (\"%.*s\" + \"%s\") needs \"%.*s\", which is not in model.vocab", path,
                          rank, (int)alen, a, b, mlen, miss);
            break;
        }
        if ((rc = pairmap_put(&t->merges, ia, ib, rank, iab, err))) break; /* a repeated pair keeps its last rank, as in HF */
        rank++;
    }
    free(both.p);
    return rc;
}

/* Orders the patterns by first byte and fills first[], so matching at a position
 * tries only the patterns that can start there. */
static int patset_index(PatSet *p, NptErr *err) {
    size_t n = p->n ? (size_t)p->n : 1;
    TokStr *pat = npt_try_malloc(n * sizeof *pat, "added tokens", err);
    int *id = npt_try_malloc(n * sizeof *id, "added tokens", err);
    if (!pat || !id) {
        free(pat);
        free(id);
        return -1;
    }
    int k = 0;
    for (int c = 0; c < 256; c++) {
        p->first[c] = k;
        for (int i = 0; i < p->n; i++)
            if ((unsigned char)p->pat[i].s[0] == c) pat[k] = p->pat[i], id[k++] = p->id[i];
    }
    p->first[256] = k;
    free(p->pat);
    free(p->id);
    p->pat = pat;
    p->id = id;
    return 0;
}

static int patset_add(PatSet *p, const char *s, size_t len, int id, NptErr *err) {
    TokStr *pat = realloc(p->pat, (size_t)(p->n + 1) * sizeof *pat);
    if (pat) p->pat = pat;
    int *ids = realloc(p->id, (size_t)(p->n + 1) * sizeof *ids);
    if (ids) p->id = ids;
    if (!pat || !ids) return npt_fail(err, "out of memory for added tokens");
    p->pat[p->n].s = npt_try_malloc(len + 1, "an added token", err);
    if (!p->pat[p->n].s) return -1;
    memcpy(p->pat[p->n].s, s, len);
    p->pat[p->n].s[len] = '\0';
    p->pat[p->n].len = len;
    p->id[p->n++] = id;
    return 0;
}

/* Added tokens: pieces for ids the vocab lacks, match patterns, and which are special. */
static int load_added(Tokenizer *t, const cJSON *added, unsigned char *special, NptErr *err) {
    HfRules *r = t->hf;
    ByteBuf norm = {0};
    const cJSON *it;
    int rc = 0;
    cJSON_ArrayForEach(it, added) {
        const char *content = str_field(it, "content");
        int id = cJSON_GetObjectItemCaseSensitive(it, "id")->valueint;
        int is_special = bool_field(it, "special", 0);
        special[id] = (unsigned char)is_special;
        if (t->piece_off[id] == SIZE_MAX && (rc = tok_set_piece(t, id, content, strlen(content), err))) break;
        if (!content[0]) continue;
        if (bool_field(it, "normalized", !is_special)) {
            if ((rc = hf_normalize(r, content, strlen(content), 0, &norm, err))) break;
            if (norm.n && (rc = patset_add(&r->norm, norm.p, norm.n, id, err))) break;
        } else if ((rc = patset_add(&r->raw, content, strlen(content), id, err))) {
            break;
        }
    }
    free(norm.p);
    if (rc) return -1;
    return patset_index(&r->raw, err) || patset_index(&r->norm, err) ? -1 : 0;
}

/* Piece with the decoder's replacements applied: what the id prints as. */
static int set_text(Tokenizer *t, int id, const DecodeRules *d, ByteBuf *a, ByteBuf *b, NptErr *err) {
    int len;
    const char *p = tok_piece(t, id, &len);
    a->n = 0;
    if (bytebuf_append(a, p, (size_t)len, err)) return -1;
    for (int k = 0; k < d->n_replace; k++) {
        b->n = 0;
        for (size_t i = 0; i < a->n;) {
            int hit = a->n - i >= d->from[k].len && memcmp(a->p + i, d->from[k].s, d->from[k].len) == 0;
            if (bytebuf_append(b, hit ? d->to[k].s : a->p + i, hit ? d->to[k].len : 1, err)) return -1;
            i += hit ? d->from[k].len : 1;
        }
        ByteBuf tmp = *a;
        *a = *b;
        *b = tmp;
    }
    return tok_set_text(t, id, a->p, a->n, err);
}

static int build_texts(Tokenizer *t, const DecodeRules *d, const unsigned char *special, NptErr *err) {
    ByteBuf a = {0}, b = {0};
    int rc = 0;
    for (int id = 0; rc == 0 && id < t->vocab_size; id++) {
        if (t->piece_off[id] == SIZE_MAX) continue;
        int control = (special[id] && id != t->unk) || id == t->bos || id == t->eos; /* prints nothing */
        rc = control ? tok_set_text(t, id, "", 0, err) : set_text(t, id, d, &a, &b, err);
    }
    free(a.p);
    free(b.p);
    if (rc == 0 && d->byte_fallback) tok_find_byte_tokens(t);
    t->strip_leading = d->strip;
    return rc;
}

/* bos_token / eos_token of a config file beside tokenizer.json: a string or {content}. */
static int config_token(Tokenizer *t, const char *dir, const char *file, const char *key, int *id, NptErr *err) {
    char path[4200];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    if (stat(path, &st) != 0) return 0;
    char *text = npt_read_input(path, "tokenizer config", NULL, err);
    if (!text) return -1;
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!root) return npt_fail(err, "%s is not valid JSON", path);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    const char *name = cJSON_IsString(v) ? v->valuestring : str_field(v, "content");
    int rc = 0;
    if (name && *id < 0) {
        *id = tokenizer_token_id(t, name);
        if (*id < 0) rc = npt_fail(err, "%s names %s \"%s\", which the tokenizer does not define", path, key, name);
    }
    cJSON_Delete(root);
    return rc;
}

/* BOS/EOS from a TemplateProcessing post-processor (possibly inside a Sequence). */
static void template_tokens(const cJSON *pp, int *bos, int *eos) {
    if (!pp || cJSON_IsNull(pp)) return;
    if (strcmp(type_of(pp), "Sequence") == 0) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(pp, "processors")) template_tokens(it, bos, eos);
        return;
    }
    if (strcmp(type_of(pp), "TemplateProcessing") != 0) return;
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(pp, "single");
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(pp, "special_tokens");
    int n = cJSON_GetArraySize(single);
    for (int k = 0; k < n; k += n > 1 ? n - 1 : 1) {
        const char *name = str_field(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(single, k), "SpecialToken"), "id");
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(specials, name ? name : ""), "ids");
        int *slot = k == 0 ? bos : eos;
        if (name && cJSON_IsNumber(cJSON_GetArrayItem(ids, 0)) && *slot < 0) *slot = cJSON_GetArrayItem(ids, 0)->valueint;
    }
}

/* Last resort: an added special token whose name says BOS or EOS. */
static int named_like(const char *piece, const char *const *names) {
    char low[64];
    size_t n = strlen(piece);
    if (n >= sizeof low) return 0;
    for (size_t i = 0; i <= n; i++) low[i] = (char)tolower((unsigned char)piece[i]);
    for (; *names; names++)
        if (strcmp(low, *names) == 0) return 1;
    return 0;
}

static int find_bos_eos(Tokenizer *t, const cJSON *root, const char *json_path, const unsigned char *special, NptErr *err) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", json_path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    t->bos = t->eos = -1;
    if (config_token(t, dir, "tokenizer_config.json", "bos_token", &t->bos, err) ||
        config_token(t, dir, "tokenizer_config.json", "eos_token", &t->eos, err) ||
        config_token(t, dir, "special_tokens_map.json", "bos_token", &t->bos, err) ||
        config_token(t, dir, "special_tokens_map.json", "eos_token", &t->eos, err))
        return -1;
    template_tokens(cJSON_GetObjectItemCaseSensitive(root, "post_processor"), &t->bos, &t->eos);
    static const char *const bos_names[] = {"<s>", "<bos>", "<|begin_of_text|>", "<|startoftext|>", NULL};
    static const char *const eos_names[] = {"</s>", "<eos>", "<|end_of_text|>", "<|endoftext|>", NULL};
    for (int id = 0; id < t->vocab_size; id++) {
        const char *p = tok_piece(t, id, NULL);
        if (!p || !special[id]) continue;
        if (t->bos < 0 && named_like(p, bos_names)) t->bos = id;
        if (t->eos < 0 && named_like(p, eos_names)) t->eos = id;
    }
    return 0;
}

static int load_model(Tokenizer *t, const cJSON *root, const char *path, int hint, DecodeRules *dec, NptErr *err) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    const char *type = str_field(model, "type");
    if (!cJSON_IsObject(model)) return npt_fail(err, "tokenizer %s has no \"model\" object: not a Hugging Face tokenizer.json", path);
    if (type && strcmp(type, "BPE") != 0)
        return npt_fail(err, "tokenizer %s: model type \"%s\" is not supported (npt reads BPE tokenizers)", path, type);
    if (!cJSON_IsObject(vocab)) return npt_fail(err, "tokenizer %s has no model.vocab object", path);
    if (merges && !cJSON_IsArray(merges)) return npt_fail(err, "tokenizer %s: model.merges is not a list", path);
    const char *prefix = str_field(model, "continuing_subword_prefix"), *suffix = str_field(model, "end_of_word_suffix");
    if ((prefix && prefix[0]) || (suffix && suffix[0]))
        return npt_fail(err, "tokenizer %s: BPE with continuing_subword_prefix or end_of_word_suffix is not supported", path);
    int max_id = max_token_id(vocab, added, path, err);
    if (max_id < 0) return -1;
    if (hint > 0 && max_id >= hint)
        return npt_fail(err, "tokenizer %s has token id %d but the model's vocabulary is %d; is it this model's tokenizer?",
                        path, max_id, hint);
    HfRules *r = t->hf = calloc(1, sizeof *t->hf);
    if (!r) return npt_fail(err, "out of memory for the tokenizer");
    if (tok_alloc_tables(t, hint > max_id ? hint : max_id + 1, err) || load_vocab(t, vocab, path, err) ||
        (merges && load_merges(t, merges, path, err)))
        return -1;
    r->byte_fallback = bool_field(model, "byte_fallback", 0);
    r->fuse_unk = bool_field(model, "fuse_unk", 0);
    r->ignore_merges = bool_field(model, "ignore_merges", 0);
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        r->byte_id[b] = r->byte_fallback ? strmap_get(&t->vocab, t, name, 6) : -1;
    }
    const char *unk = str_field(model, "unk_token");
    t->unk = unk ? strmap_get(&t->vocab, t, unk, strlen(unk)) : -1;
    if (unk && t->unk < 0) return npt_fail(err, "tokenizer %s: unk_token \"%s\" is not in model.vocab", path, unk);
    if (parse_normalizer(r, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), path, err) ||
        parse_pre_tokenizer(r, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), path, err) ||
        parse_decoder(dec, cJSON_GetObjectItemCaseSensitive(root, "decoder"), path, err))
        return -1;
    return 0;
}

Tokenizer *tok_hf_load(const char *json_path, int vocab_size_hint, NptErr *err) {
    char *text = npt_read_input(json_path, "tokenizer", NULL, err);
    if (!text) return NULL;
    cJSON *root = cJSON_Parse(text);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        npt_fail(err, "tokenizer %s is not valid JSON (error near byte %ld)", json_path, at ? (long)(at - text) : 0L);
        free(text);
        return NULL;
    }
    free(text);
    Tokenizer *t = calloc(1, sizeof *t);
    DecodeRules dec = {0};
    unsigned char *special = NULL;
    int rc = t ? 0 : npt_fail(err, "out of memory for the tokenizer");
    if (rc == 0) {
        t->kind = TOK_HF;
        rc = load_model(t, root, json_path, vocab_size_hint, &dec, err);
    }
    if (rc == 0 && !(special = calloc((size_t)t->vocab_size, 1))) rc = npt_fail(err, "out of memory for the tokenizer");
    if (rc == 0) rc = load_added(t, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), special, err);
    if (rc == 0) rc = find_bos_eos(t, root, json_path, special, err);
    if (rc == 0) rc = build_texts(t, &dec, special, err);
    for (int k = 0; k < dec.n_replace; k++) {
        free(dec.from[k].s);
        free(dec.to[k].s);
    }
    free(special);
    cJSON_Delete(root);
    if (rc == 0) return t;
    tokenizer_free(t);
    return NULL;
}
