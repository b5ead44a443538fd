/* util/h5_out.c — NptH5Out: HDF5 files written as a temporary file, fsync'd and renamed,
 * through a file driver that records a refused write instead of failing it (h5_out.h). */
#include "h5_out.h"
#include "atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The driver: POSIX I/O on the temporary file, like HDF5's sec2, except that an I/O call
 * the OS refuses is recorded in the NptH5Out instead of being returned to HDF5. From
 * then on nothing more goes to the disk: metadata writes are kept in memory (an overlay
 * that later reads see, so the library can read back what it wrote), raw data writes
 * are dropped. The library thus never meets a failed write and H5Fclose always
 * succeeds (see h5_out.h for why that matters); the writer learns of the failure from
 * o->err. */

typedef struct H5Patch {
    struct H5Patch *next;
    haddr_t addr;
    size_t size;
    unsigned char data[];
} H5Patch;

typedef struct {
    H5FD_t pub; /* first: HDF5 hands this pointer back to every callback */
    int fd, writable;
    haddr_t eoa, eof;
    dev_t dev;
    ino_t ino;
    NptH5Out *out;
    H5Patch *patches, *last; /* in write order, so later patches win */
} H5OutFile;

typedef struct {
    NptH5Out *out;
} H5OutInfo; /* the driver's part of the file access property list */

#define H5OUT_MAXADDR (((haddr_t)1 << (8 * sizeof(off_t) - 1)) - 1)

static void h5out_refused(H5OutFile *f, const char *op, int e) {
    if (!f->out->err) {
        f->out->err = e ? e : EIO;
        f->out->err_op = op;
    }
}

static H5FD_t *h5out_open(const char *name, unsigned flags, hid_t fapl, haddr_t maxaddr) {
    const H5OutInfo *info = H5Pget_driver_info(fapl);
    if (!info || !info->out || !name || !*name || !maxaddr || maxaddr == HADDR_UNDEF || maxaddr > H5OUT_MAXADDR)
        return NULL; /* only npt_h5out_create opens files with this driver */
    int o = (flags & H5F_ACC_RDWR ? O_RDWR : O_RDONLY) | O_CLOEXEC;
    if (flags & H5F_ACC_TRUNC) o |= O_TRUNC;
    if (flags & H5F_ACC_CREAT) o |= O_CREAT;
    if (flags & H5F_ACC_EXCL) o |= O_EXCL;
    int fd = open(name, o, 0666);
    if (fd < 0) {
        info->out->open_err = errno;
        return NULL;
    }
    struct stat st;
    H5OutFile *f = fstat(fd, &st) == 0 ? calloc(1, sizeof *f) : NULL;
    if (!f) {
        info->out->open_err = errno ? errno : ENOMEM;
        close(fd); /* already failing */
        return NULL;
    }
    f->fd = fd;
    f->writable = (flags & H5F_ACC_RDWR) != 0;
    f->eof = (haddr_t)st.st_size;
    f->dev = st.st_dev;
    f->ino = st.st_ino;
    f->out = info->out;
    f->out->open_err = 0;
    f->out->driver_open++;
    return &f->pub;
}

/* Syncs (when written and nothing was refused) and closes; never fails towards HDF5. */
static herr_t h5out_close(H5FD_t *file) {
    H5OutFile *f = (H5OutFile *)file;
    if (f->writable && !f->out->err && fsync(f->fd) != 0) h5out_refused(f, "fsync", errno);
    if (close(f->fd) != 0 && f->writable) h5out_refused(f, "close", errno);
    f->out->driver_open--;
    for (H5Patch *p = f->patches, *next; p; p = next) {
        next = p->next;
        free(p);
    }
    free(f);
    return 0;
}

static int h5out_cmp(const H5FD_t *a, const H5FD_t *b) {
    const H5OutFile *x = (const H5OutFile *)a, *y = (const H5OutFile *)b;
    if (x->dev != y->dev) return x->dev < y->dev ? -1 : 1;
    if (x->ino != y->ino) return x->ino < y->ino ? -1 : 1;
    return 0;
}

static herr_t h5out_query(const H5FD_t *file, unsigned long *flags) {
    if (flags)
        *flags = H5FD_FEAT_AGGREGATE_METADATA | H5FD_FEAT_ACCUMULATE_METADATA | H5FD_FEAT_DATA_SIEVE |
                 H5FD_FEAT_AGGREGATE_SMALLDATA /* as sec2: the files come out byte for byte the same */
#ifdef H5FD_FEAT_DEFAULT_VFD_COMPATIBLE
                 | H5FD_FEAT_DEFAULT_VFD_COMPATIBLE
#endif
            ;
    return 0;
}

