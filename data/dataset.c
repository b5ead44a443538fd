/* data/dataset.c — sources, windows, mixing, the validation split and the cursor (see
 * dataset.h). Per source only counters are kept; window order comes from
 * data_permute, source choice from a hash of (seed, draw index), so the state of the
 * whole stream is a handful of integers: the cursor. */
#include "data_internal.h"
#include "../util/atomic_file.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct DataSource {
    TokenFile file;
    uint64_t n_windows, n_train, n_valid; /* validation: the last n_valid windows */
    uint64_t first;                       /* id of window 0 */
    uint64_t drawn;                       /* training windows drawn from it */
    uint64_t fingerprint;                 /* token_checksum of all its ids: a resume must find them again */
};

/* 3: 4 + 3 per source (window counts, draws, then the sources' fingerprints). 2, the
 * same without fingerprints, is still restored: dataset_restore returns 1 for it. */
enum { CURSOR_VERSION = 3, CURSOR_VERSION_UNCHECKED = 2 };

/* Where source i's fingerprint sits in a version-3 cursor of n_src sources. */
static int cursor_fingerprint_at(int n_src, int i) { return 4 + 2 * n_src + i; }

static const char *const format_names[] = {"auto", "text", "jsonl", "tokens_u16", "tokens_u32", "hdf5"};

const char *dataset_format_name(DatasetFormat f) {
    return (unsigned)f < NPT_ARRAY_LEN(format_names) ? format_names[f] : "?";
}

int dataset_parse_format(const char *name, DatasetFormat *f) {
    static const struct {
        const char *name;
        DatasetFormat f;
    } short_names[] = {{"u16", DATASET_U16}, {"u32", DATASET_U32}};
    for (int i = 0; i < (int)NPT_ARRAY_LEN(format_names); i++)
        if (!strcmp(name, format_names[i])) return *f = (DatasetFormat)i, 0;
    for (int i = 0; i < (int)NPT_ARRAY_LEN(short_names); i++)
        if (!strcmp(name, short_names[i].name)) return *f = short_names[i].f, 0;
    return -1;
}

DatasetFormat dataset_detect_format(const char *path) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return DATASET_TEXT;
    char file[4096], dset[256];
    if (data_split_h5_spec(path, file, sizeof file, dset, sizeof dset)) return DATASET_HDF5;
    const char *dot = strrchr(path, '.');
    if (!dot || strchr(dot, '/')) return DATASET_TEXT;
    if (!strcmp(dot, ".bin") || !strcmp(dot, ".u16")) return DATASET_U16;
    if (!strcmp(dot, ".u32")) return DATASET_U32;
    if (!strcmp(dot, ".jsonl") || !strcmp(dot, ".ndjson")) return DATASET_JSONL;
    return DATASET_TEXT;
}

void dataset_default_cache_dir(char *out, size_t n) {
    const char *env = getenv("NPT_CACHE_DIR"), *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (env && env[0]) snprintf(out, n, "%s", env);
    else if (xdg && xdg[0]) snprintf(out, n, "%s/npt", xdg);
    else if (home && home[0]) snprintf(out, n, "%s/.cache/npt", home);
    else snprintf(out, n, ".npt-cache");
}

void dataset_source_parts(const char *spec, char *file, size_t n, char *dset, size_t dset_n) {
    if (!data_split_h5_spec(spec, file, n, dset, dset_n)) snprintf(file, n, "%s", spec), dset[0] = '\0';
}

void dataset_source_file(const char *spec, char *file, size_t n) {
    char dset[256];
    dataset_source_parts(spec, file, n, dset, sizeof dset);
}

/* Text into an unnamed temporary token file (no cache directory). */
static int tokenize_to_temp(DataSource *s, const char *path, const PrepareOptions *o, int vocab, NptErr *err) {
    const char *tmpdir = getenv("TMPDIR");
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s/npt-tokens-XXXXXX.u32", tmpdir && tmpdir[0] ? tmpdir : "/tmp");
    int fd = mkstemps(tmp, 4);
    if (fd < 0) return npt_fail(err, "cannot create a temporary token file in %s: %s", tmpdir ? tmpdir : "/tmp", strerror(errno));
    npt_temp_track(tmp, 0); /* a signal while tokenizing removes it too */
    close(fd);
    PrepareStats st;
    PrepareOptions wide = *o;
    wide.output_format = DATASET_U32;
    int rc = data_prepare(path, tmp, &wide, &st, err);
    if (rc == 0) rc = token_file_open(&s->file, tmp, DATASET_U32, vocab, err);
    s->fingerprint = st.checksum;
    npt_temp_remove(tmp); /* the open descriptor keeps it readable */
    if (rc == 0) snprintf(s->file.name, sizeof s->file.name, "%s", path);
    return rc;
}

