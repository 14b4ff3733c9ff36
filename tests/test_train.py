import json

import numpy as np
import pytest
import torch

from drsn_edge.bundle import load_bundle
from drsn_edge.errors import InputError
from drsn_edge.train import TrainConfig, _lr_at, augment, train
from drsn_edge.data.noise import measured_snr_db

from .conftest import run_cli


def _cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), epochs=3, batch=32, width=1, depth=1, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_lr_schedule_follows_paper_fractions():
    cfg = TrainConfig(data="d", out="m.drsn", epochs=100)
    assert [_lr_at(e, cfg) for e in (0, 39, 40, 79, 80, 99)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_augment_exact_snr_and_clean_share():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 1, 256)).astype(np.float32)
    noisy, kind, snr = augment(x, rng, ["gaussian", "laplacian", "pink"], -5, 5, 0.25)
    clean = kind == "none"
    assert 0.15 < clean.mean() < 0.35
    assert np.array_equal(noisy[clean], x[clean])
    assert set(kind[~clean]) == {"gaussian", "laplacian", "pink"}
    got = measured_snr_db(x[~clean, 0], noisy[~clean, 0])
    np.testing.assert_allclose(got, snr[~clean], atol=1e-3)
    assert snr[~clean].min() >= -5 and snr[~clean].max() <= 5


def test_train_writes_bundle_with_metadata(tiny_data, tmp_path):
    out = tmp_path / "m.drsn"
    s = train(_cfg(tiny_data, out, epochs=2))
    assert out.exists() and not out.with_suffix(".resume.pt").exists()
    b = load_bundle(out)
    assert b.arch == "drsn-cw" and len(b.class_names) == 10
    assert b.meta["training"]["recipe"]["epochs"] == 2
    assert len(b.meta["training"]["history"]) == 2
    assert len(b.meta["training"]["data_sha256"]) == 64
    assert s["best_val_acc"] == max(h["val_acc"] for h in b.meta["training"]["history"]) and s["windows_per_s"] > 0


