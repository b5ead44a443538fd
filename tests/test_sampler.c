/* tests/test_sampler.c — the next-token sampler of `npt generate` (model/sampler.h):
 * temperature 0 is argmax; sampled frequencies follow softmax(logits / T); top-p draws
 * only from the nucleus (the smallest set of top tokens whose probability reaches p)
 * with the renormalized probabilities; top-p 1 is plain sampling; a tiny p is argmax.
 *
 * Expected distributions are computed here in double from the logits, not from the
 * sampler. Frequency bound: over N independent draws the count of a token of probability
 * q is Binomial(N, q), standard deviation sqrt(N q (1 - q)); a count more than 5 of them
 * from N q happens with probability about 5.7e-7 per token for a correct sampler (normal
 * approximation; every q used here has N q >= 60), so the ~100 tokens checked below
 * raise a false alarm with probability under 1e-4. The seeds are fixed, so a run is
 * deterministic; the argument says a correct sampler passes for all but a vanishing
 * share of seeds. A wrong temperature or a wrong nucleus moves a count by far more. */
#include <math.h>
#include <string.h>

#include "model/sampler.h"
#include "test.h"

enum { N_DRAWS = 20000, VMAX = 16 };

/* softmax(logits / T) in double */
static void softmax_ref(const float *logits, int n, double T, double *p) {
    double mx = -INFINITY, sum = 0.0;
    for (int i = 0; i < n; i++) mx = fmax(mx, logits[i]);
    for (int i = 0; i < n; i++) sum += p[i] = exp((logits[i] - mx) / T);
    for (int i = 0; i < n; i++) p[i] /= sum;
}

/* The nucleus by definition: the k most probable tokens with k the smallest count whose
 * probabilities sum to at least p. in[i] = 1 for its members; returns k. *margin gets
 * how far p is from the two cumulative sums around it (so that float rounding in the
 * sampler cannot decide membership: the cases below keep it above 1e-3). */