/* The setting the user gave the window length with: the recipe key, or a command's flag. */
static const char *seq_len_name(const DataConfig *c) { return c->seq_len_name ? c->seq_len_name : "data.seq_len"; }

/* The windows of an opened source; a source too short for one is an error (shared by
 * open_source and dataset_check_source, so npt validate and npt train say the same). */
static int count_windows(DataSource *s, const DataConfig *c, NptErr *err) {
    s->n_windows = s->file.n_tokens / (uint64_t)(c->seq_len - 1);
    if (s->n_windows == 0)
        return npt_fail(err, "%s holds %llu tokens, fewer than one window of %s %d", s->file.name,
                        (unsigned long long)s->file.n_tokens, seq_len_name(c), c->seq_len);
    s->n_train = s->n_windows;
    return 0;
}

/* The format of a source: its spec's, else guessed from its name. open_source and
 * dataset_check_source both use it, so validate judges a source as training opens it. */
static DatasetFormat source_format(const DataSourceSpec *spec) {
    return spec->format == DATASET_AUTO ? dataset_detect_format(spec->path) : spec->format;
}

static int open_source(DataSource *s, const DataSourceSpec *spec, const DataConfig *c, NptErr *err) {
    memset(s, 0, sizeof *s);
    int known = 0; /* the fingerprint: made as the text was tokenized, or verified in the cache */
    s->file.fd = -1;
    s->file.h5_file = s->file.h5_dset = s->file.h5_space = -1;
    DatasetFormat fmt = source_format(spec);
    if (fmt == DATASET_TEXT || fmt == DATASET_JSONL) {
        if (!c->tok) return npt_fail(err, "%s is %s; tokenizing it needs a tokenizer", spec->path, dataset_format_name(fmt));
        PrepareOptions o = {.tok = c->tok, .bos = c->bos, .eos = c->eos, .append_eos = c->append_eos,
                            .input_format = spec->format, .text_field = spec->text_field,
                            .skip_bad_records = c->skip_bad_records, .progress = c->log, .log = c->log};
        if (!c->cache_dir) {
            o.max_tokens = c->max_windows * (uint64_t)(c->seq_len - 1);
            if (tokenize_to_temp(s, spec->path, &o, c->vocab_size, err)) return -1;
            known = 1;
        } else {
            char path[4300];
            if (data_cached_tokens(spec->path, c->cache_dir, &o, path, sizeof path, err) ||
                token_file_open(&s->file, path, DATASET_AUTO, c->vocab_size, err))
                return -1;
            /* messages about this data name the user's file, not only the cache's */
            snprintf(s->file.name, sizeof s->file.name, "%.2000s (token cache %.2000s)", spec->path, path);
            s->fingerprint = s->file.header.checksum;
            known = s->file.has_header;
        }
    } else if (token_file_open(&s->file, spec->path, fmt, c->vocab_size, err)) {
        return -1;
    }
    /* A token file is read once here anyway, every id against the vocabulary. */
    if (!known && token_file_checksum(&s->file, &s->fingerprint, err)) return -1;
    return count_windows(s, c, err);
}

static int split_valid(DataSource *s, double fraction, NptErr *err) {
    if (fraction <= 0) return 0;
    s->n_valid = (uint64_t)llround(fraction * (double)s->n_windows);
    if (s->n_valid == 0) s->n_valid = 1;
    if (s->n_valid >= s->n_windows)
        return npt_fail(err, "%s: data.valid_fraction %.15g leaves no training window of its %llu", s->file.name, fraction,
                        (unsigned long long)s->n_windows);
    s->n_train = s->n_windows - s->n_valid;
    return 0;
}

