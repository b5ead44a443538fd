/* util/h5_out.h — the writer every HDF5 file npt writes goes through.
 *
 * Every HDF5 file npt writes (checkpoints, token files, debug op saves) is written
 * as PATH.tmp.PID.X, fsync'd, renamed over PATH and its directory fsync'd, so PATH is
 * whole or untouched. The temporary file goes through a small HDF5 file driver that
 * records the first I/O call the OS refuses (a full disk, RLIMIT_FSIZE, EIO) instead
 * of failing it, and from then on keeps HDF5's metadata writes in memory and drops its
 * raw data: HDF5 1.10 cannot close a file after a failed write (H5Fclose fails and
 * leaves a dangling id that crashes the process inside exit(); upstream HDFFV-11052), so
 * the library must never see one. Writers check npt_h5out_failed() to stop early, and
 * npt_h5out_close() reports the failure with the OS's reason. */
#ifndef NPT_H5_OUT_H
#define NPT_H5_OUT_H

#include <stdint.h>

#include "common.h"

typedef struct {
    const char *path;   /* the destination */
    const char *what;   /* for messages: "checkpoint" -> "cannot write checkpoint PATH: ..." */
    char tmp[4200];     /* PATH.tmp.PID.X (npt_temp_create) */
    int lock_fd;        /* its descriptor from npt_temp_create, holding the lock until the rename */
    int no_replace;     /* set after creating, without --force: commit keeps a PATH that appeared meanwhile */
    int64_t file;       /* the HDF5 file id (an hid_t), -1 when closed */
    int err;            /* errno of the first refused write, truncate, fsync or close; 0: none */
    const char *err_op; /* which of those it was */
    int open_err;       /* errno of the driver's last failed open(2) */
    int driver_open;    /* the driver holds the temporary file open */
} NptH5Out;

/* Creates PATH's temporary file with the driver above; fapl is H5P_DEFAULT or an access
 * property list whose other settings (libver bounds) are kept. o must stay where it is
 * until closed. Returns the file id, or -1 with err set (and no file left). */
int64_t npt_h5out_create(NptH5Out *o, const char *path, const char *what, int64_t fapl, NptErr *err);
/* errno of the first write the OS refused so far, 0 if none. */
int npt_h5out_failed(const NptH5Out *o);
/* Closes the file (and anything left open in it) and fsyncs it. On a refused write, or
 * any failure, removes the temporary file and fails naming PATH and the OS's reason. */
int npt_h5out_close(NptH5Out *o, NptErr *err);
/* After a successful close: renames the temporary file over PATH, syncs the directory.
 * A failed rename removes the temporary file. */
int npt_h5out_commit(NptH5Out *o, NptErr *err);
/* Gives up: closes the file if open and removes the temporary file. */
void npt_h5out_abort(NptH5Out *o);

#endif
