/* The squeeze-and-excitation (SE) gate over a channels_last map, for attnkit.deploy.se_native.
 *
 * The map x is (N, P, C) in memory (channels_last (N, C, H, W) with P = H * W), fp32 (dtype 0) or bf16 (dtype 1).
 * For every image n, in fp32:
 *
 *   m    = mean_p x[n, p]                                 (C)   one read of x, threads over positions
 *   gate = keep + scale * sigmoid(W2 relu(W1 m + b1) + b2) (C)   the blended gate (1 - gamma + gamma a)
 *
 * The caller applies it with the block's addition (torch's addcmul: the plain block's own pass count). With stock
 * ops the mean and the MLP are six small ops whose fp32 products, between the network's convolutions, cost several
 * times their time alone; this is one call.
 */
#include "common.h"

/* gate (N, C); w1 (R, C), w2 (C, R); b1, b2 may be NULL. */
void se_gate(const void *x, int dtype, long n, long p, long c, const float *w1, const float *b1, long r,
             const float *w2, const float *b2, float scale, float keep, float *gate, int nthreads) {
    int nt = NT(nthreads);
    float *part = (float *)malloc(sizeof(float) * ((size_t)nt * (size_t)c + (size_t)c + (size_t)r));
    float *mean = part + (size_t)nt * (size_t)c, *h = mean + c;
    for (long b = 0; b < n; ++b) {
        int used = 1;
        long want = p / 64 + 1; /* small maps are not worth waking the pool for */
        int team = want < nt ? (int)want : nt;
#pragma omp parallel num_threads(team)
        {
            int t = omp_get_thread_num(), count = omp_get_num_threads();
            if (t == 0) used = count;
            long lo = p * t / count, hi = p * (t + 1) / count;
            float *acc = part + (size_t)t * (size_t)c;
            memset(acc, 0, sizeof(float) * (size_t)c);
            if (dtype == 0) {
                const float *xb = (const float *)x + b * p * c;
                for (long q = lo; q < hi; ++q) {
                    const float *row = xb + q * c;
#pragma omp simd
                    for (long j = 0; j < c; ++j) acc[j] += row[j];
                }
            } else {
                const uint16_t *xb = (const uint16_t *)x + b * p * c;
                for (long q = lo; q < hi; ++q) {
                    const uint16_t *row = xb + q * c;
#pragma omp simd
                    for (long j = 0; j < c; ++j) acc[j] += load_bf16(row, j);
                }
            }
        }
        for (long j = 0; j < c; ++j) {
            float s = 0.0f;
            for (int t = 0; t < used; ++t) s += part[(size_t)t * (size_t)c + j];
            mean[j] = s / (float)p;
        }
        matvec(w1, b1, mean, r, c, h, nt);
        for (long k = 0; k < r; ++k) h[k] = relu_keep_nan(h[k]);
        float *g = gate + b * c;
        matvec(w2, b2, h, c, r, g, nt);
        for (long j = 0; j < c; ++j) g[j] = keep + scale / (1.0f + expf(-g[j]));
    }
    free(part);
}