static haddr_t h5out_get_eoa(const H5FD_t *file, H5FD_mem_t type) { return ((const H5OutFile *)file)->eoa; }

static herr_t h5out_set_eoa(H5FD_t *file, H5FD_mem_t type, haddr_t addr) {
    if (addr > H5OUT_MAXADDR) return -1;
    ((H5OutFile *)file)->eoa = addr;
    return 0;
}

static haddr_t h5out_get_eof(const H5FD_t *file, H5FD_mem_t type) { return ((const H5OutFile *)file)->eof; }

static herr_t h5out_get_handle(H5FD_t *file, hid_t fapl, void **handle) {
    if (!handle) return -1;
    *handle = &((H5OutFile *)file)->fd;
    return 0;
}

static herr_t h5out_read(H5FD_t *file, H5FD_mem_t type, hid_t dxpl, haddr_t addr, size_t size, void *buf) {
    H5OutFile *f = (H5OutFile *)file;
    if (addr == HADDR_UNDEF || addr > H5OUT_MAXADDR || size > H5OUT_MAXADDR - addr) return -1;
    unsigned char *b = buf;
    size_t done = 0;
    while (done < size) { /* past the end of the file reads as zeros, as in sec2 */
        size_t n = size - done < ((size_t)1 << 30) ? size - done : (size_t)1 << 30;
        ssize_t got = pread(f->fd, b + done, n, (off_t)(addr + done));
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) return -1;
        if (got == 0) {
            memset(b + done, 0, size - done);
            break;
        }
        done += (size_t)got;
    }
    for (const H5Patch *p = f->patches; p; p = p->next) { /* what was kept in memory */
        haddr_t lo = p->addr > addr ? p->addr : addr;
        haddr_t hi = p->addr + p->size < addr + size ? p->addr + p->size : addr + size;
        if (lo < hi) memcpy(b + (lo - addr), p->data + (lo - p->addr), (size_t)(hi - lo));
    }
    return 0;
}

static herr_t h5out_write(H5FD_t *file, H5FD_mem_t type, hid_t dxpl, haddr_t addr, size_t size, const void *buf) {
    H5OutFile *f = (H5OutFile *)file;
    if (addr == HADDR_UNDEF || addr > H5OUT_MAXADDR || size > H5OUT_MAXADDR - addr) return -1;
    const unsigned char *b = buf;
    size_t done = 0;
    while (done < size && !f->out->err) {
        size_t n = size - done < ((size_t)1 << 30) ? size - done : (size_t)1 << 30;
        ssize_t put = pwrite(f->fd, b + done, n, (off_t)(addr + done));
        if (put < 0 && errno == EINTR) continue;
        if (put <= 0) h5out_refused(f, "write", put < 0 ? errno : EIO);
        else done += (size_t)put;
    }
    if (done < size && type != H5FD_MEM_DRAW) { /* refused: keep the metadata for reads */
        H5Patch *p = malloc(sizeof *p + size);
        if (!p) return -1; /* out of memory while failing: HDF5 may give up, as on any ENOMEM */
        *p = (H5Patch){.addr = addr, .size = size};
        memcpy(p->data, b, size);
        if (f->last) f->last->next = p;
        else f->patches = p;
        f->last = p;
    }
    if (addr + size > f->eof) f->eof = addr + size;
    return 0;
}

static herr_t h5out_truncate(H5FD_t *file, hid_t dxpl, hbool_t closing) {
    H5OutFile *f = (H5OutFile *)file;
    if (f->eoa == f->eof) return 0;
    if (!f->out->err && ftruncate(f->fd, (off_t)f->eoa) != 0) h5out_refused(f, "truncate", errno);
    f->eof = f->eoa;
    return 0;
}

static const H5FD_class_t h5out_class = {
#if H5_VERSION_GE(1, 13, 2)
    .version = H5FD_CLASS_VERSION,
    .value = 601, /* an unregistered driver value, above the library's */
#endif
    .name = "npt_out",
    .maxaddr = H5OUT_MAXADDR,
    .fc_degree = H5F_CLOSE_STRONG,
    .fapl_size = sizeof(H5OutInfo),
    .open = h5out_open,
    .close = h5out_close,
    .cmp = h5out_cmp,
    .query = h5out_query,
    .get_eoa = h5out_get_eoa,
    .set_eoa = h5out_set_eoa,
    .get_eof = h5out_get_eof,
    .get_handle = h5out_get_handle,
    .read = h5out_read,
    .write = h5out_write,
    .truncate = h5out_truncate,
    .fl_map = H5FD_FLMAP_DICHOTOMY,
};

