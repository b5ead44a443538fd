/* util/path.c — path helpers (see path.h). */
#include "path.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int npt_ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

void npt_dir_of(const char *path, char *out, size_t cap) {
    snprintf(out, cap, "%s", path);
    char *slash = strrchr(out, '/');
    if (!slash)
        snprintf(out, cap, ".");
    else if (slash == out)
        out[1] = '\0';
    else
        *slash = '\0';
}

int npt_check_parent_dir(const char *path, NptErr *err) {
    char dir[4200];
    struct stat st;
    npt_dir_of(path, dir, sizeof dir);
    if (stat(dir, &st) != 0)
        return npt_fail(err, "cannot create %s: directory %s %s", path, dir,
                        errno == ENOENT ? "does not exist; create it first" : strerror(errno));
    if (!S_ISDIR(st.st_mode)) return npt_fail(err, "cannot create %s: %s is not a directory", path, dir);
    return 0;
}

/* A component of path (prefix) exists but is a file, not a directory. */
static int not_a_directory(const char *path, const char *prefix, NptErr *err) {
    if (!strcmp(path, prefix)) return npt_fail(err, "%s is a file, not a directory", path);
    return npt_fail(err, "cannot create directory %s: %s is a file, not a directory", path, prefix);
}

int npt_mkdir_p(const char *path, NptErr *err) {
    char buf[4096];
    struct stat st;
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return npt_fail(err, "directory path too long: %.64s...", path);
    for (char *p = buf + 1;; p++) { /* each prefix ending at a '/', then the whole path */
        if (*p && *p != '/') continue;
        char c = *p;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return npt_fail(err, "cannot create directory %s: %s", buf, strerror(errno));
        /* EEXIST is also a file of that name, which is no directory to write in */
        if (stat(buf, &st) == 0 && !S_ISDIR(st.st_mode)) return not_a_directory(path, buf, err);
        if (!c) return 0;
        *p = c;
    }
}

int npt_check_dir_creatable(const char *path, NptErr *err) {
    char buf[4096], up[4096];
    struct stat st;
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return npt_fail(err, "directory path too long: %.64s...", path);
    for (;;) { /* path, then its parents, up to the first that exists */
        if (stat(buf, &st) == 0) {
            if (!S_ISDIR(st.st_mode)) return not_a_directory(path, buf, err);
            if (strcmp(buf, path) && access(buf, W_OK | X_OK) != 0)
                return npt_fail(err, "cannot create directory %s in %s: %s", path, buf, strerror(errno));
            return 0;
        }
        if (errno != ENOENT && errno != ENOTDIR) return npt_fail(err, "cannot access %s: %s", buf, strerror(errno));
        npt_dir_of(buf, up, sizeof up);
        if (!strcmp(up, buf)) return npt_fail(err, "cannot access %s: %s", buf, strerror(errno));
        memcpy(buf, up, sizeof buf);
    }
}

int npt_file_identity(const char *path, const char *what, char *abs, size_t abs_size, int64_t *bytes, uint64_t *fnv,
                      NptErr *err) {
    size_t len = 0;
    char *text = npt_read_input(path, what, &len, err);
    if (!text) return -1;
    *bytes = (int64_t)len;
    *fnv = npt_fnv1a(NPT_FNV1A_OFFSET, text, len);
    free(text);
    if (!abs) return 0;
    char full[PATH_MAX];
    if (!realpath(path, full)) return npt_fail(err, "cannot resolve the path of %s %s: %s", what, path, strerror(errno));
    if (strlen(full) >= abs_size) return npt_fail(err, "%s path too long (%zu bytes): %.200s", what, strlen(full), full);
    memcpy(abs, full, strlen(full) + 1);
    return 0;
}
