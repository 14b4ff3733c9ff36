"""Evaluation figures on cases whose answer is known by hand: a tiny confusion matrix, a split whose
membership is known, and a model that always answers the same class (so its accuracy on any set is the
share of that class in the set)."""

from __future__ import annotations

import numpy as np
import pytest

from drsn_edge.bundle import Bundle, make_meta, save_bundle
from drsn_edge.data.dataset import Dataset, save_dataset
from drsn_edge.errors import InputError
from drsn_edge.evaluate import accuracy_report, evaluate, grid_mean, load_test_windows, run_evaluation

CLASSES = ["a", "b", "c", "d"]
WINDOW = 128


def _dataset(y, split, noise=None, snr=None, seed=0):
    n = len(y)
    rng = np.random.default_rng(seed)
    return Dataset(x=rng.standard_normal((n, 1, WINDOW)).astype(np.float32), y=np.asarray(y), class_names=CLASSES,
                   fs=1000.0, window=WINDOW, noise=noise if noise is not None else np.full(n, "none"),
                   snr_db=snr if snr is not None else np.full(n, np.nan),
                   recording=np.array([f"{s}-{i}" for i, s in enumerate(split)]), split=np.asarray(split))


def _constant_model(cls: int):
    """A real DRSN-CW whose head ignores the features: its logits are one-hot on `cls` for every window."""
    import torch

    from drsn_edge.models import create_model

    m = create_model("drsn-cw", classes=len(CLASSES), width=1, depth=1)
    with torch.no_grad():
        m.fc.weight.zero_()
        m.fc.bias.zero_()
        m.fc.bias[cls] = 1.0
    return m.eval()


@pytest.fixture(scope="module")
def always_a(tmp_path_factory):
    m = _constant_model(0)
    path = tmp_path_factory.mktemp("bundle") / "always_a.drsn"
    save_bundle(m, make_meta(m, CLASSES, 1000.0, WINDOW), path)
    return path


# train: 3 windows, all class a; val: 2 windows (1 a); test: 4 windows (1 a, 3 b)
Y = [0, 0, 0, 0, 2, 0, 1, 1, 1]
SPLIT = ["train"] * 3 + ["val"] * 2 + ["test"] * 4


# ---------------------------------------------------------------- accuracy_report by hand


def _hand_report():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 0, 2])
    noise = np.array(["none", "none", "gaussian", "gaussian", "gaussian", "pink"])
    snr = np.array([np.nan, np.nan, 0.0, 0.0, 5.0, 0.0], dtype=np.float32)
    return accuracy_report(y_true, y_pred, CLASSES, noise, snr)


def test_accuracy_report_overall_and_per_class_by_hand():
    r = _hand_report()
    assert r["n"] == 6
    assert r["accuracy"] == pytest.approx(4 / 6)
    # class d has no windows: no figure rather than a made-up 0 or 1
    assert r["per_class"] == pytest.approx({"a": 2 / 3, "b": 1 / 2, "c": 1.0})
    assert r["class_names"] == CLASSES


def test_confusion_matrix_rows_are_truth_columns_prediction():
    assert _hand_report()["confusion"] == [[2, 1, 0, 0],
                                           [1, 1, 0, 0],
                                           [0, 0, 1, 0],
                                           [0, 0, 0, 0]]


def test_per_noise_and_snr_cells_by_hand():
    r = _hand_report()
    assert r["per_snr"] == {"none": {"clean": 1.0}, "gaussian": {"0": 0.5, "5": 0.0}, "pink": {"0": 1.0}}
    assert r["per_snr_n"] == {"none": {"clean": 2}, "gaussian": {"0": 2, "5": 1}, "pink": {"0": 1}}
    # the grid mean weights the three noisy cells equally (clean is not a cell): (0.5 + 0 + 1) / 3
    assert grid_mean(r) == pytest.approx(0.5)


def test_grid_mean_without_noisy_cells_is_none():
    r = accuracy_report(np.array([0, 1]), np.array([0, 0]), CLASSES, np.array(["none", "none"]),
                        np.array([np.nan, np.nan]))
    assert grid_mean(r) is None and r["accuracy"] == 0.5


def test_no_windows_is_an_input_error():
    with pytest.raises(InputError, match="^no windows to evaluate$"):
        accuracy_report(np.array([], int), np.array([], int), CLASSES, np.array([]), np.array([]))


