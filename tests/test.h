/* tests/test.h — the tiny assertion harness every C test uses.
 * Each check prints "PASS: what" or "FAIL: what (details)"; tests/run_tests.sh counts
 * those lines across all test programs, and a program that crashes or exits non-zero
 * without printing FAIL counts as one failure. */
#ifndef NPT_TEST_H
#define NPT_TEST_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static int test_passes, test_failures;

static void __attribute__((format(printf, 2, 3), unused)) check(int ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs(ok ? "PASS: " : "FAIL: ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    fflush(stdout);
    va_end(ap);
    if (ok)
        test_passes++;
    else
        test_failures++;
}

/* Path of the shared test assets, overridable with NPT_SHARED. */
__attribute__((unused)) static const char *shared_path(const char *rel) {
    static char buf[8][4096];
    static int slot;
    const char *root = getenv("NPT_SHARED");
    if (!root) root = "../shared";
    char *out = buf[slot++ & 7];
    snprintf(out, sizeof buf[0], "%s/%s", root, rel);
    return out;
}

/* Writes n floats to dir/name (the C side of the Python parity tests). */
__attribute__((unused)) static int write_floats(const char *dir, const char *name, const float *x, size_t n) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(x, sizeof(float), n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        return -1;
    }
    return 0;
}

__attribute__((unused)) static int test_finish(void) {
    return test_failures ? 1 : 0;
}

#endif
