/* cli/args.c — the few flag-parsing helpers every verb shares (see commands.h). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../util/common.h"
#include "../util/path.h"
#include "commands.h"

int arg_is(const char *arg, const char *flag) {
    size_t n = strlen(flag);
    return !strncmp(arg, flag, n) && (arg[n] == '\0' || arg[n] == '=');
}

/* A value flag given twice is refused rather than "last one wins": in a long command line
 * the earlier --lr or --model would be dropped without a word. One verb runs per process,
 * so the flags seen so far are this verb's. --set is meant to repeat. */
static int seen_before(const char *flag) {
    static const char *seen[64];
    static int n_seen;
    if (!strcmp(flag, "--set")) return 0;
    for (int k = 0; k < n_seen; k++)
        if (!strcmp(seen[k], flag)) return 1;
    if (n_seen < (int)NPT_ARRAY_LEN(seen)) seen[n_seen++] = flag;
    return 0;
}

const char *arg_value(int argc, char **argv, int *i, const char *flag, const char *verb) {
    if (seen_before(flag)) {
        fprintf(stderr, "npt %s: error: %s is given twice; give it once (see npt %s --help)\n", verb, flag, verb);
        return NULL;
    }
    const char *eq = strchr(argv[*i], '=');
    if (eq) return eq + 1;
    if (*i + 1 >= argc) {
        fprintf(stderr, "npt %s: error: %s needs a value (see npt %s --help)\n", verb, flag, verb);
        return NULL;
    }
    return argv[++*i];
}

int parse_int_arg(const char *s, const char *flag, const char *verb, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "npt %s: error: %s expects an integer in [%ld, %ld], got '%s'\n", verb, flag, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

int parse_float_arg(const char *s, const char *flag, const char *verb, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "npt %s: error: %s expects a number in [%g, %g], got '%s'\n", verb, flag, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

int refuse_existing_output(const char *path, const char *flag, int force, const char *verb) {
    struct stat st;
    /* lstat: a dangling symlink is an existing entry too, and the rename that writes
     * the output would replace it; stat then judges what a live link points to */
    if (lstat(path, &st) != 0) return 0;
    int dangling = stat(path, &st) != 0;
    /* --force replaces a file, never a device, directory or pipe (as root, a rename would) */
    if (!dangling && !S_ISREG(st.st_mode)) {
        fprintf(stderr, "npt %s: error: %s %s exists and is not a regular file; choose another path\n", verb, flag, path);
        return -1;
    }
    if (force) return 0;
    fprintf(stderr, "npt %s: error: %s %s already exists%s; choose another path, or pass --force to replace it\n", verb,
            flag, path, dangling ? " (a symbolic link to a missing file)" : "");
    return -1;
}

/* Whether the regular file at path lies directly in the directory dir: an HF model
 * directory's files are all read (config, weights, shards, tokenizer). */
static int is_file_in_dir(const struct stat *so, const char *path, const struct stat *dir) {
    char parent[4096];
    struct stat sp;
    if (!S_ISREG(so->st_mode)) return 0;
    npt_dir_of(path, parent, sizeof parent);
    return stat(parent, &sp) == 0 && sp.st_dev == dir->st_dev && sp.st_ino == dir->st_ino;
}

int refuse_output_over_inputs(const char *path, const char *flag, const char *const *inputs, int n, const char *verb) {
    struct stat so, si;
    if (stat(path, &so) != 0) return 0; /* a new file replaces nothing */
    for (int k = 0; k < n; k++) {
        if (!inputs[k] || stat(inputs[k], &si) != 0) continue;
        if (so.st_dev == si.st_dev && so.st_ino == si.st_ino) {
            fprintf(stderr, "npt %s: error: %s %s is the input %s itself; choose another path\n", verb, flag, path,
                    inputs[k]);
            return -1;
        }
        if (S_ISDIR(si.st_mode) && is_file_in_dir(&so, path, &si)) {
            fprintf(stderr, "npt %s: error: %s %s is a file of the input directory %s; choose a path outside it\n", verb,
                    flag, path, inputs[k]);
            return -1;
        }
    }
    return 0;
}

int check_set_arg(const char *s, const char *verb) {
    const char *eq = strchr(s, '=');
    if (eq && eq != s) return 0;
    fprintf(stderr, "npt %s: error: --set expects key.path=value, got '%s' (example: --set train.lr=3e-4)\n", verb, s);
    return -1;
}

int refuse_missing_input(const char *path, const char *hint, const char *verb) {
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT) fprintf(stderr, "npt %s: error: %s does not exist; %s\n", verb, path, hint);
        else fprintf(stderr, "npt %s: error: cannot access %s: %s\n", verb, path, strerror(errno));
        return -1;
    }
    if (S_ISREG(st.st_mode) && st.st_size == 0) {
        fprintf(stderr, "npt %s: error: %s is empty (0 bytes); %s\n", verb, path, hint);
        return -1;
    }
    return 0;
}
