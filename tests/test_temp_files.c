/* tests/test_temp_files.c — util/atomic_file.c's temporary files.
 * - Tracking: a signal that ends the process removes the tracked files and directories
 *   and still ends it with that signal; a forgotten path, or a process that set its own
 *   action for the signal (as npt train does), keeps everything. Each case runs in a
 *   child process.
 * - Names: two writers of one path never share a temporary file (same PID included).
 * - Sweeping: what a killed writer left is removed once a minute old; a live writer's
 *   file, a fresh one, an older npt's and a user's look-alike are not.
 * - no_replace: a path that appears while it is written is kept, the commit fails. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../util/atomic_file.h"
#include "../util/stop.h"
#include "test.h"

static char dir[64];

static const char *in_dir(const char *name) {
    static char buf[4][384];
    static int slot;
    char *out = buf[slot++ & 3];
    snprintf(out, sizeof buf[0], "%s/%s", dir, name);
    return out;
}

static int exists(const char *name) {
    struct stat st;
    return lstat(in_dir(name), &st) == 0;
}

/* In a child: a tracked file written through npt_atomic_open, a tracked directory with
 * a tracked file in it, and a file tracked then forgotten; then the signal. ignore: the
 * signal's action is set to SIG_IGN first. Returns the child's wait status. */
static int child_case(int sig, int ignore) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        if (ignore) signal(sig, SIG_IGN);
        NptAtomicFile o;
        NptErr err;
        FILE *f = npt_atomic_open(&o, in_dir("list.tsv"), &err);
        if (!f || fputs("partial\n", f) < 0 || fflush(f) != 0) _exit(10);
        if (mkdir(in_dir("model.tmp"), 0700) != 0) _exit(11);
        FILE *g = fopen(in_dir("model.tmp/model.safetensors"), "w");
        if (!g || fclose(g) != 0) _exit(12);
        npt_temp_track(in_dir("model.tmp/model.safetensors"), 0);
        npt_temp_track(in_dir("model.tmp"), 1);
        FILE *k = fopen(in_dir("kept"), "w");
        if (!k || fclose(k) != 0) _exit(13);
        npt_temp_track(in_dir("kept"), 0);
        npt_temp_forget(in_dir("kept"));
        raise(sig);
        _exit(0); /* only when the signal is ignored */
    }
    int status;
    return waitpid(pid, &status, 0) == pid ? status : -1;
}

/* How many list.tsv.tmp.PID.X files the directory holds; with unlink_them, removes them. */
static int temps_left(int unlink_them) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (!strncmp(e->d_name, "list.tsv.tmp.", 13)) {
            n++;
            if (unlink_them) unlink(in_dir(e->d_name));
        }
    if (d) closedir(d);
    return d ? n : -1;
}

static void remove_all(void) {
    temps_left(1);
    unlink(in_dir("model.tmp/model.safetensors"));
    rmdir(in_dir("model.tmp"));
    unlink(in_dir("kept"));
}


/* The whole content of a small file in dir, "" if unreadable. */
static const char *content(const char *name) {
    static char buf[256];
    FILE *f = fopen(in_dir(name), "rb");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = '\0';
    return buf;
}

static int write_file(const char *name, const char *text) {
    FILE *f = fopen(in_dir(name), "wb");
    return f && fputs(text, f) >= 0 && fclose(f) == 0 ? 0 : -1;
}

/* Two writers of one path in one process (as two containers' PID 1 sharing a volume):
 * before, both wrote PATH.tmp.PID, the second's "wb" cut the first's file under it. */
static void test_two_writers(void) {
    NptAtomicFile a, b;
    NptErr err;
    char path[384];
    snprintf(path, sizeof path, "%s", in_dir("cache.u16"));
    FILE *fa = npt_atomic_open(&a, path, &err);
    FILE *fb = fa ? npt_atomic_open(&b, path, &err) : NULL;
    check(fa && fb && strcmp(a.tmp, b.tmp) != 0, "two writers of one path get two temporary files (%s, %s)",
          fa ? a.tmp : "-", fb ? b.tmp : "-");
    if (!fa || !fb) return;
    fputs("first writer, whole\n", fa);
    fputs("second\n", fb);
    check(npt_atomic_commit(&b, &err) == 0 && !strcmp(content("cache.u16"), "second\n"), "the second commits its own file");
    check(npt_atomic_commit(&a, &err) == 0 && !strcmp(content("cache.u16"), "first writer, whole\n"),
          "the first's file was not touched by the second: it lands whole (\"%s\")", content("cache.u16"));
    unlink(in_dir("cache.u16"));
}

/* The names in dir holding ".tmp.", and how many start with prefix. */
static int count_temps(const char *prefix, int *with_prefix) {
    DIR *d = opendir(dir);
    int all = 0;
    *with_prefix = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        all += strstr(e->d_name, ".tmp.") != NULL;
        *with_prefix += !strncmp(e->d_name, prefix, strlen(prefix));
    }
    if (d) closedir(d);
    return all;
}

/* A writer killed (here: _exit without cleanup, as after kill -9) leaves its temporary
 * file; the sweep removes it once a minute old, but not a live writer's, a fresh one, an
 * older npt's PATH.tmp.PID (never locked), a user's look-alike, or another path's when
 * sweeping one path's. */
