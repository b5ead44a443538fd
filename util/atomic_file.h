/* util/atomic_file.h — files that appear whole or not at all: written as PATH.tmp.PID.X,
 * flushed, fsync'd, renamed over PATH and the directory synced, so a crash or a full
 * disk never leaves a half-written file where a good one was (model directories,
 * recipes, logs, plots, scan lists). HDF5 files take the same steps through
 * util/h5_out.h, which shares the temporary name and the rename from here. */
#ifndef NPT_ATOMIC_FILE_H
#define NPT_ATOMIC_FILE_H

#include <stdio.h>
#include <time.h>

#include "common.h"

typedef struct {
    FILE *f;
    const char *path;
    char tmp[4200];
    int lock_fd;    /* npt_temp_create's, held until the rename */
    int no_replace; /* set after opening, without --force: commit keeps a PATH that appeared meanwhile */
} NptAtomicFile;

/* A fresh temporary name beside path, PATH.tmp.PID.XXXXXXXX (eight random hex digits:
 * two writers with one PID, in two PID namespaces sharing a directory, do not meet). */
int npt_temp_name(const char *path, char *tmp, size_t cap, NptErr *err);
/* Creates path's temporary file under a fresh name (O_EXCL: never another writer's),
 * tracked for signals, with an flock held on the returned descriptor for as long as it
 * is open: keep it open until the file is renamed into place or removed, then
 * npt_temp_release it. The lock is what tells npt_temp_sweep that the writer is alive.
 * First sweeps path's own leftovers. Refuses a path that exists and is not a regular
 * file: the final rename would replace a device or pipe node itself (as root, /dev/full).
 * Returns the descriptor, or -1 with err set. */
int npt_temp_create(const char *path, char *tmp, size_t cap, NptErr *err);
/* Closes a descriptor npt_temp_create returned (releasing its lock); sets it to -1. */
void npt_temp_release(int *lock_fd);
/* Removes, in dir, the temporary files npt_temp_create made for base (base NULL: for any
 * name) that no live process is writing: those whose flock can be taken, i.e. left by a
 * process that was killed (kill -9, power loss) before it could remove them, and that
 * are NPT_TEMP_STALE_SECONDS untouched (a live writer on another machine of a file system
 * whose locks are local to each machine still writes). Best effort, silent. */
#define NPT_TEMP_STALE_SECONDS 60
void npt_temp_sweep(const char *dir, const char *base);
/* npt_temp_sweep's step for one name listed in dir (open as dir_fd), for a caller that
 * lists dir itself: removes name if it is such a file, `now` the time the listing began. */
void npt_temp_sweep_entry(int dir_fd, const char *dir, const char *name, const char *base, time_t now);
/* Renames tmp over path, then syncs path's directory so that the rename survives a crash.
 * no_replace: fails instead if path exists by then (an output the user did not allow to
 * be replaced, created while npt was writing), keeping it. On failure tmp is removed and
 * err reads "cannot write WHAT PATH: ..." (what may be ""). */
int npt_rename_durable(const char *tmp, const char *path, const char *what, int no_replace, NptErr *err);
/* Temporary files and directories that a signal ending the process must not leave
 * behind. While SIGINT, SIGTERM or SIGHUP would end the process (their action is the
 * default one: commands that stop cleanly on them install their own, util/stop.h), a
 * handler removes every tracked path first, files before directories, then lets the
 * signal end the process as it would have. npt_temp_create tracks the name it makes and
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
