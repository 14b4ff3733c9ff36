"""Time splits of single long recordings, merged datasets and datasets holding a subset of a model's classes."""

from __future__ import annotations

import numpy as np
import pytest

from drsn_edge.data.dataset import Dataset, align_classes, load_dataset, merge, save_dataset
from drsn_edge.data.importers import import_dataset, time_cuts, time_segments
from drsn_edge.errors import InputError

from ..conftest import run_cli


def _rec(root, name, n, seed):
    (root / name).mkdir(parents=True, exist_ok=True)
    sig = np.random.default_rng(seed).standard_normal(n)
    np.save(root / name / "run.npy", sig)
    return sig


def test_time_cuts_are_rounded_fractions_of_the_length():
    assert time_cuts(10_000, (0.7, 0.15, 0.15)) == (7000, 8500)
    assert time_cuts(10, (0.5, 0.25, 0.25)) == (5, 8)  # 7.5 rounds half to even → 8
    assert time_segments(10_000, (0.8, 0.0, 0.2), 1000, "r") == [("train", 0, 8000), ("test", 8000, 10_000)]


def test_time_split_cuts_every_recording_and_no_window_crosses_a_cut(tmp_path):
    sigs = {"healthy": _rec(tmp_path, "healthy", 10_000, 1), "fault": _rec(tmp_path, "fault", 10_000, 2)}
    ds = import_dataset([tmp_path], fs=1000, target_fs=None, window=1024, split_by="time")
    # train [0, 7000): 6 windows; val [7000, 8500): 1; test [8500, 10000): 1 — per class
    assert ds.counts()["train"]["per_class"] == [6, 6]
    assert ds.counts()["val"]["per_class"] == [1, 1] and ds.counts()["test"]["per_class"] == [1, 1]
    k = ds.class_names.index("fault")
    val = ds.x[(ds.split == "val") & (ds.y == k)][0, 0]
    test = ds.x[(ds.split == "test") & (ds.y == k)][0, 0]
    np.testing.assert_array_equal(val, sigs["fault"][7000:8024].astype(np.float32))
    np.testing.assert_array_equal(test, sigs["fault"][8500:9524].astype(np.float32))
    rec = ds.params["recordings"]["fault/run.npy"]
    assert rec["segments"] == {"train": [0, 7000], "val": [7000, 8500], "test": [8500, 10_000]}
    assert ds.params["split_by"] == "time"
    assert set(ds.recording[ds.split == "val"]) == {"fault/run.npy#val", "healthy/run.npy#val"}


def test_time_split_refuses_a_segment_shorter_than_a_window(tmp_path):
    _rec(tmp_path, "a", 3000, 1)
    _rec(tmp_path, "b", 3000, 2)
    with pytest.raises(InputError, match="val segment .450 samples.* shorter than one window of 1024"):
        import_dataset([tmp_path], fs=1000, target_fs=None, window=1024, split_by="time")


def test_split_by_recording_with_one_recording_per_class_points_to_time_split(tmp_path):
    _rec(tmp_path, "a", 3000, 1)
    _rec(tmp_path, "b", 3000, 2)
    with pytest.raises(InputError, match="--split-by time"):
        import_dataset([tmp_path], fs=1000, target_fs=None, window=256)


def test_import_of_one_folder_without_label_map_warns(tmp_path):
    d = tmp_path / "pump"
    for i in range(3):
        _rec(d, f"r{i}", 2000, i)
    res = run_cli("data", "import", str(d), "-o", tmp_path / "d.npz", "--fs", "1000", "--target-fs", "1000",
                  "--window", "256", "--split", "1,0,0")
    assert res.returncode == 0, res.stderr
    assert "warning: every file got the class 'r0'" not in res.stderr  # folder names are the classes here
    single = tmp_path / "single"
    single.mkdir()
    for i in range(3):
        np.save(single / f"f{i}.npy", np.random.default_rng(i).standard_normal(2000))
    res = run_cli("data", "import", str(single), "-o", tmp_path / "s.npz", "--fs", "1000", "--target-fs", "1000",
                  "--window", "256", "--split", "1,0,0")
    assert res.returncode == 0, res.stderr
    assert "warning: every file got the class 'single'" in res.stderr


def _ds(classes, y, recs, splits, fs=1000.0, window=64, value=0.0):
    n = len(y)
    return Dataset(x=np.full((n, 1, window), value, np.float32), y=np.array(y), class_names=classes, fs=fs,
                   window=window, noise=np.full(n, "none"), snr_db=np.full(n, np.nan), recording=np.array(recs),
                   split=np.array(splits))


def test_merge_keeps_ids_unique_and_takes_the_union_of_classes(tmp_path):
    a = _ds(["normal", "OR021"], [0, 1, 1], ["r1", "r2", "r2"], ["train"] * 3, value=1)
    b = _ds(["IR007", "normal"], [0, 1], ["r1", "r1"], ["test", "test"], value=2)
    save_dataset(a, tmp_path / "siteA.npz")
    save_dataset(b, tmp_path / "siteB.npz")
    res = run_cli("data", "merge", tmp_path / "siteA.npz", tmp_path / "siteB.npz", "-o", tmp_path / "m.npz", "--json")
    assert res.returncode == 0, res.stderr
    m = load_dataset(tmp_path / "m.npz")
    assert m.class_names == ["normal", "OR021", "IR007"]
    assert m.y.tolist() == [0, 1, 1, 2, 0]
    assert m.recording.tolist() == ["siteA:r1", "siteA:r2", "siteA:r2", "siteB:r1", "siteB:r1"]
    assert m.x[:, 0, 0].tolist() == [1, 1, 1, 2, 2]
    with pytest.raises(InputError, match="window 128"):
        merge([a, _ds(["x", "y"], [0], ["r"], ["train"], window=128)], ["a", "b"])


def test_align_classes_relabels_a_subset_and_refuses_unknown_classes():
    faults = _ds(["OR021", "IR007"], [0, 1, 1], ["a", "b", "b"], ["test"] * 3)
    got = align_classes(faults, ["normal", "IR007", "OR021"])
    assert got.class_names == ["normal", "IR007", "OR021"] and got.y.tolist() == [2, 1, 1]
    with pytest.raises(InputError, match=r"class\(es\) \['pump'\]"):
        align_classes(_ds(["pump", "IR007"], [0], ["a"], ["test"]), ["normal", "IR007"])