def test_confusion_matrix_is_whole_counts_in_json():
    import json

    assert json.dumps(_hand_report()["confusion"]) == "[[2, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]"


# ---------------------------------------------------------------- which windows are evaluated


@pytest.mark.parametrize("splits,n,acc", [
    (("test",), 4, 1 / 4),            # 1 of the 4 test windows is class a
    (("val",), 2, 1 / 2),
    (("train",), 3, 1.0),
    (("val", "test"), 6, 2 / 6),
    (None, 9, 5 / 9),                 # every window
])
def test_evaluate_uses_exactly_the_chosen_split(splits, n, acc):
    b = Bundle(model=_constant_model(0), meta={"class_names": CLASSES, "fs": 1000.0, "window": WINDOW,
                                               "normalization": "zscore", "arch": "drsn-cw"})
    r = evaluate(b, _dataset(Y, SPLIT), splits=splits).to_json()
    assert r["n"] == n and r["accuracy"] == pytest.approx(acc)
    assert r["confusion"][0][0] + r["confusion"][1][0] + r["confusion"][2][0] == n  # every answer is 'a'


def test_evaluate_noise_grid_replicates_the_test_split():
    b = Bundle(model=_constant_model(1), meta={"class_names": CLASSES, "fs": 1000.0, "window": WINDOW,
                                               "normalization": "zscore", "arch": "drsn-cw"})
    r = evaluate(b, _dataset(Y, SPLIT), ["gaussian", "pink"], [0.0, 5.0], splits=("test",)).to_json()
    # 4 test windows × (clean + 2 kinds × 2 SNRs); 3 of each 4 are class b
    assert r["n"] == 4 * 5
    assert r["per_snr_n"] == {"none": {"clean": 4}, "gaussian": {"0": 4, "5": 4}, "pink": {"0": 4, "5": 4}}
    assert r["accuracy"] == pytest.approx(0.75)
    assert r["per_class"] == pytest.approx({"a": 0.0, "b": 1.0})
    r = evaluate(b, _dataset(Y, SPLIT), ["gaussian"], [0.0], splits=("test",), include_clean=False).to_json()
    assert r["n"] == 4 and set(r["per_snr"]) == {"gaussian"}


def test_run_evaluation_split_option(always_a, tmp_path):
    data = tmp_path / "d.npz"
    save_dataset(_dataset(Y, SPLIT), data)
    for split, n, acc in [("test", 4, 0.25), ("train,val", 5, 4 / 5), ("all", 9, 5 / 9), ("val", 2, 0.5)]:
        r = run_evaluation(always_a, data, split=split).to_json()
        assert (r["n"], r["accuracy"]) == (n, pytest.approx(acc)), split
        assert r["per_class"]["a"] == 1.0
    assert run_evaluation(always_a, data, split="test").to_json()["per_class"] == {"a": 1.0, "b": 0.0}


def test_run_evaluation_refuses_a_split_the_data_lacks(always_a, tmp_path):
    data = tmp_path / "d.npz"
    save_dataset(_dataset([0, 1], ["train", "train"]), data)
    with pytest.raises(InputError, match="no test windows"):
        run_evaluation(always_a, data, split="test")


def test_load_test_windows_keeps_only_test_when_present(tmp_path):
    meta = {"class_names": CLASSES, "fs": 1000.0, "window": WINDOW, "normalization": "zscore"}
    data = tmp_path / "d.npz"
    save_dataset(_dataset(Y, SPLIT), data)
    ds, source = load_test_windows(meta, data)
    assert len(ds) == 4 and set(ds.split) == {"test"} and ds.y.tolist() == [0, 1, 1, 1]
    assert source == str(data)  # where the windows came from, as reports print it
    save_dataset(_dataset([0, 1, 2], ["train", "val", "val"]), data)
    ds, source = load_test_windows(meta, data)
    assert len(ds) == 3 and source == str(data)  # no test split: every window


@pytest.mark.parametrize("field,value,needle", [
    ("class_names", ["a", "b", "c", "e"], "classes"),
    ("fs", 999.0, "sample rate"),
    ("window", 64, "window"),
])
def test_incompatible_data_is_refused(field, value, needle):
    meta = {"class_names": CLASSES, "fs": 1000.0, "window": WINDOW, "normalization": "zscore", "arch": "drsn-cw"}
    meta[field] = value
    b = Bundle(model=None, meta=meta)
    with pytest.raises(InputError, match=needle):
        evaluate(b, _dataset(Y, SPLIT))


