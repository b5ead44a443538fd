/* tests/test_checkpoint.c — checkpoint round trip (bit-exact tensors and metadata),
 * streaming reads, atomic writes (failed and crashed saves keep the old file), keep-last
 * rotation and --resume auto selection.
 *
 *   test_checkpoint               run the tests
 *   test_checkpoint --write PATH  write the fixture checkpoint (read by test_checkpoint_h5py.py)
 *   test_checkpoint --check PATH  load PATH and compare it with the fixture (for files
 *                                 written by h5py following docs/checkpoint.md) */
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"
#include "test_checkpoint_fixture.h"
#include "../util/atomic_file.h" /* NPT_TEMP_STALE_SECONDS */

static char tmpdir[64];

static const char *in_tmp(const char *name) {
    static char buf[4][512];
    static int slot;
    char *out = buf[slot++ & 3];
    snprintf(out, sizeof buf[0], "%s/%s", tmpdir, name);
    return out;
}

static void check_file_matches(const char *path, const Fixture *fx, const char *what) {
    CkptMeta m;
    CkptTensor *t;
    int n;
    NptErr err = {""};
    int rc = ckpt_load(path, &m, &t, &n, &err);
    check(rc == 0, "%s: ckpt_load succeeds (%s)", what, err.msg);
    if (rc) return;
    char why[256] = "";
    check(meta_equal(&fx->meta, &m, why, sizeof why), "%s: every metadata field round-trips (%s)", what, why);
    why[0] = '\0';
    check(tensors_equal(fx, t, n, why, sizeof why), "%s: all %d tensors bit-exact (%s)", what, fx->n, why);
    ckpt_free(&m, t, n);
}

static void test_round_trip(void) {
    Fixture fx;
    fix_build(&fx, 0, 500);
    const char *path = in_tmp("full.h5");
    NptErr err = {""};
    check(ckpt_save(path, &fx.meta, fx.t, fx.n, &err) == 0, "save full-mode checkpoint (%s)", err.msg);
    check_file_matches(path, &fx, "full mode");

    CkptMeta m;
    CkptTensor *t;
    int n;
    if (ckpt_load(path, &m, &t, &n, &err) == 0) {
        int iso = strlen(m.created) == 20 && m.created[4] == '-' && m.created[10] == 'T' && m.created[19] == 'Z';
        check(iso, "created is ISO-8601 UTC (%s)", m.created);
        check(m.format_version == 1 && strcmp(m.npt_version, NPT_VERSION) == 0, "format_version 1, npt_version %s",
              m.npt_version);
        ckpt_free(&m, t, n);
    }
    fix_free(&fx);

    fix_build(&fx, 1, 40);
    path = in_tmp("safe.h5");
    check(ckpt_save(path, &fx.meta, fx.t, fx.n, &err) == 0, "save safe-mode checkpoint (%s)", err.msg);
    check_file_matches(path, &fx, "safe mode (no B_mul)");
    fix_free(&fx);

    /* Edge: adapters only, no history, no optimizer state, no recipe (e.g. a step-0 save).
     * (A rank with no layers at all is neither adapters nor all-weights: refused, see
     * test_checkpoint_errors.c.) */
    fix_build(&fx, 0, 0);
    fx.meta.n_history = 0;
    fx.meta.history = NULL;
    fx.meta.optimizer[0] = '\0';
    fx.meta.recipe_json = NULL;
    CkptTensor adapters[FIX_MAX_TENSORS];
    int n_adapters = fix_adapters_only(&fx, adapters);
    path = in_tmp("empty.h5");
    check(ckpt_save(path, &fx.meta, adapters, n_adapters, &err) == 0, "save checkpoint without moments or history (%s)",
          err.msg);
    if (ckpt_load(path, &m, &t, &n, &err) == 0) {
        check(n == n_adapters && m.n_history == 0 && m.n_npt_layers == 3 && m.optimizer[0] == '\0' &&
                  strcmp(m.recipe_json, "{}") == 0,
              "checkpoint without optimizer state loads: %d adapter tensors, 0 history rows, recipe \"{}\"", n);
        ckpt_free(&m, t, n);
    } else {
        check(0, "checkpoint without optimizer state loads (%s)", err.msg);
    }
    fix_free(&fx);
}

