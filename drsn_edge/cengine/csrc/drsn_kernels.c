/* drsn-edge C engine: integer kernels (see drsn_kernels.h). Portable C99, no allocation. */
#include "drsn_kernels.h"

#include <string.h>

/* ---- SIMD primitives: ACLE on cores with the DSP extension, portable definitions elsewhere ---- */
#if DRSN_DSP
#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#define DRSN_SXTB16(x) ((uint32_t)__sxtb16(x))
#define DRSN_SXTB16_ROR8(x) ((uint32_t)__sxtb16(((x) >> 8) | ((x) << 24))) /* one SXTB16 with ROR #8 */
#define DRSN_SMLAD(a, b, acc) __smlad((int32_t)(a), (int32_t)(b), (acc))
#else
/* Same results as the ARM instructions, for testing the fast path's arithmetic on any host. */
static inline uint32_t drsn_sxtb16(uint32_t x) {
  const uint32_t lo = (uint32_t)(uint16_t)(int16_t)(int8_t)(x & 0xffu);
  const uint32_t hi = (uint32_t)(uint16_t)(int16_t)(int8_t)((x >> 16) & 0xffu);
  return lo | (hi << 16);
}
static inline int32_t drsn_smlad(uint32_t a, uint32_t b, int32_t acc) {
  const int32_t p0 = (int32_t)(int16_t)(a & 0xffffu) * (int32_t)(int16_t)(b & 0xffffu);
  const int32_t p1 = (int32_t)(int16_t)(a >> 16) * (int32_t)(int16_t)(b >> 16);
  return (int32_t)((uint32_t)acc + (uint32_t)p0 + (uint32_t)p1);
}
#define DRSN_SXTB16(x) drsn_sxtb16(x)
#define DRSN_SXTB16_ROR8(x) drsn_sxtb16(((x) >> 8) | ((x) << 24))
#define DRSN_SMLAD(a, b, acc) drsn_smlad((a), (b), (acc))
#endif
#endif

static inline uint32_t drsn_load32(const int8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4); /* a single (unaligned) LDR on Cortex-M3/M4/M7/M33 */
  return v;
}

static inline int8_t drsn_requant(int32_t acc, int32_t mult, int32_t shift, int32_t zp, int32_t lo, int32_t hi) {
  const drsn_rq_t q = drsn_rq(mult, shift);
  return (int8_t)drsn_clamp(drsn_rq_apply(&q, acc) + zp, lo, hi);
}

/* ---- convolution ------------------------------------------------------------------------------ */

/* Copy the receptive field of output position `ow` into `win` (padding taps hold the input zero
 * point, whose contribution the folded bias cancels). Returns a pointer to the window. */
static const int8_t *conv_window(const drsn_conv_t *p, const int8_t *in, int ow, int8_t *win) {
  const int start = ow * p->stride - p->pad;
  const int kc = p->k * p->in_c;
  if (start >= 0 && start + p->k <= p->in_w) return in + start * p->in_c;
  for (int t = 0; t < p->k; ++t) {
    const int pos = start + t;
    if (pos >= 0 && pos < p->in_w) memcpy(win + t * p->in_c, in + pos * p->in_c, (size_t)p->in_c);
    else memset(win + t * p->in_c, p->in_zp, (size_t)p->in_c);
  }
  (void)kc;
  return win;
}

#if DRSN_DSP
/* Unpack a window of int8 values into int16 pairs in SXTB16 order: (x0,x2),(x1,x3),(x4,x6),... */
static void unpack_pairs(const int8_t *x, int kc4, uint32_t *dst) {
  for (int j = 0; j < kc4; ++j) {
    const uint32_t v = drsn_load32(x + 4 * j);
    dst[2 * j] = DRSN_SXTB16(v);
    dst[2 * j + 1] = DRSN_SXTB16_ROR8(v);
  }
}

