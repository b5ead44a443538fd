/* train/trainer.h — `npt train`: one recipe-driven run, from loading to final.h5. */
#ifndef NPT_TRAINER_H
#define NPT_TRAINER_H

typedef struct {
    const char *recipe_path;
    const char *const *overrides; /* "key.path=value" */
    int n_overrides;
    const char *resume;           /* NULL, "auto" or a checkpoint path */
} TrainArgs;

/* Exit codes: 0 success, 1 bad input (recipe, model, data, checkpoint; also an
 * output_dir that already holds a run, unless resuming),
 * 3 stopped after too many consecutive non-finite batches (last good state saved),
 * 4 internal failure while running (e.g. a checkpoint could not be written). */
int train_run(const TrainArgs *args);

#endif
