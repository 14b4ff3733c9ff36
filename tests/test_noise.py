"""Additive noise at an exact SNR, its spectral / statistical character, and the CLI parsers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal, stats

from drsn_edge.data.dataset import NOISE_TYPES
from drsn_edge.data.noise import add_noise, measured_snr_db, parse_noise, parse_snr
from drsn_edge.errors import InputError

FS = 12_000.0


def _clean(n=6, length=2048, seed=0):
    """Windows [n, 1, length] with very different powers (so a global scale would not pass)."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / FS
    f0 = rng.uniform(50, 2000, size=(n, 1, 1))
    amp = 10.0 ** rng.uniform(-2, 2, size=(n, 1, 1))
    x = amp * (np.sin(2 * np.pi * f0 * t) + 0.3 * rng.standard_normal((n, 1, length)))
    return x.astype(np.float32)


@pytest.mark.parametrize("kind", NOISE_TYPES)
@pytest.mark.parametrize("snr", [-10.0, -5.0, 0.0, 7.5, 20.0])
def test_scalar_snr_is_exact_per_window(kind, snr):
    x = _clean()
    noisy = add_noise(x, kind, snr, np.random.default_rng(1))
    assert noisy.shape == x.shape
    assert noisy.dtype == np.float32
    got = measured_snr_db(x, noisy)
    assert got.shape == x.shape[:-1]
    np.testing.assert_allclose(got, snr, atol=1e-3)


@pytest.mark.parametrize("kind", NOISE_TYPES)
def test_per_window_snr_array_3d(kind):
    """Dataset windows are [N, 1, L]; per-window SNRs come as [N, 1] (as train.augment passes them)."""
    x = _clean(n=8)
    snr = np.array([-8, -4, -1, 0, 2, 5, 11, 19], dtype=np.float32)[:, None]
    noisy = add_noise(x, kind, snr, np.random.default_rng(2))
    assert noisy.shape == x.shape
    np.testing.assert_allclose(measured_snr_db(x, noisy), snr, atol=1e-3)


@pytest.mark.parametrize("kind", NOISE_TYPES)
def test_per_window_snr_array_2d(kind):
    x = _clean(n=5)[:, 0, :]
    snr = np.array([-6.0, -3.0, 0.0, 3.0, 6.0])
    noisy = add_noise(x, kind, snr, np.random.default_rng(3))
    assert noisy.shape == x.shape
    np.testing.assert_allclose(measured_snr_db(x, noisy), snr, atol=1e-3)


def test_per_window_snr_vector_for_3d_windows():
    """An [N] vector of SNRs for [N, 1, L] windows is one SNR per window (not broadcast to [N, N, L])."""
    x = _clean(n=4)
    snr = np.array([-5.0, 0.0, 5.0, 10.0])
    noisy = add_noise(x, "gaussian", snr, np.random.default_rng(0))
    assert noisy.shape == x.shape
    np.testing.assert_allclose(measured_snr_db(x, noisy)[:, 0], snr, atol=1e-3)


@pytest.mark.parametrize("n_snr", [3, 5, 8])
def test_snr_array_of_wrong_size_is_refused(n_snr):
    with pytest.raises(InputError, match="one SNR per window"):
        add_noise(_clean(n=4), "pink", np.zeros(n_snr), np.random.default_rng(0))


def test_noise_is_seeded_zero_mean_and_differs_between_types():
    x = _clean(n=3)
    a = add_noise(x, "gaussian", 0.0, np.random.default_rng(5))
    b = add_noise(x, "gaussian", 0.0, np.random.default_rng(5))
    c = add_noise(x, "gaussian", 0.0, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    w = a.astype(np.float64) - x
    # the noise is centred per window
    assert np.abs(w.mean(axis=-1)).max() < 1e-4 * np.sqrt((w**2).mean(axis=-1)).min()


def test_unknown_noise_type_is_input_error():
    with pytest.raises(InputError, match="unknown noise type"):
        add_noise(_clean(n=1), "brown", 0.0, np.random.default_rng(0))


def _long_noise(kind, n=1 << 17, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FS
    clean = np.sin(2 * np.pi * 100.0 * t)[None, :].astype(np.float32)
    noisy = add_noise(clean, kind, -30.0, rng)
    return (noisy.astype(np.float64) - clean)[0]


def _psd_slope(w):
    f, p = signal.welch(w, fs=FS, nperseg=4096)
    m = (f >= 50) & (f <= 3000)
    slope, _ = np.polyfit(np.log10(f[m]), np.log10(p[m]), 1)
    return slope


def test_pink_noise_has_one_over_f_power():
    assert _psd_slope(_long_noise("pink")) == pytest.approx(-1.0, abs=0.2)
    # contrast: white noise is flat, so the check above discriminates
    assert _psd_slope(_long_noise("gaussian")) == pytest.approx(0.0, abs=0.2)


def test_laplacian_noise_is_heavy_tailed():
    w = _long_noise("laplacian", n=1 << 18)
    assert stats.kurtosis(w, fisher=True) == pytest.approx(3.0, abs=0.5)
    g = _long_noise("gaussian", n=1 << 18)
    assert stats.kurtosis(g, fisher=True) == pytest.approx(0.0, abs=0.3)


# ---------------------------------------------------------------- parsers


@pytest.mark.parametrize(
    "text, expected",
    [
        ("5", [5.0]),
        ("-5,0,5", [-5.0, 0.0, 5.0]),
        (" -5, 0 ,5 ", [-5.0, 0.0, 5.0]),
        ("-5:5", [float(v) for v in range(-5, 6)]),
        ("-5:5:2", [-5.0, -3.0, -1.0, 1.0, 3.0, 5.0]),
        ("0:1:0.25", [0.0, 0.25, 0.5, 0.75, 1.0]),
        ("-2.5", [-2.5]),
    ],
)
def test_parse_snr(text, expected):
    got = parse_snr(text)
    assert got == pytest.approx(expected)
    assert len(got) == len(expected)


def test_parse_snr_range_has_eleven_values():
    assert len(parse_snr("-5:5")) == 11


@pytest.mark.parametrize("text", ["a", "5:1", "1:2:0", "1:2:-1", "", ",", "1:2:3:4", "1:", "x,1"])
def test_parse_snr_rejects_bad_strings(text):
    with pytest.raises(InputError, match="cannot read SNR"):
        parse_snr(text)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "0:inf", "nan:5", "0,nan", "0:5:inf"])
def test_parse_snr_rejects_non_finite(text):
    with pytest.raises(InputError):
        parse_snr(text)


def test_parse_noise():
    assert parse_noise("all") == list(NOISE_TYPES) == ["gaussian", "laplacian", "pink"]
    assert parse_noise("none") == []
    assert parse_noise("") == []
    assert parse_noise("Gaussian, pink") == ["gaussian", "pink"]
    assert parse_noise("laplacian") == ["laplacian"]


@pytest.mark.parametrize("text", ["brown", "gaussian,white", "all,pink"])
def test_parse_noise_rejects_unknown(text):
    with pytest.raises(InputError, match="unknown noise type"):
        parse_noise(text)
