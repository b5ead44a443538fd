/* util/atomic_file.c — see atomic_file.h. */
#include "atomic_file.h"

#include "path.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
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
    npt_temp_track(tmp, 0);
    return 0;
}

int npt_rename_durable(const char *tmp, const char *path, const char *what, NptErr *err) {
    const char *sep = *what ? " " : "";
    int renamed = rename(tmp, path) == 0, why = errno;
    npt_temp_forget(tmp); /* renamed, or removed below */
    if (!renamed) {
        unlink(tmp);
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
    if (npt_temp_path(path, o->tmp, sizeof o->tmp, err)) return NULL;
    o->f = fopen(o->tmp, "wb");
    if (!o->f) {
        npt_fail(err, "cannot create %s: %s", o->tmp, strerror(errno));
        npt_temp_forget(o->tmp);
    }
    return o->f;
}

void npt_atomic_abort(NptAtomicFile *o) {
    if (o->f) fclose(o->f);
    o->f = NULL;
    npt_temp_remove(o->tmp);
}

int npt_atomic_commit(NptAtomicFile *o, NptErr *err) {
    int bad = fflush(o->f) != 0 || ferror(o->f) || fsync(fileno(o->f)) != 0;
    int e = errno;
    if (fclose(o->f) != 0 && !bad) bad = 1, e = errno;
    o->f = NULL;
    if (bad) {
        npt_temp_remove(o->tmp);
        return npt_fail(err, "cannot write %s: %s", o->path, strerror(e));
    }
    return npt_rename_durable(o->tmp, o->path, "", err);
}