META = {"class_names": CLASSES, "fs": 1000.0, "window": WINDOW, "normalization": "zscore", "arch": "drsn-cw"}


@pytest.mark.parametrize("field,value,message", [
    ("fs", 999.5, "dataset sample rate 1000 Hz differs from the model's 999.5 Hz; resample on import"),
    ("window", 64, "dataset window 128 differs from the model's 64"),
    ("normalization", "minmax", "dataset normalization zscore differs from the model's minmax"),
    ("class_names", ["a", "b", "c", "e"], "dataset (classes ['a', 'b', 'c', 'd']) has class(es) ['d'] that the model "
     "does not know (its classes: ['a', 'b', 'c', 'e']); evaluate on data of the model's classes or train/fine-tune "
     "a model that has them"),
])
def test_incompatible_data_messages(field, value, message):
    with pytest.raises(InputError) as ei:
        evaluate(Bundle(model=None, meta={**META, field: value}), _dataset(Y, SPLIT))
    assert str(ei.value) == message


class _Recorder:
    """A stand-in network that keeps every batch it is given and answers class i % 4 for window i."""

    def __init__(self):
        import torch

        self.torch, self.seen = torch, []

    def eval(self):
        return self

    def __call__(self, x):
        self.seen.append(x.numpy().copy())
        n = x.shape[0]
        logits = self.torch.zeros(n, len(CLASSES))
        logits[self.torch.arange(n), self.torch.arange(n) % len(CLASSES)] = 1.0
        return logits


@pytest.mark.parametrize("seed_kw,seed", [({}, 0), ({"seed": 7}, 7)])
def test_evaluate_sweeps_the_test_windows_with_its_seed_and_scores_each_answer(seed_kw, seed):
    """The network sees exactly the normalized test windows, clean then with Gaussian noise at 0 dB drawn
    with `seed` (0 by default); its answers 0,1,2,3,0,1,2,3 against labels a,b,b,b,a,b,b,b score 4 of 8."""
    from drsn_edge.data.dataset import normalize
    from drsn_edge.data.noise import noise_sweep

    net = _Recorder()
    r = evaluate(Bundle(model=net, meta=META), _dataset(Y, SPLIT), ["gaussian"], [0.0], **seed_kw).to_json()
    test = _dataset(Y, SPLIT).select_split("test")
    np.testing.assert_array_equal(np.concatenate(net.seen), normalize(noise_sweep(test, ["gaussian"], [0.0], seed=seed).x))
    assert (r["n"], r["accuracy"], r["per_class"]) == (8, 0.5, {"a": 1.0, "b": 2 / 6})
    assert r["confusion"] == [[2, 0, 0, 0], [0, 2, 2, 2], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert r["per_snr"] == {"none": {"clean": 0.5}, "gaussian": {"0": 0.5}} and r["grid_mean_accuracy"] == 0.5
    assert (r["model"], r["classes_present"], r["domain"]) == ({"arch": "drsn-cw", "classes": 4, "path": None},
                                                               ["a", "b"], None)


def test_noise_types_without_snrs_evaluate_the_windows_as_they_are():
    net = _Recorder()
    r = evaluate(Bundle(model=net, meta=META), _dataset(Y, SPLIT), ["gaussian"], [], include_clean=False).to_json()
    assert r["n"] == 4 and r["per_snr_n"] == {"none": {"clean": 4}}


def test_evaluate_never_falls_back_to_other_splits():
    """Asking for test windows of a dataset that has none is an error, not an evaluation of its train windows."""
    b = Bundle(model=_constant_model(0), meta={"class_names": CLASSES, "fs": 1000.0, "window": WINDOW,
                                               "normalization": "zscore", "arch": "drsn-cw"})
    with pytest.raises(InputError, match="no test windows"):
        evaluate(b, _dataset([0, 1], ["train", "val"]), splits=("test",))
    with pytest.raises(InputError) as ei:
        evaluate(b, _dataset([0, 1], ["train", "train"]), splits=("val", "test"))
    assert str(ei.value) == "dataset has no val/test windows; choose --split from ['train'] or all"