def test_resume_continues_to_the_same_result(tiny_data, tmp_path):
    full = tmp_path / "full.drsn"
    train(_cfg(tiny_data, full))
    part = tmp_path / "part.drsn"

    class Stop(Exception):
        pass

    def stop_after_first(event, **info):
        if event == "epoch" and info["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        train(_cfg(tiny_data, part), progress=stop_after_first)
    assert part.with_suffix(".resume.pt").exists() and not part.exists()
    train(_cfg(tiny_data, part, resume=True))
    a, b = load_bundle(full), load_bundle(part)
    assert [h["epoch"] for h in b.meta["training"]["history"]] == [1, 2, 3]
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert ka == kb
        torch.testing.assert_close(va, vb, rtol=1e-5, atol=1e-6)


def test_resume_without_checkpoint_is_refused(tiny_data, tmp_path):
    with pytest.raises(InputError, match="no checkpoint"):
        train(_cfg(tiny_data, tmp_path / "x.drsn", resume=True))


@pytest.mark.parametrize("kw,msg", [({"epochs": 0}, "epochs"), ({"batch": 1}, "batch"),
                                    ({"out": "model.pt"}, ".drsn"), ({"snr_min": 3, "snr_max": -3}, "empty")])
def test_bad_options(tiny_data, tmp_path, kw, msg):
    kw.setdefault("out", str(tmp_path / "m.drsn"))
    with pytest.raises(InputError, match=msg):
        train(_cfg(tiny_data, **kw))


@pytest.mark.slow
def test_ddp_two_processes_with_torchrun(tiny_data, tmp_path):
    out = tmp_path / "ddp.drsn"
    r = run_cli("train", "--data", tiny_data, "-o", out, "--epochs", "2", "--batch", "32", "--width", "1",
                "--depth", "1", "--nproc", "2", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    objs = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(objs) == 1, r.stdout  # only rank 0 reports
    assert objs[0]["world_size"] == 2
    b = load_bundle(out)
    assert b.meta["training"]["world_size"] == 2
    assert len(b.meta["training"]["history"]) == 2


# ---------------------------------------------------------------- best epoch and learning, on known data

FOUR = ["normal", "IR021", "OR021", "B021"]


@pytest.fixture(scope="module")
def four_class_data(tmp_path_factory):
    """4 simulated classes, 30 train / 15 val / 15 test windows each, from separate recordings."""
    from drsn_edge.data.dataset import save_dataset
    from drsn_edge.data.simulator import synthesize

    path = tmp_path_factory.mktemp("four") / "four.npz"
    save_dataset(synthesize(windows_per_class=60, recordings_per_class=12, seed=5, classes=FOUR,
                            split=(0.5, 0.25, 0.25)), path)
    return path


def _train_recording_epochs(data, out, **kw):
    """Train; return (summary, weights after each epoch), read from the resume checkpoint at each epoch end."""
    states = {}

    def grab(event, **info):
        if event == "epoch":
            ck = torch.load(out.with_suffix(".resume.pt"), weights_only=True)
            states[info["epoch"]] = ck["model"]

    cfg = dict(epochs=12, batch=16, width=1, depth=1, threads=1, noise=(), seed=0)
    cfg.update(kw)
    return train(TrainConfig(data=str(data), out=str(out), **cfg), progress=grab), states


def _assert_bundle_holds(out, state):
    b = load_bundle(out)
    for k, v in b.model.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)


def test_the_best_validation_epoch_is_kept_not_the_last(four_class_data, tmp_path):
    out = tmp_path / "m.drsn"
    s, states = _train_recording_epochs(four_class_data, out)
    from drsn_edge.train import best_record

    hist = load_bundle(out).meta["training"]["history"]
    val = [h["val_acc"] for h in hist]
    best = best_record(hist)["epoch"]
    # this seed's run peaks before its last epoch, so keeping the last epoch cannot pass
    assert val[-1] < max(val) and val[best - 1] == max(val), val
    assert s["best_epoch"] == best and s["best_val_acc"] == max(val)
    assert load_bundle(out).meta["metrics"]["best_val_acc"] == max(val)
    _assert_bundle_holds(out, states[best])
    # and the kept weights really score that accuracy on the fixed validation set
    from drsn_edge.data.dataset import load_dataset
    from drsn_edge.evaluate import predict_logits
    from drsn_edge.train import fixed_validation_set

    cfg = TrainConfig(data=str(four_class_data), out=str(out), noise=(), seed=0)
    xv, yv = fixed_validation_set(load_dataset(four_class_data).select_split("val"), cfg)
    assert float((predict_logits(load_bundle(out).model, xv).argmax(1) == yv).mean()) == max(val)


def test_a_tie_at_the_top_is_broken_by_validation_loss(four_class_data, tmp_path):
    out = tmp_path / "m.drsn"
    s, states = _train_recording_epochs(four_class_data, out, epochs=6, val_windows=4)
    hist = load_bundle(out).meta["training"]["history"]
    top = [h for h in hist if h["val_acc"] == max(r["val_acc"] for r in hist)]
    assert len(top) > 1, hist  # 4 validation windows: a tie at the top
    best = min(top, key=lambda h: (h["val_loss"], -h["epoch"]))["epoch"]  # lowest loss, then the later epoch
    assert s["best_epoch"] == best
    _assert_bundle_holds(out, states[best])


def test_training_beats_chance_on_unseen_recordings(four_class_data, tmp_path):
    """4 balanced classes: guessing scores 0.25. Under guessing, 30 or more right of 60 test windows has
    probability 2.7e-5 (binomial tail), so ≥ 0.5 shows the model learned; the test recordings were never seen."""
    from drsn_edge.evaluate import run_evaluation

    out = tmp_path / "m.drsn"
    train(TrainConfig(data=str(four_class_data), out=str(out), epochs=12, batch=16, width=1, depth=1, threads=1,
                      noise=(), seed=0))
    r = run_evaluation(out, four_class_data, split="test").to_json()
    assert r["n"] == 60 and r["accuracy"] >= 0.5


def test_fixed_validation_set_is_seeded_and_capped(four_class_data):
    from drsn_edge.data.dataset import load_dataset
    from drsn_edge.train import fixed_validation_set

    val = load_dataset(four_class_data).select_split("val")
    cfg = TrainConfig(data="d", out="m.drsn", val_windows=10, clean_fraction=0.0, seed=3)
    x1, y1 = fixed_validation_set(val, cfg)
    x2, y2 = fixed_validation_set(val, cfg)
    assert x1.shape == (10, 1, val.window) and np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert np.abs(x1.mean(axis=-1)).max() < 1e-5  # normalized (z-score) as the model sees it
    full, _ = fixed_validation_set(val, TrainConfig(data="d", out="m.drsn", val_windows=1000, noise=()))
    assert len(full) == len(val)


@pytest.mark.parametrize("split,msg", [
    ((0.0, 0.5, 0.5), "no 'train' split"),
    ((0.5, 0.0, 0.5), "no 'val' split"),
])
def test_missing_splits_are_refused(tmp_path, split, msg):
    from drsn_edge.data.dataset import save_dataset
    from drsn_edge.data.simulator import synthesize

    data = tmp_path / "d.npz"
    save_dataset(synthesize(windows_per_class=8, recordings_per_class=4, classes=FOUR[:2], split=split, window=256), data)
    with pytest.raises(InputError, match=msg):
        train(_cfg(data, tmp_path / "m.drsn"))


def test_train_split_missing_a_class_and_too_few_windows_are_refused(tmp_path):
    from drsn_edge.data.dataset import save_dataset
    from drsn_edge.data.simulator import synthesize

    ds = synthesize(windows_per_class=8, recordings_per_class=4, classes=FOUR[:2], window=256, split=(0.5, 0.25, 0.25))
    drop = (ds.split == "train") & (ds.y == 1)
    data = tmp_path / "d.npz"
    save_dataset(ds.subset(~drop), data)
    with pytest.raises(InputError, match="lacks some classes"):
        train(_cfg(data, tmp_path / "m.drsn"))
    save_dataset(ds, data)
    with pytest.raises(InputError, match="fewer than one batch of 32"):
        train(_cfg(data, tmp_path / "m.drsn"))


def test_epoch_selection_by_hand():
    from drsn_edge.train import best_record, is_better

    hist = [{"epoch": 1, "val_acc": 0.2, "val_loss": 1.0}, {"epoch": 2, "val_acc": 0.6, "val_loss": 0.9},
            {"epoch": 3, "val_acc": 0.6, "val_loss": 0.8}, {"epoch": 4, "val_acc": 0.6, "val_loss": 0.8},
            {"epoch": 5, "val_acc": 0.5, "val_loss": 0.1}]
    # highest accuracy; among equals the lower loss; among equal losses the later epoch
    assert best_record(hist)["epoch"] == 4 and best_record(hist[:3])["epoch"] == 3
    assert best_record(hist[:2])["epoch"] == 2 and best_record([]) is None
    assert is_better(hist[0], None) and not is_better(hist[4], hist[3]) and is_better(hist[3], hist[2])
    assert not is_better(hist[1], hist[2]) and is_better(hist[2], hist[1])


def test_a_record_without_a_loss_counts_as_an_infinite_loss():
    """Accuracy ties are broken by the loss; a record that carries none (written before losses were kept)
    loses to one that has a loss, and between two such records the later one wins."""
    from drsn_edge.train import best_record, is_better

    assert is_better({"val_acc": 0.5, "val_loss": 9.0}, {"val_acc": 0.5})
    assert not is_better({"val_acc": 0.5}, {"val_acc": 0.5, "val_loss": 9.0})
    assert is_better({"val_acc": 0.5}, {"val_acc": 0.5})
    assert best_record([{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.5}])["epoch"] == 2
