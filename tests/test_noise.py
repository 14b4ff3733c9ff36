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


# ---------------------------------------------------------------- assigning and sweeping a dataset

from drsn_edge.data.dataset import Dataset  # noqa: E402
from drsn_edge.data.noise import assign_noise, noise_sweep  # noqa: E402


def _ds(n=18, length=2048):
    x = _clean(n=n, length=length, seed=4)
    return Dataset(x=x, y=np.arange(n) % 3, class_names=["a", "b", "c"], fs=FS, window=length,
                   noise=np.full(n, "none"), snr_db=np.full(n, np.nan), recording=[f"r{i}" for i in range(n)],
                   split=np.full(n, "test"))


def _kind_of(w):
    """Tell the three noise types apart from one 2048-point noise window.

    pink: power below fs/8 is ~log(L/8)/log(4) = 4× the power above (white noise: 1/3×);
    laplacian: excess kurtosis 3 (Gaussian 0; its standard error at 2048 points is about 0.1)."""
    p = np.abs(np.fft.rfft(w)) ** 2
    k = len(p) // 4
    if p[1:k].sum() > p[k:].sum():
        return "pink"
    return "laplacian" if stats.kurtosis(w) > 1.5 else "gaussian"


# Measured SNR vs its label: float32 storage of x + w changes each sample by ≤ 2^-24 relative, which moves
# the SNR by far less than 1e-3 dB at these levels; a window noised at another grid SNR is ≥ 5 dB off.
SNR_ATOL_DB = 1e-3


def test_assign_gives_each_window_the_snr_and_kind_of_its_label():
    ds = _ds()
    out = assign_noise(ds, ["gaussian", "laplacian", "pink"], [-5.0, 0.0, 5.0], seed=3)
    np.testing.assert_array_equal(out.y, ds.y)
    got = measured_snr_db(ds.x[:, 0], out.x[:, 0])
    np.testing.assert_allclose(got, out.snr_db, atol=SNR_ATOL_DB)
    w = out.x[:, 0].astype(np.float64) - ds.x[:, 0]
    assert [_kind_of(v) for v in w] == out.noise.tolist()


def test_assign_is_balanced_over_the_grid_shuffled_and_seeded():
    ds = _ds()
    kinds, snrs = ["gaussian", "pink"], [-5.0, 0.0, 5.0]
    out = assign_noise(ds, kinds, snrs, seed=0)
    cells = list(zip(out.noise.tolist(), out.snr_db.tolist()))
    assert {c: cells.count(c) for c in set(cells)} == {(k, s): 3 for k in kinds for s in snrs}  # 18 / 6 cells
    grid_order = [(k, s) for k in kinds for s in snrs] * 3
    assert cells != grid_order  # shuffled, not dealt in grid order
    again = assign_noise(ds, kinds, snrs, seed=0)
    np.testing.assert_array_equal(again.x, out.x)
    other = assign_noise(ds, kinds, snrs, seed=1)
    assert list(zip(other.noise.tolist(), other.snr_db.tolist())) != cells
    assert (ds.noise == "none").all() and np.isnan(ds.snr_db).all()  # the input is left alone


def test_assign_with_more_cells_than_windows_uses_distinct_cells():
    ds = _ds(n=4)
    out = assign_noise(ds, ["gaussian", "laplacian", "pink"], [-5.0, 5.0], seed=2)
    cells = list(zip(out.noise.tolist(), out.snr_db.tolist()))
    assert len(set(cells)) == 4
    np.testing.assert_allclose(measured_snr_db(ds.x[:, 0], out.x[:, 0]), out.snr_db, atol=SNR_ATOL_DB)


@pytest.mark.parametrize("kinds,snrs", [([], [0.0]), (["gaussian"], [])])
def test_assign_needs_a_grid(kinds, snrs):
    with pytest.raises(InputError, match="at least one noise type and one SNR"):
        assign_noise(_ds(n=3), kinds, snrs)


def test_sweep_replicates_every_window_in_every_cell():
    ds = _ds(n=4)
    out = noise_sweep(ds, ["laplacian", "pink"], [-5.0, 5.0], seed=1)
    assert len(out) == 4 * (1 + 2 * 2)
    np.testing.assert_array_equal(out.x[:4], ds.x)  # the clean copy first
    assert out.noise[:4].tolist() == ["none"] * 4 and np.isnan(out.snr_db[:4]).all()
    for j, (kind, snr) in enumerate([(k, s) for k in ["laplacian", "pink"] for s in [-5.0, 5.0]]):
        part = slice(4 * (j + 1), 4 * (j + 2))
        assert out.noise[part].tolist() == [kind] * 4 and out.snr_db[part].tolist() == [snr] * 4
        np.testing.assert_array_equal(out.y[part], ds.y)
        np.testing.assert_allclose(measured_snr_db(ds.x[:, 0], out.x[part, 0]), snr, atol=SNR_ATOL_DB)
        assert [_kind_of(v) for v in out.x[part, 0].astype(np.float64) - ds.x[:, 0]] == [kind] * 4
    no_clean = noise_sweep(ds, ["gaussian"], [0.0], include_clean=False)
    assert len(no_clean) == 4 and (no_clean.noise == "gaussian").all()
    with pytest.raises(InputError, match="nothing to evaluate"):
        noise_sweep(ds, [], [0.0], include_clean=False)