/* Four output positions per pass: each weight word is loaded and unpacked once for four windows. */
static void conv_quad(const drsn_conv_t *p, const int8_t *in, int8_t *out, int ow, const int kc4) {
  const int kc = p->k * p->in_c, out_c = p->out_c;
  const int32_t zp = p->out_zp, lo = p->act_min, hi = p->act_max;
  int8_t win[4][DRSN_CONV_MAX_KC];
  uint32_t col[4][DRSN_CONV_MAX_KC / 2 + 2];
  for (int s = 0; s < 4; ++s) unpack_pairs(conv_window(p, in, ow + s, win[s]), kc4, col[s]);
  int8_t *o = out + ow * out_c;
  const int8_t *w = p->w;
  for (int co = 0; co < out_c; ++co, w += kc) {
    int32_t a0 = p->bias[co], a1 = a0, a2 = a0, a3 = a0;
    for (int j = 0; j < kc4; ++j) {
      const uint32_t wv = drsn_load32(w + 4 * j);
      const uint32_t wa = DRSN_SXTB16(wv), wb = DRSN_SXTB16_ROR8(wv);
      a0 = DRSN_SMLAD(col[0][2 * j + 1], wb, DRSN_SMLAD(col[0][2 * j], wa, a0));
      a1 = DRSN_SMLAD(col[1][2 * j + 1], wb, DRSN_SMLAD(col[1][2 * j], wa, a1));
      a2 = DRSN_SMLAD(col[2][2 * j + 1], wb, DRSN_SMLAD(col[2][2 * j], wa, a2));
      a3 = DRSN_SMLAD(col[3][2 * j + 1], wb, DRSN_SMLAD(col[3][2 * j], wa, a3));
    }
    const drsn_rq_t q = drsn_rq(p->mult[co], p->shift[co]);
    o[co] = (int8_t)drsn_clamp(drsn_rq_apply(&q, a0) + zp, lo, hi);
    o[out_c + co] = (int8_t)drsn_clamp(drsn_rq_apply(&q, a1) + zp, lo, hi);
    o[2 * out_c + co] = (int8_t)drsn_clamp(drsn_rq_apply(&q, a2) + zp, lo, hi);
    o[3 * out_c + co] = (int8_t)drsn_clamp(drsn_rq_apply(&q, a3) + zp, lo, hi);
  }
}

static void conv_single(const drsn_conv_t *p, const int8_t *in, int8_t *out, int ow) {
  const int kc = p->k * p->in_c;
  int8_t win[DRSN_CONV_MAX_KC];
  const int8_t *x = conv_window(p, in, ow, win);
  const int8_t *w = p->w;
  for (int co = 0; co < p->out_c; ++co, w += kc) {
    int32_t acc = p->bias[co];
    for (int t = 0; t < kc; ++t) acc += (int32_t)w[t] * x[t];
    out[ow * p->out_c + co] = drsn_requant(acc, p->mult[co], p->shift[co], p->out_zp, p->act_min, p->act_max);
  }
}

void drsn_conv(const drsn_conv_t *p, const int8_t *in, int8_t *out) {
  int ow = 0;
  const int kc = p->k * p->in_c;
  if ((kc & 3) == 0)
    for (; ow + 3 < p->out_w; ow += 4) conv_quad(p, in, out, ow, kc >> 2);
  for (; ow < p->out_w; ++ow) conv_single(p, in, out, ow);
}
#else
void drsn_conv(const drsn_conv_t *p, const int8_t *in, int8_t *out) {
  const int kc = p->k * p->in_c, out_c = p->out_c, out_w = p->out_w;
  const int32_t zp = p->out_zp, lo = p->act_min, hi = p->act_max;
  const int32_t *bias = p->bias, *mult = p->mult;
  const int8_t *shift = p->shift;
  int8_t win[DRSN_CONV_MAX_KC];
  for (int ow = 0; ow < out_w; ++ow) {
    const int8_t *x = conv_window(p, in, ow, win);
    const int8_t *w = p->w;
    int8_t *o = out + ow * out_c;
    for (int co = 0; co < out_c; ++co, w += kc) {
      int32_t acc = bias[co];
      int t = 0;
      for (; t + 4 <= kc; t += 4)
        acc += (int32_t)w[t] * x[t] + (int32_t)w[t + 1] * x[t + 1] + (int32_t)w[t + 2] * x[t + 2] +
               (int32_t)w[t + 3] * x[t + 3];
      for (; t < kc; ++t) acc += (int32_t)w[t] * x[t];
      const drsn_rq_t q = drsn_rq(mult[co], shift[co]);
      o[co] = (int8_t)drsn_clamp(drsn_rq_apply(&q, acc) + zp, lo, hi);
    }
  }
}
#endif

