/* The global-context (GC) block's inference vector over a channels_last map, for attnkit.deploy.gc_native.
 *
 * The map x is (N, P, C) in memory (channels_last (N, C, H, W) with P = H * W), fp32 (dtype 0) or bf16 (dtype 1).
 * For every image n, in fp32:
 *
 *   s   = sum_p softmax_p(v . x[n, p] + vb) x[n, p]          (C)   one read of x: an online softmax over tiles of
 *                                                                   positions, each tile read twice from L1
 *   h   = relu(layernorm(M s + mb) * ln_w + ln_b)             (R)   the transform's first layer (M may have the
 *                                                                   1x1 expansion folded into it: R x C_in)
 *   out = gamma * (W2 h + b2)                                 (D)   the 'add' term of the GC block
 *
 * Torch's stock ops take two matrix-vector reads of x (logits, then the weighted sum), a softmax and about twenty
 * small ops per block; this is one call. Threads: OpenMP, `nthreads` per call (torch's libgomp is already loaded,
 * so the same thread pool serves both).
 */
#include "common.h"

#define PTILE 16 /* positions per tile of the online softmax */

/* Positions lo..hi of one image into acc (C) = sum_p exp(l_p - *mx) x[p], *den = sum_p exp(l_p - *mx), *mx the
 * largest logit seen. Rows are accumulated four at a time (one load and store of acc per four rows). */
#define CONTEXT_PART(NAME, T, LOAD)                                                                            \
    static void NAME(const T *x, long lo, long hi, long c, const float *v, float vb, float *acc, float *mx,     \
                     float *den) {                                                                             \
        float run_max = -INFINITY, run_den = 0.0f, logit[PTILE];                                               \
        memset(acc, 0, sizeof(float) * (size_t)c);                                                             \
        for (long q0 = lo; q0 < hi; q0 += PTILE) {                                                             \
            long cnt = hi - q0 < PTILE ? hi - q0 : PTILE;                                                      \
            float tile_max = -INFINITY;                                                                        \
            for (long i = 0; i < cnt; ++i) {                                                                   \
                const T *r = x + (q0 + i) * c;                                                                 \
                float d = 0.0f;                                                                                \
                _Pragma("omp simd reduction(+ : d)")                                                           \
                for (long j = 0; j < c; ++j) d += LOAD(r, j) * v[j];                                           \
                logit[i] = d + vb;                                                                             \
                tile_max = logit[i] > tile_max ? logit[i] : tile_max;                                          \
            }                                                                                                  \
            if (tile_max > run_max) { /* rescale what was summed under the smaller maximum */                  \
                float f = expf(run_max - tile_max);                                                            \
                run_den *= f;                                                                                  \
                _Pragma("omp simd")                                                                            \
                for (long j = 0; j < c; ++j) acc[j] *= f;                                                      \
                run_max = tile_max;                                                                            \
            }                                                                                                  \
            long i = 0;                                                                                        \
            for (; i + 4 <= cnt; i += 4) {                                                                     \
                float w0 = expf(logit[i] - run_max), w1 = expf(logit[i + 1] - run_max);                        \
                float w2 = expf(logit[i + 2] - run_max), w3 = expf(logit[i + 3] - run_max);                    \
                run_den += (w0 + w1) + (w2 + w3);                                                              \
                const T *r0 = x + (q0 + i) * c, *r1 = r0 + c, *r2 = r1 + c, *r3 = r2 + c;                      \
                _Pragma("omp simd")                                                                            \
                for (long j = 0; j < c; ++j)                                                                   \
                    acc[j] += (w0 * LOAD(r0, j) + w1 * LOAD(r1, j)) + (w2 * LOAD(r2, j) + w3 * LOAD(r3, j));   \
            }                                                                                                  \
            for (; i < cnt; ++i) {                                                                             \
                float w0 = expf(logit[i] - run_max);                                                           \
                run_den += w0;                                                                                 \
                const T *r0 = x + (q0 + i) * c;                                                                \
                _Pragma("omp simd")                                                                            \
                for (long j = 0; j < c; ++j) acc[j] += w0 * LOAD(r0, j);                                       \
            }                                                                                                  \
        }                                                                                                      \
        *mx = run_max;                                                                                         \
        *den = run_den;                                                                                        \
    }
CONTEXT_PART(context_f32, float, load_f32)
CONTEXT_PART(context_bf16, uint16_t, load_bf16)

/* out (N, D): gamma * (W2 relu(LN(M s_n + mb)) + b2) for each image n (see the top of this file).
 * v (C), m_w (R, C), m_b (R) or NULL, ln_w/ln_b (R), w2 (D, R), b2 (D) or NULL. */
void gc_shift(const void *x, int dtype, long n, long p, long c, const float *v, float vb, const float *m_w,
              const float *m_b, long r, const float *ln_w, const float *ln_b, float eps, const float *w2,
              const float *b2, long d, float gamma, float *out, int nthreads) {
    int nt = NT(nthreads);
    float *part = (float *)malloc(sizeof(float) * ((size_t)nt * (size_t)(c + 2) + (size_t)c + (size_t)r));
    float *s = part + (size_t)nt * (size_t)(c + 2), *h = s + c;
    for (long b = 0; b < n; ++b) {
        int used = 1;
        /* a thread per ~256 positions at most: small maps are not worth waking the pool for */
        long want = p / 256 + 1;
        int team = want < nt ? (int)want : nt;
#pragma omp parallel num_threads(team)
        {
            int t = omp_get_thread_num(), count = omp_get_num_threads();
            if (t == 0) used = count;
            long lo = p * t / count, hi = p * (t + 1) / count;
            float *acc = part + (size_t)t * (size_t)(c + 2);
            if (dtype == 0)
                context_f32((const float *)x + b * p * c, lo, hi, c, v, vb, acc, acc + c, acc + c + 1);
            else
                context_bf16((const uint16_t *)x + b * p * c, lo, hi, c, v, vb, acc, acc + c, acc + c + 1);
        }
        float mx = -INFINITY, den = 0.0f;
        for (int t = 0; t < used; ++t) {
            float m = part[(size_t)t * (size_t)(c + 2) + c];
            mx = m > mx ? m : mx;
        }
        memset(s, 0, sizeof(float) * (size_t)c);
        for (int t = 0; t < used; ++t) {
            const float *acc = part + (size_t)t * (size_t)(c + 2);
            float m = acc[c];
            if (m == -INFINITY && acc[c + 1] == 0.0f) continue; /* a thread without positions */
            float f = expf(m - mx);
            den += acc[c + 1] * f;
            for (long j = 0; j < c; ++j) s[j] += acc[j] * f;
        }
        float inv = 1.0f / den;
        for (long j = 0; j < c; ++j) s[j] *= inv;
        matvec(m_w, m_b, s, r, c, h, nt);
        float mean = 0.0f, var = 0.0f;
        for (long k = 0; k < r; ++k) mean += h[k];
        mean /= (float)r;
        for (long k = 0; k < r; ++k) var += (h[k] - mean) * (h[k] - mean);
        float rstd = 1.0f / sqrtf(var / (float)r + eps);
        for (long k = 0; k < r; ++k) {
            float y = (h[k] - mean) * rstd * ln_w[k] + ln_b[k];
            h[k] = relu_keep_nan(y);
        }
        float *o = out + b * d;
        matvec(w2, b2, h, d, r, o, nt);
        if (gamma != 1.0f)
            for (long j = 0; j < d; ++j) o[j] *= gamma;
    }
    free(part);
}