def test_sweep_and_assign_are_seeded_with_0_by_default():
    ds = _ds(n=4)
    np.testing.assert_array_equal(noise_sweep(ds, ["gaussian"], [0.0]).x, noise_sweep(ds, ["gaussian"], [0.0], seed=0).x)
    np.testing.assert_array_equal(noise_sweep(ds, ["gaussian"], [0.0], seed=9).x,
                                  noise_sweep(ds, ["gaussian"], [0.0], seed=9).x)  # the same draw every time
    np.testing.assert_array_equal(assign_noise(ds, ["pink"], [5.0]).x, assign_noise(ds, ["pink"], [5.0], seed=0).x)
    assert not np.array_equal(noise_sweep(ds, ["gaussian"], [0.0], seed=1).x, noise_sweep(ds, ["gaussian"], [0.0]).x)


def test_grid_errors_are_worded_exactly():
    with pytest.raises(InputError) as ei:
        assign_noise(_ds(n=3), [], [0.0])
    assert str(ei.value) == "assigning noise needs at least one noise type and one SNR"
    with pytest.raises(InputError) as ei:
        noise_sweep(_ds(n=3), ["pink"], [], include_clean=False)
    assert str(ei.value) == "nothing to evaluate: no clean windows and no noise cells"


def test_sweep_memory_is_checked_for_every_cell_before_allocating(monkeypatch):
    """4 windows × (clean + 2 types × 2 SNRs) = 20 windows of 2048 float32 samples, 3 working copies:
    491 520 bytes. A budget 1 kB under that refuses the sweep, one 80 bytes over it allows it."""
    ds = _ds(n=4)
    monkeypatch.setenv("DRSN_EDGE_MAX_MEMORY_MB", "0.49")
    with pytest.raises(InputError) as ei:
        noise_sweep(ds, ["gaussian", "pink"], [-5.0, 5.0])
    assert str(ei.value) == ("a noise sweep of 4 windows × 5 cells would need 491.5 kB of memory, more than the "
                             "490.0 kB allowed (half the available memory, or DRSN_EDGE_MAX_MEMORY_MB); use fewer "
                             "windows, noise types or SNRs")
    monkeypatch.setenv("DRSN_EDGE_MAX_MEMORY_MB", "0.4916")
    assert len(noise_sweep(ds, ["gaussian", "pink"], [-5.0, 5.0])) == 20


def test_gaussian_noise_is_added_as_drawn_and_scaled():
    """x + w with w the generator's standard normal draw, centred per window and scaled to the SNR: the
    documented recipe, recomputed in float64 (the result is float32: one rounding, ≤ 2^-24 relative)."""
    x = _clean(n=3, length=256)
    got = add_noise(x, "gaussian", 3.0, np.random.default_rng(11))
    w = np.random.default_rng(11).standard_normal(x.shape)
    w -= w.mean(axis=-1, keepdims=True)
    xs = x.astype(np.float64)
    w *= np.sqrt((xs**2).mean(axis=-1, keepdims=True) / (10 ** 0.3 * (w**2).mean(axis=-1, keepdims=True)))
    np.testing.assert_allclose(got, xs + w, rtol=2 ** -23, atol=0)


def test_windows_of_any_amplitude_float32_can_hold_get_noise_at_the_exact_snr():
    """Samples of 1e20 (their squares overflow float32): powers are taken in float64, so the noise is finite
    and the SNR exact, measured in float64 too."""
    x = (_clean(n=2, length=512).astype(np.float64) * 1e20).astype(np.float32)
    noisy = add_noise(x, "laplacian", 6.0, np.random.default_rng(2))
    assert np.isfinite(noisy).all()
    np.testing.assert_allclose(measured_snr_db(x, noisy), 6.0, atol=SNR_ATOL_DB)


def test_one_snr_per_window_of_a_multichannel_array():
    """[2, 3, L]: six windows, six SNRs (the leading axes, not the first one alone)."""
    x = _clean(n=6, length=256).reshape(2, 3, 256)
    snr = np.arange(6.0).reshape(2, 3)
    noisy = add_noise(x, "gaussian", snr.ravel(), np.random.default_rng(0))
    np.testing.assert_allclose(measured_snr_db(x, noisy), snr, atol=SNR_ATOL_DB)
    with pytest.raises(InputError) as ei:
        add_noise(x, "gaussian", np.zeros(2), np.random.default_rng(0))
    assert str(ei.value) == "one SNR per window expected (6), got 2"