static void test_streaming(void) {
    Fixture fx;
    fix_build(&fx, 0, 500);
    const char *path = in_tmp("full.h5");
    NptErr err = {""};
    CkptFile *f = ckpt_open(path, &err);
    check(f != NULL, "ckpt_open (%s)", err.msg);
    if (!f) return fix_free(&fx);
    CkptTensor *list;
    int n;
    check(ckpt_list_tensors(f, &list, &n, &err) == 0 && n == 27, "list 27 tensors without reading data (%s)", err.msg);
    /* adapters/layer_03/B_add is fixture tensor k = 1*9 + 1*3 + 0 = 12, shape [172, 4]. */
    const CkptTensor *t = ckpt_find(list, n, "/adapters/layer_03/B_add");
    check(t && t->shape[0] == 172 && t->shape[1] == 4 && !t->data, "listed tensor has shape [172, 4] and no data");
    float block[50 * 4];
    int ok = t != NULL;
    for (int64_t r = 0; ok && r < 172; r += 50) {
        int64_t rows = 172 - r < 50 ? 172 - r : 50;
        if (ckpt_read_rows(f, t, r, rows, block, &err)) ok = 0;
        for (int64_t i = 0; ok && i < rows * 4; i++) ok = block[i] == fix_value(12, r * 4 + i);
    }
    check(ok, "streamed in 50-row blocks equals the formula (%s)", err.msg);
    check(t && ckpt_read_rows(f, t, 170, 5, block, &err) != 0 && strstr(err.msg, "out of range"),
          "reading past the last row is an error (%s)", err.msg);
    ckpt_free(NULL, list, n);
    ckpt_close(f);
    fix_free(&fx);
}

static int fail_hook(const char *tmp, void *ctx) {
    struct stat st;
    *(int *)ctx = stat(tmp, &st) == 0 && st.st_size > 0; /* the temp file was complete */
    return 1;
}

static int crash_hook(const char *tmp, void *ctx) { _exit(7); }

static void test_atomic(void) {
    Fixture v1, v2;
    fix_build(&v1, 0, 100);
    fix_build(&v2, 0, 200);
    v2.t[0].data[0] = 42.0f;
    const char *path = in_tmp("atomic.h5");
    NptErr err = {""};
    check(ckpt_save(path, &v1.meta, v1.t, v1.n, &err) == 0, "save v1 (%s)", err.msg);

    int temp_was_complete = 0;
    ckpt_set_test_hook(fail_hook, &temp_was_complete);
    int rc = ckpt_save(path, &v2.meta, v2.t, v2.n, &err);
    ckpt_set_test_hook(NULL, NULL);
    check(rc != 0 && strstr(err.msg, path), "save failing after the temp file is written reports it (%s)", err.msg);
    check(temp_was_complete, "the hook ran on a complete temp file");
    check_file_matches(path, &v1, "after a failed save the old checkpoint");
    check(fix_count_entries(tmpdir, ".tmp.") == 0, "failed save left no temp file");

    rc = ckpt_save(in_tmp("no/such/dir/x.h5"), &v2.meta, v2.t, v2.n, &err);
    check(rc != 0 && strstr(err.msg, "no/such/dir") && strstr(err.msg, "No such file"),
          "save into a missing directory fails naming it (%s)", err.msg);

    /* A crash between writing the temp file and the rename (kill -9, power loss). */
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        ckpt_set_test_hook(crash_hook, NULL);
        ckpt_save(path, &v2.meta, v2.t, v2.n, &err);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    check(WIFEXITED(status) && WEXITSTATUS(status) == 7, "writer crashed mid-save");
    check_file_matches(path, &v1, "after a crash mid-save the old checkpoint");
    check(fix_count_entries(tmpdir, ".tmp.") == 1, "the crashed writer's temp file is left behind (as after kill -9)");

    err.msg[0] = '\0';
    check(ckpt_save(path, &v2.meta, v2.t, v2.n, &err) == 0, "save v2 over v1 (%s)", err.msg);
    check_file_matches(path, &v2, "after a successful overwrite the new checkpoint");
    check(ckpt_rotate(tmpdir, 3, &err) == 0 && fix_count_entries(tmpdir, ".tmp.") == 1,
          "rotation keeps it while under a minute old (its writer may be on another machine) (%s)", err.msg);
    age_names(tmpdir, ".tmp.", NULL, 2 * NPT_TEMP_STALE_SECONDS);
    check(ckpt_rotate(tmpdir, 3, &err) == 0 && fix_count_entries(tmpdir, ".tmp.") == 0,
          "rotation removes the dead writer's temp file once older (%s)", err.msg);
    fix_free(&v1);
    fix_free(&v2);
}

