/* tests/test_checkpoint_errors.c — every way a checkpoint can be wrong gets one precise
 * message and no crash (this program also runs under AddressSanitizer, `make asan`).
 * Damaged files are made from a good fixture checkpoint with the HDF5 API directly. */
#include <hdf5.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"
#include "test_checkpoint_fixture.h"

static char tmpdir[64];
static char good[600];

/* ckpt_save's test hook: makes a directory at the destination ctx just before the rename. */
static int make_dir_hook(const char *tmp_path, void *ctx) {
    (void)tmp_path;
    return mkdir((const char *)ctx, 0755);
}

static const char *in_tmp(const char *name) {
    static char buf[4][600];
    static int slot;
    char *out = buf[slot++ & 3];
    snprintf(out, sizeof buf[0], "%s/%s", tmpdir, name);
    return out;
}

static long copy_file(const char *from, const char *to, long keep /* < 0: all */) {
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    long done = 0;
    char buf[4096];
    size_t got;
    while (in && out && (keep < 0 || done < keep) &&
           (got = fread(buf, 1, keep < 0 || keep - done > (long)sizeof buf ? sizeof buf : (size_t)(keep - done), in)) > 0) {
        fwrite(buf, 1, got, out);
        done += (long)got;
    }
    if (in) fclose(in);
    if (out) fclose(out);
    return done;
}

/* Loading path fails, and the message contains every one of the given fragments. */
static void expect_load_error(const char *path, const char *what, const char *frag1, const char *frag2) {
    CkptMeta m;
    CkptTensor *t;
    int n;
    NptErr err = {""};
    int rc = ckpt_load(path, &m, &t, &n, &err);
    if (rc == 0) ckpt_free(&m, t, n);
    int ok = rc != 0 && strstr(err.msg, path) && (!frag1 || strstr(err.msg, frag1)) && (!frag2 || strstr(err.msg, frag2));
    check(ok, "%s: %s", what, rc == 0 ? "loaded without error" : err.msg);
}

/* A copy of the good checkpoint opened for editing. */
static hid_t edit(const char *name, char *path_out) {
    snprintf(path_out, 600, "%s/%s.h5", tmpdir, name);
    copy_file(good, path_out, -1);
    return H5Fopen(path_out, H5F_ACC_RDWR, H5P_DEFAULT);
}

static void set_attr(hid_t loc, const char *obj, const char *name, hid_t ftype, hid_t mtype, int n, const void *v) {
    H5Adelete_by_name(loc, obj, name, H5P_DEFAULT);
    hsize_t dims = (hsize_t)n;
    hid_t s = n ? H5Screate_simple(1, &dims, NULL) : H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate_by_name(loc, obj, name, ftype, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, mtype, v);
    H5Aclose(a);
    H5Sclose(s);
}

static void set_str_attr(hid_t loc, const char *obj, const char *name, const char *v) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(v) + 1);
    set_attr(loc, obj, name, t, t, 0, v);
    H5Tclose(t);
}

static void replace_dataset(hid_t f, const char *name, hid_t ftype, int ndim, hsize_t r, hsize_t c) {
    H5Ldelete(f, name, H5P_DEFAULT);
    hsize_t dims[2] = {r, c};
    hid_t s = H5Screate_simple(ndim, dims, NULL);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t d = H5Dcreate2(f, name, ftype, s, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    H5Pclose(lcpl);
    size_t count = ndim == 0 ? 1 : (size_t)(r * (ndim == 2 ? c : 1));
    double *zeros = calloc(count, sizeof(double));
    H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, zeros);
    free(zeros);
    H5Dclose(d);
    H5Sclose(s);
}

