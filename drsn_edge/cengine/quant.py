"""TFLite Micro's Prepare()-time integer parameters, recomputed in Python with the same float
arithmetic (scales are float32 in the flatbuffer and widened to double where TFLM widens them), and
a Python model of the runtime integer rules for build-time tables."""

from __future__ import annotations

import math

import numpy as np

# Whether the ADD/SUB multipliers are derived in float32 (some tflite-micro sources divide the
# scales in float before widening) or in double. Probed against the tflite-micro wheel with scales
# where the two differ (tests/cengine/test_ops.py): double for both.
ADDSUB_FLOAT32 = {"ADD": False, "SUB": False}


def tfl_round(v: float) -> float:
    """std::round: halves away from zero."""
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


def quantize_multiplier(d: float, single_rounding: bool = False) -> tuple[int, int]:
    """QuantizeMultiplier(double) -> (int32 multiplier, shift)."""
    if d == 0.0:
        return 0, 0
    q, shift = math.frexp(d)
    q_fixed = int(tfl_round(q * (1 << 31)))
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if single_rounding and shift > 30:
        return (1 << 31) - 1, 30
    return q_fixed, shift


def f32(x) -> float:
    return float(np.float32(x))


def activation_range(act: int, scale: float, zp: int) -> tuple[int, int]:
    """CalculateActivationRangeQuantized for int8 outputs (0 none, 1 relu, 2 relu_n1_to_1, 3 relu6)."""
    def q(f):
        return zp + int(tfl_round(f32(np.float32(f) / np.float32(scale))))
    if act == 0:
        return -128, 127
    if act == 1:
        return max(-128, q(0.0)), 127
    if act == 2:
        return max(-128, q(-1.0)), min(127, q(1.0))
    if act == 3:
        return max(-128, q(0.0)), min(127, q(6.0))
    raise ValueError(act)


def conv_multipliers(s_in: float, w_scales: np.ndarray, s_out: float, n: int, single: bool):
    scales = np.broadcast_to(np.asarray(w_scales, np.float32), (n,))
    pairs = [quantize_multiplier(s_in * float(s) / s_out, single) for s in scales]
    return np.array([m for m, _ in pairs], np.int64), np.array([s for _, s in pairs], np.int64)


def fc_tensor_multiplier(s_in: float, s_w: float, s_out: float, single: bool):
    """Per-tensor FULLY_CONNECTED: the scale product is taken in float32, then widened."""
    return quantize_multiplier(f32(np.float32(s_in) * np.float32(s_w)) / s_out, single)


def addsub_params(s1: float, s2: float, so: float, use_float32: bool, single: bool) -> dict:
    left = 20
    if use_float32:
        twice = np.float32(2) * max(np.float32(s1), np.float32(s2))
        r1 = f32(np.float32(s1) / twice)
        r2 = f32(np.float32(s2) / twice)
        ro = f32(twice / (np.float32(1 << left) * np.float32(so)))
    else:
        twice = 2 * max(s1, s2)
        r1, r2, ro = s1 / twice, s2 / twice, twice / ((1 << left) * so)
    m1, sh1 = quantize_multiplier(r1, single)
    m2, sh2 = quantize_multiplier(r2, single)
    mo, sho = quantize_multiplier(ro, single)
    return {"left_shift": left, "a_mult": m1, "a_shift": sh1, "b_mult": m2, "b_shift": sh2,
            "out_mult": mo, "out_shift": sho}


def mean_multiplier(s_in: float, s_out: float, count: int, single: bool) -> tuple[int, int]:
    """MEAN's multiplier with the 1/count folded in the way the reference QuantizedMeanOrSum does."""
    mult, shift = quantize_multiplier(s_in / s_out, single)
    k = min(count.bit_length() - 1, 32, 31 + shift)
    return int((mult << k) // count), shift - k


def logistic_params(s_in: float) -> tuple[int, int, int]:
    """(input multiplier, left shift, input range radius) of the int8 LOGISTIC kernel."""
    q, shift = math.frexp(s_in * float(1 << 27))
    mult = int(tfl_round(q * (1 << 31)))
    if mult >= 1 << 31 or shift < 0 or shift > 30:
        raise ValueError("logistic input scale out of range")
    radius = math.floor(1.0 * 15 * (1 << 27) / (1 << shift))
    return mult, shift, radius


# ---- runtime integer rules in Python (exact integers), for tables computed at build time ----------

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def _wrap32(v: int) -> int:
    return (v + (1 << 31)) % (1 << 32) - (1 << 31)


def sat_rdh_mul(a: int, b: int) -> int:
    if a == b == INT32_MIN:
        return INT32_MAX
    v = a * b + ((1 << 30) if a * b >= 0 else 1 - (1 << 30))
    return v >> 31 if v >= 0 else -((-v) >> 31)  # truncating division by 2^31


def rdiv_pot(x: int, e: int) -> int:
    mask = (1 << e) - 1
    rem = x & mask
    thr = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if rem > thr else 0)


def mbqm(x: int, m: int, shift: int, single: bool) -> int:
    if single:
        total = 31 - shift
        return (x * m + (1 << (total - 1))) >> total
    left, right = (shift, 0) if shift > 0 else (0, -shift)
    return rdiv_pot(sat_rdh_mul(_wrap32(x << left), m), right)


def clamp(v: int, lo: int, hi: int) -> int:
    return lo if v < lo else min(v, hi)


def rescale_table(t: np.ndarray, p: dict, single: bool) -> np.ndarray:
    """RELU / QUANTIZE applied to int8 values (drsn_rescale)."""
    return np.array([clamp(p["out_zp"] + mbqm(int(v) - p["in_zp"], p["mult"], p["shift"], single),
                           p["act_min"], p["act_max"]) for v in t], np.int8)


def mul_table(ta: np.ndarray, tb: np.ndarray, p: dict, single: bool) -> np.ndarray:
    return np.array([clamp(p["out_zp"] + mbqm((int(a) + p["a_off"]) * (int(b) + p["b_off"]), p["mult"], p["shift"],
                                               single), p["act_min"], p["act_max"]) for a, b in zip(ta, tb)], np.int8)


def addsub_table(ta: np.ndarray, tb: np.ndarray, p: dict, single: bool) -> np.ndarray:
    ls = p["left_shift"]

    def side(v, off, m, s):
        return mbqm(_wrap32((int(v) + off) << ls), m, s, single)

    out = []
    for a, b in zip(ta, tb):
        sa = side(a, p["a_off"], p["a_mult"], p["a_shift"])
        sb = side(b, p["b_off"], p["b_mult"], p["b_shift"])
        raw = sa + sb if p["sign"] > 0 else sa - sb
        out.append(clamp(mbqm(raw, p["out_mult"], p["out_shift"], single) + p["out_zp"], p["act_min"], p["act_max"]))
    return np.array(out, np.int8)


IDENTITY = np.arange(256).astype(np.uint8).view(np.int8)   # table[(uint8)v] == v
