import json

import numpy as np
import pytest

from drsn_edge.bundle import load_bundle
from drsn_edge.calibration import MIN_RECOMMENDED, check_against_model, default_calibration_path, load_calibration, make_calibration
from drsn_edge.data.dataset import Dataset, load_dataset
from drsn_edge.errors import InputError

from .conftest import run_cli


def test_make_is_stratified_reproducible_and_avoids_test_recordings(tiny_data, tmp_path):
    a = make_calibration(tiny_data, tmp_path / "a.npz", n=60, seed=3)
    b = make_calibration(tiny_data, tmp_path / "b.npz", n=60, seed=3)
    ca, cb = load_dataset(tmp_path / "a.npz"), load_dataset(tmp_path / "b.npz")
    assert np.array_equal(ca.x, cb.x) and a["content_sha256"] == b["content_sha256"]
    assert np.bincount(ca.y, minlength=10).tolist() == [6] * 10
    src = load_dataset(tiny_data)
    test_recs = set(src.recording[src.split == "test"])
    assert not test_recs & set(ca.recording)
    assert set(ca.split) == {"calib"}
    kinds = set(ca.noise)
    assert {"none", "gaussian", "laplacian", "pink"} <= kinds | {"none"} and len(kinds) >= 3
    assert ca.params["provenance"]["dataset_sha256"]
    assert json.loads((tmp_path / "a.json").read_text())["sha256"]


def test_shipped_default_calibration_set_matches_shipped_model():
    from drsn_edge.bundle import default_model_path

    cal = load_calibration(default_calibration_path())
    assert len(cal) >= 300 and set(cal.split) == {"calib"}
    assert np.bincount(cal.y).min() == np.bincount(cal.y).max()  # stratified by class
    assert check_against_model(load_bundle(default_model_path()).meta, cal) == []
    prov = cal.params["provenance"]
    assert "test" not in prov["splits_used"]
    cells = {(k, float(s)) for k, s in zip(cal.noise, cal.snr_db) if k != "none"}
    assert len(cells) == 33  # 3 noise types × 11 SNRs


def test_mismatched_calibration_metadata_is_named(tiny_model, tiny_calib, tmp_path):
    cal = load_calibration(tiny_calib)
    meta = load_bundle(tiny_model).meta
    other = Dataset(x=cal.x[:, :, :1024], y=cal.y, class_names=cal.class_names, fs=cal.fs, window=1024,
                    noise=cal.noise, snr_db=cal.snr_db, recording=cal.recording, split=cal.split)
    with pytest.raises(InputError, match="window 1024 differs"):
        check_against_model(meta, other)
    other = Dataset(x=cal.x, y=cal.y, class_names=cal.class_names, fs=48000, window=cal.window,
                    noise=cal.noise, snr_db=cal.snr_db, recording=cal.recording, split=cal.split)
    with pytest.raises(InputError, match="sample rate 48000"):
        check_against_model(meta, other)


def test_small_set_warns(tiny_model, tiny_calib):
    warns = check_against_model(load_bundle(tiny_model).meta, load_calibration(tiny_calib))
    assert any(str(MIN_RECOMMENDED) in w for w in warns)


def test_cli_make_and_info(tiny_data, tmp_path):
    out = tmp_path / "c.npz"
    r = run_cli("calibration", "make", "--data", tiny_data, "--n", "20", "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    assert "recommended" in r.stderr  # below the recommended minimum
    r = run_cli("calibration", "info", out, "--json")
    info = json.loads(r.stdout)
    assert info["n"] == 20 and info["params"]["provenance"]["dataset"] == str(tiny_data)
    r = run_cli("calibration", "info")
    assert r.returncode == 0 and "provenance" in r.stdout


def test_cli_make_refuses_test_only_data(tmp_path):
    d = tmp_path / "t.npz"
    run_cli("data", "synth", "-o", d, "--windows-per-class", "3", "--recordings-per-class", "3",
            "--classes", "normal,IR007", "--split", "0,0,1")
    r = run_cli("calibration", "make", "--data", d, "-o", tmp_path / "c.npz")
    assert r.returncode == 2 and "outside the test split" in r.stderr
    assert not (tmp_path / "c.npz").exists()
