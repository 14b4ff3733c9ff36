/* drsn-edge float32 host engine: kernels with compile-time shapes (C99 + GCC/Clang vector extensions).
 *
 * The generated drsn_f32_model.c calls these with literal shapes; every kernel is always-inlined, so the
 * compiler sees constant loop bounds and unrolls/vectorizes each call for the host (-O3 -march=native).
 * Activations are rows of `rs` floats with the values at [DRSN_F32_PAD, DRSN_F32_PAD + L) and zeros in
 * the pads on both sides: a convolution reads its input's pads instead of testing the borders.
 * Vectors run along time (the long axis); blocks of output channels share each loaded input vector.
 */
#ifndef DRSN_F32_KERNELS_H
#define DRSN_F32_KERNELS_H

#include <string.h>

#define DRSN_F32_PAD 16 /* zero floats before and after each activation row */

#if defined(__AVX512F__)
#define DRSN_VL 16
#define DRSN_ACC 16 /* accumulator vectors a convolution keeps in registers (32 vector registers) */
#elif defined(__AVX__)
#define DRSN_VL 8
#define DRSN_ACC 8
#else
#define DRSN_VL 4
#define DRSN_ACC 8
#endif
typedef float drsn_vf __attribute__((vector_size(DRSN_VL * 4)));
typedef int drsn_vi __attribute__((vector_size(DRSN_VL * 4)));

#define DRSN_INLINE static inline __attribute__((always_inline))

/* profiling hooks around every kernel call (kernel index i): empty unless a profiling build defines them */
#if defined(DRSN_F32_PROFILE)
#include <time.h>
double drsn_f32_kernel_ns[DRSN_F32_NUM_KERNELS];
static struct timespec drsn_f32_t0;
#define DRSN_K_BEGIN(i) clock_gettime(CLOCK_MONOTONIC, &drsn_f32_t0)
#define DRSN_K_END(i)                                                                          \
  do {                                                                                         \
    struct timespec t1_;                                                                       \
    clock_gettime(CLOCK_MONOTONIC, &t1_);                                                      \
    drsn_f32_kernel_ns[i] += (double)(t1_.tv_sec - drsn_f32_t0.tv_sec) * 1e9 +                 \
                             (double)(t1_.tv_nsec - drsn_f32_t0.tv_nsec);                      \
  } while (0)
#else
#define DRSN_K_BEGIN(i) ((void)0)
#define DRSN_K_END(i) ((void)0)
#endif

DRSN_INLINE drsn_vf drsn_ld(const float *p) {
  drsn_vf v;
  memcpy(&v, p, sizeof v);
  return v;
}

DRSN_INLINE void drsn_st(float *p, drsn_vf v) { memcpy(p, &v, sizeof v); }

DRSN_INLINE drsn_vf drsn_relu_v(drsn_vf v) {
  const drsn_vf zero = {0};
  return (drsn_vf)((drsn_vi)v & (drsn_vi)(v > zero));
}

/* dst[u] = src[s*u] for u in [0, n): stride-2 reads as two vector loads and one shuffle */
DRSN_INLINE void drsn_f32_strided(float *dst, const float *src, int n, int s) {
  int u = 0;
  if (s == 2) {
#if DRSN_VL == 16
    const drsn_vi even = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
#elif DRSN_VL == 8
    const drsn_vi even = {0, 2, 4, 6, 8, 10, 12, 14};
#else
    const drsn_vi even = {0, 2, 4, 6};
#endif
    for (; u + DRSN_VL <= n; u += DRSN_VL)
      drsn_st(dst + u, __builtin_shuffle(drsn_ld(src + 2 * u), drsn_ld(src + 2 * u + DRSN_VL), even));
  }
  for (; u < n; u++) dst[u] = src[s * u];
}

/* Split each input row into `s` phases (phase j holds x[s*u + j]) so that a strided convolution reads
 * contiguous vectors. Phase rows have `prs` floats with the value u = 0 at `ppad`. */
DRSN_INLINE void drsn_f32_phases(int ci, int s, int lin_rs, const float *x, int prs, int ppad, int len,
                                 float *ph) {
  for (int c = 0; c < ci; c++)
    for (int j = 0; j < s; j++)
      drsn_f32_strided(ph + (c * s + j) * prs, x + c * lin_rs + DRSN_F32_PAD + j - s * ppad, len + 2 * ppad, s);
}

/* y[c][t] = x[c][s*t]: average pooling of size 1 (the downsampling shortcut) */
DRSN_INLINE void drsn_f32_subsample(int c, int len, int s, const float *x, int xrs, float *y, int yrs) {
  for (int i = 0; i < c; i++) drsn_f32_strided(y + i * yrs + DRSN_F32_PAD, x + i * xrs + DRSN_F32_PAD, len, s);
}

