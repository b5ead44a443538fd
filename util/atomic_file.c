/* util/atomic_file.c — see atomic_file.h. */
#include "atomic_file.h"

#include "path.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A slot is FREE, being FILLED by one thread, or TRACKED (readable by the handler). */
enum { TEMP_SLOTS = 16, TEMP_FREE = 0, TEMP_FILLED, TEMP_TRACKED };
static struct {
    atomic_int state;
    int is_dir;
    char path[4200];
} temps[TEMP_SLOTS];
static atomic_int temps_handler; /* 1 once the handlers are in place */

/* Only async-signal-safe calls: unlink, rmdir, raise. SA_RESETHAND has restored the
 * default action, and the signal is blocked until the handler returns, so raising it
 * again ends the process the way the signal would have, exit status included. */
static void remove_temps_on_signal(int sig) {
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < TEMP_SLOTS; i++)
            if (atomic_load(&temps[i].state) == TEMP_TRACKED && temps[i].is_dir == pass)
                (void)(pass ? rmdir(temps[i].path) : unlink(temps[i].path));
    raise(sig);
}

static void install_temp_handlers(void) {
    int expected = 0;
    if (!atomic_compare_exchange_strong(&temps_handler, &expected, 1)) return;
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    for (size_t i = 0; i < NPT_ARRAY_LEN(sigs); i++) {
        struct sigaction old, sa;
        if (sigaction(sigs[i], NULL, &old) != 0 || old.sa_handler != SIG_DFL || (old.sa_flags & SA_SIGINFO)) continue;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = remove_temps_on_signal;
        sa.sa_flags = SA_RESETHAND;
        sigfillset(&sa.sa_mask);
        sigaction(sigs[i], &sa, NULL); /* failing, the process just dies as before */
    }
}

void npt_temp_track(const char *path, int is_dir) {
    if (strlen(path) >= sizeof temps[0].path) return;
    install_temp_handlers();
    for (int i = 0; i < TEMP_SLOTS; i++) {
        int expected = TEMP_FREE;
        if (!atomic_compare_exchange_strong(&temps[i].state, &expected, TEMP_FILLED)) continue;
        strcpy(temps[i].path, path);
        temps[i].is_dir = is_dir;
        atomic_store(&temps[i].state, TEMP_TRACKED);
        return;
    }
}

void npt_temp_forget(const char *path) {
    for (int i = 0; i < TEMP_SLOTS; i++) {
        int expected = TEMP_TRACKED;
        if (strcmp(temps[i].path, path) != 0 || !atomic_compare_exchange_strong(&temps[i].state, &expected, TEMP_FILLED))
            continue;
        if (strcmp(temps[i].path, path) == 0) { /* still ours after taking it */
            atomic_store(&temps[i].state, TEMP_FREE);
            return;
        }
        atomic_store(&temps[i].state, TEMP_TRACKED);
    }
}

void npt_temp_remove(const char *path) {
    unlink(path);
    npt_temp_forget(path);
}

/* Eight hex digits that two writers with the same PID (two containers sharing a cache
 * volume, each its own PID namespace) are unlikely to draw alike; O_EXCL makes a repeat
 * harmless, it only costs another try. */
static unsigned temp_suffix(void) {
    static atomic_uint counter;
    unsigned r;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) == (ssize_t)sizeof r) return r;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (unsigned)ts.tv_nsec * 2654435761u ^ (unsigned)ts.tv_sec ^ atomic_fetch_add(&counter, 1u) << 24;
}

int npt_temp_name(const char *path, char *tmp, size_t cap, NptErr *err) {
    if (snprintf(tmp, cap, "%s.tmp.%ld.%08x", path, (long)getpid(), temp_suffix()) >= (int)cap) {
        tmp[0] = '\0';
        return npt_fail(err, "path too long: %.200s", path);
    }
    return 0;
}

/* Whether fd is still the file tmp names: a sweeper that took the lock between our
 * create and our flock has unlinked it. */
