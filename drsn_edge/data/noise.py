"""Additive noise at an exact SNR: white Gaussian, Laplacian and pink (1/f power)."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .dataset import NOISE_TYPES, Dataset, concat


def _unit_noise(kind: str, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    if kind == "gaussian":
        return rng.standard_normal(shape)
    if kind == "laplacian":
        return rng.laplace(0.0, 1.0, shape)
    if kind == "pink":
        white = rng.standard_normal(shape)
        spec = np.fft.rfft(white, axis=-1)
        f = np.arange(spec.shape[-1], dtype=np.float64)
        scale = np.zeros_like(f)
        scale[1:] = 1.0 / np.sqrt(f[1:])  # power ~ 1/f; DC dropped
        return np.fft.irfft(spec * scale, n=shape[-1], axis=-1)
    raise InputError(f"unknown noise type '{kind}'; use one of {', '.join(NOISE_TYPES)}")


def add_noise(x: np.ndarray, kind: str, snr_db, rng: np.random.Generator) -> np.ndarray:
    """Return x + w where, per window (last axis), 10·log10(mean(x²)/mean(w²)) == snr_db exactly.

    `snr_db` is a scalar or an array broadcastable to x.shape[:-1].
    """
    x = np.asarray(x, dtype=np.float64)
    w = _unit_noise(kind, x.shape, rng)
    w = w - w.mean(axis=-1, keepdims=True)
    ps = np.mean(x * x, axis=-1, keepdims=True)
    pw = np.mean(w * w, axis=-1, keepdims=True)
    snr = np.asarray(snr_db, dtype=np.float64)
    if snr.ndim:
        if snr.size != int(np.prod(x.shape[:-1])):
            raise InputError(f"one SNR per window expected ({int(np.prod(x.shape[:-1]))}), got {snr.size}")
        snr = snr.reshape(x.shape[:-1] + (1,))
    w = w * np.sqrt(ps / (10.0 ** (snr / 10.0) * pw))
    return (x + w).astype(np.float32)


def measured_snr_db(clean: np.ndarray, noisy: np.ndarray) -> np.ndarray:
    clean = np.asarray(clean, dtype=np.float64)
    w = np.asarray(noisy, dtype=np.float64) - clean
    return 10.0 * np.log10(np.mean(clean**2, axis=-1) / np.mean(w**2, axis=-1))


MAX_SNRS = 1000
MAX_SNR_DB = 100.0


def _in_range(text: str, vals: list[float]) -> list[float]:
    if any(abs(v) > MAX_SNR_DB for v in vals):
        raise InputError(f"SNR '{text}' is outside ±{MAX_SNR_DB:g} dB (noise that strong or weak is not an SNR)")
    return vals


def parse_snr(text: str) -> list[float]:
    """'5' → [5]; '-5,0,5' → list; '-5:5' → -5..5 step 1; '-5:5:2' → with step 2 (ends included)."""
    text = str(text).strip()
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            if not all(np.isfinite(parts)):
                raise ValueError
            lo, hi = parts[0], parts[1]
            step = parts[2] if len(parts) == 3 else 1.0
            if step <= 0 or hi < lo:
                raise ValueError
            _in_range(text, [lo, hi])
            n = int(np.floor((hi - lo) / step + 1e-9)) + 1
            if n > MAX_SNRS:
                raise InputError(f"SNR range '{text}' has {n:,} values (limit {MAX_SNRS}); use a larger step")
            return [round(lo + i * step, 6) for i in range(n)]
        vals = [float(p) for p in text.split(",") if p.strip()]
        if not vals or not all(np.isfinite(vals)):
            raise ValueError
        if len(vals) > MAX_SNRS:
            raise InputError(f"{len(vals):,} SNR values (limit {MAX_SNRS})")
        return _in_range(text, vals)
    except ValueError:
        raise InputError(
            f"cannot read SNR '{text}'; give a value (0), a list (-5,0,5) or a range lo:hi[:step] (-5:5)"
        ) from None


def parse_noise(text: str) -> list[str]:
    """'gaussian,pink' → list; 'all' → the three types; 'none' → []."""
    text = str(text).strip().lower()
    if text in ("", "none"):
        return []
    if text == "all":
        return list(NOISE_TYPES)
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in kinds if k not in NOISE_TYPES]
    if bad:
        raise InputError(f"unknown noise type(s) {bad}; use {', '.join(NOISE_TYPES)} or 'all'")
    return kinds


def noise_sweep(ds: Dataset, kinds: list[str], snrs: list[float], seed: int = 0,
                include_clean: bool = True) -> Dataset:
    """Replicate every window once clean and once per (noise type, SNR) cell, with seeded noise."""
    from ..limits import check_alloc, windows_bytes

    cells = int(include_clean) + len(kinds) * len(snrs)
    check_alloc(f"a noise sweep of {len(ds):,} windows × {cells} cells", windows_bytes(len(ds) * cells, ds.window),
                "use fewer windows, noise types or SNRs")
    parts = []
    if include_clean:
        parts.append(ds)
    rng = np.random.default_rng(seed)
    for kind in kinds:
        for snr in snrs:
            noisy = ds.subset(np.arange(len(ds)))
            noisy.x = add_noise(ds.x, kind, snr, rng)
            noisy.noise = np.full(len(ds), kind)
            noisy.snr_db = np.full(len(ds), snr, dtype=np.float32)
            parts.append(noisy)
    if not parts:
        raise InputError("nothing to evaluate: no clean windows and no noise cells")
    return concat(parts)


def assign_noise(ds: Dataset, kinds: list[str], snrs: list[float], seed: int = 0) -> Dataset:
    """Give every window one (noise type, SNR) cell, balanced over the grid and shuffled."""
    if not kinds or not snrs:
        raise InputError("assigning noise needs at least one noise type and one SNR")
    rng = np.random.default_rng(seed)
    cells = [(k, s) for k in kinds for s in snrs]
    pick = rng.permutation(np.arange(len(ds)) % len(cells))
    out = ds.subset(np.arange(len(ds)))
    for ci, (kind, snr) in enumerate(cells):
        m = pick == ci
        if m.any():
            out.x[m] = add_noise(ds.x[m], kind, snr, rng)
            out.noise[m] = kind
            out.snr_db[m] = snr
    return out
