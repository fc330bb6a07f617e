/* CBAM's inference passes over a channels_last map, for attnkit.deploy.cbam_native.
 *
 * The map x is (N, P, C) in memory (channels_last (N, C, H, W) with P = H * W), fp32 (dtype 0) or bf16 (dtype 1).
 * Gates and statistics are fp32. Threads: OpenMP, `nthreads` per call (torch's own thread count; torch's libgomp
 * is already loaded, so the same thread pool serves both).
 *
 *   channel_stats  x -> mean and max over P per (n, c)                        one read of x
 *   channel_gate   mean, max (N, C) -> Mc = sigmoid(mlp(mean) + mlp(max))      the shared MLP, fp32
 *   spatial_desc   x, gate (N, C) -> mean and max over C of x * gate          one read of x
 *   spatial_gate   padded descriptor -> scale * sigmoid(conv_kxk(desc) + b)    tiny maps
 *   tail           out = x * (gate_c * ms_p + keep) [+ identity] [relu]        one read of x (and identity), one write
 *
 * Accumulations are fp32; bf16 is read by widening and written rounded to nearest even (NaN stays NaN). The
 * maxima ignore NaN (x > m ? x : m), unlike torch's amax, which propagates it.
 */
#include "common.h"

#define TILE 64 /* channels per register tile of channel_stats: 4 + 4 zmm accumulators */

/* Rows lo..hi of one channel tile into the register accumulators s, m: BOUND is TILE (a constant trip count, so
 * the accumulators stay in registers) or the last tile's width. */
#define STATS_ROWS(T, LOAD, BOUND)                                                                             \
    for (long q = lo; q < hi; ++q) {                                                                           \
        const T *r = x + q * c + j0;                                                                           \
        _Pragma("omp simd")                                                                                    \
        for (long j = 0; j < (BOUND); ++j) {                                                                   \
            float v = LOAD(r, j);                                                                              \
            s[j] += v;                                                                                         \
            m[j] = v > m[j] ? v : m[j];                                                                        \
        }                                                                                                      \
    }

/* Per thread t: sum and max over its share of positions, for one image; part: (threads, 2, C). */
#define CHANNEL_STATS(NAME, T, LOAD)                                                                          \
    static void NAME(const T *x, long p, long c, float *part, int t, int count) {                              \
        float *sum = part + (size_t)t * 2 * c, *mx = sum + c;                                                  \
        long lo = p * t / count, hi = p * (t + 1) / count;                                                     \
        for (long j0 = 0; j0 < c; j0 += TILE) {                                                                \
            long width = c - j0 < TILE ? c - j0 : TILE;                                                        \
            float s[TILE], m[TILE];                                                                            \
            for (long j = 0; j < TILE; ++j) { s[j] = 0.0f; m[j] = -INFINITY; }                                 \
            if (width == TILE) {                                                                               \
                STATS_ROWS(T, LOAD, TILE)                                                                      \
            } else {                                                                                           \
                STATS_ROWS(T, LOAD, width)                                                                     \
            }                                                                                                  \
            for (long j = 0; j < width; ++j) { sum[j0 + j] = s[j]; mx[j0 + j] = m[j]; }                        \
        }                                                                                                      \
    }
CHANNEL_STATS(stats_f32, float, load_f32)
CHANNEL_STATS(stats_bf16, uint16_t, load_bf16)

/* mean[n * c + j], max[n * c + j] over the P positions of image n. */
void channel_stats(const void *x, int dtype, long n, long p, long c, float *mean, float *max, int nthreads) {
    int nt = NT(nthreads);
    float *part = (float *)malloc(sizeof(float) * (size_t)nt * 2 * (size_t)c);
    for (long b = 0; b < n; ++b) {
        int used = 1;
#pragma omp parallel num_threads(nt)
        {
            int t = omp_get_thread_num(), count = omp_get_num_threads();
            if (t == 0) used = count;
            if (dtype == 0)
                stats_f32((const float *)x + b * p * c, p, c, part, t, count);
            else
                stats_bf16((const uint16_t *)x + b * p * c, p, c, part, t, count);
        }
        for (long j = 0; j < c; ++j) {
            float s = 0.0f, m = -INFINITY;
            for (int t = 0; t < used; ++t) {
                s += part[(size_t)t * 2 * c + j];
                float v = part[(size_t)t * 2 * c + c + j];
                m = v > m ? v : m;
            }
            mean[b * c + j] = s / (float)p;
            max[b * c + j] = m;
        }
    }
    free(part);
}

#define DESC_ROW(NAME, T, LOAD)                                                                                \
    static inline void NAME(const T *r, const float *g, long c, float *s_out, float *m_out) {                 \
        float s = 0.0f, m = -INFINITY;                                                                         \
        _Pragma("omp simd reduction(+ : s) reduction(max : m)")                                                \
        for (long j = 0; j < c; ++j) {                                                                         \
            float v = LOAD(r, j) * g[j];                                                                       \
            s += v;                                                                                            \
            m = v > m ? v : m;                                                                                 \
        }                                                                                                      \
        *s_out = s;                                                                                            \
        *m_out = m;                                                                                            \
    }
DESC_ROW(desc_row_f32, float, load_f32)
DESC_ROW(desc_row_bf16, uint16_t, load_bf16)

/* desc: (N, 2, h + 2 pad, w + 2 pad) with a zero border set by the caller; channel 0 the mean over C of
 * x * gate, channel 1 the max. */