static void test_not_checkpoints(void) {
    expect_load_error(in_tmp("missing.h5"), "missing file", "No such file", NULL);
    FILE *fp = fopen(in_tmp("empty.h5"), "wb");
    if (fp) fclose(fp);
    expect_load_error(in_tmp("empty.h5"), "empty file", "not an HDF5 file", NULL);
    fp = fopen(in_tmp("text.h5"), "wb");
    if (fp) fputs("this is not a checkpoint\n", fp), fclose(fp);
    expect_load_error(in_tmp("text.h5"), "text file", "not an HDF5 file", NULL);
    expect_load_error(shared_path("models/stories260K/stories260K.bin"), "llama2.c model given as checkpoint",
                      "llama2.c model file", "use --model");
    expect_load_error(shared_path("models/stories260K/tinyllamas-stories-260k-f32.gguf"), "GGUF model given as checkpoint",
                      "GGUF model file", "use --model");
    expect_load_error(shared_path("models/TinyStories-656K/model.safetensors"), "safetensors given as checkpoint",
                      "safetensors model file", "use --model");
    expect_load_error(shared_path("models/TinyStories-656K"), "HF model directory given as checkpoint", "is a directory",
                      "use --model");

    /* An HDF5 file that is not ours (e.g. a dataset or another tool's model file). */
    hid_t f = H5Fcreate(in_tmp("other.h5"), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    replace_dataset(f, "/tokens", H5T_STD_I32LE, 2, 4, 4);
    H5Fclose(f);
    expect_load_error(in_tmp("other.h5"), "HDF5 file without format attribute",
                      "is not an npt checkpoint (no format attribute); it may be a model file", "use --model");
}

static void test_truncated(void) {
    struct stat st;
    stat(good, &st);
    long sizes[] = {st.st_size / 2, st.st_size * 9 / 10, st.st_size - 1, st.st_size / 10, 200, 7};
    for (size_t i = 0; i < NPT_ARRAY_LEN(sizes); i++) {
        char name[64];
        snprintf(name, sizeof name, "trunc_%ld.h5", sizes[i]);
        copy_file(good, in_tmp(name), sizes[i]);
        char what[96];
        snprintf(what, sizeof what, "file truncated to %ld of %ld bytes", sizes[i], (long)st.st_size);
        expect_load_error(in_tmp(name), what, sizes[i] > 100 ? "is truncated" : "not an HDF5 file", NULL);
    }
}

static void test_damaged(void) {
    char p[600];
    hid_t f = edit("format", p);
    set_str_attr(f, "/", "format", "something-else");
    H5Fclose(f);
    expect_load_error(p, "wrong format attribute", "not an npt checkpoint (format attribute is \"something-else\"", NULL);

    f = edit("version", p);
    int seven = 7;
    set_attr(f, "/", "format_version", H5T_STD_I32LE, H5T_NATIVE_INT, 0, &seven);
    H5Fclose(f);
    expect_load_error(p, "newer format_version", "was written by a newer npt (format_version 7 > 1)", NULL);

    f = edit("missing_ds", p);
    H5Ldelete(f, "/adapters/layer_03/B_add", H5P_DEFAULT);
    H5Fclose(f);
    expect_load_error(p, "missing dataset", "dataset /adapters/layer_03/B_add missing", NULL);

    f = edit("nan", p);
    hid_t d = H5Dopen2(f, "/adapters/layer_02/A", H5P_DEFAULT);
    float a[4 * 64];
    H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, a);
    a[5] = NAN, a[9] = INFINITY, a[200] = -INFINITY;
    H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, a);
    H5Dclose(d);
    H5Fclose(f);
    expect_load_error(p, "NaN/Inf in an adapter", "tensor /adapters/layer_02/A holds 1 NaN and 2 Inf values (of 256)", NULL);

    f = edit("dtype", p);
    replace_dataset(f, "/adapters/layer_04/B_mul", H5T_IEEE_F64LE, 2, 172, 4);
    H5Fclose(f);
    expect_load_error(p, "float64 adapter", "dataset /adapters/layer_04/B_mul has dtype float64, expected float32", NULL);

    f = edit("shape", p);
    replace_dataset(f, "/adapters/layer_03/A", H5T_IEEE_F32LE, 2, 5, 64);
    H5Fclose(f);
    expect_load_error(p, "wrong adapter shape", "dataset /adapters/layer_03/A has shape [5, 64], expected [4, 64] (rank 4",
                      NULL);

    f = edit("moment_shape", p);
    replace_dataset(f, "/optimizer/layer_02/A.m", H5T_IEEE_F32LE, 2, 4, 63);
    H5Fclose(f);
    expect_load_error(p, "moment shaped unlike its parameter",
                      "dataset /optimizer/layer_02/A.m has shape [4, 63] but its parameter /adapters/layer_02/A has [4, 64]",
                      NULL);

    f = edit("scalar_ds", p);
    replace_dataset(f, "/optimizer/layer_02/extra", H5T_IEEE_F32LE, 0, 0, 0);
    H5Fclose(f);
    expect_load_error(p, "scalar dataset among tensors", "dataset /optimizer/layer_02/extra has 0 dimensions", NULL);

    f = edit("stray", p);
    replace_dataset(f, "/adapters/layer_01/A", H5T_IEEE_F32LE, 2, 4, 64);
    H5Fclose(f);
    expect_load_error(p, "adapter for an unlisted layer", "unexpected dataset /adapters/layer_01/A", NULL);

    f = edit("safe_bmul", p);
    int one = 1;
    set_attr(f, "/adapters", "safe_mode", H5T_STD_I32LE, H5T_NATIVE_INT, 0, &one);
    H5Fclose(f);
    expect_load_error(p, "B_mul in a safe-mode checkpoint", "dataset /adapters/layer_02/B_mul present although", NULL);

    f = edit("layers", p);
    int layers[3] = {2, 3, 9};
    set_attr(f, "/adapters", "layers", H5T_STD_I32LE, H5T_NATIVE_INT, 3, layers);
    H5Fclose(f);
    expect_load_error(p, "layer index beyond the model", "lists layer 9, but the base model has 5 layers", NULL);

    f = edit("no_dim", p);
    H5Adelete_by_name(f, "/base", "dim", H5P_DEFAULT);
    H5Fclose(f);
    expect_load_error(p, "missing attribute", "attribute 'dim' of /base missing", NULL);

    f = edit("rank_str", p);
    set_str_attr(f, "/adapters", "rank", "four");
    H5Fclose(f);
    expect_load_error(p, "attribute of the wrong type", "attribute 'rank' of /adapters has type string, expected an integer",
                      NULL);

    f = edit("no_state", p);
    H5Ldelete(f, "/state", H5P_DEFAULT);
    H5Fclose(f);
    expect_load_error(p, "missing group", "group /state missing", NULL);

    f = edit("fingerprint", p);
    set_str_attr(f, "/base", "fingerprint", "0000000000000001");
    H5Fclose(f);
    expect_load_error(p, "fingerprint attributes disagree", "fingerprint \"0000000000000001\" but fingerprint_u64", NULL);

    f = edit("history", p);
    replace_dataset(f, "/history/loss", H5T_IEEE_F64LE, 1, 49, 0);
    H5Fclose(f);
    expect_load_error(p, "history columns of different lengths", "dataset /history/loss has 49 entries but /history/step has 50",
                      NULL);

    f = edit("no_recipe", p);
    H5Ldelete(f, "/recipe", H5P_DEFAULT);
    H5Fclose(f);
    expect_load_error(p, "missing recipe", "dataset /recipe missing", NULL);

    f = edit("scale_nan", p);
    double nan = NAN;
    set_attr(f, "/adapters", "modulation_scale", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 0, &nan);
    H5Fclose(f);
    expect_load_error(p, "NaN modulation scale", "attribute 'modulation_scale' of /adapters is nan; it must be finite", NULL);

    f = edit("scale_negative", p);
    double minus_one = -1;
    set_attr(f, "/adapters", "modulation_scale", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 0, &minus_one);
    H5Fclose(f);
    expect_load_error(p, "negative modulation scale", "attribute 'modulation_scale' of /adapters is -1; it must be > 0", NULL);

    f = edit("skips_negative", p);
    int64_t minus_seven = -7;
    set_attr(f, "/state", "skipped_total", H5T_STD_I64LE, H5T_NATIVE_INT64, 0, &minus_seven);
    H5Fclose(f);
    expect_load_error(p, "negative skip count", "attribute 'skipped_total' of /state is negative (-7)", NULL);

    f = edit("opt_type", p);
    set_str_attr(f, "/optimizer", "type", "lion");
    H5Fclose(f);
    expect_load_error(p, "unknown optimizer", "attribute 'type' of /optimizer is \"lion\"", NULL);

    f = edit("opt_step", p);
    long long minus3 = -3;
    set_attr(f, "/optimizer", "step", H5T_STD_I64LE, H5T_NATIVE_LLONG, 0, &minus3);
    H5Fclose(f);
    expect_load_error(p, "negative optimizer step", "attribute 'step' of /optimizer is negative (-3)", NULL);

    f = edit("negative_v", p);
    d = H5Dopen2(f, "/optimizer/layer_03/B_add.v", H5P_DEFAULT);
    float v[172 * 4];
    H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    v[7] = -1e-9f;
    H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    H5Dclose(d);
    H5Fclose(f);
    expect_load_error(p, "negative AdamW second moment",
                      "tensor /optimizer/layer_03/B_add.v (AdamW second moments) holds 1 negative value (of 688)", NULL);
}

