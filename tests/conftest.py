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


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: intra-op threads only add spin/wake-up overhead (badly so on a busy 2-core box)."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def randomize_bn(model, mean_span: float = 2.0, bias_span: float = 1.0, seed: int = 0):
    """Give every BatchNorm random statistics and affines (so BN folding is really exercised); eval mode."""
    import torch

    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.copy_((torch.rand(m.num_features, generator=g) - 0.5) * mean_span)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_((torch.rand(m.num_features, generator=g) - 0.5) * bias_span)
    return model.eval()
