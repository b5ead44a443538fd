/* train/trainer.h — `npt train`: one recipe-driven run, from loading to final.h5. */
#ifndef NPT_TRAINER_H
#define NPT_TRAINER_H

#include "../data/tokenizer.h"
#include "../model/llama.h"
#include "recipe.h"

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

/* What npt train checks once the recipe and model are loaded, before it tokenizes or
 * writes anything; npt validate runs the same checks, so a recipe it passes is not one
 * train refuses at once. Each problem goes into d as an error under its recipe key:
 * npt.rank and npt.layers against the model's shape, data.seq_len against its context;
 * for text data the tokenizer (found, fitting the vocabulary) and the token cache
 * directory; and, when check_output_dir, output_dir (a directory, or one that can be
 * created). The tokenizer loaded is kept in *tok when tok is not NULL (left alone when
 * the data needs none). Returns the number of errors added. */
int train_setup_issues(const Recipe *r, const LlamaModel *m, int check_output_dir, Tokenizer **tok, RecipeDiag *d);

/* For npt validate: the recipe's token and HDF5 sources opened as npt train opens them
 * (dataset_check_source), so a file train would refuse at once (not a whole number of
 * ids, fewer than one window, not an HDF5 token dataset, no training window left by
 * data.valid_fraction) is an error under its key (data.train, data.sources[i].path,
 * data.valid). Text is not tokenized and ids are not scanned against the vocabulary:
 * both cost a pass over the whole corpus. Returns the number of errors added. */
int train_data_issues(const Recipe *r, RecipeDiag *d);

#endif