/* /history/step edited: the reader holds it to what the trainer writes (a trained row's
 * step is 1..the checkpoint's step and above the row before; a skipped row repeats the
 * step before it), so inspect, --resume and the loss plot never take a damaged one. */
static void replace_steps(hid_t f, const int64_t *steps, hsize_t n) {
    H5Ldelete(f, "/history/step", H5P_DEFAULT);
    hid_t s = H5Screate_simple(1, &n, NULL);
    hid_t d = H5Dcreate2(f, "/history/step", H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, steps);
    H5Dclose(d);
    H5Sclose(s);
}

static void test_history_steps(void) {
    int64_t steps[FIX_HISTORY]; /* the good file: (i + 1) * 10, step 500; rows i % 7 == 3 skipped */
    char p[600];
    struct { const char *name, *what, *frag1, *frag2; int row; int64_t value; } cases[] = {
        {"hist_negative", "a hugely negative history step", "damaged: /history/step row 49 holds step -4611686018427387904",
         "outside 1..500 (a trained row of a checkpoint at step 500)", 49, -((int64_t)1 << 62)},
        {"hist_past", "a history step past the checkpoint's", "/history/step row 49 holds step 501, outside 1..500", NULL, 49, 501},
        {"hist_repeat", "a trained step repeating the one before", "/history/step row 20 holds step 200 after step 200",
         "trained steps increase", 20, 200},
        {"hist_back", "a skipped row going back", "/history/step row 10 holds step 5 after step 100", NULL, 10, 5},
        {"hist_skip_past", "a skipped row past the checkpoint's step", "row 3 holds step 600, outside 0..500 (a skipped row", NULL, 3, 600},
    };
    for (size_t k = 0; k < NPT_ARRAY_LEN(cases); k++) {
        for (int i = 0; i < FIX_HISTORY; i++) steps[i] = (i + 1) * 10;
        steps[cases[k].row] = cases[k].value;
        hid_t f = edit(cases[k].name, p);
        replace_steps(f, steps, FIX_HISTORY);
        H5Fclose(f);
        expect_load_error(p, cases[k].what, cases[k].frag1, cases[k].frag2);
    }

    /* What the trainer really writes loads: skipped rows at step 0 before the first trained
     * step, a skipped row repeating the step before it, and a history shorter than the step. */
    Fixture fx;
    fix_build(&fx, 0, 9);
    const CkptHistoryRow rows[] = {{.step = 0, .skipped = 1}, {.step = 0, .skipped = 1}, {.step = 1}, {.step = 1, .skipped = 1},
                                   {.step = 2}, {.step = 3}};
    fx.meta.history = (CkptHistoryRow *)rows;
    fx.meta.n_history = NPT_ARRAY_LEN(rows);
    NptErr err = {""};
    const char *q = in_tmp("hist_trainer.h5");
    CkptMeta m;
    CkptTensor *t;
    int n;
    int rc = ckpt_save(q, &fx.meta, fx.t, fx.n, &err) || ckpt_load(q, &m, &t, &n, &err);
    check(rc == 0 && m.n_history == 6, "history as the trainer writes it (skips at step 0, a repeated step, 3 of 9 steps) "
          "loads (%s)", rc ? err.msg : "ok");
    if (rc == 0) ckpt_free(&m, t, n);
    fix_free(&fx);
}