void drsn_dwconv(const drsn_dwconv_t *p, const int8_t *in, int8_t *out) {
  const int m = p->depth_mult, k = p->k, in_w = p->in_w, in_c = p->in_c, out_c = p->out_c;
  const int stride = p->stride, pad = p->pad, out_w = p->out_w;
  const int32_t in_zp = p->in_zp, zp = p->out_zp, lo = p->act_min, hi = p->act_max;
  const int32_t *bias = p->bias, *mult = p->mult;
  const int8_t *shift = p->shift, *w = p->w;
  if (k == 1 && m == 1 && stride == 1 && pad == 0 && out_c <= DRSN_MAX_CHAN) { /* a folded BatchNorm */
    drsn_rq_t q[DRSN_MAX_CHAN];
    for (int oc = 0; oc < out_c; ++oc) q[oc] = drsn_rq(mult[oc], shift[oc]);
    for (int ow = 0; ow < out_w; ++ow, in += in_c, out += out_c)
      for (int oc = 0; oc < out_c; ++oc)
        out[oc] = (int8_t)drsn_clamp(drsn_rq_apply(&q[oc], w[oc] * in[oc] + bias[oc]) + zp, lo, hi);
    return;
  }
  for (int ow = 0; ow < out_w; ++ow) {
    const int start = ow * stride - pad;
    int8_t *o = out + ow * out_c;
    for (int oc = 0; oc < out_c; ++oc) {
      const int ic = oc / m;
      int32_t acc = bias[oc];
      for (int t = 0; t < k; ++t) {
        const int pos = start + t;
        const int32_t x = (pos >= 0 && pos < in_w) ? in[pos * in_c + ic] : in_zp;
        acc += (int32_t)w[t * out_c + oc] * x;
      }
      const drsn_rq_t q = drsn_rq(mult[oc], shift[oc]);
      o[oc] = (int8_t)drsn_clamp(drsn_rq_apply(&q, acc) + zp, lo, hi);
    }
  }
}

void drsn_fc(const drsn_fc_t *p, const int8_t *in, int8_t *out) {
  const int8_t *w = p->w;
  for (int o = 0; o < p->n_out; ++o, w += p->n_in) {
    int32_t acc = p->bias[o];
    for (int i = 0; i < p->n_in; ++i) acc += (int32_t)w[i] * in[i];
    const int q = p->per_channel ? o : 0;
    out[o] = drsn_requant(acc, p->mult[q], p->shift[q], p->out_zp, p->act_min, p->act_max);
  }
}

/* ---- element-wise --------------------------------------------------------------------------- */

static inline int32_t lut8(const int8_t *lut, int8_t v) { return lut ? lut[(uint8_t)v] : v; }

/* The scaled operand of ADD/SUB, MBQM((v + offset) << left_shift), negated for SUB's second operand
 * (TFLM subtracts the scaled values: the same int32 result). */
static void side_table(int32_t *t, const int8_t *lut, int32_t off, int32_t ls, const drsn_rq_t *q, int32_t sign) {
  for (int v = -128; v < 128; ++v)
    t[(uint8_t)v] = sign * drsn_rq_apply(q, (int32_t)((uint32_t)(lut8(lut, (int8_t)v) + off) << ls));
}