int dataset_open_config(Dataset *ds, const DataConfig *c, NptErr *err) {
    memset(ds, 0, sizeof *ds);
    if (c->n_sources < 0 || c->n_sources > DATASET_MAX_SOURCES)
        return npt_fail(err, "%d data sources; at most %d are supported", c->n_sources, DATASET_MAX_SOURCES);
    if (c->n_sources == 0 && !c->valid) return npt_fail(err, "no data source given");
    if (c->seq_len < 2) return npt_fail(err, "%s %d: a window needs at least 2 tokens", seq_len_name(c), c->seq_len);
    ds->seq_len = c->seq_len, ds->bos = c->bos, ds->shuffle = c->shuffle, ds->seed = c->seed;
    ds->src = calloc((size_t)c->n_sources + 1, sizeof *ds->src);
    if (!ds->src) return npt_fail(err, "out of memory opening the data sources");
    for (int i = 0; i <= c->n_sources; i++) ds->src[i].file.fd = -1, ds->src[i].file.h5_file = -1;
    double total = 0;
    for (int i = 0; i < c->n_sources; i++) {
        const DataSourceSpec *sp = &c->sources[i];
        if (!(sp->weight > 0) || !isfinite(sp->weight)) {
            dataset_free(ds);
            return npt_fail(err, "%s: weight %g must be a number > 0", sp->path, sp->weight);
        }
        int rc = open_source(&ds->src[i], sp, c, err);
        ds->n_src = i + 1; /* opened (or half-opened): dataset_free closes it */
        if (rc || split_valid(&ds->src[i], c->valid ? 0 : c->valid_fraction, err)) {
            dataset_free(ds);
            return -1;
        }
        DataSource *s = &ds->src[i];
        s->first = ds->n_windows;
        ds->n_windows += s->n_windows;
        ds->n_train += s->n_train;
        ds->n_valid += s->n_valid;
        total += sp->weight;
    }
    double run = 0;
    for (int i = 0; i < c->n_sources; i++) {
        run += c->sources[i].weight;
        ds->cum_weight[i] = i == c->n_sources - 1 ? 1.0 : run / total;
    }
    if (c->valid) {
        if (open_source(&ds->src[c->n_sources], c->valid, c, err)) {
            token_file_close(&ds->src[c->n_sources].file);
            dataset_free(ds);
            return -1;
        }
        ds->has_valid_src = 1;
        ds->n_valid = ds->src[c->n_sources].n_windows;
    }
    return 0;
}

int dataset_open(Dataset *ds, const char *path, DatasetFormat fmt, const Tokenizer *tok, int vocab_size, int bos,
                 int seq_len, int shuffle, uint64_t seed, uint64_t max_windows, NptErr *err) {
    DataSourceSpec spec = {.path = path, .format = fmt, .weight = 1};
    DataConfig c = {.sources = &spec, .n_sources = 1, .seq_len = seq_len, .shuffle = shuffle, .seed = seed,
                    .tok = tok, .vocab_size = vocab_size, .bos = bos, .eos = tok ? tokenizer_eos_id(tok) : -1,
                    .seq_len_name = "--seq-len", .max_windows = max_windows};
    return dataset_open_config(ds, &c, err);
}

void dataset_free(Dataset *ds) {
    if (ds->src)
        for (int i = 0; i < ds->n_src + ds->has_valid_src; i++) token_file_close(&ds->src[i].file);
    free(ds->src);
    memset(ds, 0, sizeof *ds);
}

/* npt validate's look at a source without training on it: a token or HDF5 source is
 * opened as open_source opens it (format, size, header, dataset) and its windows and
 * validation split are counted, but its ids are not read (that scan reads the whole
 * file); text and JSONL are not tokenized (returns 1). */
int dataset_check_source(const DataSourceSpec *spec, const DataConfig *c, int is_valid, NptErr *err) {
    DatasetFormat fmt = source_format(spec);
    if (fmt == DATASET_TEXT || fmt == DATASET_JSONL) return 1;
    if (c->seq_len < 2) return npt_fail(err, "%s %d: a window needs at least 2 tokens", seq_len_name(c), c->seq_len);
    DataSource s;
    memset(&s, 0, sizeof s);
    if (token_file_open(&s.file, spec->path, fmt, c->vocab_size, err)) return -1;
    int rc = count_windows(&s, c, err);
    if (rc == 0 && !is_valid) rc = split_valid(&s, c->valid ? 0 : c->valid_fraction, err);
    token_file_close(&s.file);
    return rc;
}

