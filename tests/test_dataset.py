"""The dataset file: round trip, manifest, no pickle on load, validation, normalization, atomic save."""

from __future__ import annotations

import hashlib
import json
import pickle

import numpy as np
import pytest

from drsn_edge.data.dataset import (
    FORMAT_VERSION,
    Dataset,
    load_dataset,
    manifest_path,
    normalize,
    save_dataset,
)
from drsn_edge.errors import InputError

L = 64


def _fields(n=12, classes=("normal", "IR007", "OR007"), seed=0):
    rng = np.random.default_rng(seed)
    k = len(classes)
    y = np.arange(n) % k
    rec = np.array([f"rec-{i % 6}" for i in range(n)])
    split_of_rec = {"rec-0": "train", "rec-1": "train", "rec-2": "train", "rec-3": "val", "rec-4": "test", "rec-5": "test"}
    return dict(
        x=rng.standard_normal((n, 1, L)).astype(np.float32) * 3 + 1,
        y=y,
        class_names=list(classes),
        fs=12_000.0,
        window=L,
        noise=np.array(["none", "gaussian", "pink", "laplacian"] * (n // 4)),
        snr_db=np.array([np.nan, -5.0, 0.0, 10.0] * (n // 4), dtype=np.float32),
        recording=rec,
        split=np.array([split_of_rec[r] for r in rec]),
        source="unit-test",
        generator="tests",
        params={"seed": seed, "note": "hand-made"},
    )


def _ds(**over):
    f = _fields()
    f.update(over)
    return Dataset(**f)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- round trip


def test_round_trip_is_identical_and_manifest_matches(tmp_path):
    ds = _ds()
    path = tmp_path / "d.npz"
    man = save_dataset(ds, path)
    back = load_dataset(path)
    for name in ("x", "y", "noise", "snr_db", "recording", "split"):
        a, b = getattr(ds, name), getattr(back, name)
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)  # NaN == NaN here
    assert back.x.dtype == np.float32 and back.y.dtype == np.int64
    assert back.class_names == ds.class_names
    assert (back.fs, back.window, back.normalization) == (ds.fs, ds.window, ds.normalization)
    assert (back.source, back.generator, back.params) == (ds.source, ds.generator, ds.params)

    mpath = manifest_path(path)
    assert mpath == tmp_path / "d.json" and mpath.is_file()
    on_disk = json.loads(mpath.read_text())
    assert on_disk["sha256"] == _sha(path) == man["sha256"]
    assert on_disk["format"] == "drsn-edge-dataset"
    assert on_disk["format_version"] == FORMAT_VERSION
    assert on_disk["n"] == 12
    assert on_disk["class_names"] == ["normal", "IR007", "OR007"]
    assert on_disk["counts"]["train"]["windows"] == 6
    assert on_disk["counts"]["train"]["recordings"] == 3
    assert on_disk["counts"]["val"]["per_class"] == [2, 0, 0]  # rec-3 = windows 3 and 9, both class 0
    assert on_disk["noise_grid"] == {"gaussian": [-5.0], "laplacian": [10.0], "none": [], "pink": [0.0]}
    # the npz alone is complete: it carries the same manifest (without its own hash)
    with np.load(path, allow_pickle=False) as z:
        inner = json.loads(str(z["manifest_json"]))
    assert inner == {k: v for k, v in on_disk.items() if k != "sha256"}
    # only the two outputs, no temp files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json", "d.npz"]


def test_round_trip_of_a_subset_and_split_selection(tmp_path):
    ds = _ds()
    test = ds.select_split("test")
    assert len(test) == 4 and set(test.split) == {"test"}
    save_dataset(test, tmp_path / "t.npz")
    back = load_dataset(tmp_path / "t.npz")
    np.testing.assert_array_equal(back.x, ds.x[ds.split == "test"])
    np.testing.assert_array_equal(back.recording, ["rec-4", "rec-5", "rec-4", "rec-5"])


# ---------------------------------------------------------------- no pickle


class _Evil:
    """Unpickling this calls open(marker, 'w'), i.e. creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _assert_payload_would_execute(tmp_path):
    """Sanity: the payload really creates its marker when unpickled (so the tests below can fail)."""
    probe = tmp_path / "probe-marker"
    obj = pickle.loads(pickle.dumps(_Evil(probe)))
    obj.close()
    assert probe.exists()
    probe.unlink()


def test_plain_pickle_renamed_npz_is_refused_without_executing(tmp_path):
    _assert_payload_would_execute(tmp_path)
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.npz"
    path.write_bytes(pickle.dumps({"x": _Evil(marker)}))
    with pytest.raises(InputError, match="not a readable dataset"):
        load_dataset(path)
    assert not marker.exists()


def test_np_save_object_array_is_refused_without_executing(tmp_path):
    _assert_payload_would_execute(tmp_path)
    marker = tmp_path / "PWNED"
    npy = tmp_path / "evil.npy"
    np.save(npy, np.array([_Evil(marker), 1], dtype=object), allow_pickle=True)
    path = npy.rename(tmp_path / "evil.npz")
    with pytest.raises(InputError):
        load_dataset(path)
    assert not marker.exists()


def test_npz_with_pickled_member_is_refused_without_executing(tmp_path):
    _assert_payload_would_execute(tmp_path)
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.npz"
    np.savez(
        path, x=np.array([_Evil(marker)], dtype=object), y=np.zeros(1, np.int64),
        manifest_json=np.array(json.dumps({"format": "drsn-edge-dataset"})),
    )
    with pytest.raises(InputError, match="not a readable dataset"):
        load_dataset(path)
    assert not marker.exists()


# ---------------------------------------------------------------- bad files


def test_load_missing_and_garbage_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_dataset(tmp_path / "nope.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(InputError, match="not a readable dataset"):
        load_dataset(tmp_path / "junk.npz")


def test_load_refuses_npz_that_is_not_a_dataset(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((1, 1, L), np.float32))
    with pytest.raises(InputError, match="missing"):
        load_dataset(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", x=np.zeros((1, 1, L), np.float32), y=np.zeros(1, np.int64),
             manifest_json=np.array(json.dumps({"format": "something-else"})))
    with pytest.raises(InputError, match="not a drsn-edge dataset"):
        load_dataset(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", x=np.zeros((1, 1, L), np.float32), y=np.zeros(1, np.int64),
             manifest_json=np.array("{not json"))
    with pytest.raises(InputError, match="corrupt"):
        load_dataset(tmp_path / "c.npz")


def test_load_refuses_newer_format(tmp_path):
    ds = _ds()
    man = ds.manifest()
    man["format_version"] = FORMAT_VERSION + 1
    np.savez(tmp_path / "new.npz", x=ds.x, y=ds.y, manifest_json=np.array(json.dumps(man)))
    with pytest.raises(InputError, match="upgrade"):
        load_dataset(tmp_path / "new.npz")


@pytest.mark.parametrize(
    "manifest",
    [
        "[1]",
        json.dumps({"format": "drsn-edge-dataset", "format_version": 1}),
        json.dumps({"format": "drsn-edge-dataset", "format_version": "x"}),
    ],
)
def test_load_refuses_malformed_manifest_with_input_error(tmp_path, manifest):
    np.savez(tmp_path / "m.npz", x=np.zeros((1, 1, L), np.float32), y=np.zeros(1, np.int64),
             manifest_json=np.array(manifest))
    with pytest.raises(InputError):
        load_dataset(tmp_path / "m.npz")


# ---------------------------------------------------------------- validation


def test_valid_dataset_builds():
    ds = _ds()
    assert len(ds) == 12


def test_nan_or_inf_in_x_is_refused():
    f = _fields()
    f["x"][3, 0, 7] = np.nan
    with pytest.raises(InputError, match="NaN"):
        Dataset(**f)
    f = _fields()
    f["x"][0, 0, 0] = np.inf
    with pytest.raises(InputError, match="NaN or inf"):
        Dataset(**f)


@pytest.mark.parametrize("shape", [(12, L), (12, 2, L), (12, 1, L, 1)])
def test_wrong_x_rank_or_channels_is_refused(shape):
    with pytest.raises(InputError, match=r"\[N, 1, L\]"):
        _ds(x=np.zeros(shape, np.float32))


def test_window_length_and_count_mismatch_is_refused():
    with pytest.raises(InputError, match="manifest says"):
        _ds(window=L * 2)
    with pytest.raises(InputError, match="labels"):
        _ds(x=np.zeros((11, 1, L), np.float32))
    f = _fields()
    f["split"] = f["split"][:-1]
    with pytest.raises(InputError, match="split"):
        Dataset(**f)


@pytest.mark.parametrize("bad", [3, -1, 99])
def test_label_out_of_range_is_refused(bad):
    f = _fields()
    f["y"][5] = bad
    with pytest.raises(InputError, match=r"labels must be in 0\.\.2"):
        Dataset(**f)


def test_recording_in_two_splits_is_refused_naming_it():
    f = _fields()
    f["split"][f["recording"] == "rec-2"] = ["train", "test"]
    with pytest.raises(InputError, match=r"recording 'rec-2' appears in both") as ei:
        Dataset(**f)
    assert "'train'" in str(ei.value) and "'test'" in str(ei.value)
    assert "rec-1" not in str(ei.value)


def test_calibration_may_reuse_training_recordings():
    f = _fields()
    f["split"] = f["split"].astype(object)
    f["split"][0] = "calib"  # rec-0 otherwise in train
    assert len(Dataset(**f)) == 12


def test_unknown_split_noise_rate_and_normalization_are_refused():
    f = _fields()
    f["split"] = f["split"].astype(object)
    f["split"][0] = "holdout"
    with pytest.raises(InputError, match="holdout"):
        Dataset(**f)
    f = _fields()
    f["noise"] = f["noise"].astype(object)
    f["noise"][1] = "brown"
    with pytest.raises(InputError, match="brown"):
        Dataset(**f)
    with pytest.raises(InputError, match="sample rate"):
        _ds(fs=0)
    with pytest.raises(InputError, match="normalization"):
        _ds(normalization="minmax")
    with pytest.raises(InputError, match="no class names"):
        _ds(class_names=[], y=np.zeros(12, np.int64))


# ---------------------------------------------------------------- normalize


def test_normalize_gives_zero_mean_unit_std_per_window():
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((7, 1, 512)) * rng.uniform(0.01, 100, (7, 1, 1))
         + rng.uniform(-50, 50, (7, 1, 1))).astype(np.float32)
    z = normalize(x)
    assert z.shape == x.shape and z.dtype == np.float32
    np.testing.assert_allclose(z.mean(axis=-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=-1), 1.0, atol=1e-4)
    # per window, not global: each window keeps its own shape
    np.testing.assert_allclose(z[2, 0], (x[2, 0] - x[2, 0].mean()) / x[2, 0].std(), atol=1e-4)


def test_normalize_constant_window_is_finite_and_unknown_method_refused():
    z = normalize(np.full((1, 1, 64), 3.0, np.float32))
    assert np.isfinite(z).all() and np.abs(z).max() < 1e-3
    with pytest.raises(InputError):
        normalize(np.zeros((1, 1, 64)), method="minmax")


# ---------------------------------------------------------------- atomic save


@pytest.mark.parametrize("name", ["d.npy", "d", "d.npz.tmp"])
def test_bad_suffix_is_refused_and_leaves_nothing(tmp_path, name):
    with pytest.raises(InputError, match=r"\.npz"):
        save_dataset(_ds(), tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_temp_files_and_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "d.npz"
    old = _ds()
    save_dataset(old, path)
    old_sha = _sha(path)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(OSError, match="disk full"):
        save_dataset(_ds(x=np.zeros((12, 1, L), np.float32)), path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json", "d.npz"]
    assert _sha(path) == old_sha
    np.testing.assert_array_equal(load_dataset(path).x, old.x)

    fresh = tmp_path / "sub"
    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(OSError):
        save_dataset(old, fresh / "new.npz")
    assert list(fresh.iterdir()) == []


def test_unknown_split_and_noise_names_are_listed_as_plain_strings():
    from drsn_edge.data.dataset import SPLITS, validate
    from drsn_edge.data.simulator import synthesize
    from drsn_edge.errors import InputError

    ds = synthesize(windows_per_class=1, classes=["normal", "IR021"], seed=0, split=(1.0, 0.0, 0.0))
    ds.split = np.array(["train", "holdout"])
    with pytest.raises(InputError) as ei:
        validate(ds)
    assert str(ei.value) == f"unknown split name(s) ['holdout']; use {', '.join(SPLITS)}"
    ds.split = np.array(["train", "test"])
    ds.noise = np.array(["none", "brown"])
    with pytest.raises(InputError) as ei:
        validate(ds)
    assert str(ei.value) == "unknown noise type(s) ['brown']"