void drsn_addsub(const drsn_addsub_t *p, const int8_t *a, const int8_t *b, int8_t *out, int32_t *tables) {
  const int32_t ls = p->left_shift, n = p->n, chan = p->chan, bcast = p->bcast, sign = p->sign;
  const int32_t a_off = p->a_off, b_off = p->b_off, zp = p->out_zp, lo = p->act_min, hi = p->act_max;
  const drsn_rq_t qa = drsn_rq(p->a_mult, p->a_shift), qb = drsn_rq(p->b_mult, p->b_shift);
  const drsn_rq_t qo = drsn_rq(p->out_mult, p->out_shift);
  const int8_t *a_lut = p->a_lut, *b_lut = p->b_lut;
  const int a_small = bcast == DRSN_BC_A_CHAN || bcast == DRSN_BC_A_SCALAR;
  const int b_small = bcast == DRSN_BC_B_CHAN || bcast == DRSN_BC_B_SCALAR;
  int32_t hoisted[DRSN_MAX_CHAN] = {0};
  if (a_small || b_small) {
    const int nc = (bcast == DRSN_BC_A_CHAN || bcast == DRSN_BC_B_CHAN) ? chan : 1;
    for (int c = 0; c < nc; ++c) {
      const int32_t v = a_small ? lut8(a_lut, a[c]) + a_off : lut8(b_lut, b[c]) + b_off;
      const int32_t sv = drsn_rq_apply(a_small ? &qa : &qb, (int32_t)((uint32_t)v << ls));
      hoisted[c] = a_small ? sv : sign * sv;
    }
    for (int c = nc; c < chan; ++c) hoisted[c] = hoisted[0];
  }
  if (tables) { /* one table lookup per full-size operand, one multiplier per output value */
    int32_t *ta = tables, *tb = tables + 256;
    if (!a_small) side_table(ta, a_lut, a_off, ls, &qa, 1);
    if (!b_small) side_table(tb, b_lut, b_off, ls, &qb, sign);
    /* TFLM checks that the output multiplier is below one: a right shift only */
    const int32_t om = qo.m, right = qo.right, mask = qo.mask, half = qo.half;
#define DRSN_ADDSUB_OUT(raw)                                                                       \
  do {                                                                                             \
    const int32_t h_ = (int32_t)(((int64_t)(raw) * om + ((int64_t)1 << 30)) >> 31);               \
    const int32_t r_ = (h_ >> right) + ((h_ & mask) > (half - (h_ >> 31)) ? 1 : 0) + zp;            \
    out[i] = (int8_t)(r_ < lo ? lo : (r_ > hi ? hi : r_));                                         \
  } while (0)
    if (qo.left == 0 && !a_small && !b_small) {
      const uint8_t *ua = (const uint8_t *)a, *ub = (const uint8_t *)b;
      for (int32_t i = 0; i < n; ++i) DRSN_ADDSUB_OUT(ta[ua[i]] + tb[ub[i]]);
      return;
    }
    if (qo.left == 0) {
      const uint8_t *full = (const uint8_t *)(a_small ? b : a);
      const int32_t *t = a_small ? tb : ta;
      for (int32_t i0 = 0; i0 < n; i0 += chan)
        for (int32_t c = 0, i = i0; c < chan; ++c, ++i) DRSN_ADDSUB_OUT(t[full[i]] + hoisted[c]);
      return;
    }
#undef DRSN_ADDSUB_OUT
  }
  for (int32_t i = 0; i < n; i += chan)
    for (int32_t c = 0; c < chan; ++c) {
      const int32_t sa = a_small ? hoisted[c]
                                 : drsn_rq_apply(&qa, (int32_t)((uint32_t)(lut8(a_lut, a[i + c]) + a_off) << ls));
      const int32_t sb = b_small ? hoisted[c]
                                 : sign * drsn_rq_apply(&qb, (int32_t)((uint32_t)(lut8(b_lut, b[i + c]) + b_off) << ls));
      out[i + c] = (int8_t)drsn_clamp(drsn_rq_apply(&qo, sa + sb) + zp, lo, hi);
    }
}

void drsn_mul(const drsn_mul_t *p, const int8_t *a, const int8_t *b, int8_t *out) {
  const int32_t chan = p->chan, n = p->n, bcast = p->bcast, a_off = p->a_off, b_off = p->b_off;
  const int32_t zp = p->out_zp, lo = p->act_min, hi = p->act_max;
  const drsn_rq_t q = drsn_rq(p->mult, p->shift);
  for (int32_t i = 0; i < n; i += chan)
    for (int32_t c = 0; c < chan; ++c) {
      const int32_t ia = (bcast == DRSN_BC_A_CHAN) ? c : (bcast == DRSN_BC_A_SCALAR ? 0 : i + c);
      const int32_t ib = (bcast == DRSN_BC_B_CHAN) ? c : (bcast == DRSN_BC_B_SCALAR ? 0 : i + c);
      const int32_t prod = (a[ia] + a_off) * (b[ib] + b_off);
      out[i + c] = (int8_t)drsn_clamp(drsn_rq_apply(&q, prod) + zp, lo, hi);
    }
}

