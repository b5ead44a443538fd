/* util/path.h — the few path helpers several modules need (suffix test, directory part,
 * mkdir -p), written once. */
#ifndef NPT_PATH_H
#define NPT_PATH_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

/* Whether s ends with suffix. */
int npt_ends_with(const char *s, const char *suffix);
/* Directory part of path into out ("." when there is none, "/" for a file at the root). */
void npt_dir_of(const char *path, char *out, size_t cap);
/* 0 if the directory path is to be written in exists; else why not, naming it (an
 * output's error should say "directory x does not exist", not ENOENT on a temp name). */
int npt_check_parent_dir(const char *path, NptErr *err);
/* Creates path and its missing parents (0755); existing directories are fine, a file
 * in the way is an error naming it. */
int npt_mkdir_p(const char *path, NptErr *err);
/* 0 if npt_mkdir_p(path) would succeed, checked without creating anything: path is a
 * directory, or the nearest part of it that exists is a directory npt may write in.
 * Else why not, naming the part at fault. For checks made before a run starts. */
int npt_check_dir_creatable(const char *path, NptErr *err);

/* A small file's identity, so it can be found again from any directory and recognised:
 * its absolute path (into abs, when abs is not NULL), size and FNV-1a 64 of its bytes.
 * WHAT names it in errors. For a run's tokenizer (train/checkpoint.h). */
int npt_file_identity(const char *path, const char *what, char *abs, size_t abs_size, int64_t *bytes, uint64_t *fnv,
                      NptErr *err);

#endif
