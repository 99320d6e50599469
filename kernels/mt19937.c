/* NumPy's legacy generator (MT19937, as np.random.rand draws from it), for the book's Dropout:
 * its mask `np.random.rand(*x.shape) > ratio` computed here from the generator's state, the same
 * bits as NumPy's, without the array of draws (the draw is most of the layer's time, and its
 * array as large as x in float64). The algorithm is Matsumoto and Nishimura's (1998); a double is
 * (a >> 5, b >> 6) of two tempered words over 2^53, as NumPy's random_sample. fastbp/layers.py
 * reads the state from NumPy and gives it back advanced, so that NumPy's next draw is what it
 * would have been. */
#include <stdint.h>

#include "kernels.h"

#define MT_N FASTBP_MT19937_WORDS
#define MT_M 397

/* The next MT_N words of the state, in place. Each loop reads words at least 227 apart from the
 * ones it writes, so each vectorizes. */
FASTBP_SIMD static void twist(uint32_t *key)
{
    const uint32_t upper = 0x80000000u, lower = 0x7fffffffu, matrix = 0x9908b0dfu;
    int i = 0;
    for (; i < MT_N - MT_M; ++i) {
        const uint32_t y = (key[i] & upper) | (key[i + 1] & lower);
        key[i] = key[i + MT_M] ^ (y >> 1) ^ ((0u - (y & 1u)) & matrix);
    }
    for (; i < MT_N - 1; ++i) {
        const uint32_t y = (key[i] & upper) | (key[i + 1] & lower);
        key[i] = key[i + MT_M - MT_N] ^ (y >> 1) ^ ((0u - (y & 1u)) & matrix);
    }
    const uint32_t y = (key[MT_N - 1] & upper) | (key[0] & lower);
    key[MT_N - 1] = key[MT_M - 1] ^ (y >> 1) ^ ((0u - (y & 1u)) & matrix);
}

static inline uint32_t temper(uint32_t y)
{
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    return y ^ (y >> 18);
}

/* NumPy's double ((a >> 5) 2^26 + (b >> 6)) / 2^53 exceeds ratio exactly when its 53-bit
 * numerator exceeds T = floor(ratio 2^53); as b >> 6 < 2^26, that is when a >> 5 exceeds T's
 * top bits `high`, or equals them and b >> 6 exceeds T's low 26 bits `low`: 32-bit integer
 * compares, which vectorize 8 to a register (measured: 0.43 ns a word, 0.56-0.70 with one
 * 64-bit compare, NumPy's own draw 2.5). */
static inline unsigned char above(uint32_t a, uint32_t b, uint32_t high, uint32_t low)
{
    a >>= 5;
    b >>= 6;
    return (unsigned char)((a > high) | ((a == high) & (b > low)));
}

/* keep[e] = (the generator's next double > ratio) for n draws from the state (key, pos) (pos:
 * the words of key already used, MT_N when a twist is due); returns the new pos. */
FASTBP_SIMD int fastbp_mt19937_above(uint32_t *key, int pos, double ratio, unsigned char *keep, ptrdiff_t n)
{
    const int64_t threshold = (int64_t)(ratio * 0x1p53); /* exact: ratio in [0, 1), scaled by a power of two */
    const uint32_t high = (uint32_t)(threshold >> 26), low = (uint32_t)(threshold & ((1 << 26) - 1));
    uint32_t words[MT_N], first = 0; /* first: a draw's first word, left at the end of a block */
    int pending = 0;
    ptrdiff_t e = 0;
    while (e < n) {
        if (pos == MT_N) {
            twist(key);
            pos = 0;
        }
        const int ready = MT_N - pos;
        for (int i = 0; i < ready; ++i) words[i] = temper(key[pos + i]);
        int used = 0;
        if (pending) {
            keep[e++] = above(first, words[0], high, low);
            pending = 0;
            used = 1;
        }
        ptrdiff_t pairs = (ready - used) / 2;
        pairs = pairs < n - e ? pairs : n - e;
        for (ptrdiff_t p = 0; p < pairs; ++p) keep[e + p] = above(words[used + 2 * p], words[used + 2 * p + 1], high, low);
        e += pairs;
        used += 2 * (int)pairs;
        if (e < n && used < ready) { /* one word left: the next draw's first */
            first = words[used++];
            pending = 1;
        }
        pos += used;
    }
    return pos;
}
