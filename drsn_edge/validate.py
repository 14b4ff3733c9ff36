"""Numbers checked at the boundary, one function per kind of value: finite and within range, so that
NaN, ±inf and absurd sizes are refused with one line before any work starts."""

from __future__ import annotations

import math

from .errors import InputError


def finite(name: str, value, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> float:
    """A finite real number in [lo, hi] (or (lo, hi] with lo_open)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise InputError(f"{name} must be {'>' if lo_open else '≥'} {lo:g}, got {v:g}")
    if hi is not None and v > hi:
        raise InputError(f"{name} must be ≤ {hi:g}, got {v:g}")
    return v


def count(name: str, value, lo: int = 0, hi: int | None = None) -> int:
    """A whole number in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise InputError(f"{name} must be a whole number, got {value!r}") from None
        if not math.isfinite(f) or f != int(f):
            raise InputError(f"{name} must be a whole number, got {value!r}")
        value = int(f)
    if value < lo:
        raise InputError(f"{name} must be ≥ {lo}, got {value}")
    if hi is not None and value > hi:
        raise InputError(f"{name} must be ≤ {hi}, got {value}")
    return value
