/* util/atomic_file.h — files that appear whole or not at all: written as PATH.tmp.PID,
 * flushed, fsync'd and renamed over PATH, so a crash or a full disk never leaves a
 * half-written file where a good one was (model directories, recipes, logs, plots).
 * HDF5 files (checkpoints, token files) follow the same steps in their own writers. */
#ifndef NPT_ATOMIC_FILE_H
#define NPT_ATOMIC_FILE_H

#include <stdio.h>

#include "common.h"

typedef struct {
    FILE *f;
    const char *path;
    char tmp[4200];
} NptAtomicFile;

/* Opens the temporary file; NULL with err set on failure. */
FILE *npt_atomic_open(NptAtomicFile *o, const char *path, NptErr *err);
/* Flush, fsync, close, rename into place; on any failure the temporary is removed, PATH
 * is untouched and err names PATH. */
int npt_atomic_commit(NptAtomicFile *o, NptErr *err);
/* Gives up: closes and removes the temporary. */
void npt_atomic_abort(NptAtomicFile *o);

#endif