void drsn_rescale(const drsn_rescale_t *p, const int8_t *in, int8_t *out) {
  const int32_t n = p->n, in_zp = p->in_zp, zp = p->out_zp, lo = p->act_min, hi = p->act_max;
  const drsn_rq_t q = drsn_rq(p->mult, p->shift);
  for (int32_t i = 0; i < n; ++i) out[i] = (int8_t)drsn_clamp(drsn_rq_apply(&q, in[i] - in_zp) + zp, lo, hi);
}

void drsn_lut(const drsn_lut_t *p, const int8_t *in, int8_t *out) {
  for (int i = 0; i < p->n; ++i) out[i] = p->table[(uint8_t)in[i]];
}

/* gemmlowp fixed-point helpers for the logistic function */
static inline int32_t fp_sat_shl(int32_t x, int e) { /* saturating multiply by 2^e, e > 0 */
  const int32_t thr = (int32_t)((1u << (31 - e)) - 1u);
  if (x > thr) return INT32_MAX;
  if (x < -thr) return INT32_MIN;
  return (int32_t)((uint32_t)x << e);
}

static int32_t fp_exp_quarter(int32_t a) { /* exp(a) for a in [-1/4, 0), Q0.31 */
  const int32_t c = 1895147668, third = 715827883;
  const int32_t x = a + (1 << 28);
  const int32_t x2 = drsn_sat_rdh_mul(x, x), x3 = drsn_sat_rdh_mul(x2, x), x4 = drsn_sat_rdh_mul(x2, x2);
  const int32_t x4q = drsn_rdiv_pot(x4, 2);
  const int32_t poly = drsn_rdiv_pot(drsn_sat_rdh_mul(x4q + x3, third) + x2, 1);
  return c + drsn_sat_rdh_mul(c, x + poly);
}

static int32_t fp_exp_neg_q4(int32_t a) { /* exp(a) for a <= 0 given in Q4.27; Q0.31 result */
  static const int32_t mults[6] = {1672461947, 1302514674, 790015084, 290630308, 39332535, 720401};
  const int32_t quarter = 1 << 25;
  const int32_t amq = (a & (quarter - 1)) - quarter;
  int32_t result = fp_exp_quarter(fp_sat_shl(amq, 4));
  const int32_t rem = amq - a;
  for (int e = -2; e <= 3; ++e)
    if (rem & (1 << (27 + e))) result = drsn_sat_rdh_mul(result, mults[e + 2]);
  return a == 0 ? INT32_MAX : result;
}

