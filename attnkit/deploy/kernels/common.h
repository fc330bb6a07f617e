/* Shared helpers of attnkit's native CPU kernels (included by each kernel source; part of every build's cache key). */
#ifndef ATTNKIT_KERNELS_COMMON_H
#define ATTNKIT_KERNELS_COMMON_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

typedef union { uint32_t u; float f; } bits32;

static inline float load_f32(const float *p, long i) { return p[i]; }

static inline float load_bf16(const uint16_t *p, long i) {
    bits32 b;
    b.u = (uint32_t)p[i] << 16;
    return b.f;
}

/* fp32 -> bf16, rounded to nearest even; NaN stays NaN (quietened). */
static inline uint16_t to_bf16(float f) {
    bits32 b;
    b.f = f;
    uint32_t rounded = (b.u + 0x7fffu + ((b.u >> 16) & 1u)) >> 16;
    return (b.u & 0x7fffffffu) > 0x7f800000u ? (uint16_t)((b.u >> 16) | 0x40u) : (uint16_t)rounded;
}

#define NT(n) ((n) < 1 ? 1 : (n))

/* out[j] = b[j] + sum_k w[j, k] in[k] for j < rows (w row-major rows x cols, b may be NULL); threads over rows
 * when the product is large enough to pay for waking them. */
static void matvec(const float *w, const float *b, const float *in, long rows, long cols, float *out, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static) if (rows * cols >= 65536)
    for (long j = 0; j < rows; ++j) {
        const float *row = w + j * cols;
        float d = 0.0f;
#pragma omp simd reduction(+ : d)
        for (long k = 0; k < cols; ++k) d += row[k] * in[k];
        out[j] = d + (b ? b[j] : 0.0f);
    }
}

/* ReLU that keeps NaN (as torch's). */
static inline float relu_keep_nan(float y) { return y > 0.0f ? y : (y != y ? y : 0.0f); }

#endif
