/* util/shared_map.c — memory mapped by several processes of one machine (shared_map.h). */
#include "shared_map.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int npt_shared_map_claim(const char *path, int *why) {
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        *why = errno;
        return -1;
    }
    /* blocking: only a stale-file sweep can hold it, for the moment it takes to look */
    if (flock(fd, LOCK_EX) != 0) {
        *why = errno;
        unlink(path);
        close(fd);
        return -1;
    }
    return fd;
}

void *npt_shared_map_create(const char *path, size_t bytes, int *why) {
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        *why = errno;
        return NULL;
    }
    struct stat st;
    int rc = fstat(fd, &st) != 0 ? errno : st.st_size != 0 ? EEXIST /* not a fresh claim */ : 0;
    /* posix_fallocate returns the error instead of setting errno */
    if (!rc) rc = posix_fallocate(fd, 0, (off_t)bytes);
    void *p = rc ? MAP_FAILED : mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        *why = rc ? rc : errno;
        if (rc != EEXIST && ftruncate(fd, 0) != 0) *why = errno; /* give back what fallocate got */
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

/* Whether name is prefix + PID-TIME, the only names a claim gets: a user's own file
 * that merely starts with the prefix is never a leftover. */
static int is_claim_name(const char *name, const char *prefix) {
    size_t n = strlen(prefix);
    if (strncmp(name, prefix, n)) return 0;
    const char *p = name + n, *dash = strchr(p, '-');
    if (!dash || dash == p || !dash[1] || strspn(p, "0123456789") != (size_t)(dash - p)) return 0;
    return strspn(dash + 1, "0123456789") == strlen(dash + 1);
}

/* Whether the entry name of the open directory dfd is a leftover: see the header. */
static int is_stale(int dfd, const char *name, int min_age_s, time_t now, size_t *bytes) {
    int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return 0;
    struct stat st;
    int stale = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid() &&
                now - st.st_mtime >= min_age_s && flock(fd, LOCK_EX | LOCK_NB) == 0;
    if (stale) *bytes = (size_t)st.st_blocks * 512;
    close(fd); /* the lock goes with it; a claim's name is never reused, so unlinking after is safe */
    return stale;
}

int npt_shared_map_remove_stale(const char *dir, const char *prefix, int min_age_s, size_t *bytes, char *first,
                                size_t first_cap) {
    *bytes = 0;
    if (first_cap) first[0] = '\0';
    DIR *d = opendir(dir);
    if (!d) return 0;
    int removed = 0;
    time_t now = time(NULL);
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t size;
        if (!is_claim_name(e->d_name, prefix) || !is_stale(dirfd(d), e->d_name, min_age_s, now, &size) ||
            unlinkat(dirfd(d), e->d_name, 0) != 0)
            continue;
        if (removed++ == 0 && first_cap) snprintf(first, first_cap, "%s", e->d_name);
        *bytes += size;
    }
    closedir(d);
    return removed;
}
