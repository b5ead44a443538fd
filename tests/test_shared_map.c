/* tests/test_shared_map.c — util/shared_map.c: a claimed file is locked for as long as
 * its creator keeps it, and the stale-file sweep removes exactly the leftovers of dead
 * processes (unlocked, old enough, this user's regular files under the prefix), never a
 * live claim, a fresh file, a symlink, a directory or another name. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../util/shared_map.h"
#include "test.h"

static char dir[64];

static const char *in_dir(const char *name) {
    static char buf[4][128];
    static int slot;
    char *out = buf[slot++ & 3];
    snprintf(out, sizeof buf[0], "%s/%s", dir, name);
    return out;
}

/* A file of 64 KB, its last change `age` seconds ago. */
static int make_file(const char *name, int age) {
    int fd = open(in_dir(name), O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0 || posix_fallocate(fd, 0, 65536) != 0) return -1;
    struct timespec t[2];
    clock_gettime(CLOCK_REALTIME, &t[0]);
    t[0].tv_sec -= age;
    t[1] = t[0];
    int rc = futimens(fd, t);
    close(fd);
    return rc;
}

static int exists(const char *name) {
    struct stat st;
    return lstat(in_dir(name), &st) == 0;
}

/* Whether someone else can take the lock on path: flock locks belong to an open file,
 * so a second open, even in this process, competes like another process: 1 yes, 0 no. */
static int lockable_elsewhere(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    int ok = flock(fd, LOCK_EX | LOCK_NB) == 0;
    close(fd);
    return ok;
}

static void check_claim(void) {
    int why = 0;
    const char *path = in_dir("npt-weights-claim");
    int fd = npt_shared_map_claim(path, &why);
    check(fd >= 0, "a new name is claimed (%s)", fd < 0 ? strerror(why) : "ok");
    if (fd < 0) return;
    check(lockable_elsewhere(path) == 0, "while claimed, no other process can lock it");
    int again = npt_shared_map_claim(path, &why);
    check(again < 0 && why == EEXIST, "a claimed name cannot be claimed again (errno %d)", why);
    float *p = npt_shared_map_create(path, 8192, &why);
    check(p != NULL, "the claimed file is given its size and mapped (%s)", p ? "ok" : strerror(why));
    if (p) {
        p[2047] = 1.5f;
        struct stat st;
        int rc = stat(path, &st);
        check(rc == 0 && st.st_size == 8192 && st.st_blocks * 512 >= 8192,
              "its pages are reserved up front (%lld bytes, %lld allocated)", (long long)st.st_size,
              (long long)st.st_blocks * 512);
        npt_shared_map_close(p, 8192);
    }
    void *twice = npt_shared_map_create(path, 8192, &why);
    check(twice == NULL && why == EEXIST, "a file already sized is not sized again (errno %d)", why);
    void *unclaimed = npt_shared_map_create(in_dir("npt-weights-never"), 8192, &why);
    check(unclaimed == NULL && why == ENOENT && !exists("npt-weights-never"),
          "an unclaimed name is not created (errno %d)", why);
    close(fd);
    check(lockable_elsewhere(path) == 1, "once its creator lets go, the file is lockable: a leftover");
    unlink(path);
}

static void check_sweep(void) {
    int why = 0;
    /* a live claim, old: its creator still holds the lock */
    int live = npt_shared_map_claim(in_dir("npt-weights-101-1"), &why);
    struct timespec old[2];
    clock_gettime(CLOCK_REALTIME, &old[0]);
    old[0].tv_sec -= 3600;
    old[1] = old[0];
    int ok = live >= 0 && futimens(live, old) == 0;
    ok &= make_file("npt-weights-102-2", 3600) == 0;    /* the leftover */
    ok &= make_file("npt-weights-103-3", 0) == 0;      /* just claimed, not locked yet */
    ok &= make_file("other-weights-104-4", 3600) == 0;  /* not ours by name */
    ok &= make_file("npt-weights-backup", 3600) == 0;  /* the prefix, but not a claim's name */
    ok &= make_file("npt-weights-7-", 3600) == 0;
    ok &= make_file("target", 3600) == 0;
    ok &= symlink(in_dir("target"), in_dir("npt-weights-105-5")) == 0;
    ok &= mkdir(in_dir("npt-weights-106-6"), 0700) == 0;
    check(ok, "fixture: a live claim, a leftover, a young file, other names, a symlink and a directory");
    size_t bytes = 12345;
    char first[64];
    int n = npt_shared_map_remove_stale(dir, "npt-weights-", 60, &bytes, first, sizeof first);
    check(n == 1 && !exists("npt-weights-102-2") && !strcmp(first, "npt-weights-102-2") && bytes >= 65536 &&
              bytes < 2 * 65536,
          "the sweep removes the leftover alone, reporting it and its %zu bytes (%d removed, first '%s')", bytes, n,
          first);
    check(exists("npt-weights-101-1") && exists("npt-weights-103-3") && exists("other-weights-104-4") &&
              exists("npt-weights-105-5") && exists("target") && exists("npt-weights-106-6") &&
              exists("npt-weights-backup") && exists("npt-weights-7-"),
          "it keeps the live claim, the young file, other names (npt-weights-backup too), the symlink, its target and "
          "the directory");
    close(live);
    n = npt_shared_map_remove_stale(dir, "npt-weights-", 60, &bytes, first, sizeof first);
    check(n == 1 && !exists("npt-weights-101-1"), "control: once its creator is gone, the old claim goes too (%d)", n);
    n = npt_shared_map_remove_stale(in_dir("nosuch"), "npt-weights-", 60, &bytes, first, sizeof first);
    check(n == 0 && bytes == 0 && first[0] == '\0', "a directory that is not there removes nothing");
    unlink(in_dir("npt-weights-103-3"));
    unlink(in_dir("other-weights-104-4"));
    unlink(in_dir("npt-weights-105-5"));
    unlink(in_dir("target"));
    unlink(in_dir("npt-weights-backup"));
    unlink(in_dir("npt-weights-7-"));
    rmdir(in_dir("npt-weights-106-6"));
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/npt-test-shm-XXXXXX");
    if (!mkdtemp(dir)) {
        check(0, "cannot make a temporary directory: %s", strerror(errno));
        return 1;
    }
    check_claim();
    check_sweep();
    check(rmdir(dir) == 0, "nothing else is left in the directory");
    return test_finish();
}
