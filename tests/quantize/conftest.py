"""A model that has learned something (so int8 can lose accuracy), an evaluation set of exactly 50 windows
(so a drop of k windows is 2k pp exactly), a good calibration set and a one-window one that clips."""

from __future__ import annotations

import numpy as np
import pytest

FOUR = ["normal", "IR021", "OR021", "B021"]


@pytest.fixture(scope="session")
def four(tmp_path_factory):
    from drsn_edge.calibration import make_calibration
    from drsn_edge.data.dataset import load_dataset, save_dataset
    from drsn_edge.data.simulator import synthesize
    from drsn_edge.train import TrainConfig, train

    d = tmp_path_factory.mktemp("four")
    ds = synthesize(windows_per_class=60, recordings_per_class=12, seed=5, classes=FOUR, split=(0.5, 0.25, 0.25))
    save_dataset(ds, d / "data.npz")
    train(TrainConfig(data=str(d / "data.npz"), out=str(d / "model.drsn"), epochs=12, batch=16, width=1, depth=1,
                      threads=1, noise=(), seed=0))
    save_dataset(ds.select_split("test").subset(np.arange(50)), d / "test50.npz")
    make_calibration(d / "data.npz", d / "calib.npz", n=40, seed=0)
    save_dataset(load_dataset(d / "calib.npz").subset(np.arange(1)), d / "calib1.npz")
    return {"data": d / "data.npz", "model": d / "model.drsn", "test50": d / "test50.npz",
            "calib": d / "calib.npz", "calib1": d / "calib1.npz"}
