/* drsn-edge C engine: integer kernels with TFLite Micro's int8 arithmetic (portable C99).
 *
 * Every kernel reproduces the integer rules of the TFLite Micro reference kernels (rounding of the
 * fixed-point multiplier, saturation, clamping) so that outputs are bit-identical. Parameters that
 * TFLM derives at Prepare() time (multipliers, shifts, folded biases) are computed by the generator
 * and stored as constants. No allocation: buffers come from the generated static arena.
 *
 * drsn_config.h (generated) selects:
 *   DRSN_SINGLE_ROUNDING  1: single-rounding multiplier (TFLITE_SINGLE_ROUNDING), 0: double rounding
 *   DRSN_DSP              1: SIMD fast path (ACLE __SXTB16/__SMLAD; emulated in portable C off ARM),
 *                         0: plain C
 */
#ifndef DRSN_KERNELS_H
#define DRSN_KERNELS_H

#include <stdint.h>
#include "drsn_config.h"

/* Profiling hooks around every kernel call of drsn_infer (kernel index i): empty unless a profiler
 * defines them, e.g. with -DDRSN_HOOKS_HEADER='"my_hooks.h"'. */
#if defined(DRSN_HOOKS_HEADER)
#include DRSN_HOOKS_HEADER
#endif
#ifndef DRSN_KERNEL_BEGIN
#define DRSN_KERNEL_BEGIN(i) ((void)0)
#endif
#ifndef DRSN_KERNEL_END
#define DRSN_KERNEL_END(i) ((void)0)
#endif

/* ---- fixed-point helpers (TFLM/gemmlowp arithmetic) ------------------------------------------ */

static inline int32_t drsn_sat_rdh_mul(int32_t a, int32_t b) {
  /* saturating rounding doubling high multiply (VQRDMULH semantics). Truncating (ab + nudge) / 2^31
   * with the sign-dependent nudge equals floor((ab + 2^30) / 2^31) for every product. */
  if (a == b && a == INT32_MIN) return INT32_MAX;
  return (int32_t)(((int64_t)a * (int64_t)b + ((int64_t)1 << 30)) >> 31);
}

static inline int32_t drsn_rdiv_pot(int32_t x, int e) {
  /* rounding division by 2^e, halves away from zero (gemmlowp RoundingDivideByPOT) */
  const int32_t mask = (int32_t)((1u << e) - 1u);
  const int32_t thr = (mask >> 1) - (x >> 31);
  return (x >> e) + ((x & mask) > thr ? 1 : 0);
}

static inline int32_t drsn_mbqm(int32_t x, int32_t m, int32_t shift) {
  /* MultiplyByQuantizedMultiplier; m >= 0, so the saturating case of the doubling multiply cannot occur */
#if DRSN_SINGLE_ROUNDING
  const int total = 31 - shift;
  const int64_t r = ((int64_t)x * (int64_t)m + ((int64_t)1 << (total - 1))) >> total;
  return (int32_t)r;
#else
  const int left = shift > 0 ? shift : 0;
  const int right = shift > 0 ? 0 : -shift;
  const int32_t hi = (int32_t)(((int64_t)(int32_t)((uint32_t)x << left) * (int64_t)m + ((int64_t)1 << 30)) >> 31);
  return drsn_rdiv_pot(hi, right);
#endif
}

/* A multiplier with its shifts split once per kernel (or channel), applied per value. */
typedef struct {
  int32_t m, mask, half;
  int left, right;
} drsn_rq_t;

static inline drsn_rq_t drsn_rq(int32_t m, int32_t shift) {
  drsn_rq_t q;
  q.m = m;
  q.left = shift > 0 ? shift : 0;
  q.right = shift > 0 ? 0 : -shift;
  q.mask = (int32_t)((1u << q.right) - 1u);
  q.half = q.mask >> 1;
  return q;
}

static inline int32_t drsn_rq_apply(const drsn_rq_t *q, int32_t x) {
#if DRSN_SINGLE_ROUNDING
  return drsn_mbqm(x, q->m, q->left - q->right);
#else
  const int32_t hi = (int32_t)(((int64_t)(int32_t)((uint32_t)x << q->left) * (int64_t)q->m + ((int64_t)1 << 30)) >> 31);
  return (hi >> q->right) + ((hi & q->mask) > (q->half - (hi >> 31)) ? 1 : 0);
#endif
}

