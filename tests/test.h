/* tests/test.h — the tiny assertion harness every C test uses.
 * Each check prints "PASS: what" or "FAIL: what (details)"; tests/run_tests.sh counts
 * those lines across all test programs, and a program that crashes or exits non-zero
 * without printing FAIL counts as one failure. */
#ifndef NPT_TEST_H
#define NPT_TEST_H

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

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

/* Makes every entry of dir whose name holds needle, except those whose name starts with
 * except (NULL: none), `seconds` old (access and modification times), one check per
 * entry; a dir that cannot be opened is a failure. (util/atomic_file.h sweeps only
 * temporaries NPT_TEMP_STALE_SECONDS untouched: the tests age them past that.) */
__attribute__((unused)) static void age_names(const char *dir, const char *needle, const char *except, int seconds) {
    DIR *d = opendir(dir);
    if (!d) {
        check(0, "cannot open %s to age its entries", dir);
        return;
    }
    struct dirent *e;
    char p[4200];
    struct timeval old[2];
    gettimeofday(&old[0], NULL);
    old[0].tv_sec -= seconds;
    old[1] = old[0];
    while ((e = readdir(d)))
        if (strstr(e->d_name, needle) && !(except && !strncmp(e->d_name, except, strlen(except))))
            check(snprintf(p, sizeof p, "%s/%s", dir, e->d_name) < (int)sizeof p && utimes(p, old) == 0, "aged %s",
                  e->d_name);
    closedir(d);
}

__attribute__((unused)) static int test_finish(void) {
    return test_failures ? 1 : 0;
}

#endif
