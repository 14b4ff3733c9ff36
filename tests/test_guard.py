"""The domain guard: hand-computable Mahalanobis scores, the threshold, and the guard stored in bundles."""

from __future__ import annotations

import json

import numpy as np
import pytest

from drsn_edge.bundle import load_bundle
from drsn_edge.data.dataset import load_dataset, normalize
from drsn_edge.evaluate import evaluate
from drsn_edge.guard import Guard, fit, guard_scores, pooled_features, summary, tensors_sha256

# Two classes of 2-D features: four points around (0, 0) and four around (10, 0), each at distance 1.
# Shared covariance: Σ = diag(4, 4) / (8 − 2) = diag(2/3, 2/3), so Σ⁻¹ = 1.5 I (up to the 1e-6 ridge).
TRAIN = np.array([[1, 0], [-1, 0], [0, 1], [0, -1], [11, 0], [9, 0], [10, 1], [10, -1]], dtype=float)
Y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
HELD = np.array([[0, 0.5], [10, 1], [1, 1]], dtype=float)  # scores 0.375, 1.5, 3.0


def test_scores_and_threshold_by_hand():
    g = fit(TRAIN, Y, HELD, quantile=1.0)
    np.testing.assert_allclose(g.precision, 1.5 * np.eye(2), rtol=1e-5)
    np.testing.assert_allclose(g.score(HELD), [0.375, 1.5, 3.0], rtol=1e-5)
    assert g.threshold == pytest.approx(3.0, rel=1e-5)
    score, ok = g.in_domain(np.array([[5.0, 30.0], [0.1, -0.2], [10.0, 0.5]]))
    np.testing.assert_allclose(score, [1.5 * (25 + 900), 1.5 * 0.05, 1.5 * 0.25], rtol=1e-5)
    assert ok.tolist() == [False, True, True]


def test_threshold_is_the_largest_per_cell_quantile():
    rng = np.random.default_rng(0)
    held = np.concatenate([rng.normal(0, 0.2, (200, 2)), rng.normal(0, 1.0, (200, 2))])
    cells = np.repeat(["clean", "noisy"], 200)
    g = fit(TRAIN, Y, held, held_cells=cells, quantile=0.99)
    noisy_q = np.quantile(g.score(held[200:]), 0.99)
    assert g.threshold == pytest.approx(noisy_q)
    _, ok = g.in_domain(held)
    assert (~ok[:200]).mean() <= 0.01 and (~ok[200:]).mean() <= 0.01


def test_json_round_trip_is_exact_and_malformed_guards_are_refused():
    g = fit(TRAIN, Y, HELD, quantile=1.0)
    back = Guard.from_json(g.to_json())
    assert np.array_equal(back.means, g.means) and np.array_equal(back.precision, g.precision)
    assert back.threshold == g.threshold
    from drsn_edge.errors import InputError

    bad = g.to_json()
    bad["precision"] = [[1.0]]
    with pytest.raises(InputError, match="malformed"):
        Guard.from_json(bad)


def test_summary_counts_out_of_domain_windows_per_cell():
    s = summary(np.array([True, False, True, True]), np.array(["none", "none", "pink", "pink"]),
                np.array([np.nan, np.nan, 0.0, 0.0]))
    assert s["out_of_domain_share"] == 0.25 and s["per_snr"] == {"none": {"clean": 0.5}, "pink": {"0": 0.0}}


def test_training_stores_a_guard_that_keeps_held_out_windows_in_domain(tiny_model, tiny_data):
    from drsn_edge.guard import available_taps, tap_features

    b = load_bundle(tiny_model)
    g = b.meta["guard"]
    assert g["taps"] == available_taps(b.model) and g["taps"][-1] == "head" and g["taps"][0] == "stem.absmean"
    assert g["tap_dims"][-1] == b.model.fc.in_features and sum(g["tap_dims"]) == g["dim"]
    ds = load_dataset(tiny_data).select_split("val")
    x = normalize(ds.x, "zscore")
    score, ok = guard_scores(b, x)
    assert score.shape == (len(ds),) and np.array_equal(ok, score <= b.meta["guard"]["threshold"])
    f = pooled_features(b.model, x[:4])
    torch_feats = b.model.features(__import__("torch").from_numpy(x[:4])).detach().numpy()
    np.testing.assert_allclose(f, torch_feats, rtol=0, atol=0)  # the hook sees exactly the head's input
    rep = evaluate(b, load_dataset(tiny_data)).to_json()  # the test split, clean
    test = load_dataset(tiny_data).select_split("test")
    from drsn_edge.guard import level_ok, window_level

    level = window_level(test.x)
    _, ok_test = guard_scores(b, normalize(test.x, "zscore"), level)
    assert rep["domain"]["n"] == rep["n"] == len(test)
    share = float((~ok_test).mean())  # the share of windows flagged
    lvl = g["level"]  # fitted on the training windows (clean and noisy) and the held-out sweep
    assert 0 < lvl["lo"] < lvl["hi"] and lvl["windows"] > len(ds)
    outside = float((~level_ok(lvl, level, len(test))).mean())
    assert rep["domain"] == {"out_of_domain_share": share, "n": len(test), "per_snr": {"none": {"clean": share}},
                             "threshold": b.meta["guard"]["threshold"], "quantile": b.meta["guard"]["quantile"],
                             "level_range": [lvl["lo"], lvl["hi"]], "outside_level_range_share": outside}
    assert outside == 0.0  # clean test windows of the training distribution are all inside the range