static inline int32_t drsn_clamp(int32_t v, int32_t lo, int32_t hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

/* ---- kernel parameter blocks (filled by the generator) ---------------------------------------- */

typedef struct {            /* 1-D convolution over NWC int8 data (CONV_2D with height 1) */
  int16_t in_w, in_c, out_w, out_c, k, stride, pad;
  int16_t in_zp;            /* value of a padded tap (its contribution is zero) */
  int16_t out_zp, act_min, act_max;
  const int8_t *w;          /* [out_c][k][in_c] */
  const int32_t *bias;      /* bias + input_offset * sum(w): padding taps then add zero */
  const int32_t *mult;      /* per output channel */
  const int8_t *shift;
} drsn_conv_t;

typedef struct {            /* 1-D depthwise convolution (DEPTHWISE_CONV_2D with height 1) */
  int16_t in_w, in_c, out_w, out_c, k, stride, pad, depth_mult;
  int16_t in_zp, out_zp, act_min, act_max;
  const int8_t *w;          /* [k][out_c] */
  const int32_t *bias;      /* folded as for drsn_conv_t */
  const int32_t *mult;
  const int8_t *shift;
} drsn_dwconv_t;

typedef struct {            /* FULLY_CONNECTED */
  int16_t n_in, n_out, out_zp, act_min, act_max;
  const int8_t *w;          /* [n_out][n_in] */
  const int32_t *bias;      /* folded */
  const int32_t *mult;
  const int8_t *shift;
  int16_t per_channel;
} drsn_fc_t;

enum { DRSN_BC_NONE = 0, DRSN_BC_B_CHAN = 1, DRSN_BC_A_CHAN = 2, DRSN_BC_B_SCALAR = 3, DRSN_BC_A_SCALAR = 4 };

typedef struct {            /* ADD and SUB (sign = -1) */
  int32_t n;                /* elements of the output */
  int32_t a_mult, b_mult, out_mult;
  const int8_t *a_lut, *b_lut; /* optional int8 -> int8 functions applied to the operands first */
  int16_t chan;             /* channels (innermost dimension), for broadcasting */
  int16_t a_off, b_off, out_zp, act_min, act_max;
  int8_t left_shift, sign, bcast, a_shift, b_shift, out_shift;
} drsn_addsub_t;

typedef struct {            /* MUL */
  int32_t n, mult;
  int16_t chan, a_off, b_off, out_zp, act_min, act_max;
  int8_t bcast, shift;
} drsn_mul_t;

typedef struct {            /* RELU / QUANTIZE (int8 -> int8): out = clamp(zp_o + MBQM(x - zp_i)) */
  int32_t n, mult;
  int16_t in_zp, out_zp, act_min, act_max;
  int8_t shift;
} drsn_rescale_t;

typedef struct {            /* LOGISTIC (output scale 1/256, zero point -128) */
  int32_t n, radius, mult;
  int16_t in_zp;
  int8_t shift;
} drsn_logistic_t;

typedef struct {            /* MEAN over a contiguous block of axes: [outer][reduce][inner] */
  int32_t outer, reduce, inner, mult;
  const int8_t *lut;        /* optional int8 -> int8 function applied to the input first */
  int16_t in_zp, out_zp;
  int8_t shift;
} drsn_mean_t;

typedef struct {            /* AVERAGE_POOL_2D with height 1 */
  int16_t in_w, c, out_w, k, stride, pad, act_min, act_max;
} drsn_avgpool_t;

typedef struct {            /* PAD along the width of NWC data */
  int32_t in_w, c, before, after, value;
} drsn_pad_t;

typedef struct {            /* TRANSPOSE of a 4-D tensor */
  int32_t in_dims[4], perm[4];
} drsn_transpose_t;

typedef struct {            /* a 256-entry table for an int8 -> int8 function computed at build time */
  int32_t n;
  const int8_t *table;      /* indexed by (uint8_t)x */
} drsn_lut_t;

void drsn_conv(const drsn_conv_t *p, const int8_t *in, int8_t *out);
void drsn_dwconv(const drsn_dwconv_t *p, const int8_t *in, int8_t *out);
void drsn_fc(const drsn_fc_t *p, const int8_t *in, int8_t *out);
/* tables: NULL, or int32 scratch [512] for the scaled values of both operands (faster on large tensors) */
void drsn_addsub(const drsn_addsub_t *p, const int8_t *a, const int8_t *b, int8_t *out, int32_t *tables);
void drsn_mul(const drsn_mul_t *p, const int8_t *a, const int8_t *b, int8_t *out);
void drsn_rescale(const drsn_rescale_t *p, const int8_t *in, int8_t *out);
void drsn_logistic(const drsn_logistic_t *p, const int8_t *in, int8_t *out);
void drsn_mean(const drsn_mean_t *p, const int8_t *in, int8_t *out, int32_t *acc);
void drsn_avgpool(const drsn_avgpool_t *p, const int8_t *in, int8_t *out);
void drsn_pad(const drsn_pad_t *p, const int8_t *in, int8_t *out);
void drsn_copy(int32_t n, const int8_t *in, int8_t *out);
void drsn_transpose(const drsn_transpose_t *p, const int8_t *in, int8_t *out);
void drsn_lut(const drsn_lut_t *p, const int8_t *in, int8_t *out);
/* ins[i] == NULL: input i is a constant of one value, fills[i] */
void drsn_concat(int32_t outer, int32_t n, const int8_t *const *ins, const int32_t *chunks, const int8_t *fills,
                 int8_t *out);

/* exposed for tests: gemmlowp's fixed-point logistic, Q4.27 in, Q0.31 out */
int32_t drsn_logistic_q4(int32_t a);

#endif /* DRSN_KERNELS_H */