static int nucleus_ref(const double *prob, int n, double p, int *in, double *margin) {
    int order[VMAX];
    for (int i = 0; i < n; i++) order[i] = i;
    for (int i = 1; i < n; i++) /* insertion sort, descending, ties by index */
        for (int j = i; j > 0 && prob[order[j]] > prob[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    double cum = 0.0;
    int k = 0;
    memset(in, 0, (size_t)n * sizeof(int));
    while (k < n && cum < p) in[order[k]] = 1, cum += prob[order[k++]];
    *margin = fmin(cum - p, p - (cum - prob[order[k - 1]]));
    return k;
}

/* counts[i] over N draws of s on logits; *bad counts ids outside [0, n) */
static void draw(Sampler *s, const float *logits, int n, int N, int *counts, int *bad) {
    memset(counts, 0, (size_t)n * sizeof(int));
    *bad = 0;
    for (int k = 0; k < N; k++) {
        int t = sampler_next(s, logits);
        if (t >= 0 && t < n) counts[t]++;
        else (*bad)++;
    }
}

/* Largest |count - N q| / sqrt(N q (1 - q)) over the tokens with 0 < q < 1, and the
 * number of draws of tokens with q = 0 (which must be none). */
static double worst_sigma(const int *counts, const double *q, int n, int N, int *forbidden) {
    double worst = 0.0;
    *forbidden = 0;
    for (int i = 0; i < n; i++) {
        if (q[i] <= 0.0) {
            *forbidden += counts[i];
            continue;
        }
        if (q[i] >= 1.0) continue;
        double sd = sqrt(N * q[i] * (1.0 - q[i]));
        worst = fmax(worst, fabs(counts[i] - N * q[i]) / sd);
    }
    return worst;
}

/* Not sorted, so that a sampler confusing sorted and vocabulary order shows. */
static const float logits8[8] = {1.0f, -0.3f, 2.0f, 0.5f, 0.2f, 1.5f, -0.6f, 0.0f};

/* What draws from logits8 show against an expected distribution: counts per token,
 * distinct tokens drawn, ids outside [0, 8), draws of tokens it excludes, and
 * worst_sigma's deviation. */
typedef struct {
    int counts[8], drawn, bad, forbidden;
    double z;
} Draws;

/* N_DRAWS draws at temperature T and top-p p against want; -1 if no sampler is made. */

static int draws_against(float T, float p, uint64_t seed, const double *want, Draws *d) {
    Sampler s;
    if (sampler_init(&s, 8, T, p, seed)) {
        check(0, "sampler_init");
        return -1;
    }
    draw(&s, logits8, 8, N_DRAWS, d->counts, &d->bad);
    sampler_free(&s);
    d->drawn = 0;
    for (int i = 0; i < 8; i++) d->drawn += d->counts[i] > 0;
    d->z = worst_sigma(d->counts, want, 8, N_DRAWS, &d->forbidden);
    return 0;
}

static void test_greedy(void) {
    uint64_t st = 12345;
    int ok = 1, n_cases = 0, last = -1;
    for (int c = 0; c < 50; c++) {
        enum { V = 512 };
        float lg[V];
        for (int i = 0; i < V; i++) {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            lg[i] = (float)((double)(st >> 11) / 9007199254740992.0 * 20.0 - 10.0);
        }
        int want = (int)((st >> 20) % V); /* plant a unique maximum at a known place */
        lg[want] = 10.5f;
        Sampler s;
        if (sampler_init(&s, V, 0.0f, c % 2 ? 0.9f : 1.0f, (uint64_t)c + 1)) {
            check(0, "sampler_init");
            return;
        }
        for (int k = 0; k < 3; k++) {
            int got = sampler_next(&s, lg);
            ok &= got == want;
            if (got != want) last = got;
        }
        sampler_free(&s);
        n_cases++;
    }
    check(ok, "temperature 0: the planted maximum of %d random 512-logit vectors every time (top-p 0.9 or 1; "
          "last wrong id %d)", n_cases, last);
}

static void test_temperature(float T, uint64_t seed) {
    double q[8];
    softmax_ref(logits8, 8, T, q);
    double qmin = 1.0;
    for (int i = 0; i < 8; i++) qmin = fmin(qmin, q[i]);
    Draws d;
    if (draws_against(T, 1.0f, seed, q, &d)) return;
    check(d.bad == 0 && d.z < 5.0,
          "temperature %.2g, %d draws over 8 tokens: frequencies match softmax(logits/T) within %.2f sigma (bound 5; "
          "smallest N q %.0f; token 2: %d draws, want %.0f)", T, N_DRAWS, d.z, N_DRAWS * qmin, d.counts[2], N_DRAWS * q[2]);
}

static void test_top_p(float p, float T, uint64_t seed) {
    double q[8], margin;
    int in[8];
    softmax_ref(logits8, 8, T, q);
    int k = nucleus_ref(q, 8, p, in, &margin);
    double mass = 0.0;
    for (int i = 0; i < 8; i++) mass += in[i] ? q[i] : 0.0;
    double want[8];
    for (int i = 0; i < 8; i++) want[i] = in[i] ? q[i] / mass : 0.0;
    Draws d;
    if (draws_against(T, p, seed, want, &d)) return;
    check(margin > 1e-3 && d.bad == 0 && d.forbidden == 0 && d.drawn == k,
          "top-p %.2g at temperature %.2g: nucleus of %d tokens (mass %.4f, p off the cumulative sums by %.4f); "
          "%d distinct tokens drawn, %d draws outside the nucleus", p, T, k, mass, margin, d.drawn, d.forbidden);
    check(d.bad == 0 && d.z < 5.0,
          "top-p %.2g at temperature %.2g: frequencies inside the nucleus match the renormalized probabilities "
          "within %.2f sigma (bound 5)", p, T, d.z);
}

/* top-p 1 is plain sampling: every token is reachable, at its softmax probability. */
static void test_top_p_one(void) {
    double q[8];
    softmax_ref(logits8, 8, 1.0, q);
    Draws d;
    if (draws_against(1.0f, 1.0f, 99, q, &d)) return;
    check(d.bad == 0 && d.drawn == 8 && d.z < 5.0,
          "top-p 1.0: plain sampling, all 8 tokens drawn, frequencies within %.2f sigma of softmax (bound 5)", d.z);
}

/* A p below the top probability leaves the argmax alone in the nucleus, so every draw
 * is the argmax. Case a: a peaked distribution (top probability 0.37). Case b: a nearly
 * flat one, 8 tokens with logits 0 but one at 0.1: top probability 0.1364, p = 0.01,
 * still a one-token nucleus by definition. */
static void test_tiny_p(void) {
    const float flat[8] = {0, 0, 0.1f, 0, 0, 0, 0, 0};
    const struct {
        const char *what;
        const float *lg;
        float p;
    } cases[2] = {{"peaked logits (top probability 0.37)", logits8, 1e-3f}, {"nearly flat logits (top probability 0.136)", flat, 0.01f}};
    for (int c = 0; c < 2; c++) {
        double q[8];
        softmax_ref(cases[c].lg, 8, 1.0, q);
        Sampler s;
        if (sampler_init(&s, 8, 1.0f, cases[c].p, 5)) {
            check(0, "sampler_init");
            return;
        }
        int counts[8], bad, at_max, mode = 0;
        draw(&s, cases[c].lg, 8, 2000, counts, &bad);
        at_max = counts[2]; /* the argmax of both */
        for (int i = 1; i < 8; i++) mode = counts[i] > counts[mode] ? i : mode;
        check(q[2] > cases[c].p && at_max == 2000 && bad == 0,
              "top-p %.2g, %s: every one of 2000 draws is the argmax, id 2 (got %d draws of id 2, most drawn id %d "
              "%d times, %d ids outside [0, 8))", cases[c].p, cases[c].what, at_max, mode, counts[mode], bad);
        sampler_free(&s);
    }
}

/* Cumulative sum exactly equal to p: 4 tokens of probability 0.25 exactly (logits 0,
 * the rest -inf, i.e. masked) and p = 0.5. The two top tokens already reach p, so the
 * nucleus is 2 tokens (which 2 of the tied 4 is the sampler's choice), each drawn half
 * the time. Float arithmetic is exact here: expf(0) = 1, 1/4 and 1/4 + 1/4. */
static void test_top_p_boundary(void) {
    const float lg[8] = {0, -INFINITY, 0, -INFINITY, 0, 0, -INFINITY, -INFINITY};
    Sampler s;
    if (sampler_init(&s, 8, 1.0f, 0.5f, 21)) {
        check(0, "sampler_init");
        return;
    }
    int counts[8], bad, drawn = 0, masked = 0, balanced = 1;
    draw(&s, lg, 8, N_DRAWS, counts, &bad);
    double sd = sqrt(N_DRAWS * 0.25);
    for (int i = 0; i < 8; i++) {
        drawn += counts[i] > 0;
        if (isinf(lg[i])) masked += counts[i];
        else if (counts[i]) balanced &= fabs(counts[i] - 0.5 * N_DRAWS) < 5 * sd;
    }
    check(bad == 0 && masked == 0 && drawn == 2 && balanced,
          "top-p 0.5 over 4 tokens of probability 0.25: the nucleus is the 2 tokens that reach 0.5 "
          "(%d distinct tokens drawn, counts %d %d %d %d, %d masked draws)", drawn, counts[0], counts[2], counts[4],
          counts[5], masked);
    sampler_free(&s);
}

/* --seed: the same seed replays the same tokens, another seed does not. */
static void test_seed(void) {
    Sampler a, b, c;
    if (sampler_init(&a, 8, 1.0f, 0.9f, 7) || sampler_init(&b, 8, 1.0f, 0.9f, 7) || sampler_init(&c, 8, 1.0f, 0.9f, 8)) {
        check(0, "sampler_init");
        return;
    }
    int same = 1, differ = 0;
    for (int k = 0; k < 1000; k++) {
        int x = sampler_next(&a, logits8), y = sampler_next(&b, logits8), z = sampler_next(&c, logits8);
        same &= x == y;
        differ += x != z;
    }
    check(same && differ > 100, "seed 7 twice: identical 1000 draws; seed 8 differs in %d of them", differ);
    sampler_free(&a);
    sampler_free(&b);
    sampler_free(&c);
}

int main(void) {
    test_greedy();
    test_temperature(1.0f, 1);
    test_temperature(0.5f, 2); /* smallest N q = 68 */
    test_temperature(2.0f, 3);
    test_top_p(0.7f, 1.0f, 4); /* cumulative 0.374 0.601 | 0.739: 3 tokens */
    test_top_p(0.9f, 1.0f, 5); /* 0.884 | 0.935: 6 tokens */
    test_top_p(0.9f, 0.5f, 6); /* sharper: 0.848 | 0.931: 3 tokens */
    test_top_p_one();
    test_tiny_p();
    test_top_p_boundary();
    test_seed();
    return test_finish();
}
