"""Importers: real small files of every supported format, built in tmp_path."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.io import savemat, wavfile

from drsn_edge.data.dataset import load_dataset, save_dataset
from drsn_edge.data.importers import assign_splits, find_files, import_dataset, load_label_map
from drsn_edge.data.simulator import split_counts
from drsn_edge.data.windowing import n_windows, resample_ratio, window_signal
from drsn_edge.errors import InputError

W = 256


def _sig(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n)


def _cwru(path, num: int, n: int = 1000, ba: bool = True, rpm: float | None = 1797.0, seed: int = 0):
    """A CWRU-style .mat: X<num>_DE/FE(/BA)_time column vectors plus X<num>RPM."""
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = {f"X{num:03d}_DE_time": _sig(n, seed)[:, None], f"X{num:03d}_FE_time": _sig(n, seed + 1)[:, None]}
    if ba:
        keys[f"X{num:03d}_BA_time"] = _sig(n, seed + 2)[:, None]
    if rpm is not None:
        keys[f"X{num:03d}RPM"] = np.array([[rpm]])
    savemat(str(path), keys)
    return keys


def _npy(path, n: int = 1000, seed: int = 0) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    sig = _sig(n, seed)
    np.save(path, sig)
    return sig


def _tree(root, classes: dict[str, int], n: int = 600) -> None:
    """root/<class>/r<i>.npy recordings."""
    for ci, (name, count) in enumerate(classes.items()):
        for i in range(count):
            _npy(root / name / f"r{i}.npy", n=n, seed=100 * ci + i)


def _err(match: str, *args, **kwargs) -> str:
    with pytest.raises(InputError, match=match) as info:
        import_dataset(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# ----------------------------------------------------------------------------------------- CWRU .mat


def test_cwru_mat_folder_labels_channels_and_rpm(tmp_path):
    normal = _cwru(tmp_path / "normal" / "97.mat", 97, n=1000, ba=False, rpm=1797.0)
    ir = _cwru(tmp_path / "IR007" / "105.mat", 105, n=700, rpm=1772.0, seed=5)
    ds = import_dataset([tmp_path], fs=12000, window=W, split=(1, 0, 0))
    assert ds.class_names == ["IR007", "normal"]
    assert ds.source == "import" and ds.fs == 12000.0 and ds.window == W
    assert len(ds) == 1000 // W + 700 // W == 5
    assert list(ds.y) == [0, 0, 1, 1, 1]
    assert list(ds.recording) == ["IR007/105.mat"] * 2 + ["normal/97.mat"] * 3
    np.testing.assert_allclose(ds.x[2, 0], normal["X097_DE_time"][:W, 0], rtol=1e-6)
    np.testing.assert_allclose(ds.x[1, 0], ir["X105_DE_time"][W:2 * W, 0], rtol=1e-6)
    rec = ds.params["recordings"]["normal/97.mat"]
    assert rec["rpm"] == 1797.0 and rec["source_fs"] == 12000.0 and rec["key"] == "X097_DE_time"
    assert ds.params["channel"] == "DE" and ds.params["hop"] == W
    json.dumps(ds.manifest())  # params must be plain JSON

    fe = import_dataset([tmp_path], fs=12000, window=W, channel="fe", split=(1, 0, 0))
    np.testing.assert_allclose(fe.x[2, 0], normal["X097_FE_time"][:W, 0], rtol=1e-6)
    assert fe.params["recordings"]["normal/97.mat"]["key"] == "X097_FE_time"


def test_cwru_missing_ba_names_keys(tmp_path):
    _cwru(tmp_path / "normal" / "97.mat", 97, ba=False)
    msg = _err("no BA channel", [tmp_path], fs=12000, window=W, channel="BA", split=(1, 0, 0))
    assert "normal/97.mat" in msg and "X097_DE_time" in msg and "X097_FE_time" in msg and "X097RPM" in msg


def test_cwru_prefix_matches_file_number(tmp_path):
    d = tmp_path / "OR007"
    d.mkdir()
    a, b = _sig(600, 1)[:, None], _sig(600, 2)[:, None]
    savemat(str(d / "130.mat"), {"X098_DE_time": a, "X130_DE_time": b, "X130RPM": np.array([[1796.0]])})
    savemat(str(d / "other.mat"), {"X130_DE_time": b, "X098_DE_time": a})
    ds = import_dataset([d], fs=12000, window=W, split=(1, 0, 0))
    recs = ds.params["recordings"]
    assert recs["130.mat"]["key"] == "X130_DE_time" and recs["130.mat"]["rpm"] == 1796.0
    assert recs["other.mat"]["key"] == "X098_DE_time"  # no number in the name: first sorted
    np.testing.assert_allclose(ds.x[0, 0], b[:W, 0], rtol=1e-6)


def test_mat_explicit_key_and_unknown_key(tmp_path):
    d = tmp_path / "normal"
    d.mkdir()
    savemat(str(d / "sig.mat"), {"accel": _sig(600)[None, :]})
    ds = import_dataset([d], fs=12000, window=W, column="accel", split=(1, 0, 0))
    assert len(ds) == 2
    msg = _err("has no key 'nope'", [d], fs=12000, window=W, column="nope", split=(1, 0, 0))
    assert "accel" in msg
    msg = _err("no DE channel", [d], fs=12000, window=W, split=(1, 0, 0))
    assert "accel" in msg


def test_fs_required_for_formats_without_rate(tmp_path):
    _cwru(tmp_path / "normal" / "97.mat", 97)
    msg = _err("sample rate", [tmp_path], window=W, split=(1, 0, 0))
    assert "fs=" in msg and "97.mat" in msg
    _npy(tmp_path / "normal" / "a.npy")
    _err("fs=", [tmp_path / "normal" / "a.npy"], window=W, split=(1, 0, 0))


# ------------------------------------------------------------------------------------ CSV / NPY / NPZ


def test_csv_header_and_columns(tmp_path):
    d = tmp_path / "B007"
    d.mkdir()
    t = np.arange(600)
    rows = ["time,accel_x,accel_y"] + [f"{i},{np.sin(i / 7):.6f},{np.cos(i / 5):.6f}" for i in t]
    (d / "rec.csv").write_text("\n".join(rows) + "\n")
    by_name = import_dataset([d], fs=12000, window=W, column="accel_y", split=(1, 0, 0))
    by_index = import_dataset([d], fs=12000, window=W, column=2, split=(1, 0, 0))
    assert len(by_name) == 2 and by_name.class_names == ["B007"]
    np.testing.assert_allclose(by_name.x[0, 0], np.cos(t[:W] / 5), atol=1e-5)
    np.testing.assert_array_equal(by_name.x, by_index.x)
    assert by_name.params["recordings"]["rec.csv"]["column"] == "accel_y"
    msg = _err("3 columns", [d], fs=12000, window=W, split=(1, 0, 0))
    assert "accel_x" in msg and "column=" in msg
    _err("no column 'z'", [d], fs=12000, window=W, column="z", split=(1, 0, 0))
    _err("out of range", [d], fs=12000, window=W, column=5, split=(1, 0, 0))


def test_csv_single_column_without_header_and_bad_value(tmp_path):
    d = tmp_path / "normal"
    d.mkdir()
    sig = _sig(300)
    (d / "a.csv").write_text("\n".join(f"{v:.8f}" for v in sig))
    ds = import_dataset([d], fs=12000, window=W, split=(1, 0, 0))
    np.testing.assert_allclose(ds.x[0, 0], sig[:W], atol=1e-6)
    (d / "a.csv").write_text("1.0\n2.0\noops\n" + "\n".join("0.5" for _ in range(300)))
    msg = _err("non-numeric", [d], fs=12000, window=W, split=(1, 0, 0))
    assert "a.csv" in msg and "line 3" in msg


def test_npy_npz_reading(tmp_path):
    d = tmp_path / "OR014"
    sig = _npy(d / "one.npy", n=800)
    sig2 = _sig(600, 3)
    np.savez(d / "two.npz", signal=sig2)
    ds = import_dataset([d], fs=12000, window=W, split=(1, 0, 0))
    assert list(ds.recording) == ["one.npy"] * 3 + ["two.npz"] * 2
    np.testing.assert_allclose(ds.x[0, 0], sig[:W], rtol=1e-6)
    np.testing.assert_allclose(ds.x[3, 0], sig2[:W], rtol=1e-6)
    assert ds.params["recordings"]["two.npz"]["key"] == "signal"

    multi = tmp_path / "multi" / "three.npz"
    multi.parent.mkdir()
    np.savez(multi, a=_sig(600, 4), b=_sig(600, 5))
    msg = _err("2 arrays", [multi], fs=12000, window=W, split=(1, 0, 0))
    assert "['a', 'b']" in msg
    ds_b = import_dataset([multi], fs=12000, window=W, column="b", split=(1, 0, 0))
    np.testing.assert_allclose(ds_b.x[0, 0], _sig(600, 5)[:W], rtol=1e-6)
    _err("no array 'c'", [multi], fs=12000, window=W, column="c", split=(1, 0, 0))


def test_npy_rejects_pickled_objects_and_2d(tmp_path):
    d = tmp_path / "normal"
    d.mkdir()
    np.save(d / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _err("cannot read 'obj.npy'", [d], fs=12000, window=W, split=(1, 0, 0))
    (d / "obj.npy").unlink()
    np.save(d / "wide.npy", np.zeros((600, 3)))
    _err(r"shape \[600, 3\]", [d], fs=12000, window=W, split=(1, 0, 0))


# ------------------------------------------------------------------------------------------------ WAV


def _wav(path, fs: int = 48000, seconds: float = 0.5, f0: float = 1000.0, channels: int = 1):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(fs * seconds)) / fs
    sig = 0.5 * np.sin(2 * np.pi * f0 * t)
    data = np.stack([sig * (k + 1) / channels for k in range(channels)], axis=1) if channels > 1 else sig
    wavfile.write(str(path), fs, np.round(data * 32767).astype(np.int16))


def test_wav_48k_resampled_to_12k_keeps_frequency(tmp_path):
    _wav(tmp_path / "normal" / "tone.wav", fs=48000, seconds=0.5, f0=1000.0)
    ds = import_dataset([tmp_path], window=W, split=(1, 0, 0))
    rec = ds.params["recordings"]["normal/tone.wav"]
    assert rec["source_fs"] == 48000.0 and rec["resample"] == [1, 4]
    assert rec["samples"] == 6000 and len(ds) == 6000 // W
    assert ds.fs == 12000.0
    flat = ds.x[:, 0, :].reshape(-1).astype(np.float64)
    spec = np.abs(np.fft.rfft(flat * np.hanning(flat.size)))
    f_peak = np.argmax(spec) * 12000.0 / flat.size
    assert abs(f_peak - 1000.0) / 1000.0 < 0.01
    assert 0.45 < np.abs(flat).max() < 0.55  # int16 PCM scaled to ±1


def test_wav_native_rate_channels_and_fs_conflict(tmp_path):
    _wav(tmp_path / "IR021" / "st.wav", fs=8000, seconds=0.2, channels=2)
    ds = import_dataset([tmp_path], target_fs=None, window=W, column=1, split=(1, 0, 0))
    assert ds.fs == 8000.0 and len(ds) == 1600 // W
    assert 0.45 < np.abs(ds.x).max() < 0.55 and ds.params["recordings"]["IR021/st.wav"]["wav_channel"] == 1
    _err("out of range", [tmp_path], target_fs=None, window=W, column=2, split=(1, 0, 0))
    msg = _err("8000 Hz", [tmp_path], fs=12000, window=W, split=(1, 0, 0))
    assert "fs=12000" in msg and "st.wav" in msg


def test_mixed_rates_resampled_or_rejected(tmp_path):
    _wav(tmp_path / "normal" / "a.wav", fs=48000, seconds=0.1)
    _wav(tmp_path / "normal" / "b.wav", fs=24000, seconds=0.2)
    ds = import_dataset([tmp_path], window=W, split=(1, 0, 0))
    recs = ds.params["recordings"]
    assert recs["normal/a.wav"]["samples"] == 1200 and recs["normal/b.wav"]["samples"] == 2400
    msg = _err("different sample rates", [tmp_path], target_fs=None, window=W, split=(1, 0, 0))
    assert "48000 Hz" in msg and "24000 Hz" in msg and "target_fs" in msg


def test_resample_ratio_is_rational():
    assert resample_ratio(48000, 12000) == (1, 4)
    assert resample_ratio(12000, 12000) == (1, 1)
    assert resample_ratio(44100, 12000) == (40, 147)


# ----------------------------------------------------------------------------------------- windowing


def test_window_and_hop_counts(tmp_path):
    sig = _npy(tmp_path / "normal" / "a.npy", n=1000)
    ds = import_dataset([tmp_path], fs=12000, window=W, hop=100, split=(1, 0, 0))
    assert len(ds) == (1000 - W) // 100 + 1 == 8
    np.testing.assert_allclose(ds.x[1, 0], sig[100:100 + W], rtol=1e-6)
    np.testing.assert_allclose(ds.x[7, 0], sig[700:700 + W], rtol=1e-6)
    assert ds.params["hop"] == 100
    assert len(import_dataset([tmp_path], fs=12000, window=W, split=(1, 0, 0))) == 3  # remainder dropped
    assert len(import_dataset([tmp_path], fs=12000, window=W, hop=400, split=(1, 0, 0))) == 2
    assert n_windows(W, W, 1) == 1 and n_windows(W - 1, W, 1) == 0
    assert window_signal(np.arange(10.0), 4, 3).shape == (3, 1, 4)


def test_bad_window_hop_channel_split(tmp_path):
    _npy(tmp_path / "normal" / "a.npy")
    _err("window must be", [tmp_path], fs=12000, window=8)
    _err("hop must be", [tmp_path], fs=12000, window=W, hop=0)
    _err("unknown channel 'XX'", [tmp_path], fs=12000, window=W, channel="XX")
    _err("sum to 1", [tmp_path], fs=12000, window=W, split=(0.5, 0.2, 0.2))
    _err("positive sample rate", [tmp_path], fs=-1, window=W)


# -------------------------------------------------------------------------------------------- labels


def test_json_label_map_and_class_order(tmp_path):
    d = tmp_path / "raw"
    for name in ("97.mat", "98.mat", "105.mat", "118.mat", "130.mat", "131.mat"):
        _cwru(d / name, int(name.split(".")[0]), n=600)
    lm = tmp_path / "labels.json"
    lm.write_text(json.dumps({"9[78].mat": "normal", "105.mat": "IR007", "118*": "B007", "raw/13?.mat": "OR007"}))
    assert load_label_map(lm)[0] == ("9[78].mat", "normal")
    order = ["normal", "IR007", "B007", "OR007"]
    # 'raw/13?.mat' matches neither '130.mat' (the id when raw/ is the root) nor the file name
    _err("'130.mat' matches no pattern", [tmp_path / "raw"], fs=12000, window=W, label_map=lm, split=(1, 0, 0))
    lm.write_text(json.dumps({"9[78].mat": "normal", "105.mat": "IR007", "118*": "B007", "13?.mat": "OR007"}))
    ds = import_dataset([tmp_path / "raw"], fs=12000, window=W, label_map=lm, class_names=order, split=(1, 0, 0))
    assert ds.class_names == order
    labels = {r: ds.class_names[y] for r, y in zip(ds.recording, ds.y)}
    assert labels == {"97.mat": "normal", "98.mat": "normal", "105.mat": "IR007", "118.mat": "B007",
                      "130.mat": "OR007", "131.mat": "OR007"}
    lm.write_text(json.dumps({"9[78].mat": "normal", "105.mat": "IR007", "118*": "B007", "raw/13?.mat": "OR007"}))
    # patterns match the relative path *or* the file name; 'raw/13?.mat' needs the root above raw
    ds2 = import_dataset([tmp_path], fs=12000, window=W, label_map=lm, split=(1, 0, 0))
    labels2 = {r: ds2.class_names[y] for r, y in zip(ds2.recording, ds2.y)}
    assert labels2 == {"raw/97.mat": "normal", "raw/98.mat": "normal", "raw/105.mat": "IR007",
                       "raw/118.mat": "B007", "raw/130.mat": "OR007", "raw/131.mat": "OR007"}
    assert ds2.class_names == sorted(set(labels2.values()))


def test_label_map_errors(tmp_path):
    d = tmp_path / "raw"
    _npy(d / "a.npy")
    _npy(d / "b.npy")
    lm = tmp_path / "labels.csv"
    lm.write_text("pattern,label\na.npy,normal\n")
    msg = _err("matches no pattern", [d], fs=12000, window=W, label_map=lm, split=(1, 0, 0))
    assert "b.npy" in msg and "labels.csv" in msg
    lm.write_text("pattern,label\na.npy,normal\nb*,IR007\n")
    ds = import_dataset([d], fs=12000, window=W, label_map=lm, split=(1, 0, 0))
    assert ds.class_names == ["IR007", "normal"]
    msg = _err("not in class_names", [d], fs=12000, window=W, label_map=lm, class_names=["normal"], split=(1, 0, 0))
    assert "IR007" in msg and "b.npy" in msg
    msg = _err("have no file", [d], fs=12000, window=W, label_map=lm,
               class_names=["normal", "IR007", "OR021"], split=(1, 0, 0))
    assert "OR021" in msg
    lm.write_text("a.npy,normal,extra\n")
    _err("line 1 has 3 columns", [d], fs=12000, window=W, label_map=lm, split=(1, 0, 0))
    bad = tmp_path / "labels.json"
    bad.write_text("[1, 2]")
    _err("JSON object", [d], fs=12000, window=W, label_map=bad, split=(1, 0, 0))
    _err("does not exist", [d], fs=12000, window=W, label_map=tmp_path / "missing.json", split=(1, 0, 0))


# -------------------------------------------------------------------------------------------- splits


def test_splits_by_recording_stratified_and_deterministic(tmp_path):
    _tree(tmp_path, {"normal": 10, "IR007": 10, "OR021": 4}, n=600)
    ds = import_dataset([tmp_path], fs=12000, window=W, seed=3)
    owner = {}
    for rec, sp in zip(ds.recording, ds.split):
        assert owner.setdefault(rec, sp) == sp
    for ci, name in enumerate(ds.class_names):
        recs = {r: s for r, s in owner.items() if r.startswith(name + "/")}
        n = len(recs)
        got = tuple(sum(s == k for s in recs.values()) for k in ("train", "val", "test"))
        assert got == split_counts(n, (0.7, 0.15, 0.15))
        assert set(ds.y[np.isin(ds.recording, list(recs))]) == {ci}
    again = import_dataset([tmp_path], fs=12000, window=W, seed=3)
    np.testing.assert_array_equal(ds.split, again.split)
    np.testing.assert_array_equal(ds.x, again.x)
    other = import_dataset([tmp_path], fs=12000, window=W, seed=4)
    assert not np.array_equal(ds.split, other.split)
    # the dataset round-trips through the file format (leakage guard included)
    save_dataset(ds, tmp_path / "out.npz")
    assert load_dataset(tmp_path / "out.npz").counts() == ds.counts()


def test_small_classes(tmp_path):
    _tree(tmp_path, {"normal": 2, "IR007": 3}, n=600)
    msg = _err("cannot fill", [tmp_path], fs=12000, window=W)
    assert "class 'normal': 2 recording(s)" in msg and "by recording" in msg and "1,0,0" in msg
    ds = import_dataset([tmp_path], fs=12000, window=W, split=(0.5, 0, 0.5))
    normal = {r: s for r, s in zip(ds.recording, ds.split) if r.startswith("normal/")}
    assert sorted(set(normal.values())) == ["test", "train"]
    only_test = import_dataset([tmp_path], fs=12000, window=W, split=(0, 0, 1))
    assert set(only_test.split) == {"test"}
    assert set(import_dataset([tmp_path], fs=12000, window=W, split=(1, 0, 0)).split) == {"train"}


def test_assign_splits_zero_train_fraction():
    labels = {f"r{i}": "a" for i in range(3)}
    out = assign_splits(labels, ["a"], (0, 0.5, 0.5), seed=0)
    assert sorted(out.values()).count("train") == 0 and set(out.values()) == {"val", "test"}


# ---------------------------------------------------------------------------------------- bad input


def test_nan_and_inf_name_the_file(tmp_path):
    sig = _sig(600)
    sig[17] = np.nan
    sig[30] = np.inf
    (tmp_path / "normal").mkdir()
    np.save(tmp_path / "normal" / "bad.npy", sig)
    msg = _err("NaN/inf", [tmp_path], fs=12000, window=W, split=(1, 0, 0))
    assert "normal/bad.npy" in msg and "2 NaN/inf" in msg and "index 17" in msg


def test_short_signal_names_file_length_window(tmp_path):
    _npy(tmp_path / "normal" / "short.npy", n=200)
    msg = _err("window", [tmp_path], fs=12000, window=W, split=(1, 0, 0))
    assert "normal/short.npy" in msg and "200 samples" in msg and f"{W} points" in msg
    _wav(tmp_path / "x" / "short.wav", fs=48000, seconds=0.02)
    msg = _err("after resampling to 12000 Hz", [tmp_path / "x"], window=W, split=(1, 0, 0))
    assert "240 samples" in msg


def test_missing_empty_and_unsupported_sources(tmp_path):
    _err("does not exist", [tmp_path / "nowhere"], fs=12000, window=W)
    (tmp_path / "empty").mkdir()
    msg = _err("no supported files", [tmp_path / "empty"], fs=12000, window=W)
    assert "empty" in msg and ".mat" in msg
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "README.txt").write_text("hi")
    _err("no supported files", [tmp_path / "docs"], fs=12000, window=W)
    _err("unsupported file type '.txt'", [tmp_path / "docs" / "README.txt"], fs=12000, window=W)
    _err("no sources", [], fs=12000, window=W)


def test_find_files_sorted_recursive_and_progress(tmp_path):
    for rel in ("b/2.npy", "a/z/1.npy", "a/0.npy"):
        _npy(tmp_path / rel, n=600)
    (tmp_path / "a" / "notes.txt").write_text("skip me")
    files, root = find_files([tmp_path / "a", tmp_path / "b"])
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a/0.npy", "a/z/1.npy", "b/2.npy"]
    assert root == tmp_path.resolve()
    calls = []
    ds = import_dataset([tmp_path / "a", tmp_path / "b"], fs=12000, window=W, split=(1, 0, 0),
                        progress=lambda i, n: calls.append((i, n)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert sorted(set(ds.recording)) == ["a/0.npy", "a/z/1.npy", "b/2.npy"]
    assert ds.class_names == ["a", "b", "z"]
