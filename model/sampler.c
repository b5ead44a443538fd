/* model/sampler.c — next-token choice (see sampler.h). Top-p keeps the smallest set of
 * tokens whose probabilities reach p (Holtzman et al.'s nucleus), after dropping tokens
 * that cannot matter. */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>

#include "../util/common.h"

int sampler_init(Sampler *s, int vocab_size, float temperature, float top_p, uint64_t seed) {
    s->vocab_size = vocab_size;
    s->temperature = temperature;
    s->top_p = top_p;
    s->rng = seed ? seed : 0x9E3779B97F4A7C15ull;
    s->probs = malloc((size_t)vocab_size * sizeof(float));
    s->index = malloc((size_t)vocab_size * sizeof(int));
    if (!s->probs || !s->index) {
        sampler_free(s);
        return -1;
    }
    return 0;
}

void sampler_free(Sampler *s) {
    free(s->probs);
    free(s->index);
    s->probs = NULL;
    s->index = NULL;
}

static float uniform01(uint64_t *state) { /* xorshift64*, 24 random bits */
    *state ^= *state >> 12, *state ^= *state << 25, *state ^= *state >> 27;
    return (float)((*state * 0x2545F4914F6CDD1Dull) >> 40) / 16777216.0f;
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) best = x[i] > x[best] ? i : best;
    return best;
}

static const float *sort_probs;
static int by_prob_desc(const void *a, const void *b) {
    float pa = sort_probs[*(const int *)a], pb = sort_probs[*(const int *)b];
    return (pa < pb) - (pa > pb);
}

int sampler_next(Sampler *s, const float *logits) {
    int n = s->vocab_size;
    if (s->temperature <= 0.0f) return argmax(logits, n);
    float mx = logits[argmax(logits, n)];
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += (s->probs[i] = expf((logits[i] - mx) / s->temperature));
    for (int i = 0; i < n; i++) s->probs[i] = (float)(s->probs[i] / sum);
    float r = uniform01(&s->rng);
    if (s->top_p <= 0.0f || s->top_p >= 1.0f) {
        float cdf = 0.0f;
        for (int i = 0; i < n; i++)
            if (r < (cdf += s->probs[i])) return i;
        return n - 1; /* rounding */
    }
    /* Tokens below (1-p)/(n-1) can never be in the nucleus: skip sorting them. When p is
     * below 1/n a flat distribution can put every token under that cutoff; the nucleus is
     * then the most likely token alone (its probability, at least 1/n, reaches p). */
    float cutoff = (1.0f - s->top_p) / (float)(n - 1);
    int m = 0;
    for (int i = 0; i < n; i++)
        if (s->probs[i] >= cutoff) s->index[m++] = i;
    if (m == 0) return argmax(s->probs, n);
    sort_probs = s->probs;
    qsort(s->index, (size_t)m, sizeof(int), by_prob_desc);
    float cum = 0.0f;
    int last = m - 1;
    for (int i = 0; i < m; i++) {
        cum += s->probs[s->index[i]];
        if (cum >= s->top_p) {
            last = i;
            break;
        }
    }
    float target = r * cum, acc = 0.0f;
    for (int i = 0; i <= last; i++)
        if (target < (acc += s->probs[s->index[i]])) return s->index[i];
    return s->index[last];
}