static int exists(const char *dir, const char *name) {
    char p[600];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

static void save_kind(const char *dir, const char *kind, int64_t step) {
    Fixture fx;
    fix_build(&fx, 1, step);
    snprintf(fx.meta.kind, sizeof fx.meta.kind, "%s", kind);
    char path[600];
    NptErr err = {""};
    if (ckpt_path_for(path, sizeof path, dir, kind, step, &err) || ckpt_save(path, &fx.meta, fx.t, fx.n, &err))
        check(0, "save %s checkpoint at step %lld (%s)", kind, (long long)step, err.msg);
    fix_free(&fx);
}

static void test_rotation(void) {
    const char *dir = in_tmp("run_rot");
    mkdir(dir, 0755);
    for (int s = 100; s <= 600; s += 100) save_kind(dir, "periodic", s);
    save_kind(dir, "best", 300);
    save_kind(dir, "final", 600);
    char other[600];
    snprintf(other, sizeof other, "%s/metrics.jsonl", dir);
    FILE *fp = fopen(other, "w");
    if (fp) fclose(fp);
    NptErr err = {""};
    check(ckpt_rotate(dir, 0, &err) == 0 && fix_count_entries(dir, "ckpt-") == 6, "keep_last 0 keeps everything");
    check(ckpt_rotate(dir, 3, &err) == 0, "rotate keep_last 3 (%s)", err.msg);
    check(!exists(dir, "ckpt-00000100.h5") && !exists(dir, "ckpt-00000200.h5") && !exists(dir, "ckpt-00000300.h5"),
          "the 3 oldest periodic checkpoints are deleted");
    check(exists(dir, "ckpt-00000400.h5") && exists(dir, "ckpt-00000500.h5") && exists(dir, "ckpt-00000600.h5"),
          "the 3 newest periodic checkpoints are kept");
    check(exists(dir, "best.h5") && exists(dir, "final.h5") && exists(dir, "metrics.jsonl"),
          "best.h5, final.h5 and other files are never rotated");
}

static void copy_truncated(const char *from, const char *to, double fraction) {
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    if (!in || !out) return;
    fseek(in, 0, SEEK_END);
    long size = ftell(in), keep = (long)(size * fraction);
    fseek(in, 0, SEEK_SET);
    char buf[4096];
    for (long done = 0; done < keep;) {
        size_t want = (size_t)(keep - done < (long)sizeof buf ? keep - done : (long)sizeof buf);
        size_t got = fread(buf, 1, want, in);
        if (!got) break;
        fwrite(buf, 1, got, out);
        done += (long)got;
    }
    fclose(in);
    fclose(out);
}

static void test_find_latest(void) {
    const char *dir = in_tmp("run_latest");
    char out[600], p[600], q[600];
    NptErr err = {""};
    check(ckpt_find_latest(in_tmp("no_such_run"), out, sizeof out, 1, &err) == 0, "missing run dir: nothing to resume");
    mkdir(dir, 0755);
    check(ckpt_find_latest(dir, out, sizeof out, 1, &err) == 0 && !out[0], "empty run dir: nothing to resume");

    save_kind(dir, "periodic", 100);
    save_kind(dir, "periodic", 300);
    save_kind(dir, "periodic", 900);
    /* ckpt-900 cut short by a crash (it could only be so if written by something else). */
    snprintf(p, sizeof p, "%s/ckpt-00000900.h5", dir);
    snprintf(q, sizeof q, "%s/full900", tmpdir);
    rename(p, q);
    copy_truncated(q, p, 0.6);
    /* A complete temp file from a writer killed before its rename is not a checkpoint. */
    snprintf(q, sizeof q, "%s/ckpt-00001000.h5.tmp.999999", dir);
    copy_truncated(in_tmp("full.h5"), q, 1.0);
    snprintf(q, sizeof q, "%s/ckpt-00000300.h5", dir);
    check(ckpt_find_latest(dir, out, sizeof out, 1, &err) == 1 && strcmp(out, q) == 0,
          "latest skips the truncated ckpt-900 and the temp file: %s", out);

    /* The step attribute decides, not the name. */
    Fixture fx;
    fix_build(&fx, 0, 450);
    snprintf(p, sizeof p, "%s/ckpt-00000050.h5", dir);
    check(ckpt_save(p, &fx.meta, fx.t, fx.n, &err) == 0, "save step 450 under an older name");
    fix_free(&fx);
    check(ckpt_find_latest(dir, out, sizeof out, 1, &err) == 1 && strcmp(out, p) == 0,
          "latest is the file whose step attribute is highest: %s", out);
    save_kind(dir, "final", 450);
    snprintf(p, sizeof p, "%s/final.h5", dir);
    check(ckpt_find_latest(dir, out, sizeof out, 1, &err) == 1 && strcmp(out, p) == 0,
          "final.h5 wins a tie on step: %s", out);
    save_kind(dir, "best", 5000);
    check(ckpt_find_latest(dir, out, sizeof out, 1, &err) == 1 && strcmp(out, p) == 0,
          "best.h5 is never a resume point: %s", out);

    /* Newest by step, metadata intact, but a NaN in its data: not a resume point. */
    save_kind(dir, "periodic", 800);
    snprintf(q, sizeof q, "%s/ckpt-00000800.h5", dir);
    hid_t f = H5Fopen(q, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "/adapters/layer_03/B_add", H5P_DEFAULT);
    float b[172 * 4];
    H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, b);
    b[100] = NAN;
    int planted = H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, b) >= 0;
    H5Dclose(d);
    H5Fclose(f);
    check(planted && ckpt_find_latest(dir, out, sizeof out, 1, &err) == 1 && strcmp(out, p) == 0,
          "a newer checkpoint with a NaN in its data is passed over: %s", out);
}

