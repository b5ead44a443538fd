/* train/recipe_schema.h — the recipe schema table, private to train/recipe*.c.
 * One row per key: validation, defaults, docs and did-you-mean all read it. */
#ifndef NPT_RECIPE_SCHEMA_H
#define NPT_RECIPE_SCHEMA_H

#include <stddef.h>

#include "recipe.h"

typedef enum { RK_STRING, RK_INT, RK_NUMBER, RK_BOOL, RK_CHOICE, RK_LAYERS, RK_SOURCES } RecipeKeyType;

enum { RK_REQUIRED = 1, RK_NONEMPTY = 2 };

typedef struct {
    const char *path;            /* "train.lr"; at most one dot (section.key) */
    RecipeKeyType type;
    const char *def;             /* default as JSON text; NULL: required or computed */
    const char *def_doc;         /* the default as the docs show it when def is NULL */
    double lo, hi;               /* numeric range (RK_INT, RK_NUMBER) */
    unsigned char lo_open, hi_open;
    unsigned char flags;         /* RK_REQUIRED, RK_NONEMPTY */
    const char *const *choices;  /* RK_CHOICE values (index = enum value); RK_LAYERS keywords */
    int n_choices;
    size_t offset, size;         /* field in Recipe; size = capacity for strings */
    const char *doc;
} RecipeKey;

extern const RecipeKey recipe_keys[];
extern const int recipe_n_keys;

/* The row for "section.key" or a top-level "key"; NULL when unknown. */
const RecipeKey *recipe_key_find(const char *path);
/* 1 if name is a section ("train", "npt", ...). */
int recipe_is_section(const char *name);
/* "a number > 0", "one of \"adamw\", \"sgd\"", ... */
void recipe_key_expected(const RecipeKey *k, char *buf, size_t n);
/* The message for an unknown key typed as key inside section ("" = top level):
 * "unknown key; did you mean \"lr\"? (...)" or the list of valid keys there. */
void recipe_unknown_key_message(const char *section, const char *key, char *buf, size_t n);
/* The closest choice to s among k's choices, or NULL when none is close. */
const char *recipe_closest_choice(const RecipeKey *k, const char *s);

#endif
