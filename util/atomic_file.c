/* util/atomic_file.c — see atomic_file.h. */
#include "atomic_file.h"

#include "path.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int npt_temp_path(const char *path, char *tmp, size_t cap, NptErr *err) {
    struct stat st;
    tmp[0] = '\0';
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
        return npt_fail(err, "%s exists and is not a regular file; choose another path", path);
    if (npt_check_parent_dir(path, err)) return -1;
    if (snprintf(tmp, cap, "%s.tmp.%ld", path, (long)getpid()) >= (int)cap) {
        tmp[0] = '\0';
        return npt_fail(err, "path too long: %.200s", path);
    }
    return 0;
}

int npt_rename_durable(const char *tmp, const char *path, const char *what, NptErr *err) {
    const char *sep = *what ? " " : "";
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return npt_fail(err, "cannot write %s%s%s: rename from %s failed: %s", what, sep, path, tmp, strerror(e));
    }
    char dir[4200];
    npt_dir_of(path, dir, sizeof dir);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int ok = fd >= 0 && fsync(fd) == 0, e = errno;
    if (fd >= 0 && close(fd) != 0 && ok) ok = 0, e = errno;
    if (!ok) return npt_fail(err, "cannot write %s%s%s: syncing its directory %s failed: %s", what, sep, path, dir, strerror(e));
    return 0;
}

FILE *npt_atomic_open(NptAtomicFile *o, const char *path, NptErr *err) {
    o->path = path;
    o->f = NULL;
    if (npt_temp_path(path, o->tmp, sizeof o->tmp, err)) return NULL;
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
    if (bad) {
        unlink(o->tmp);
        return npt_fail(err, "cannot write %s: %s", o->path, strerror(e));
    }
    return npt_rename_durable(o->tmp, o->path, "", err);
}
