/* model/sampler.h — choosing the next token from logits: greedy, temperature, top-p. */
#ifndef NPT_SAMPLER_H
#define NPT_SAMPLER_H

#include <stdint.h>

typedef struct {
    int vocab_size;
    float temperature; /* 0: greedy */
    float top_p;       /* 1: plain sampling */
    uint64_t rng;
    float *probs;      /* [vocab] scratch */
    int *index;        /* [vocab] scratch for top-p sorting */
} Sampler;

int sampler_init(Sampler *s, int vocab_size, float temperature, float top_p, uint64_t seed);
void sampler_free(Sampler *s);
/* The next token: argmax when temperature is 0, else nucleus sampling (top_p). */
int sampler_next(Sampler *s, const float *logits);

#endif
