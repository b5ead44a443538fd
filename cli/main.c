/* cli/main.c — the `npt` binary: dispatches to one function per verb (cli/commands.h). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} Verb;

static const Verb verbs[] = {
    {"train", cmd_train, "train NPT adapters as a recipe says"},
    {"generate", cmd_generate, "sample text from a model (greedy, temperature, top-p)"},
    {"eval", cmd_eval, "perplexity of base vs NPT, per-layer fidelity, modulation magnitudes"},
    {"validate", cmd_validate, "check a recipe and report every error at once"},
    {"recipes", cmd_recipes, "list, show and copy the bundled recipes"},
    {"debug", cmd_debug, "find the op where the first NaN/Inf is born; per-layer table, scans"},
    {"inspect", cmd_inspect, "show, verify and diff checkpoints; say what a model file is"},
    {"data", cmd_data, "tokenize text/JSONL into token files (progress bar, all cores); token file stats"},
    {"init", cmd_init, "write a new randomly initialised Llama model as an HF directory"},
    {"export", cmd_export, "write a trained (all-weights) checkpoint or any model as an HF directory"},
};

static void usage(FILE *out) {
    fprintf(out, "npt — train NPT adapters on pretrained Llama models\n\nusage: npt <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) fprintf(out, "  %-10s %s\n", verbs[i].name, verbs[i].help);
    fprintf(out, "\nEach command has --help.\n");
}

/* Idle OpenMP threads spin by default. On a machine shared with other work (2 cores
 * here) a spinning thread steals the core its partner needs and a training step ran
 * 2.6x slower than with sleeping waiters (measured, stories260K, 2 threads). libgomp
 * reads the policy only when it is loaded, so the default is changed by setting it and
 * executing ourselves once; an explicit OMP_WAIT_POLICY is always respected. */
static void prefer_passive_waiting(char **argv) {
    if (getenv("OMP_WAIT_POLICY")) return;
    if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
    execv("/proc/self/exe", argv);
    /* exec failed (no /proc): run on with libgomp's default, only slower when shared */
}

/* Output that did not reach its file (a full disk, /dev/full) is an error, whatever the
 * verb returned: stdout is flushed and checked as the process exits. Registered first,
 * so it runs after every other exit handler. */
static void check_stdout_at_exit(void) {
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "npt: error: writing standard output failed: %s\n", strerror(errno));
        _exit(1);
    }
}

int main(int argc, char **argv) {
    prefer_passive_waiting(argv);
    /* A file size limit (ulimit -f) reached by a write is then an EFBIG error, reported
     * like a full disk with the temporary file removed, instead of a kill that leaves it. */
    signal(SIGXFSZ, SIG_IGN);
    if (atexit(check_stdout_at_exit) != 0) {
        fprintf(stderr, "npt: error: cannot register the exit handler\n");
        return 1;
    }
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
        if (!strcmp(argv[1], verbs[i].name)) return verbs[i].run(argc - 1, argv + 1);
    fprintf(stderr, "npt: error: unknown command '%s' (run npt --help for the list)\n", argv[1]);
    return 2;
}
