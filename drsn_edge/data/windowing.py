"""Signal helpers shared by the importers: rational resampling and fixed-length windowing."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from scipy.signal import resample_poly

MAX_DENOMINATOR = 1000


def resample_ratio(src_fs: float, dst_fs: float) -> tuple[int, int]:
    """(up, down) with up/down ≈ dst_fs/src_fs; (1, 1) when the rates already match."""
    if np.isclose(src_fs, dst_fs, rtol=1e-9, atol=0.0):
        return 1, 1
    ratio = Fraction(float(dst_fs) / float(src_fs)).limit_denominator(MAX_DENOMINATOR)
    if ratio.numerator == 0:
        ratio = Fraction(1, MAX_DENOMINATOR)
    return ratio.numerator, ratio.denominator


def resample(sig: np.ndarray, src_fs: float, dst_fs: float) -> tuple[np.ndarray, int, int]:
    """Resample a 1-D signal from src_fs to (about) dst_fs; returns (signal, up, down)."""
    up, down = resample_ratio(src_fs, dst_fs)
    if up == down:
        return np.asarray(sig, dtype=np.float64), 1, 1
    return resample_poly(np.asarray(sig, dtype=np.float64), up, down), up, down


def n_windows(length: int, window: int, hop: int) -> int:
    """How many whole windows of `window` points, `hop` apart, fit in `length` points."""
    if length < window:
        return 0
    return (length - window) // hop + 1


def window_signal(sig: np.ndarray, window: int, hop: int) -> np.ndarray:
    """Cut consecutive windows (float32 [n, 1, window]); the remainder after the last window is dropped."""
    sig = np.asarray(sig)
    n = n_windows(sig.shape[0], window, hop)
    if n == 0:
        return np.empty((0, 1, window), dtype=np.float32)
    view = np.lib.stride_tricks.sliding_window_view(sig, window)[::hop][:n]
    return np.ascontiguousarray(view, dtype=np.float32)[:, None, :]