static int32_t fp_one_over_one_plus(int32_t a) { /* 1/(1+a) for a in (0,1), Q0.31 */
  const int64_t sum = (int64_t)a + INT32_MAX;
  const int32_t half_den = (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
  int32_t x = 1515870810 + drsn_sat_rdh_mul(half_den, -1010580540);
  for (int i = 0; i < 3; ++i) {
    const int32_t hdx = drsn_sat_rdh_mul(half_den, x);
    x = x + fp_sat_shl(drsn_sat_rdh_mul(x, (1 << 29) - hdx), 2);
  }
  return fp_sat_shl(x, 1);
}

int32_t drsn_logistic_q4(int32_t a) {
  if (a == 0) return 1 << 30;
  const int32_t pos = fp_one_over_one_plus(fp_exp_neg_q4(a > 0 ? -a : a));
  return a > 0 ? pos : INT32_MAX - pos;
}

void drsn_logistic(const drsn_logistic_t *p, const int8_t *in, int8_t *out) {
  for (int i = 0; i < p->n; ++i) {
    const int32_t x = in[i] - p->in_zp;
    if (x <= -p->radius) out[i] = -128;
    else if (x >= p->radius) out[i] = 127;
    else {
      const int32_t q0 = drsn_logistic_q4(drsn_mbqm(x, p->mult, p->shift));
      out[i] = (int8_t)drsn_clamp(drsn_rdiv_pot(q0, 23) - 128, -128, 127);
    }
  }
}

/* ---- reductions, pooling, data movement ------------------------------------------------------- */

void drsn_mean(const drsn_mean_t *p, const int8_t *in, int8_t *out, int32_t *acc) {
  const int32_t outer = p->outer, reduce = p->reduce, inner = p->inner, zp = p->out_zp;
  const int32_t zp_sum = p->in_zp * reduce;
  const int8_t *lut = p->lut;
  const drsn_rq_t q = drsn_rq(p->mult, p->shift);
  for (int32_t o = 0; o < outer; ++o) {
    for (int32_t i = 0; i < inner; ++i) acc[i] = 0;
    const int8_t *x = in + o * reduce * inner;
    if (lut)
      for (int32_t r = 0; r < reduce; ++r, x += inner)
        for (int32_t i = 0; i < inner; ++i) acc[i] += lut[(uint8_t)x[i]];
    else
      for (int32_t r = 0; r < reduce; ++r, x += inner)
        for (int32_t i = 0; i < inner; ++i) acc[i] += x[i];
    for (int32_t i = 0; i < inner; ++i)
      out[o * inner + i] = (int8_t)drsn_clamp(drsn_rq_apply(&q, acc[i] - zp_sum) + zp, -128, 127);
  }
}

void drsn_avgpool(const drsn_avgpool_t *p, const int8_t *in, int8_t *out) {
  if (p->k == 1 && p->pad == 0) { /* subsampling: the average of one value is the value */
    for (int ow = 0; ow < p->out_w; ++ow)
      for (int c = 0; c < p->c; ++c)
        out[ow * p->c + c] = (int8_t)drsn_clamp(in[ow * p->stride * p->c + c], p->act_min, p->act_max);
    return;
  }
  for (int ow = 0; ow < p->out_w; ++ow) {
    const int start = ow * p->stride - p->pad;
    const int fs = start < 0 ? -start : 0;
    const int fe = (p->k < p->in_w - start) ? p->k : p->in_w - start;
    const int count = fe - fs;
    for (int c = 0; c < p->c; ++c) {
      int32_t acc = 0;
      for (int t = fs; t < fe; ++t) acc += in[(start + t) * p->c + c];
      acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
      out[ow * p->c + c] = (int8_t)drsn_clamp(acc, p->act_min, p->act_max);
    }
  }
}

void drsn_pad(const drsn_pad_t *p, const int8_t *in, int8_t *out) {
  const int32_t row = p->c;
  memmove(out + p->before * row, in, (size_t)(p->in_w * row));
  memset(out, p->value, (size_t)(p->before * row));
  memset(out + (p->before + p->in_w) * row, p->value, (size_t)(p->after * row));
}

void drsn_copy(int32_t n, const int8_t *in, int8_t *out) {
  if (in != out) memmove(out, in, (size_t)n);
}

void drsn_transpose(const drsn_transpose_t *p, const int8_t *in, int8_t *out) {
  int32_t stride[4], od[4];
  stride[3] = 1;
  for (int d = 2; d >= 0; --d) stride[d] = stride[d + 1] * p->in_dims[d + 1];
  for (int d = 0; d < 4; ++d) od[d] = p->in_dims[p->perm[d]];
  int32_t n = 0;
  for (int i0 = 0; i0 < od[0]; ++i0)
    for (int i1 = 0; i1 < od[1]; ++i1)
      for (int i2 = 0; i2 < od[2]; ++i2)
        for (int i3 = 0; i3 < od[3]; ++i3)
          out[n++] = in[i0 * stride[p->perm[0]] + i1 * stride[p->perm[1]] + i2 * stride[p->perm[2]] +
                        i3 * stride[p->perm[3]]];
}

void drsn_concat(int32_t outer, int32_t n, const int8_t *const *ins, const int32_t *chunks, const int8_t *fills,
                 int8_t *out) {
  for (int32_t o = 0; o < outer; ++o)
    for (int32_t i = 0; i < n; ++i) {
      if (ins[i]) memcpy(out, ins[i] + o * chunks[i], (size_t)chunks[i]);
      else memset(out, fills[i], (size_t)chunks[i]);
      out += chunks[i];
    }
}