static int read_window(Dataset *ds, DataSource *s, uint64_t w, int *tokens, NptErr *err) {
    size_t n = (size_t)ds->seq_len - 1;
    tokens[0] = ds->bos;
    return token_file_read(&s->file, w * n, n, tokens + 1, err);
}

/* Source of draw k: a uniform number from (seed, k) against the cumulative weights. */
static int pick_source(const Dataset *ds, uint64_t k) {
    if (ds->n_src == 1) return 0;
    double u = (double)(npt_mix64(ds->seed * 0x9E3779B97F4A7C15ull ^ npt_mix64(k + 0xA076BULL)) >> 11) * 0x1p-53;
    int s = 0;
    while (s < ds->n_src - 1 && u >= ds->cum_weight[s]) s++;
    return s;
}

int dataset_next_batch(Dataset *ds, int B, int *tokens, int64_t *sample_ids) {
    int T = ds->seq_len, rc = 0;
    for (int b = 0; b < B; b++) {
        int *dst = tokens + (size_t)b * T;
        if (ds->n_src == 0) {
            rc = npt_fail(&ds->io_err, "no training source: this data was opened for validation only");
        } else {
            DataSource *s = &ds->src[pick_source(ds, ds->drawn)];
            uint64_t k = s->drawn++, epoch = k / s->n_train, pos = k % s->n_train;
            uint64_t key = npt_mix64(ds->seed ^ npt_mix64(((uint64_t)(s - ds->src) << 48) ^ epoch ^ 0x51ED27ull));
            uint64_t w = ds->shuffle ? data_permute(pos, s->n_train, key) : pos;
            ds->drawn++;
            if (sample_ids) sample_ids[b] = (int64_t)(s->first + w);
            if (read_window(ds, s, w, dst, &ds->io_err) == 0) continue;
            rc = -1;
        }
        for (int t = 0; t < T; t++) dst[t] = ds->bos;
    }
    return rc ? -1 : 0;
}

int dataset_window(Dataset *ds, uint64_t id, int *tokens, NptErr *err) {
    for (int i = 0; i < ds->n_src; i++)
        if (id < ds->src[i].first + ds->src[i].n_windows) return read_window(ds, &ds->src[i], id - ds->src[i].first, tokens, err);
    return npt_fail(err, "window %llu is past the %zu windows of this data", (unsigned long long)id, ds->n_windows);
}

uint64_t dataset_n_valid(const Dataset *ds) { return ds->n_valid; }

int dataset_valid_window(Dataset *ds, uint64_t i, int *tokens, NptErr *err) {
    if (i >= ds->n_valid)
        return npt_fail(err, "validation window %llu is past the %llu validation windows", (unsigned long long)i,
                        (unsigned long long)ds->n_valid);
    if (ds->has_valid_src) return read_window(ds, &ds->src[ds->n_src], i, tokens, err);
    for (int s = 0;; s++) {
        if (i < ds->src[s].n_valid) return read_window(ds, &ds->src[s], ds->src[s].n_train + i, tokens, err);
        i -= ds->src[s].n_valid;
    }
}

int dataset_cursor(const Dataset *ds, int64_t *cursor, int cap) {
    int n = 4 + 3 * ds->n_src;
    if (cap < n) return 0;
    cursor[0] = CURSOR_VERSION;
    cursor[1] = (int64_t)ds->seed;
    cursor[2] = (int64_t)ds->drawn;
    cursor[3] = ds->n_src;
    for (int i = 0; i < ds->n_src; i++) {
        cursor[4 + 2 * i] = (int64_t)ds->src[i].n_train;
        cursor[5 + 2 * i] = (int64_t)ds->src[i].drawn;
        cursor[cursor_fingerprint_at(ds->n_src, i)] = (int64_t)ds->src[i].fingerprint;
    }
    return n;
}

/* "n1+n2+..." of at most 32 sources, into buf. */
static void window_list(const int64_t *counts, int stride, int n, char *buf, size_t size) {
    size_t u = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && u < size; i++)
        u += (size_t)snprintf(buf + u, size - u, "%s%lld", i ? "+" : "", (long long)counts[(size_t)i * (size_t)stride]);
}

