/* tests/test_temp_files.c — util/atomic_file.c's tracking of temporary files: a signal
 * that ends the process removes the tracked files and directories and still ends it
 * with that signal; a forgotten path, or a process that set its own action for the
 * signal (as npt train does), keeps everything. Each case runs in a child process. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
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

/* How many list.tsv.tmp.PID files the directory holds; with unlink_them, removes them. */
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
    check(rmdir(dir) == 0, "nothing else is left in the directory");
    return test_finish();
}