/* cb output channels × tb vectors of time from t: each loaded input vector serves cb channels and each
 * weight tb vectors (the accumulators stay in registers) */
DRSN_INLINE void drsn_f32_conv_block(int cb, int tb, int o, int t, int ci, int k, int s, int p, const float *w,
                                     const float *b, int relu, const float *base, int rs, int step, int off0,
                                     float *y, int yrs) {
  drsn_vf acc[8][4];
  for (int j = 0; j < cb; j++)
    for (int m = 0; m < tb; m++) acc[j][m] = (drsn_vf){0} + (b ? b[o + j] : 0.0f);
  for (int c = 0; c < ci; c++)
    for (int q = 0; q < k; q++) {
      const int d = q - p; /* input offset of tap q; with phases: phase (d mod s), shift floor(d/s) */
      const int ph_j = ((d % s) + s) % s, sh = (d - ph_j) / s;
      const float *src = base + (c * step + ph_j) * rs + off0 + sh + t;
      drsn_vf xv[4];
      for (int m = 0; m < tb; m++) xv[m] = drsn_ld(src + m * DRSN_VL);
      for (int j = 0; j < cb; j++) {
        const float wj = w[((o + j) * ci + c) * k + q];
        for (int m = 0; m < tb; m++) acc[j][m] += wj * xv[m];
      }
    }
  for (int j = 0; j < cb; j++)
    for (int m = 0; m < tb; m++)
      drsn_st(y + (o + j) * yrs + DRSN_F32_PAD + t + m * DRSN_VL, relu ? drsn_relu_v(acc[j][m]) : acc[j][m]);
}

/* y[co][t] = b[co] + sum_ci sum_k w[co][ci][k] * x[ci][t*s + k - p]  (optionally ReLU)
 * x: ci rows of `xrs` floats (padded), y: co rows of `yrs` floats (padded), len: output length.
 * Strided convolutions go through `ph` (phases of the input, see drsn_f32_phases). */
DRSN_INLINE void drsn_f32_conv(int co, int ci, int k, int s, int p, int len, const float *w, const float *b,
                               int relu, const float *x, int xrs, float *y, int yrs, float *ph) {
  const int cb = co % 8 == 0 ? 8 : (co % 4 == 0 ? 4 : (co % 2 == 0 ? 2 : 1));
  const int tb = DRSN_ACC / cb > 4 ? 4 : (DRSN_ACC / cb < 1 ? 1 : DRSN_ACC / cb);
  const int ppad = (p + s - 1) / s + 1;
  const int prs = len + 2 * ppad + (k + s - 1) / s;
  const float *base = x;
  int rs = xrs, step = 1, off0 = DRSN_F32_PAD;
  if (s > 1) {
    drsn_f32_phases(ci, s, xrs, x, prs, ppad, len + (k + s - 1) / s, ph);
    base = ph, rs = prs, step = s, off0 = ppad;
  }
  for (int o = 0; o < co; o += cb) {
    int t = 0;
    for (; t + tb * DRSN_VL <= len; t += tb * DRSN_VL)
      drsn_f32_conv_block(cb, tb, o, t, ci, k, s, p, w, b, relu, base, rs, step, off0, y, yrs);
    for (; t + DRSN_VL <= len; t += DRSN_VL)
      drsn_f32_conv_block(cb, 1, o, t, ci, k, s, p, w, b, relu, base, rs, step, off0, y, yrs);
    for (; t < len; t++)
      for (int j = 0; j < cb; j++) {
        float a = b ? b[o + j] : 0.0f;
        for (int c = 0; c < ci; c++)
          for (int q = 0; q < k; q++) {
            const int d = q - p;
            const int ph_j = ((d % s) + s) % s, sh = (d - ph_j) / s;
            a += w[((o + j) * ci + c) * k + q] * base[(c * step + ph_j) * rs + off0 + sh + t];
          }
        y[(o + j) * yrs + DRSN_F32_PAD + t] = relu && !(a > 0.0f) ? 0.0f : a;
      }
  }
}

/* y[o] = b[o] + sum_i w[o][i] * x[i]  (optionally ReLU): fully connected layers and 1x1 convolutions
 * on [C, 1] tensors */
DRSN_INLINE void drsn_f32_fc(int no, int ni, const float *w, const float *b, int relu, const float *x, float *y) {
  for (int o = 0; o < no; o++) {
    float a = b ? b[o] : 0.0f;
    for (int i = 0; i < ni; i++) a += w[o * ni + i] * x[i];
    y[o] = relu && !(a > 0.0f) ? 0.0f : a;
  }
}

#endif
