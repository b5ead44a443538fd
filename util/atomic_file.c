/* util/atomic_file.c — see atomic_file.h. */
#include "atomic_file.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

FILE *npt_atomic_open(NptAtomicFile *o, const char *path, NptErr *err) {
    o->path = path;
    o->f = NULL;
    struct stat st;
    /* the rename would replace a device or pipe node itself (as root, /dev/full) */
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        npt_fail(err, "%s exists and is not a regular file; choose another path", path);
        return NULL;
    }
    if (snprintf(o->tmp, sizeof o->tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof o->tmp) {
        npt_fail(err, "path too long: %.200s", path);
        return NULL;
    }
    o->f = fopen(o->tmp, "wb");
    if (!o->f) npt_fail(err, "cannot create %s: %s", o->tmp, strerror(errno));
    return o->f;
}

void npt_atomic_abort(NptAtomicFile *o) {
    if (o->f) fclose(o->f);
    o->f = NULL;
    unlink(o->tmp);
}

int npt_atomic_commit(NptAtomicFile *o, NptErr *err) {
    int bad = fflush(o->f) != 0 || ferror(o->f) || fsync(fileno(o->f)) != 0;
    int e = errno;
    if (fclose(o->f) != 0 && !bad) bad = 1, e = errno;
    o->f = NULL;
    if (bad || rename(o->tmp, o->path) != 0) {
        if (!bad) e = errno;
        unlink(o->tmp);
        return npt_fail(err, "cannot write %s: %s", o->path, strerror(e));
    }
    return 0;
}
