"""The CWRU-like bearing simulator: determinism, layout, splits, bearing kinematics and fault physics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import butter, hilbert, sosfiltfilt

from drsn_edge.data import simulator as sim
from drsn_edge.data.simulator import (
    CLASS_NAMES,
    CONDITIONS,
    FS,
    WINDOW,
    _draw_params,
    bearing_orders,
    simulate_recording,
    synthesize,
)
from drsn_edge.errors import InputError

CWRU = ["normal", "IR007", "IR014", "IR021", "B007", "B014", "B021", "OR007", "OR014", "OR021"]


@pytest.fixture(scope="module")
def small():
    return synthesize(windows_per_class=10, recordings_per_class=5, seed=3)


# ---------------------------------------------------------------- determinism and layout


def test_same_seed_identical_other_seed_different(small):
    again = synthesize(windows_per_class=10, recordings_per_class=5, seed=3)
    for name in ("x", "y", "recording", "split", "noise"):
        np.testing.assert_array_equal(getattr(small, name), getattr(again, name), err_msg=name)
    other = synthesize(windows_per_class=10, recordings_per_class=5, seed=4)
    assert other.x.shape == small.x.shape
    assert not np.allclose(other.x, small.x)
    assert np.abs(other.x - small.x).mean() > 0.01


def test_ten_cwru_classes_windows_of_2048_at_12k(small):
    assert list(CLASS_NAMES) == CWRU
    assert small.class_names == CWRU
    assert FS == 12_000.0 and WINDOW == 2048
    assert small.fs == 12_000.0 and small.window == 2048
    assert small.x.shape == (100, 1, 2048) and small.x.dtype == np.float32
    assert np.bincount(small.y, minlength=10).tolist() == [10] * 10
    assert np.isfinite(small.x).all()
    assert set(small.noise) == {"none"} and np.isnan(small.snr_db).all()
    assert small.source == "simulator"
    assert small.params["seed"] == 3 and small.params["windows_per_class"] == 10
    assert small.params["recordings_per_class"] == 5
    assert len(np.unique(small.recording)) == 50
    # a recording's windows are consecutive pieces of one signal, labelled with one class
    for rec in np.unique(small.recording):
        idx = np.flatnonzero(small.recording == rec)
        assert idx.tolist() == list(range(idx[0], idx[0] + 2))
        assert len(set(small.y[idx])) == 1 and len(set(small.split[idx])) == 1


def test_class_subset_keeps_given_order():
    ds = synthesize(windows_per_class=3, recordings_per_class=3, classes=["OR021", "normal"], seed=0, window=256)
    assert ds.class_names == ["OR021", "normal"]
    assert ds.x.shape == (6, 1, 256)
    assert ds.y.tolist() == [0, 0, 0, 1, 1, 1]
    # label 0 is the outer-race fault: it carries strong periodic impacts, normal does not
    assert ds.x[ds.y == 0].std() > ds.x[ds.y == 1].std()


def test_splits_by_recording_and_every_split_has_every_class():
    ds = synthesize(windows_per_class=10, recordings_per_class=5, seed=1, window=256)
    owner = {}
    for rec, sp in zip(ds.recording, ds.split):
        assert owner.setdefault(rec, sp) == sp, f"recording {rec} in two splits"
    assert len(owner) == 50
    for sp in ("train", "val", "test"):
        m = ds.split == sp
        assert set(ds.y[m].tolist()) == set(range(10)), sp
    # 5 recordings, 70/15/15 → 3 / 1 / 1 recordings per class, 2 windows each
    c = ds.counts()
    assert c["train"]["per_class"] == [6] * 10
    assert c["val"]["per_class"] == [2] * 10 and c["test"]["per_class"] == [2] * 10
    assert c["val"]["recordings"] == 10


@pytest.mark.parametrize("n", [3, 4, 5, 10, 20, 100, 101])
@pytest.mark.parametrize("fractions", [(0.7, 0.15, 0.15), (0.8, 0.1, 0.1), (0.5, 0.0, 0.5), (1.0, 0.0, 0.0)])
def test_split_counts(n, fractions):
    counts = sim.split_counts(n, fractions)
    assert len(counts) == 3 and sum(counts) == n
    for c, f in zip(counts, fractions):
        if f == 0:
            assert c == 0
        else:
            assert c >= 1
            if n >= 10:  # small n is dominated by the one-recording minimum
                assert abs(c - f * n) <= 1.0 + 1e-9  # close to the ideal share


def test_split_counts_exact_and_too_few():
    assert sim.split_counts(100, (0.7, 0.15, 0.15)) == (70, 15, 15)
    assert sim.split_counts(3, (0.7, 0.15, 0.15)) == (1, 1, 1)
    with pytest.raises(InputError, match="cannot fill 3 splits"):
        sim.split_counts(2, (0.7, 0.15, 0.15))


def test_split_fractions_all_test():
    ds = synthesize(windows_per_class=4, classes=["normal", "B007"], split=(0.0, 0.0, 1.0), seed=0, window=128)
    assert ds.params["recordings_per_class"] == 3  # default: at least one recording per possible split
    assert set(ds.split) == {"test"}


# ---------------------------------------------------------------- kinematics


def test_bearing_orders_skf6205():
    o = bearing_orders()
    assert o["BPFI"] == pytest.approx(5.4152, abs=1e-3)
    assert o["BPFO"] == pytest.approx(3.5848, abs=1e-3)
    assert o["FTF"] == pytest.approx(0.39828, abs=1e-3)
    assert o["BSF"] == pytest.approx(2.3567, abs=1e-3)
    # identities of the kinematics: BPFO + BPFI = n balls, BPFO = n·FTF
    assert o["BPFO"] + o["BPFI"] == pytest.approx(9.0)
    assert o["BPFO"] == pytest.approx(9 * o["FTF"])


def _envelope_peak_hz(sig, fn, fs=FS, fmin=20.0, fmax=500.0):
    sos = butter(4, [max(0.7 * fn, 200.0), min(1.3 * fn, 0.95 * fs / 2)], btype="band", fs=fs, output="sos")
    env = np.abs(hilbert(sosfiltfilt(sos, sig)))
    env = env - env.mean()
    spec = np.abs(np.fft.rfft(env * np.hanning(env.size)))
    f = np.fft.rfftfreq(env.size, 1.0 / fs)
    m = (f > fmin) & (f < fmax)
    return float(f[m][np.argmax(spec[m])])


@pytest.mark.parametrize(
    "cls, order, mult",
    [
        ("OR007", "BPFO", 1), ("OR021", "BPFO", 1),
        ("IR007", "BPFI", 1), ("IR021", "BPFI", 1),
        ("B007", "BSF", 2), ("B021", "BSF", 2),
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_envelope_spectrum_peaks_at_fault_frequency(cls, order, mult, seed):
    rng = np.random.default_rng(seed)
    p = _draw_params(CLASS_NAMES.index(cls), "nominal", rng)
    sig = simulate_recording(p, int(2 * FS), FS, rng)
    expected = mult * bearing_orders()[order] * p.rpm / 60.0
    assert _envelope_peak_hz(sig, p.fn) == pytest.approx(expected, rel=0.02)


def test_envelope_peaks_differ_between_fault_locations():
    """Guard against a trivially passing physics check: the three locations give three distinct peaks."""
    peaks = {}
    for cls in ("OR014", "IR014", "B014"):
        rng = np.random.default_rng(7)
        p = _draw_params(CLASS_NAMES.index(cls), "nominal", rng)
        p.rpm = 1750.0
        peaks[cls] = _envelope_peak_hz(simulate_recording(p, int(2 * FS), FS, rng), p.fn)
    fr = 1750.0 / 60.0
    o = bearing_orders()
    assert peaks["OR014"] == pytest.approx(o["BPFO"] * fr, rel=0.02)
    assert peaks["IR014"] == pytest.approx(o["BPFI"] * fr, rel=0.02)
    assert peaks["B014"] == pytest.approx(2 * o["BSF"] * fr, rel=0.02)


# ---------------------------------------------------------------- operating conditions


def _inside(v, ranges):
    return any(lo <= v <= hi for lo, hi in ranges)


def test_nominal_draws_inside_and_shifted_outside_nominal_ranges():
    rng = np.random.default_rng(0)
    nom = CONDITIONS["nominal"]
    low_rpm = high_rpm = low_fn = high_fn = 0
    for i in range(200):
        label = i % 10
        p = _draw_params(label, "nominal", rng)
        for key in ("rpm", "fn", "zeta", "load_mod"):
            assert _inside(getattr(p, key), nom[key]), (key, getattr(p, key))
        q = _draw_params(label, "shifted", rng)
        for key in ("rpm", "fn", "zeta", "load_mod"):
            assert not _inside(getattr(q, key), nom[key]), (key, getattr(q, key))
            assert _inside(getattr(q, key), CONDITIONS["shifted"][key])
        low_rpm += q.rpm < 1720
        high_rpm += q.rpm > 1800
        low_fn += q.fn < 2500
        high_fn += q.fn > 4500
    # both sides of the nominal range are used
    assert min(low_rpm, high_rpm, low_fn, high_fn) > 40


def test_shifted_dataset_records_its_condition():
    ds = synthesize(windows_per_class=3, recordings_per_class=3, classes=["normal", "OR007"], condition="shifted",
                    seed=2, window=128)
    assert ds.params["condition"] == "shifted"
    assert ds.params["ranges"] == CONDITIONS["shifted"]
    assert all(r.startswith("shi-2-") for r in ds.recording)


def test_normal_has_no_fault_amplitude_and_faults_do():
    rng = np.random.default_rng(0)
    assert _draw_params(0, "nominal", rng).amp == 0.0
    for label in range(1, 10):
        assert _draw_params(label, "nominal", rng).amp > 0


# ---------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(classes=["IR999"]), "unknown class"),
        (dict(classes=["normal", "outer"]), "outer"),
        (dict(condition="hot"), "unknown condition"),
        (dict(windows_per_class=0), "at least 1"),
        (dict(windows_per_class=-3), "at least 1"),
        (dict(split=(0.5, 0.6, 0.1)), "three fractions"),
        (dict(split=(1.2, -0.1, -0.1)), "three fractions"),
        (dict(window=32), "window"),
        (dict(windows_per_class=10, recordings_per_class=2, split=(0.2, 0.4, 0.4)), "cannot fill 3 splits"),
    ],
)
def test_bad_arguments_are_input_errors(kwargs, match):
    args = dict(windows_per_class=4, recordings_per_class=4, classes=["normal"], window=128)
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        synthesize(**args)


@pytest.mark.parametrize(
    "kwargs",
    [dict(split=(0.5, 0.5), recordings_per_class=4), dict(split=(0.4, 0.2, 0.2, 0.2), recordings_per_class=4),
     dict(recordings_per_class=-2)],
)
def test_bad_split_length_or_recording_count_are_input_errors(kwargs):
    with pytest.raises(InputError):
        synthesize(windows_per_class=10, classes=["normal"], window=128, **kwargs)


def test_module_constants_consistent():
    assert set(sim.SEVERITY_MILS) == {"007", "014", "021"}
    assert sim.N_BALLS == 9
