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


FOUR = ["normal", "IR021", "OR021", "B021"]


@pytest.fixture(scope="session")
def four(tmp_path_factory):
    """A 4-class model that has learned something (so int8 can lose accuracy), an evaluation set of exactly
    50 windows (so a drop of k windows is 2k pp exactly), a 40-window calibration set and a one-window one
    that clips every other window's activations."""
    from drsn_edge.calibration import make_calibration
    from drsn_edge.data.dataset import load_dataset, save_dataset
    from drsn_edge.data.simulator import synthesize
    from drsn_edge.train import TrainConfig, train

    import numpy as np

    d = tmp_path_factory.mktemp("four")
    ds = synthesize(windows_per_class=60, recordings_per_class=12, seed=5, classes=FOUR, split=(0.5, 0.25, 0.25))
    save_dataset(ds, d / "data.npz")
    train(TrainConfig(data=str(d / "data.npz"), out=str(d / "model.drsn"), epochs=12, batch=16, width=1, depth=1,
                      threads=1, noise=(), seed=0))
    save_dataset(ds.select_split("test").subset(np.arange(50)), d / "test50.npz")
    make_calibration(d / "data.npz", d / "calib.npz", n=40, seed=0)
    save_dataset(load_dataset(d / "calib.npz").subset(np.arange(1)), d / "calib1.npz")
    # the same window 32 times: the same min/max ranges, enough windows for a batch of 32
    save_dataset(load_dataset(d / "calib.npz").subset(np.zeros(32, dtype=int)), d / "calib1x32.npz")
    return {"data": d / "data.npz", "model": d / "model.drsn", "test50": d / "test50.npz",
            "calib": d / "calib.npz", "calib1": d / "calib1.npz", "calib1x32": d / "calib1x32.npz"}


@pytest.fixture(scope="session")
def int8_onnx(tiny_model, tiny_calib, tiny_data, tmp_path_factory) -> Path:
    """tiny_model's int8 QDQ ONNX (minmax) with its domain guard, adapted to its own int8 features."""
    out = tmp_path_factory.mktemp("q") / "m.int8.onnx"
    r = run_cli("quantize", tiny_model, "--calib", tiny_calib, "--data", tiny_data, "--method", "minmax",
                "--max-drop", "100", "--max-cell-drop", "100", "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    return out


CLIPPED = 8  # clipped windows at the end of guard_windows: out of domain by the signal check, whatever the score


@pytest.fixture(scope="session")
def guard_windows(tiny_data):
    """tiny_data's test windows at 0 dB Gaussian noise, normalized, then CLIPPED clipped copies of the first ones."""
    import numpy as np

    from drsn_edge.data.dataset import load_dataset, normalize
    from drsn_edge.data.noise import noise_sweep

    x = normalize(noise_sweep(load_dataset(tiny_data).select_split("test"), ["gaussian"], [0.0], seed=3).x)
    return np.concatenate([x, np.clip(x[:CLIPPED], -0.2, 0.2)])


def assert_guard_follows_float(runner, bundle, x) -> dict:
    """Run an int8 artifact's runner on guard_windows x and compare its guard's flags with the float model's.
    int8 features carry a rounding error (for the shipped model 10-30 % on the score, measured); a flag may flip
    only where the float score lies near the threshold: away from it (±25 %) they agree, and overall on most."""
    from drsn_edge.guard import guard_scores
    from drsn_edge.guard_export import agreement

    runner.infer(x)
    score, ok = runner.guard_result(x)
    ref_score, ref_ok = guard_scores(bundle, x)
    assert not ok[-CLIPPED:].any() and not ref_ok[-CLIPPED:].any()
    a = agreement(score, ok, ref_score, ref_ok, bundle.meta["guard"]["threshold"])
    assert a["flag_agreement_far_from_threshold"] >= 0.95, a
    assert a["flag_agreement"] >= 0.9, a
    assert a["median_rel_score_diff"] < 0.5, a
    return a
