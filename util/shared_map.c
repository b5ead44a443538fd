/* util/shared_map.c — memory mapped by several processes of one machine (shared_map.h). */
#include "shared_map.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

void *npt_shared_map_create(const char *path, size_t bytes, int *why) {
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        *why = errno;
        return NULL;
    }
    /* posix_fallocate returns the error instead of setting errno */
    int rc = posix_fallocate(fd, 0, (off_t)bytes);
    void *p = rc ? MAP_FAILED : mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        *why = rc ? rc : errno;
        unlink(path);
        close(fd);
        return NULL;
    }
    close(fd); /* the mapping keeps the file open */
    return p;
}

const void *npt_shared_map_open(const char *path, size_t bytes, NptErr *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        npt_fail(err, "cannot open the shared copy %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    int bad = fstat(fd, &st) != 0 ? npt_fail(err, "cannot stat the shared copy %s: %s", path, strerror(errno))
              : (size_t)st.st_size != bytes
                  ? npt_fail(err, "the shared copy %s holds %lld bytes, not the %zu expected", path,
                             (long long)st.st_size, bytes)
                  : 0;
    if (bad) {
        close(fd);
        return NULL;
    }
    void *p = mmap(NULL, bytes, PROT_READ, MAP_SHARED, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED) {
        npt_fail(err, "cannot map the shared copy %s (%zu bytes): %s", path, bytes, strerror(e));
        return NULL;
    }
    return p;
}

int npt_shared_map_seal(void *p, size_t bytes) { return mprotect(p, bytes, PROT_READ); }

void npt_shared_map_close(const void *p, size_t bytes) {
    if (p) munmap((void *)p, bytes);
}