/* An all-weights checkpoint (lm + train_all_weights: /adapters rank 0, no layers) holds
 * every weight of its base in the 1-D /weights/block. For the fixture's base (stories260K's
 * shape) that is 260032 floats, or 292800 with an untied lm_head (counted here by hand:
 * embedding 512*64, per layer 2*64 + 2*4096 + 2*2048 + 3*11008, final norm 64). */
static void test_all_weights(void) {
    const int64_t tied = 512 * 64 + 5 * (2 * 64 + 2 * 4096 + 2 * 2048 + 3 * 11008) + 64, untied = tied + 512 * 64;
    struct { const char *name, *what; int ndim; int64_t rows, cols; int moment_rows; const char *frag1, *frag2; } cases[] = {
        {"aw_tied", "all-weights checkpoint of a tied base", 1, tied, 0, 0, NULL, NULL},
        {"aw_untied", "all-weights checkpoint of an untied base", 1, untied, 0, 0, NULL, NULL},
        {"aw_2d", "/weights/block made 2-D", 2, 2, tied / 2, 0, "damaged: dataset /weights/block has shape [2, 130016]",
         "is one 1-D block of [260032] floats (lm_head tied to the embedding) or [292800] (untied)"},
        {"aw_short", "/weights/block 16 floats short", 1, tied - 16, 0, 0, "dataset /weights/block has shape [260016]", "[260032]"},
        {"aw_missing", "/weights/block missing", 0, 0, 0, 0, "damaged: /weights/block missing", "use an earlier checkpoint"},
        {"aw_moment", "a moment of another shape than /weights/block", 1, tied, 0, 1,
         "dataset /optimizer/weights_block.m has shape [260016] but its parameter /weights/block has [260032]", NULL},
    };
    for (size_t k = 0; k < NPT_ARRAY_LEN(cases); k++) {
        Fixture fx;
        fix_build(&fx, 0, 500);
        fix_free(&fx);
        fx.meta.rank = 0;
        fx.meta.n_npt_layers = 0;
        int64_t count = cases[k].ndim == 2 ? cases[k].rows * cases[k].cols : cases[k].rows;
        float *zeros = calloc((size_t)untied, sizeof(float)); /* the largest tensor of any case */
        static const char *names[3] = {"weights/block", "optimizer/weights_block.m", "optimizer/weights_block.v"};
        CkptTensor t[3];
        int n = 0;
        for (int i = 0; i < 3; i++) {
            if (i == 0 && cases[k].ndim == 0) continue;
            CkptTensor *x = &t[n++];
            memset(x, 0, sizeof *x);
            snprintf(x->name, sizeof x->name, "%s", names[i]);
            x->data = zeros;
            x->ndim = i == 0 && cases[k].ndim ? cases[k].ndim : 1;
            x->shape[0] = i == 0 ? cases[k].rows : cases[k].ndim ? count : tied;
            x->shape[1] = cases[k].cols;
            if (i == 1 && cases[k].moment_rows) x->shape[0] = count - 16;
        }
        const char *p = in_tmp(cases[k].name);
        NptErr err = {""};
        int saved = ckpt_save(p, &fx.meta, t, n, &err);
        free(zeros);
        if (saved) {
            check(0, "%s: save (%s)", cases[k].what, err.msg);
            continue;
        }
        if (!cases[k].frag1) {
            CkptMeta m;
            CkptTensor *lt;
            int ln;
            int rc = ckpt_load(p, &m, &lt, &ln, &err);
            check(rc == 0 && ckpt_is_all_weights(&m), "%s loads (%s)", cases[k].what, rc ? err.msg : "ok");
            if (rc == 0) ckpt_free(&m, lt, ln);
        } else {
            expect_load_error(p, cases[k].what, cases[k].frag1, cases[k].frag2);
        }
    }
}

/* /adapters/layer_02/A (4x64) rewritten deflate-compressed in chunks of 2 rows, with only
 * rows 0..1 written when half: the missing chunk reads as zeros, and its absence hides in
 * the byte count (deflate packs well), so the reader counts chunks. */