int dataset_restore(Dataset *ds, const int64_t *c, int n, NptErr *err) {
    if (n == 4) /* the first loader's: every later cursor has a source, so 6 values or more */
        return npt_fail(err, "the checkpoint's data cursor comes from an older npt (epoch %lld, position %lld of %lld windows); its sample order cannot be continued by this version: start a new run",
                        (long long)c[0], (long long)c[1], (long long)c[2]);
    /* The checks name what differs: the message never shows the same figures on both sides. */
    int per_source = n >= 1 && c[0] == CURSOR_VERSION ? 3 : n >= 1 && c[0] == CURSOR_VERSION_UNCHECKED ? 2 : 0;
    if (n < 4 || !per_source || c[3] < 1 || c[3] > DATASET_MAX_SOURCES || n != 4 + per_source * c[3])
        return npt_fail(err, "the checkpoint's data cursor is not one this npt writes (%d values, version %lld, %lld sources; "
                        "expected version %d with 4 + 3 per source, or %d with 4 + 2): the checkpoint is damaged or from "
                        "another version; resume from another checkpoint, or start a new run",
                        n, n >= 1 ? (long long)c[0] : -1LL, n >= 4 ? (long long)c[3] : -1LL, CURSOR_VERSION,
                        CURSOR_VERSION_UNCHECKED);
    int64_t sum = 0;
    int negative = 0;
    for (int i = 0; i < c[3]; i++) {
        sum += c[5 + 2 * i];
        negative |= c[4 + 2 * i] < 0 || c[5 + 2 * i] < 0;
    }
    if (negative || c[2] < 0 || sum != c[2])
        return npt_fail(err, "the checkpoint's data cursor is inconsistent: it counts %lld windows drawn in all, but %lld "
                        "from its sources (%s)%s; the checkpoint is damaged: resume from another checkpoint",
                        (long long)c[2], (long long)sum, c[3] > 1 ? "their sum" : "its one source",
                        negative ? ", and a negative count" : "");
    int64_t have[DATASET_MAX_SOURCES];
    int differ = -1;
    for (int i = 0; i < ds->n_src; i++) {
        have[i] = (int64_t)ds->src[i].n_train;
        if (differ < 0 && (i >= c[3] || c[4 + 2 * i] != have[i])) differ = i;
    }
    if (differ < 0 && c[3] != ds->n_src) differ = ds->n_src;
    if (differ >= 0 || c[1] != (int64_t)ds->seed) {
        char was[400], now[400], which[700] = "";
        window_list(c + 4, 2, (int)c[3], was, sizeof was);
        window_list(have, 1, ds->n_src, now, sizeof now);
        if (c[3] != ds->n_src)
            snprintf(which, sizeof which, ": %lld source%s in the checkpoint, %d now", (long long)c[3], c[3] == 1 ? "" : "s",
                     ds->n_src);
        else if (differ >= 0 && ds->n_src > 1)
            snprintf(which, sizeof which, ": source %d (%.500s) has %lld training windows, the checkpoint's %lld", differ + 1,
                     ds->src[differ].file.name, (long long)have[differ], (long long)c[4 + 2 * differ]);
        return npt_fail(err, "the checkpoint's data cursor (%.300s training windows, seed %lld) does not fit this data (%.300s "
                        "training windows, seed %lld)%s; resume with the same data and recipe",
                        was, (long long)c[1], now, (long long)(int64_t)ds->seed, which);
    }
    if (per_source == 3)
        for (int i = 0; i < ds->n_src; i++) {
            int64_t saved = c[cursor_fingerprint_at(ds->n_src, i)];
            if ((uint64_t)saved != ds->src[i].fingerprint)
                return npt_fail(err, "the checkpoint was trained on other tokens than %.1000s holds now (the same %lld "
                                "training windows, but fingerprint %016llx, the checkpoint's %016llx): the file was "
                                "changed or replaced; resume with the data it was trained on",
                                ds->src[i].file.name, (long long)have[i], (unsigned long long)ds->src[i].fingerprint,
                                (unsigned long long)saved);
        }
    ds->drawn = (uint64_t)c[2];
    for (int i = 0; i < ds->n_src; i++) ds->src[i].drawn = (uint64_t)c[5 + 2 * i];
    return per_source == 2; /* restored, the tokens unchecked */
}
