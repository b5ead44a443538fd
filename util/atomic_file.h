/* util/atomic_file.h — files that appear whole or not at all: written as PATH.tmp.PID,
 * flushed, fsync'd, renamed over PATH and the directory synced, so a crash or a full
 * disk never leaves a half-written file where a good one was (model directories,
 * recipes, logs, plots, scan lists). HDF5 files take the same steps through
 * util/h5_out.h, which shares the temporary name and the rename from here. */
#ifndef NPT_ATOMIC_FILE_H
#define NPT_ATOMIC_FILE_H

#include <stdio.h>

#include "common.h"

typedef struct {
    FILE *f;
    const char *path;
    char tmp[4200];
} NptAtomicFile;

/* The temporary name beside path (PATH.tmp.PID) into tmp. Refuses a path that exists and
 * is not a regular file: the final rename would replace a device or pipe node itself (as
 * root, /dev/full). */
int npt_temp_path(const char *path, char *tmp, size_t cap, NptErr *err);
/* Renames tmp over path, then syncs path's directory so that the rename survives a crash.
 * On failure tmp is removed and err reads "cannot write WHAT PATH: ..." (what may be ""). */
int npt_rename_durable(const char *tmp, const char *path, const char *what, NptErr *err);
/* Temporary files and directories that a signal ending the process must not leave
 * behind. While SIGINT, SIGTERM or SIGHUP would end the process (their action is the
 * default one: commands that stop cleanly on them install their own, util/stop.h), a
 * handler removes every tracked path first, files before directories, then lets the
 * signal end the process as it would have. npt_temp_path tracks the name it makes and
 * npt_rename_durable forgets it; up to 16 at once (one more is just not tracked). A
 * directory is tracked with the paths of the files it may hold, so it is empty when
 * removed. Safe from several threads. */
void npt_temp_track(const char *path, int is_dir);
void npt_temp_forget(const char *path);
/* unlink + npt_temp_forget. */
void npt_temp_remove(const char *path);
/* Opens the temporary file; NULL with err set on failure. */
FILE *npt_atomic_open(NptAtomicFile *o, const char *path, NptErr *err);
/* Flush, fsync, close, rename into place; on any failure the temporary is removed, PATH
 * is untouched and err names PATH. */
int npt_atomic_commit(NptAtomicFile *o, NptErr *err);
/* Gives up: closes and removes the temporary. */
void npt_atomic_abort(NptAtomicFile *o);

#endif