static void rewrite_chunked_a(const char *name, int half, char *p) {
    hid_t f = edit(name, p);
    float a[4 * 64];
    hid_t d = H5Dopen2(f, "/adapters/layer_02/A", H5P_DEFAULT);
    H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, a);
    H5Dclose(d);
    H5Ldelete(f, "/adapters/layer_02/A", H5P_DEFAULT);
    hsize_t dims[2] = {4, 64}, chunk[2] = {2, 64}, start[2] = {0, 0};
    hid_t s = H5Screate_simple(2, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 2, chunk);
    H5Pset_deflate(dcpl, 6);
    d = H5Dcreate2(f, "/adapters/layer_02/A", H5T_IEEE_F32LE, s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    hid_t ms = H5Screate_simple(2, half ? chunk : dims, NULL);
    H5Sselect_hyperslab(s, H5S_SELECT_SET, start, NULL, half ? chunk : dims, NULL);
    H5Dwrite(d, H5T_NATIVE_FLOAT, ms, s, H5P_DEFAULT, a);
    H5Sclose(ms);
    H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(s);
    H5Fclose(f);
}

static int loads(const char *path, NptErr *err) {
    CkptMeta m;
    CkptTensor *t;
    int n;
    int rc = ckpt_load(path, &m, &t, &n, err);
    if (rc == 0) ckpt_free(&m, t, n);
    return rc == 0;
}

/* Files inspect and verify used to vouch for although readers cannot use them: a
 * compressed dataset with a chunk never written, an optimizer moment missing (--resume
 * refuses it), a rank with no layers (neither adapters nor all-weights). */
static void test_incomplete(void) {
    char p[600];
    NptErr err = {""};
    rewrite_chunked_a("chunks_all", 0, p);
    check(loads(p, &err), "deflate-compressed chunked adapter, every chunk written: loads (%s)", err.msg);
    rewrite_chunked_a("chunks_half", 1, p);
    expect_load_error(p, "deflate-compressed adapter with a chunk never written",
                      "dataset /adapters/layer_02/A declares 256 float32 values in 2 chunks but the file holds 1 of them",
                      "not read");

    hid_t f = edit("no_moment", p);
    H5Ldelete(f, "/optimizer/layer_02/A.m", H5P_DEFAULT);
    H5Fclose(f);
    expect_load_error(p, "an AdamW first moment missing", "damaged: dataset /optimizer/layer_02/A.m missing",
                      "the first optimizer state of /adapters/layer_02/A");
    f = edit("no_moment_group", p);
    H5Ldelete(f, "/optimizer/layer_03", H5P_DEFAULT);
    H5Fclose(f);
    expect_load_error(p, "a layer's whole optimizer group missing", "dataset /optimizer/layer_03/A.m missing", NULL);
    f = edit("no_v", p);
    H5Ldelete(f, "/optimizer/layer_04/B_mul.v", H5P_DEFAULT);
    H5Fclose(f);
    expect_load_error(p, "an AdamW second moment missing", "dataset /optimizer/layer_04/B_mul.v missing",
                      "the second optimizer state");
    f = edit("sgd", p);
    set_str_attr(f, "/optimizer", "type", "sgd");
    H5Fclose(f);
    check(loads(p, &err), "an sgd checkpoint with .m (momentum) and .v as the trainer writes them loads (%s)", err.msg);
    f = edit("sgd_no_m", p);
    set_str_attr(f, "/optimizer", "type", "sgd");
    H5Ldelete(f, "/optimizer/layer_02/B_add.m", H5P_DEFAULT);
    H5Fclose(f);
    expect_load_error(p, "an sgd momentum buffer missing", "dataset /optimizer/layer_02/B_add.m missing", NULL);

    Fixture fx; /* adapters only, optimizer "none": no moments needed */
    fix_build(&fx, 0, 500);
    fx.meta.optimizer[0] = '\0';
    CkptTensor adapters[FIX_MAX_TENSORS];
    int k = fix_adapters_only(&fx, adapters);
    const char *q = in_tmp("no_optimizer.h5");
    check(ckpt_save(q, &fx.meta, adapters, k, &err) == 0 && loads(q, &err),
          "adapters without optimizer state (type none) load (%s)", err.msg);
    q = in_tmp("rank_no_layers.h5");
    fx.meta.n_npt_layers = 0;
    check(ckpt_save(q, &fx.meta, NULL, 0, &err) == 0, "save rank 4 with no layers (%s)", err.msg);
    expect_load_error(q, "rank 4 but no layers", "damaged: /adapters has rank 4 but lists no layers",
                      "an all-weights checkpoint has rank 0");
    fix_free(&fx);
}

/* Flips a byte inside the stored data of a dataset: the Fletcher-32 checksum catches it. */
static void test_bit_rot(void) {
    char p[600];
    hid_t f = edit("bitrot", p);
    hid_t d = H5Dopen2(f, "/adapters/layer_03/B_mul", H5P_DEFAULT);
    hsize_t offset[2];
    unsigned mask;
    haddr_t addr = 0;
    hsize_t size = 0;
    hid_t space = H5Dget_space(d);
    herr_t rc = H5Dget_chunk_info(d, space, 0, offset, &mask, &addr, &size);
    H5Sclose(space);
    H5Dclose(d);
    H5Fclose(f);
    check(rc >= 0 && size > 100, "found the chunk of /adapters/layer_03/B_mul (%llu bytes at %llu)",
          (unsigned long long)size, (unsigned long long)addr);
    FILE *fp = fopen(p, "r+b");
    if (!fp || rc < 0) return;
    fseek(fp, (long)addr + 101, SEEK_SET);
    int c = fgetc(fp);
    fseek(fp, (long)addr + 101, SEEK_SET);
    fputc(c ^ 0x10, fp);
    fclose(fp);
    expect_load_error(p, "one flipped bit in tensor data", "/adapters/layer_03/B_mul", "Fletcher32");
}