void spatial_desc(const void *x, int dtype, const float *gate, long n, long h, long w, long c, long pad,
                  float *desc, int nthreads) {
    long hp = h + 2 * pad, wp = w + 2 * pad, p = h * w;
    float inv_c = 1.0f / (float)c;
#pragma omp parallel for schedule(static) num_threads(NT(nthreads))
    for (long bq = 0; bq < n * p; ++bq) {
        long b = bq / p, q = bq % p;
        float s, m;
        if (dtype == 0)
            desc_row_f32((const float *)x + bq * c, gate + b * c, c, &s, &m);
        else
            desc_row_bf16((const uint16_t *)x + bq * c, gate + b * c, c, &s, &m);
        float *d = desc + b * 2 * hp * wp + (q / w + pad) * wp + q % w + pad;
        d[0] = s * inv_c;
        d[hp * wp] = m;
    }
}

/* ms (N, h, w) = scale * sigmoid(bias + sum over 2 channels and the k x k window of weight * desc), desc padded. */
void spatial_gate(const float *desc, const float *weight, float bias, long n, long h, long w, long k, long pad,
                  float scale, float *ms, int nthreads) {
    long hp = h + 2 * pad, wp = w + 2 * pad;
#pragma omp parallel num_threads(NT(nthreads))
    {
        float *acc = (float *)malloc(sizeof(float) * (size_t)w);
#pragma omp for schedule(static)
        for (long bi = 0; bi < n * h; ++bi) {
            long b = bi / h, i = bi % h;
            for (long j = 0; j < w; ++j) acc[j] = bias;
            for (long ch = 0; ch < 2; ++ch) {
                const float *plane = desc + (b * 2 + ch) * hp * wp;
                for (long ki = 0; ki < k; ++ki) {
                    const float *src = plane + (i + ki) * wp;
                    for (long kj = 0; kj < k; ++kj) {
                        float wt = weight[(ch * k + ki) * k + kj];
                        const float *s = src + kj;
#pragma omp simd
                        for (long j = 0; j < w; ++j) acc[j] += wt * s[j];
                    }
                }
            }
            float *o = ms + b * h * w + i * w;
            for (long j = 0; j < w; ++j) o[j] = scale / (1.0f + expf(-acc[j]));
        }
        free(acc);
    }
}

/* out = x * (gate[n, c] * ms[n, q] + keep) (+ identity) (relu); out may be x or identity. */
void tail(const void *x, const void *identity, int dtype, const float *gate, const float *ms, float keep, long n,
          long p, long c, int relu, void *out, int nthreads) {
    float floor = relu ? 0.0f : -INFINITY;
#pragma omp parallel for schedule(static) num_threads(NT(nthreads))
    for (long bq = 0; bq < n * p; ++bq) {
        const float *g = gate + (bq / p) * c;
        float s = ms[bq];
        if (dtype == 0) {
            const float *xr = (const float *)x + bq * c;
            float *o = (float *)out + bq * c;
            if (identity) {
                const float *ir = (const float *)identity + bq * c;
#pragma omp simd
                for (long j = 0; j < c; ++j) {
                    float v = xr[j] * (g[j] * s + keep) + ir[j];
                    o[j] = v < floor ? floor : v; /* NaN stays NaN */
                }
            } else {
#pragma omp simd
                for (long j = 0; j < c; ++j) {
                    float v = xr[j] * (g[j] * s + keep);
                    o[j] = v < floor ? floor : v; /* NaN stays NaN */
                }
            }
        } else {
            const uint16_t *xr = (const uint16_t *)x + bq * c;
            uint16_t *o = (uint16_t *)out + bq * c;
            if (identity) {
                const uint16_t *ir = (const uint16_t *)identity + bq * c;
#pragma omp simd
                for (long j = 0; j < c; ++j) {
                    float v = load_bf16(xr, j) * (g[j] * s + keep) + load_bf16(ir, j);
                    o[j] = to_bf16(v < floor ? floor : v);
                }
            } else {
#pragma omp simd
                for (long j = 0; j < c; ++j) {
                    float v = load_bf16(xr, j) * (g[j] * s + keep);
                    o[j] = to_bf16(v < floor ? floor : v);
                }
            }
        }
    }
}

/* gate (N, C) = sigmoid(W2 (relu(W1 mean + b1) + relu(W1 max + b1)) + 2 b2): CBAM's shared MLP on both pooled rows,
 * its second layer once on their sum (it is linear). stats (2N, C): the N mean rows, then the N max rows; w1 (R, C),
 * w2 (C, R); b1, b2 may be NULL. hidden: scratch of 2R floats. */
void channel_gate(const float *stats, long n, long c, const float *w1, const float *b1, long r, const float *w2,
                  const float *b2, float *gate, float *hidden, int nthreads) {
    int nt = NT(nthreads);
    for (long b = 0; b < n; ++b) {
        matvec(w1, b1, stats + b * c, r, c, hidden, nt);
        matvec(w1, b1, stats + (n + b) * c, r, c, hidden + r, nt);
        for (long k = 0; k < r; ++k) hidden[k] = relu_keep_nan(hidden[k]) + relu_keep_nan(hidden[r + k]);
        float *g = gate + b * c;
        matvec(w2, NULL, hidden, c, r, g, nt);
        for (long j = 0; j < c; ++j) g[j] = 1.0f / (1.0f + expf(-(g[j] + (b2 ? 2.0f * b2[j] : 0.0f))));
    }
}
