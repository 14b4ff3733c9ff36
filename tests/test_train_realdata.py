"""Training on the user's data: best-epoch selection, --val-data, --init fine-tuning and the test split recorded
in the bundle (used by the evaluation spec when the simulator cannot make the model's classes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drsn_edge.bundle import load_bundle
from drsn_edge.data.dataset import load_dataset, save_dataset
from drsn_edge.errors import InputError
from drsn_edge.evalspec import EvalSpec
from drsn_edge.evaluate import evaluate
from drsn_edge.train import TrainConfig, best_record, is_better, train


def _cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), epochs=1, batch=32, width=1, depth=1, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_ties_in_validation_accuracy_are_broken_by_loss_then_the_later_epoch():
    history = [{"epoch": 1, "val_acc": 0.9, "val_loss": 0.5}, {"epoch": 2, "val_acc": 0.9, "val_loss": 0.3},
               {"epoch": 3, "val_acc": 0.9, "val_loss": 0.3}, {"epoch": 4, "val_acc": 0.8, "val_loss": 0.1},
               {"epoch": 5, "val_acc": 0.9, "val_loss": 0.4}]
    assert best_record(history)["epoch"] == 3
    assert is_better({"val_acc": 0.95, "val_loss": 9.0}, history[2])
    assert not is_better({"val_acc": 0.9, "val_loss": 0.31}, history[2])


@pytest.fixture(scope="module")
def renamed(tiny_data, tmp_path_factory):
    """Two of tiny_data's classes under names the simulator does not know (a user's machine)."""
    ds = load_dataset(tiny_data)
    keep = ds.subset(np.isin(ds.y, [0, 9]))
    keep.y = (keep.y == 9).astype(np.int64)
    keep.class_names = ["healthy", "outer-race"]
    path = tmp_path_factory.mktemp("user") / "pump.npz"
    save_dataset(keep, path)
    return path


def test_bundle_records_training_file_and_test_recordings(renamed, tmp_path):
    out = tmp_path / "m.drsn"
    s = train(_cfg(renamed, out, epochs=2))
    tr = load_bundle(out).meta["training"]
    ds = load_dataset(renamed)
    assert tr["data"] == str(renamed.resolve())
    assert tr["test_recordings"] == sorted(set(ds.recording[ds.split == "test"].tolist()))
    assert tr["selection"].startswith("highest validation accuracy")
    assert s["best_epoch"] == best_record(tr["history"])["epoch"]
    assert all("val_loss" in h for h in tr["history"])


def test_eval_spec_uses_the_recorded_test_split_and_refuses_a_changed_file(renamed, tmp_path):
    data = tmp_path / "pump.npz"
    data.write_bytes(renamed.read_bytes())
    out = tmp_path / "m.drsn"
    train(_cfg(data, out))
    meta = load_bundle(out).meta
    n_test = int((load_dataset(data).split == "test").sum())
    ev = EvalSpec(noise=("gaussian",), snrs=(0.0,)).windows(meta)
    assert len(ev) == 2 * n_test  # clean + one cell
    assert ev.description.startswith(f"test split of {data.resolve()} recorded in the model")
    ds = load_dataset(data)
    ds.x[0] += 1.0
    save_dataset(ds, data)
    with pytest.raises(InputError, match="changed since the model was trained"):
        EvalSpec().windows(meta)
    data.unlink()
    with pytest.raises(InputError, match="is gone; pass --data"):
        EvalSpec().windows(meta)


def test_val_data_replaces_the_val_split(tiny_data, tmp_path):
    ds = load_dataset(tiny_data)
    no_val = ds.subset(ds.split != "val")
    save_dataset(no_val, tmp_path / "train.npz")
    with pytest.raises(InputError, match="--val-data"):
        train(_cfg(tmp_path / "train.npz", tmp_path / "a.drsn"))
    s = train(_cfg(tmp_path / "train.npz", tmp_path / "b.drsn", val_data=str(tiny_data)))
    assert s["validation"] == str(tiny_data)


def test_init_keeps_the_backbone_and_gives_a_new_head_for_new_classes(tiny_model, renamed, tmp_path):
    out = tmp_path / "ft.drsn"
    s = train(_cfg(renamed, out, init=str(tiny_model), lr=0.0, weight_decay=0.0))
    src, ft = load_bundle(tiny_model), load_bundle(out)
    assert s["init"]["head"] == "new" and ft.class_names == ["healthy", "outer-race"]
    assert ft.meta["config"]["depth"] == src.meta["config"]["depth"] == 1
    a, b = src.model.state_dict(), ft.model.state_dict()
    torch.testing.assert_close(a["stem.weight"], b["stem.weight"], rtol=0, atol=0)  # lr 0: copied, unchanged
    assert b["fc.weight"].shape == (2, a["fc.weight"].shape[1])


def test_evaluate_on_faults_only(tiny_model, tiny_data):
    ds = load_dataset(tiny_data)
    faults = ds.subset(ds.y >= 7)
    faults.y = faults.y - 7
    faults.class_names = ds.class_names[7:]
    rep = evaluate(load_bundle(tiny_model), faults).to_json()
    assert rep["classes_present"] == ["OR007", "OR014", "OR021"]
    assert list(rep["per_class"]) == ["OR007", "OR014", "OR021"]
    assert rep["n"] == int(((ds.y >= 7) & (ds.split == "test")).sum())
    assert np.array(rep["confusion"]).shape == (10, 10)
