/* cli/cmd_train.c — `npt train RECIPE [--set key=value]... [--resume auto|PATH]`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../train/trainer.h"
#include "commands.h"

static const char *train_help =
    "usage: npt train RECIPE [--set key.path=value]... [--resume auto|PATH]\n\n"
    "  RECIPE           a recipe file, or the name of a bundled recipe (npt recipes)\n"
    "  --set k=v        override one recipe key, e.g. --set train.lr=3e-5 --set npt.layers=[2,3]\n"
    "  --resume auto    continue from the newest checkpoint in the run's output_dir\n"
    "  --resume PATH    continue from this checkpoint\n\n"
    "Under mpirun (mpirun -np N npt train RECIPE ...) the run is data-parallel over the N ranks: micro-batch a of\n"
    "each step runs on rank a mod N (train.grad_accum must be a multiple of N), rank 0 writes output_dir.\n\n"
    "exit codes: 0 done, 1 bad input, 2 bad command line, 3 stopped after too many non-finite batches, 4 runtime failure,\n"
    "130 / 143 stopped by Ctrl-C / SIGTERM after saving the last step's state (continue with --resume auto);\n"
    "Open MPI's mpirun itself exits 1 after a Ctrl-C (the ranks 130 / 143): the line \"npt train: stopped by ...\"\n"
    "tells the stop from a failure, and signalling one rank directly stops the job without mpirun's delay\n";

int cmd_train(int argc, char **argv) {
    TrainArgs a = {0};
    const char **sets = calloc((size_t)argc + 1, sizeof(char *));
    if (!sets) return 4;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(train_help, stdout);
            free(sets);
            return 0;
        } else if (arg_is(argv[i], "--set")) {
            if (!(sets[a.n_overrides] = arg_value(argc, argv, &i, "--set", "train")) ||
                check_set_arg(sets[a.n_overrides++], "train"))
                goto usage;
        } else if (arg_is(argv[i], "--resume")) {
            if (!(a.resume = arg_value(argc, argv, &i, "--resume", "train"))) goto usage;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "npt train: error: unknown option '%s' (see npt train --help)\n", argv[i]);
            goto usage;
        } else if (a.recipe_path) {
            fprintf(stderr, "npt train: error: one recipe only (got '%s' and '%s')\n", a.recipe_path, argv[i]);
            goto usage;
        } else {
            a.recipe_path = argv[i];
        }
    }
    if (!a.recipe_path) {
        fprintf(stderr, "npt train: error: which recipe? e.g. npt train stories260k-safe (npt recipes lists them)\n");
        goto usage;
    }
    a.overrides = sets;
    int rc = train_run(&a);
    free(sets);
    return rc;
usage:
    free(sets);
    return 2;
}