static hid_t h5out_driver(void) {
    static hid_t id = -1;
    if (id < 0 || H5Iis_valid(id) <= 0) id = H5FDregister(&h5out_class);
    return id;
}

/* "cannot write WHAT PATH" with the separating space only when there is a WHAT. */
#define H5OUT_NAME(o) (o)->what, *(o)->what ? " " : "", (o)->path

/* "cannot write WHAT PATH: reason; what to do (...)", from the errno the OS gave. */
static int h5out_fail(const NptH5Out *o, NptErr *err) {
    int e = o->err;
    const char *todo = e == ENOSPC || e == EDQUOT ? "free space on that disk or write elsewhere"
                       : e == EFBIG ? "the file size limit was reached (ulimit -f, or the file system's largest file): "
                                      "raise it or write elsewhere"
                       : e == EROFS ? "the file system is read-only: write elsewhere"
                       : "check the disk";
    int during = o->err_op && strcmp(o->err_op, "write") != 0;
    return npt_fail(err, "cannot write %s%s%s: %s%s%s%s; %s (nothing was replaced; the partial temporary file was removed)",
                    H5OUT_NAME(o), strerror(e), during ? " (" : "", during ? o->err_op : "",
                    during ? " of the temporary file)" : "", todo);
}

int64_t npt_h5out_create(NptH5Out *o, const char *path, const char *what, int64_t fapl, NptErr *err) {
    memset(o, 0, sizeof *o);
    o->path = path;
    o->what = what ? what : "";
    o->file = -1;
    /* the driver opens the file again by name; lock_fd keeps its lock until the rename */
    if ((o->lock_fd = npt_temp_create(path, o->tmp, sizeof o->tmp, err)) < 0) return -1;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* failures are reported through err */
    H5OutInfo info = {o};
    hid_t drv = h5out_driver();
    hid_t pl = fapl == H5P_DEFAULT ? H5Pcreate(H5P_FILE_ACCESS) : H5Pcopy(fapl);
    /* STRONG: closing the file closes whatever an error path left open, so the driver's
     * close (and its fsync) has run when H5Fclose returns */
    if (drv >= 0 && pl >= 0 && H5Pset_driver(pl, drv, &info) >= 0 && H5Pset_fclose_degree(pl, H5F_CLOSE_STRONG) >= 0)
        o->file = H5Fcreate(o->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, pl);
    if (pl >= 0 && H5Pclose(pl) < 0 && o->file >= 0) {
        npt_h5out_abort(o);
        return npt_fail(err, "cannot write %s%s%s: HDF5 cannot release a property list", H5OUT_NAME(o));
    }
    if (o->file < 0) {
        int e = o->open_err;
        npt_temp_remove(o->tmp);
        npt_temp_release(&o->lock_fd);
        if (e) return npt_fail(err, "cannot write %s%s%s: cannot create %s: %s", H5OUT_NAME(o), o->tmp, strerror(e));
        return npt_fail(err, "cannot write %s%s%s: HDF5 cannot create %s", H5OUT_NAME(o), o->tmp);
    }
    return o->file;
}

int npt_h5out_failed(const NptH5Out *o) { return o->err; }

int npt_h5out_close(NptH5Out *o, NptErr *err) {
    int rc = o->file >= 0 && H5Fclose(o->file) < 0 ? -1 : 0;
    o->file = -1;
    if (o->err) rc = h5out_fail(o, err);
    else if (rc || o->driver_open)
        rc = npt_fail(err, "cannot write %s%s%s: HDF5 could not close %s", H5OUT_NAME(o), o->tmp);
    if (rc) {
        npt_temp_remove(o->tmp);
        npt_temp_release(&o->lock_fd);
    }
    return rc;
}

int npt_h5out_commit(NptH5Out *o, NptErr *err) {
    int rc = npt_rename_durable(o->tmp, o->path, o->what, o->no_replace, err);
    npt_temp_release(&o->lock_fd);
    return rc;
}

void npt_h5out_abort(NptH5Out *o) {
    if (o->file >= 0) H5Fclose(o->file); /* giving up: the file is removed whatever this returns */
    o->file = -1;
    if (o->tmp[0]) npt_temp_remove(o->tmp);
    npt_temp_release(&o->lock_fd);
}
