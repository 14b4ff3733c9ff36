import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("DRSN_EDGE_NO_PROGRESS", "1")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A small simulated dataset with train/val/test splits (all 10 classes)."""
    from drsn_edge.data.dataset import save_dataset
    from drsn_edge.data.simulator import synthesize

    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    save_dataset(synthesize(windows_per_class=24, recordings_per_class=8, seed=5), path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tiny_data, tmp_path_factory) -> Path:
    """A small DRSN-CW trained for a few epochs on tiny_data."""
    from drsn_edge.train import TrainConfig, train

    out = tmp_path_factory.mktemp("model") / "tiny.drsn"
    train(TrainConfig(data=str(tiny_data), out=str(out), epochs=3, batch=32, width=1, depth=1, threads=1))
    return out


def run_cli(*args, env=None, timeout=300):
    """Run the real console entry point in a subprocess; returns CompletedProcess."""
    import subprocess

    e = dict(os.environ, DRSN_EDGE_NO_PROGRESS="1")
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-m", "drsn_edge", *map(str, args)], capture_output=True, text=True,
                          env=e, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_calib(tiny_data, tmp_path_factory) -> Path:
    """A calibration set for tiny_model, drawn from tiny_data's non-test recordings."""
    from drsn_edge.calibration import make_calibration

    out = tmp_path_factory.mktemp("calib") / "calib.npz"
    make_calibration(tiny_data, out, n=40, seed=0)
    return out