/* 1 if a loaded checkpoint differs in any field or bit from the fixture it was written from. */
static int differs(const Fixture *fx, const CkptMeta *m, const CkptTensor *t, int n) {
    char why[160];
    return !meta_equal(&fx->meta, m, why, sizeof why) || !tensors_equal(fx, t, n, why, sizeof why);
}

/* Damage one byte at a time all over the file: every load must either fail with a
 * message naming the file or return exactly what was written (the byte was unused);
 * never crash, never silently different values. This holds because all metadata,
 * chunk indexes and data chunks are checksummed and strings are not in the global heap. */
static void test_fuzz(void) {
    Fixture fx;
    fix_build(&fx, 0, 500);
    struct stat st;
    stat(good, &st);
    int rejected = 0, intact = 0, silent = 0, bad_msg = 0, tries = 0;
    for (long off = 0; off < st.st_size; off += st.st_size / 400 + 1, tries++) {
        const char *p = in_tmp("fuzz.h5");
        copy_file(good, p, -1);
        FILE *fp = fopen(p, "r+b");
        if (!fp) continue;
        fseek(fp, off, SEEK_SET);
        int c = fgetc(fp);
        fseek(fp, off, SEEK_SET);
        fputc(c ^ (1 << (off % 8)), fp);
        fclose(fp);
        CkptMeta m;
        CkptTensor *t;
        int n;
        NptErr err = {""};
        if (ckpt_load(p, &m, &t, &n, &err) == 0) {
            if (differs(&fx, &m, t, n)) {
                silent++;
                printf("NOTE: byte %ld damaged, file loaded with different values\n", off);
            } else {
                intact++;
            }
            ckpt_free(&m, t, n);
        } else if (strstr(err.msg, p)) {
            rejected++;
        } else {
            bad_msg++;
            printf("NOTE: byte %ld damaged: %s\n", off, err.msg);
        }
    }
    check(silent == 0 && bad_msg == 0 && rejected > tries / 2,
          "%d single-bit corruptions: %d rejected with a message naming the file, %d loaded intact (unused byte), "
          "%d loaded different values, %d messages without the file name", tries, rejected, intact, silent, bad_msg);
    fix_free(&fx);
}

static void test_save_errors(void) {
    Fixture fx;
    fix_build(&fx, 0, 10);
    NptErr err = {""};
    const char *p = in_tmp("save_nan.h5");
    fx.t[3].data[17] = NAN;
    check(ckpt_save(p, &fx.meta, fx.t, fx.n, &err) != 0 && strstr(err.msg, "refusing") &&
              strstr(err.msg, "/adapters/layer_02/B_add holds 1 NaN"),
          "saving a NaN adapter is refused: %s", err.msg);
    check(access(p, F_OK) != 0 && fix_count_entries(tmpdir, ".tmp.") == 0, "refused save leaves no file");
    fx.t[3].data[17] = 0;

    char saved[128];
    memcpy(saved, fx.t[0].name, sizeof saved);
    snprintf(fx.t[0].name, sizeof fx.t[0].name, "history/A");
    check(ckpt_save(p, &fx.meta, fx.t, fx.n, &err) != 0 && strstr(err.msg, "unusable name \"history/A\""),
          "tensor inside history/ is refused: %s", err.msg);
    snprintf(fx.t[0].name, sizeof fx.t[0].name, "/adapters/x");
    check(ckpt_save(p, &fx.meta, fx.t, fx.n, &err) != 0 && strstr(err.msg, "unusable name"),
          "absolute tensor name is refused: %s", err.msg);
    memcpy(fx.t[0].name, saved, sizeof saved);
    fx.t[0].ndim = 0;
    check(ckpt_save(p, &fx.meta, fx.t, fx.n, &err) != 0 && strstr(err.msg, "has 0 dims"), "0-dim tensor is refused: %s",
          err.msg);
    fx.t[0].ndim = 2;
    snprintf(fx.t[1].name, sizeof fx.t[1].name, "%s", fx.t[0].name);
    check(ckpt_save(p, &fx.meta, fx.t, fx.n, &err) != 0 && strstr(err.msg, "dataset /adapters/layer_02/A"),
          "duplicate tensor name fails naming it: %s", err.msg);
    check(access(p, F_OK) != 0 && fix_count_entries(tmpdir, ".tmp.") == 0, "failed write leaves no file or temp file");
    fix_free(&fx);

    fix_build(&fx, 0, 10);
    mkdir(in_tmp("a_dir.h5"), 0755);
    check(ckpt_save(in_tmp("a_dir.h5"), &fx.meta, fx.t, fx.n, &err) != 0 && strstr(err.msg, "is not a regular file"),
          "saving over a directory is refused before anything is written: %s", err.msg);
    check(fix_count_entries(tmpdir, ".tmp.") == 0, "and leaves no temp file");
    /* a directory that appears at the path while the file is written: the rename fails */
    char late[600];
    snprintf(late, sizeof late, "%s", in_tmp("late_dir.h5"));
    ckpt_set_test_hook(make_dir_hook, late);
    check(ckpt_save(late, &fx.meta, fx.t, fx.n, &err) != 0 && strstr(err.msg, "rename from") &&
              strstr(err.msg, "Is a directory"),
          "a directory appearing before the rename fails the save at the rename: %s", err.msg);
    ckpt_set_test_hook(NULL, NULL);
    check(fix_count_entries(tmpdir, ".tmp.") == 0, "and removes its temp file");
    fix_free(&fx);

    char out[64];
    check(ckpt_path_for(out, sizeof out, "runs/x", "weekly", 1, &err) != 0 && strstr(err.msg, "weekly"),
          "unknown checkpoint kind: %s", err.msg);
}

