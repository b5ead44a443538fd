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

__attribute__((unused)) static int test_finish(void) {
    return test_failures ? 1 : 0;
}

#endif
