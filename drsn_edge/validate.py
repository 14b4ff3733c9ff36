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


def fraction_list(name: str, text, n: int | None = None, total: float | None = None) -> tuple[float, ...]:
    """Comma-separated finite fractions in [0, 1] (exactly `n` of them; summing to `total` when given)."""
    parts = [p.strip() for p in str(text).split(",")]
    if n is not None and len(parts) != n:
        raise InputError(f"{name} takes {({2: 'two', 3: 'three'}).get(n, n)} fractions like 0.7,0.15,0.15, got {text!r}")
    vals = tuple(finite(name, p, 0.0, 1.0) for p in parts)
    if total is not None and abs(sum(vals) - total) > 1e-6:
        raise InputError(f"{name} fractions must add up to {total:g}, got {sum(vals):g}")
    return vals


# Click parameter types: bad numbers are refused while the command line is parsed, with one line that
# names the option ("--lr must be a finite number, got 'nan'"), before any file is read or any work starts.
def _click_type(convert, type_name: str, describe: str):
    import click

    class _Checked(click.ParamType):
        name = type_name

        def convert(self, value, param, ctx):
            flag = max(param.opts, key=len) if param is not None and param.opts else "value"
            try:
                return convert(flag, value)
            except InputError as exc:
                raise click.UsageError(str(exc), ctx) from None

        def get_metavar(self, param, ctx=None):
            return type_name.upper()

        def __repr__(self):
            return describe

    return _Checked()


def Real(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False):
    """A Click type for a finite real number in [lo, hi] (or (lo, hi])."""
    span = f"{'(' if lo_open else '['}{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]"
    t = _click_type(lambda flag, v: finite(flag, v, lo, hi, lo_open=lo_open), "float", f"finite number in {span}")
    t.lo, t.hi, t.lo_open = lo, hi, lo_open
    return t


def Count(lo: int = 0, hi: int | None = None):
    """A Click type for a whole number in [lo, hi]."""
    t = _click_type(lambda flag, v: count(flag, v, lo, hi), "integer", f"whole number in [{lo}, {hi}]")
    t.lo, t.hi = lo, hi
    return t


def Fractions(n: int, total: float | None = None):
    """A Click type for `n` comma-separated fractions (e.g. --split 0.7,0.15,0.15)."""
    return _click_type(lambda flag, v: fraction_list(flag, v, n, total), "fractions",
                       f"{n} comma-separated fractions" + (f" adding up to {total:g}" if total else ""))


def snr_range(name: str, text) -> tuple[float, float]:
    """lo:hi in dB (finite, within ±100 dB, lo ≤ hi)."""
    parts = str(text).split(":")
    if len(parts) != 2:
        raise InputError(f"{name} takes lo:hi in dB such as -5:5, got {text!r}")
    lo, hi = (finite(name, p, -100.0, 100.0) for p in parts)
    if lo > hi:
        raise InputError(f"{name} {text!r} is empty: lo must not exceed hi")
    return lo, hi


def SnrRange():
    """A Click type for an SNR range lo:hi in dB (e.g. --snr-range -5:5)."""
    return _click_type(snr_range, "lo:hi", "SNR range lo:hi in dB")


SEED = Count(0, 2**32 - 1)  # numpy and torch seeds