/* A full disk while saving, without privileges: RLIMIT_FSIZE at half the checkpoint's
 * size, so writes past it fail with EFBIG (SIGXFSZ ignored). In a child process, which
 * reports through a pipe, so the limit and a crash stay there: HDF5 1.10 crashes in
 * exit() when a file whose writes failed was closed (H5Fclose fails and leaves a dangling
 * id), which is why the child ends with exit(). Then, with the limit lifted, the same
 * process must still write a good checkpoint: nothing was left open. */
static void test_full_disk(void) {
    Fixture v1, v2;
    fix_build(&v1, 0, 100);
    fix_build(&v2, 0, 200);
    v2.t[0].data[0] = 42.0f;
    const char *path = in_tmp("full_disk.h5"), *after = in_tmp("after_full_disk.h5");
    NptErr err = {""};
    check(ckpt_save(path, &v1.meta, v1.t, v1.n, &err) == 0, "full disk: the previous checkpoint is written (%s)", err.msg);
    size_t size = 0;
    char *before = npt_read_file(path, &size, &err);
    int fds[2];
    if (!before || size == 0 || pipe(fds) != 0) {
        check(0, "full disk: setup (read %s: %zu bytes; %s)", path, size, before ? "" : err.msg);
        free(before);
        fix_free(&v1);
        fix_free(&v2);
        return;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        struct rlimit rl;
        getrlimit(RLIMIT_FSIZE, &rl);
        rlim_t old = rl.rlim_cur;
        rl.rlim_cur = (rlim_t)size / 2;
        signal(SIGXFSZ, SIG_IGN);
        NptErr e1 = {""}, e2 = {""};
        int rc1 = setrlimit(RLIMIT_FSIZE, &rl) == 0 ? ckpt_save(path, &v2.meta, v2.t, v2.n, &e1) : 99;
        long open_ids = (long)H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
        rl.rlim_cur = old;
        int rc2 = setrlimit(RLIMIT_FSIZE, &rl) == 0 ? ckpt_save(after, &v2.meta, v2.t, v2.n, &e2) : 99;
        char msg[2400];
        int n = snprintf(msg, sizeof msg, "%d %d %ld\n%s\n%s", rc1, rc2, open_ids, e1.msg, e2.msg);
        if (write(fds[1], msg, (size_t)(n < (int)sizeof msg ? n : (int)sizeof msg - 1)) < 0) _exit(98);
        close(fds[1]);
        exit(0); /* runs HDF5's atexit handler, where the crash was */
    }
    close(fds[1]);
    char msg[2400] = "";
    size_t got = 0;
    ssize_t r;
    while (got < sizeof msg - 1 && (r = read(fds[0], msg + got, sizeof msg - 1 - got)) > 0) got += (size_t)r;
    msg[got] = '\0';
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    int rc1 = -1, rc2 = -1;
    long open_ids = -1;
    sscanf(msg, "%d %d %ld", &rc1, &rc2, &open_ids);
    char *line1 = strchr(msg, '\n') ? strchr(msg, '\n') + 1 : msg + got;
    char *line2 = strchr(line1, '\n');
    if (line2) *line2++ = '\0';
    check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "full disk: the writer's process exits normally (%s %d)",
          WIFSIGNALED(status) ? "killed by signal" : "exit status",
          WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    char want[700];
    snprintf(want, sizeof want, "cannot write checkpoint %s: File too large; ", path);
    check(rc1 != 0 && strstr(line1, want) == line1 && !strstr(line1, "bytes actually written") && !strstr(line1, "buf = "),
          "full disk: save fails with one clean line naming the file and the OS's reason: %s", line1);
    size_t now = 0;
    char *kept = npt_read_file(path, &now, &err);
    check(kept && now == size && memcmp(kept, before, size) == 0, "full disk: the previous checkpoint is unchanged");
    check(fix_count_entries(tmpdir, ".tmp.") == 0, "full disk: no temp file left");
    check(open_ids == 0, "full disk: no HDF5 file or object left open after the failed save (%ld)", open_ids);
    CkptMeta m;
    CkptTensor *t = NULL;
    int n = 0;
    int loaded = rc2 == 0 && ckpt_load(after, &m, &t, &n, &err) == 0;
    check(loaded && n == v2.n && t[0].data[0] == 42.0f, "full disk: with the limit lifted the same process saves a good "
          "checkpoint (%s)", rc2 ? (line2 ? line2 : "?") : loaded ? "ok" : err.msg);
    if (loaded) ckpt_free(&m, t, n);
    free(before);
    free(kept);
    fix_free(&v1);
    fix_free(&v2);
}