static void test_sweep(void) {
    pid_t pid = fork();
    if (pid == 0) {
        NptAtomicFile o;
        NptErr err;
        FILE *f = npt_atomic_open(&o, in_dir("tokens.u16"), &err);
        _exit(f && fputs("partial", f) >= 0 && fflush(f) == 0 ? 0 : 1);
    }
    int status = -1, dead = 0;
    check(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "a child wrote a temporary file and died without removing it");
    NptAtomicFile live;
    NptErr err;
    char live_path[384]; /* the writer keeps the pointer: not one of in_dir's rotating buffers */
    snprintf(live_path, sizeof live_path, "%s", in_dir("other.u16"));
    FILE *f = npt_atomic_open(&live, live_path, &err);
    check(f != NULL, "a live writer's temporary file: %s", f ? live.tmp : err.msg);
    check(write_file("notes.tmp.old", "mine") == 0 && write_file("old.u16.tmp.12345", "an older npt's") == 0 &&
              write_file("metrics.tmp.1", "a log") == 0 && write_file("fresh.u16.tmp.7.0123abcd", "just made") == 0,
          "look-alikes: a user's, an older npt's PATH.tmp.PID, a log named so, a fresh unlocked temporary");
    npt_temp_sweep(dir, NULL);
    check(count_temps("tokens.u16.tmp.", &dead) == 6 && dead == 1, "nothing under a minute old is swept (%d dead)", dead);
    age_names(dir, ".tmp.", "fresh.u16.", 2 * NPT_TEMP_STALE_SECONDS); /* all but the fresh one */
    npt_temp_sweep(dir, "unrelated.u16");
    check(count_temps("tokens.u16.tmp.", &dead) == 6 && dead == 1, "sweeping another path's temporaries leaves these");
    npt_temp_sweep(dir, NULL);
    int all = count_temps("tokens.u16.tmp.", &dead);
    check(dead == 0 && all == 5 && exists("notes.tmp.old") && exists("old.u16.tmp.12345") && exists("metrics.tmp.1") &&
              exists("fresh.u16.tmp.7.0123abcd"),
          "the killed writer's file is removed; the live one, the fresh one and the look-alikes stay (%d dead, %d in all)",
          dead, all);
    if (f) {
        fputs("done", f);
        int rc = npt_atomic_commit(&live, &err);
        check(rc == 0 && !strcmp(content("other.u16"), "done"), "and the live writer commits (%s)",
              rc ? err.msg : content("other.u16"));
    }
    static const char *const left[] = {"other.u16", "notes.tmp.old", "old.u16.tmp.12345", "metrics.tmp.1",
                                       "fresh.u16.tmp.7.0123abcd"};
    for (size_t i = 0; i < NPT_ARRAY_LEN(left); i++) unlink(in_dir(left[i]));
}

/* An output that appears while it is written (no --force): kept, the commit fails
 * naming it, the temporary file is gone. Without no_replace it is replaced. */
static void test_no_replace(void) {
    char out[384];
    snprintf(out, sizeof out, "%s", in_dir("out.u16"));
    for (int no_replace = 1; no_replace >= 0; no_replace--) {
        NptAtomicFile o;
        NptErr err;
        FILE *f = npt_atomic_open(&o, out, &err);
        if (!f) {
            check(0, "open: %s", err.msg);
            return;
        }
        o.no_replace = no_replace;
        fputs("npt's", f);
        check(write_file("out.u16", "the user's") == 0, "a file appears at the output meanwhile");
        int rc = npt_atomic_commit(&o, &err);
        if (no_replace)
            check(rc == -1 && strstr(err.msg, "out.u16 appeared while npt was writing it and was kept") &&
                      !strcmp(content("out.u16"), "the user's") && temps_left(0) == 0 && !exists(o.tmp + strlen(dir) + 1),
                  "no_replace: kept, the commit fails naming it: %s", rc ? err.msg : "(succeeded)");
        else
            check(rc == 0 && !strcmp(content("out.u16"), "npt's"), "without it (--force) the output is replaced");
    }
    unlink(in_dir("out.u16"));
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/npt-test-temps-XXXXXX");
    if (!mkdtemp(dir)) {
        check(0, "cannot make a temporary directory: %s", strerror(errno));
        return 1;
    }
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    for (size_t i = 0; i < NPT_ARRAY_LEN(sigs); i++) {
        int st = child_case(sigs[i], 0);
        check(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == sigs[i],
              "%s still ends the process by that signal (status %#x)", npt_signal_name(sigs[i]), st);
        check(temps_left(0) == 0 && !exists("model.tmp") && exists("kept"),
              "%s: the tracked temporary file and directory are removed, the forgotten file kept",
              npt_signal_name(sigs[i]));
        remove_all();
    }
    int st = child_case(SIGTERM, 1);
    check(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0 && temps_left(0) == 1 && exists("model.tmp/model.safetensors"),
          "control: a process whose SIGTERM action is its own (here: ignored) keeps its files (status %#x)", st);
    remove_all();
    test_two_writers();
    test_sweep();
    test_no_replace();
    check(rmdir(dir) == 0, "nothing else is left in the directory");
    return test_finish();
}
