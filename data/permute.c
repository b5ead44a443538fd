/* data/permute.c — a seeded bijection of [0, n) in O(1) memory: a balanced Feistel
 * network over the smallest even-bit power-of-two domain >= n, with cycle walking
 * (apply again until the value falls inside [0, n)). A Feistel network is a bijection
 * of its domain whatever the round function, and cycle walking restricts a bijection
 * of a superset to one of [0, n). The domain is < 4n, so a walk takes < 4 steps on
 * average. This replaces an order array of n entries, so shuffling a corpus of
 * billions of windows costs no memory. */
#include "data_internal.h"

enum { ROUNDS = 4 };

static uint64_t feistel(uint64_t x, int half_bits, uint64_t key) {
    uint64_t mask = (1ull << half_bits) - 1;
    uint64_t left = x >> half_bits, right = x & mask;
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t f = npt_mix64(right ^ npt_mix64(key + (uint64_t)r * 0x9E3779B97F4A7C15ull)) & mask;
        uint64_t next = left ^ f;
        left = right;
        right = next;
    }
    return (left << half_bits) | right;
}

uint64_t data_permute(uint64_t i, uint64_t n, uint64_t key) {
    if (n <= 1) return 0;
    int bits = 2;
    while (bits < 64 && (n - 1) >> bits) bits += 2;
    uint64_t x = i;
    do x = feistel(x, bits / 2, key);
    while (x >= n);
    return x;
}