def test_guard_fit_keeps_the_tensors(tiny_model, tiny_data, tmp_path):
    from tests.conftest import run_cli

    out = tmp_path / "g.drsn"
    r = run_cli("guard", "fit", tiny_model, "--data", tiny_data, "-o", out, "--quantile", "0.99", "--json")
    assert r.returncode == 0, r.stderr
    assert tensors_sha256(out) == tensors_sha256(tiny_model)
    assert load_bundle(out).meta["guard"]["quantile"] == 0.99
    assert json.loads(r.stdout)["level"] == load_bundle(out).meta["guard"]["level"]
    r = run_cli("guard", "fit", tiny_model, "--data", tiny_data, "-o", out)
    assert r.returncode == 0 and "raw level range" in r.stdout, r.stderr


def test_signal_flags_catch_flat_and_clipped_windows():
    from drsn_edge.guard import signal_flags

    t = np.linspace(0, 20 * np.pi, 1000)
    sine = np.sin(t)[None, None, :]
    sine[0, 0, 100] = 1.5  # one peak, one trough: 2 samples on the rails < 3
    clipped = np.clip(np.sin(t), -0.5, 0.5)[None, None, :]  # a third of the samples on each rail
    flat = np.zeros((1, 1, 1000))
    x = normalize(np.concatenate([sine, clipped, flat + 1.0]).astype(np.float32), "zscore")
    f, c = signal_flags(x)
    assert f.tolist() == [False, False, True] and c.tolist() == [False, True, False]


def test_taps_are_the_tensors_they_name(tiny_model):
    """Each tap equals the value computed by hand from the float model's own layers."""
    import torch

    from drsn_edge.guard import tap_features
    from drsn_edge.models.blocks import absolute

    b = load_bundle(tiny_model)
    m = b.model.eval()
    x = np.random.default_rng(0).standard_normal((3, 1, b.window)).astype(np.float32)
    feats, dims = tap_features(m, x, ["stem.absmean", "units.1.absmean", "head"])
    with torch.inference_mode():
        t = torch.from_numpy(x)
        s = m.stem(t)
        r = m.units[0](s)
        u = m.units[1]
        branch = u.conv2(torch.relu(u.bn2(u.conv1(torch.relu(u.bn1(r))))))
        want = [absolute(s).mean(-1), absolute(branch).mean(-1), m.features(t)]
    assert dims == [w.shape[1] for w in want]
    np.testing.assert_allclose(feats, torch.cat(want, 1).numpy(), rtol=1e-6, atol=1e-6)  # float32 reordering only


def test_unknown_taps_are_refused_and_old_guards_still_load(tiny_model):
    from drsn_edge.errors import InputError
    from drsn_edge.guard import tap_features

    b = load_bundle(tiny_model)
    with pytest.raises(InputError, match="unknown guard tap 'units.99.absmean'"):
        tap_features(b.model, np.zeros((1, 1, b.window), np.float32), ["units.99.absmean"])
    old = fit(TRAIN, Y, HELD, quantile=1.0).to_json()
    del old["taps"], old["tap_dims"]  # a guard stored before taps existed: the head only
    assert Guard.from_json(old).taps == ["head"]
    bad = fit(TRAIN, Y, HELD, quantile=1.0).to_json()
    bad["tap_dims"] = [3]
    with pytest.raises(InputError, match="taps do not add up"):
        Guard.from_json(bad)


def test_whitened_form_gives_the_same_scores():
    g = fit(TRAIN, Y, HELD, quantile=1.0)
    w, m = g.whitening()
    f = np.array([[5.0, 30.0], [0.1, -0.2], [10.0, 0.5]])
    z = f @ w.T
    np.testing.assert_allclose(((z[:, None, :] - m[None]) ** 2).sum(-1).min(1), g.score(f), rtol=1e-9)


def test_precision_is_stored_packed_and_older_list_guards_still_load():
    g = fit(TRAIN, Y, HELD, quantile=1.0)
    d = g.to_json()
    assert d["precision"]["format"].startswith("upper triangle") and d["precision"]["dim"] == g.precision.shape[0]
    old = {**d, "precision": g.precision.tolist()}
    assert np.array_equal(Guard.from_json(old).precision, g.precision)
    from drsn_edge.errors import InputError

    for broken in ({**d["precision"], "data": "!!"}, {**d["precision"], "dim": 3}, {"format": "x", "dim": 1, "data": ""}):
        with pytest.raises(InputError, match="malformed"):
            Guard.from_json({**d, "precision": broken})


def test_level_range_flags_windows_quieter_or_louder_than_training_by_the_margin():
    from drsn_edge.guard import LEVEL_MARGIN_DB, fit_level, level_ok, window_level

    levels = np.linspace(1.0, 2.0, 1001)
    r = fit_level(levels)
    f = 10 ** (LEVEL_MARGIN_DB / 20)
    assert r["lo"] == pytest.approx(np.quantile(levels, 0.001) / f) and r["hi"] == pytest.approx(np.quantile(levels, 0.999) * f)
    # a dead sensor (1e-4 of the quietest level), a window just inside each end, one 3x louder than the loudest
    got = level_ok(r, np.array([1e-4, r["lo"] * 1.001, r["hi"] * 0.999, 6.0, np.nan]), 5)
    assert got.tolist() == [False, True, True, False, False]
    assert level_ok(None, np.array([1e-9]), 1).tolist() == [True] and level_ok(r, None, 2).tolist() == [True, True]
    raw = np.stack([np.full((1, 8), 5.0), np.array([[0, 2, 0, 2, 0, 2, 0, 2]], float)])
    assert window_level(raw).tolist() == [0.0, 1.0]
    from drsn_edge.errors import InputError

    with pytest.raises(InputError, match="level range"):
        Guard.from_json({**fit(TRAIN, Y, HELD).to_json(), "level": {"lo": 2.0, "hi": 1.0}})