static void test_base_mismatch(void) {
    Fixture fx;
    fix_build(&fx, 0, 10);
    CkptMeta model;
    memset(&model, 0, sizeof model);
    snprintf(model.base_path, sizeof model.base_path, "/work/shared/models/TinyStories-656K");
    snprintf(model.base_format, sizeof model.base_format, "hf");
    model.base_fingerprint = 0x0123456789abcdefULL;
    model.dim = 128, model.hidden_dim = 384, model.n_layers = 2, model.n_heads = 8, model.n_kv_heads = 4;
    model.vocab_size = 2048;
    NptErr err = {""};
    int rc = ckpt_check_base("runs/x/final.h5", &fx.meta, &model, &err);
    check(rc != 0 && strstr(err.msg, "adapters in runs/x/final.h5 were trained on /work/shared/models/stories260K/"
                                     "stories260K.bin (llama2c, fingerprint fedcba9876543210, dim 64") &&
              strstr(err.msg, "but the model given is /work/shared/models/TinyStories-656K (hf, fingerprint "
                              "0123456789abcdef, dim 128") && strstr(err.msg, "use the base model the adapters were trained on"),
          "base mismatch names both models: %s", err.msg);
    /* Same weights through another format (the GGUF of stories260K): accepted. */
    model = fx.meta;
    snprintf(model.base_path, sizeof model.base_path, "/work/shared/models/stories260K/tinyllamas-stories-260k-f32.gguf");
    snprintf(model.base_format, sizeof model.base_format, "gguf");
    check(ckpt_check_base("runs/x/final.h5", &fx.meta, &model, &err) == 0, "same fingerprint, other path/format: accepted");
    model.base_fingerprint ^= 1;
    check(ckpt_check_base("runs/x/final.h5", &fx.meta, &model, &err) != 0, "same dims, other fingerprint: refused");
    /* Same weights under another RoPE base or norm eps (an edited config.json): refused. */
    model = fx.meta;
    model.rope_theta = 1e6;
    rc = ckpt_check_base("runs/x/final.h5", &fx.meta, &model, &err);
    check(rc != 0 && strstr(err.msg, "rope theta 10000, but") && strstr(err.msg, "rope theta 1e+06"),
          "same weights, rope theta 1e6 instead of 10000: refused: %s", err.msg);
    model = fx.meta;
    model.norm_eps = 1e-2;
    check(ckpt_check_base("runs/x/final.h5", &fx.meta, &model, &err) != 0 && strstr(err.msg, "norm eps 0.01"),
          "same weights, norm eps 1e-2 instead of 1e-5: refused: %s", err.msg);
    model.norm_eps = 1e-5f; /* the float a loader holds for the double 1e-5 */
    check(ckpt_check_base("runs/x/final.h5", &fx.meta, &model, &err) == 0, "norm eps 1e-5 as float vs double: accepted");
    CkptMeta older = fx.meta;
    older.norm_eps = older.rope_theta = 0; /* a file written before they were recorded */
    model.rope_theta = 1e6;
    check(ckpt_check_base("runs/x/final.h5", &older, &model, &err) == 0, "checkpoint without eps/theta: not compared");
    fix_free(&fx);
}

static void test_latest_all_bad(void) {
    const char *dir = in_tmp("run_bad");
    mkdir(dir, 0755);
    char p[700];
    snprintf(p, sizeof p, "%s/ckpt-00000100.h5", dir);
    copy_file(good, p, 1000);
    snprintf(p, sizeof p, "%s/final.h5", dir);
    copy_file(shared_path("models/stories260K/stories260K.bin"), p, -1);
    char out[600];
    NptErr err = {""};
    /* not "nothing to resume": a fresh start would write over the damaged files */
    check(ckpt_find_latest(dir, out, sizeof out, 1, &err) == -1 && !out[0] &&
              strstr(err.msg, "holds 2 checkpoint files and none can be resumed") && strstr(err.msg, dir),
          "no usable checkpoint among corrupt files: an error naming the directory (%s)", err.msg);
}

int main(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/npt_ckpt_err_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        check(0, "mkdtemp");
        return test_finish();
    }
    Fixture fx;
    fix_build(&fx, 0, 500);
    snprintf(good, sizeof good, "%s/good.h5", tmpdir);
    NptErr err = {""};
    check(ckpt_save(good, &fx.meta, fx.t, fx.n, &err) == 0, "write the good checkpoint (%s)", err.msg);
    fix_free(&fx);
    test_not_checkpoints();
    test_truncated();
    test_damaged();
    test_history_steps();
    test_all_weights();
    test_incomplete();
    test_bit_rot();
    test_fuzz();
    test_save_errors();
    test_full_disk();
    test_base_mismatch();
    test_latest_all_bad();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (test_failures == 0 && system(cmd) != 0) printf("NOTE: could not remove %s\n", tmpdir);
    return test_finish();
}