static long rss_kib(void) {
    long pages = 0, resident = 0;
    FILE *fp = fopen("/proc/self/statm", "r");
    if (fp && fscanf(fp, "%ld %ld", &pages, &resident) != 2) resident = 0;
    if (fp) fclose(fp);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Streaming a 64 MiB tensor in 64-row blocks: memory grows by about a chunk, not the tensor. */
static void test_streaming_memory(void) {
    const int64_t rows = 4096, cols = 4096;
    CkptMeta m;
    Fixture fx;
    fix_build(&fx, 0, 1);
    fix_free(&fx);
    m = fx.meta;
    m.n_npt_layers = 0;
    CkptTensor big = {.name = "weights/big", .ndim = 2, .shape = {rows, cols}};
    big.data = malloc((size_t)(rows * cols) * sizeof(float));
    if (!big.data) return check(0, "allocate the big tensor");
    for (int64_t i = 0; i < rows * cols; i++) big.data[i] = (float)(i % 977);
    NptErr err = {""};
    const char *path = in_tmp("big.h5");
    int rc = ckpt_save(path, &m, &big, 1, &err);
    free(big.data);
    check(rc == 0, "save a 64 MiB tensor (%s)", err.msg);
    CkptFile *f = rc ? NULL : ckpt_open(path, &err);
    CkptTensor *list = NULL;
    int n = 0;
    if (!f || ckpt_list_tensors(f, &list, &n, &err) || n != 1) {
        check(0, "open and list big.h5 (%s)", err.msg);
        ckpt_close(f);
        return;
    }
    static float block[64 * 4096];
    long before = rss_kib(), peak = before;
    int ok = 1;
    for (int64_t r = 0; ok && r < rows; r += 64) {
        ok = ckpt_read_rows(f, &list[0], r, 64, block, &err) == 0 && block[5] == (float)((r * cols + 5) % 977);
        long now = rss_kib();
        if (now > peak) peak = now;
    }
    check(ok, "all 4096 rows stream back correctly (%s)", err.msg);
#ifdef __SANITIZE_ADDRESS__
    printf("NOTE: resident-memory bound not checked under AddressSanitizer (its quarantine keeps freed chunks)\n");
#else
    check(peak - before < 8 * 1024, "streaming 64 MiB grew resident memory by %ld KiB (< 8 MiB)", peak - before);
#endif
    ckpt_free(NULL, list, n);
    ckpt_close(f);
}

static void test_paths(void) {
    char out[256];
    NptErr err;
    check(ckpt_path_for(out, sizeof out, "runs/x", "periodic", 500, &err) == 0 &&
              strcmp(out, "runs/x/ckpt-00000500.h5") == 0, "periodic name %s", out);
    check(ckpt_path_for(out, sizeof out, "runs/x", "best", 500, &err) == 0 && strcmp(out, "runs/x/best.h5") == 0,
          "best name %s", out);
    check(ckpt_path_for(out, sizeof out, "runs/x", "final", 500, &err) == 0 && strcmp(out, "runs/x/final.h5") == 0,
          "final name %s", out);
}

int main(int argc, char **argv) {
    if (argc == 3 && (strcmp(argv[1], "--write") == 0 || strcmp(argv[1], "--check") == 0)) {
        Fixture fx;
        fix_build(&fx, 0, 500);
        NptErr err = {""};
        if (strcmp(argv[1], "--write") == 0)
            check(ckpt_save(argv[2], &fx.meta, fx.t, fx.n, &err) == 0, "write fixture to %s (%s)", argv[2], err.msg);
        else
            check_file_matches(argv[2], &fx, argv[2]);
        fix_free(&fx);
        return test_finish();
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/npt_ckpt_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        check(0, "mkdtemp");
        return test_finish();
    }
    test_round_trip();
    test_streaming();
    test_streaming_memory();
    test_atomic();
    test_rotation();
    test_find_latest();
    test_paths();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (test_failures == 0 && system(cmd) != 0) printf("NOTE: could not remove %s\n", tmpdir);
    return test_finish();
}