static int still_named(int fd, const char *tmp) {
    struct stat a, b;
    return fstat(fd, &a) == 0 && a.st_nlink > 0 && lstat(tmp, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

int npt_temp_create(const char *path, char *tmp, size_t cap, NptErr *err) {
    struct stat st;
    tmp[0] = '\0';
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
        return npt_fail(err, "%s exists and is not a regular file; choose another path", path);
    if (npt_check_parent_dir(path, err)) return -1;
    char dir[4200];
    npt_dir_of(path, dir, sizeof dir);
    const char *base = strrchr(path, '/');
    npt_temp_sweep(dir, base ? base + 1 : path);
    for (int attempt = 0; attempt < 16; attempt++) {
        if (npt_temp_name(path, tmp, cap, err)) return -1;
        int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno == EEXIST) continue;
        if (fd < 0) {
            int e = errno;
            tmp[0] = '\0';
            return npt_fail(err, "cannot create a temporary file beside %s: %s", path, strerror(e));
        }
        /* EWOULDBLOCK: a sweeper took the file in the instant before the lock (a clock
         * far off made it look old) and removes it: draw another name. Any other
         * failure is a file system without flock, where no sweeper can take it either. */
        if (flock(fd, LOCK_EX | LOCK_NB) == 0 ? still_named(fd, tmp) : errno != EWOULDBLOCK) {
            npt_temp_track(tmp, 0);
            return fd;
        }
        close(fd);
    }
    tmp[0] = '\0';
    return npt_fail(err, "cannot create a temporary file beside %s: every name tried was taken", path);
}

void npt_temp_release(int *lock_fd) {
    if (*lock_fd >= 0) close(*lock_fd); /* read-only use of the lock: nothing to report */
    *lock_fd = -1;
}

/* NAME.tmp.PID.XXXXXXXX (base NULL: any NAME), the names only npt_temp_create makes,
 * and always locks while they live. Nothing else: an older npt's NAME.tmp.PID (never
 * locked, so its lock proves nothing), a user's "notes.tmp.old", a log a recipe named
 * "metrics.tmp.1". */
static int is_temp_of(const char *name, const char *base) {
    const char *t;
    if (base) {
        size_t n = strlen(base);
        if (strncmp(name, base, n) != 0 || strncmp(name + n, ".tmp.", 5) != 0) return 0;
        t = name + n + 5;
    } else {
        const char *last = NULL;
        for (const char *p = strstr(name, ".tmp."); p; p = strstr(p + 1, ".tmp.")) last = p;
        if (!last || last == name) return 0;
        t = last + 5;
    }
    size_t digits = strspn(t, "0123456789");
    t += digits;
    return digits && t[0] == '.' && strspn(t + 1, "0123456789abcdef") == 8 && !t[9];
}

void npt_temp_sweep_entry(int dir_fd, const char *dir, const char *name, const char *base, time_t now) {
    struct stat st;
    char p[4600];
    /* a minute untouched as well as unlocked: where flock is local to one machine (NFS
     * with local_lock, Lustre's localflock) another machine's live writer holds no lock
     * visible here, but it writes; and a plain file only, before opening anything */
    if (!is_temp_of(name, base) || fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode) ||
        now - st.st_mtime < NPT_TEMP_STALE_SECONDS || snprintf(p, sizeof p, "%s/%s", dir, name) >= (int)sizeof p)
        return;
    int fd = open(p, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return;
    /* the lock taken means its writer is gone (the kernel drops a dead process's
     * locks); still_named: not renamed into place or removed since we listed it */
    if (flock(fd, LOCK_EX | LOCK_NB) == 0 && still_named(fd, p)) unlink(p);
    close(fd);
}

void npt_temp_sweep(const char *dir, const char *base) {
    DIR *d = opendir(dir);
    if (!d) return;
    const struct dirent *e;
    time_t now = time(NULL);
    while ((e = readdir(d))) npt_temp_sweep_entry(dirfd(d), dir, e->d_name, base, now);
    closedir(d);
}

/* rename(2) that fails with EEXIST instead of replacing path. A file system without
 * RENAME_NOREPLACE (NFS) gets link + unlink, which refuses an existing path the same way;
 * one without hard links either (many FUSE mounts) the check at start and a rename. */
static int rename_no_replace(const char *tmp, const char *path) {
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) == 0) return 0;
    if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) return -1;
    struct stat st;
    if (link(tmp, path) != 0) {
        int exists = errno == EEXIST;
        /* NFS: a link whose reply was lost is retried and answers EEXIST though it was made */
        if (exists && !(stat(tmp, &st) == 0 && st.st_nlink == 2)) return errno = EEXIST, -1;
        if (!exists) return lstat(path, &st) == 0 ? (errno = EEXIST, -1) : rename(tmp, path);
    }
    unlink(tmp); /* path holds the file now */
    return 0;
}

int npt_rename_durable(const char *tmp, const char *path, const char *what, int no_replace, NptErr *err) {
    const char *sep = *what ? " " : "";
    int renamed = (no_replace ? rename_no_replace(tmp, path) : rename(tmp, path)) == 0, why = errno;
    npt_temp_forget(tmp); /* renamed, or removed below */
    if (!renamed) {
        unlink(tmp);
        if (no_replace && why == EEXIST)
            return npt_fail(err, "%s%s%s appeared while npt was writing it and was kept; choose another path, or pass "
                            "--force to replace it", what, sep, path);
        return npt_fail(err, "cannot write %s%s%s: rename from %s failed: %s", what, sep, path, tmp, strerror(why));
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
    o->no_replace = 0;
    o->lock_fd = npt_temp_create(path, o->tmp, sizeof o->tmp, err);
    if (o->lock_fd < 0) return NULL;
    /* the FILE gets its own descriptor; the lock stays on lock_fd until the rename */
    int fd = fcntl(o->lock_fd, F_DUPFD_CLOEXEC, 0);
    o->f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!o->f) {
        npt_fail(err, "cannot create %s: %s", o->tmp, strerror(errno));
        if (fd >= 0) close(fd);
        npt_temp_remove(o->tmp);
        npt_temp_release(&o->lock_fd);
    }
    return o->f;
}

void npt_atomic_abort(NptAtomicFile *o) {
    if (o->f) fclose(o->f);
    o->f = NULL;
    npt_temp_remove(o->tmp);
    npt_temp_release(&o->lock_fd);
}

int npt_atomic_commit(NptAtomicFile *o, NptErr *err) {
    int bad = fflush(o->f) != 0 || ferror(o->f) || fsync(fileno(o->f)) != 0;
    int e = errno;
    if (fclose(o->f) != 0 && !bad) bad = 1, e = errno;
    o->f = NULL;
    if (bad) {
        npt_temp_remove(o->tmp);
        npt_temp_release(&o->lock_fd);
        return npt_fail(err, "cannot write %s: %s", o->path, strerror(e));
    }
    int rc = npt_rename_durable(o->tmp, o->path, "", o->no_replace, err);
    npt_temp_release(&o->lock_fd);
    return rc;
}
