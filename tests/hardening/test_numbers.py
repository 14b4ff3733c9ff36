"""Root cause 3: non-finite and out-of-range numbers are refused at the boundary (validate.py: one Click
type per kind of number, and the library checks the same bounds), before any work and any file."""

import pytest

from .contract import expect

BAD = [
    (["data", "synth", "-o", "x.npz", "--split", "nan,nan,nan"], "--split"),
    (["data", "synth", "-o", "x.npz", "--split", "0.5,0.5,0.5"], "add up to 1"),
    (["data", "synth", "-o", "x.npz", "--split", "1,0"], "three"),
    (["data", "synth", "-o", "x.npz", "--snr", "1e308", "--noise", "gaussian"], "100 dB"),
    (["data", "synth", "-o", "x.npz", "--seed", "-1"], "--seed"),
    (["data", "synth", "-o", "x.npz", "--windows-per-class", "0"], "--windows-per-class"),
    (["data", "synth", "-o", "x.npz", "--recordings-per-class", "-3"], "--recordings-per-class"),
    (["train", "--data", "d.npz", "-o", "m.drsn", "--lr", "nan"], "--lr"),
    (["train", "--data", "d.npz", "-o", "m.drsn", "--lr", "0"], "--lr"),
    (["train", "--data", "d.npz", "-o", "m.drsn", "--weight-decay", "inf"], "--weight-decay"),
    (["train", "--data", "d.npz", "-o", "m.drsn", "--width", "0"], "--width"),
    (["train", "--data", "d.npz", "-o", "m.drsn", "--width", "-inf"], "--width"),
    (["train", "--data", "d.npz", "-o", "m.drsn", "--depth", "100000"], "--depth"),
    (["train", "--data", "d.npz", "-o", "m.drsn", "--nproc", "0"], "--nproc"),
    (["train", "--data", "d.npz", "-o", "m.drsn", "--clean-fraction", "1.5"], "--clean-fraction"),
    (["train", "--data", "d.npz", "-o", "m.drsn", "--snr-range", "nan:5"], "--snr-range"),
    (["train", "--data", "d.npz", "-o", "m.drsn", "--snr-range", "-5:1e308"], "--snr-range"),
    (["train", "--data", "d.npz", "-o", "m.drsn", "--batch", "1"], "--batch"),
    (["build", "--target", "jetson-orin-nano", "--opt-level", "99"], "--opt-level"),
    (["build", "--target", "host", "--max-drop", "nan"], "--max-drop"),
    (["build", "--target", "host", "--workspace-mb", "-1"], "--workspace-mb"),
    (["quantize", "-o", "q.onnx", "--max-drop", "-inf"], "--max-drop"),
    (["quantize", "-o", "q.onnx", "--snr", "nan"], "snr"),
    (["evaluate", "--windows-per-class", "0"], "--windows-per-class"),
    (["evaluate", "--seed", "99999999999"], "--seed"),
    (["export", "-o", "a.onnx", "--opset", "99"], "--opset"),
    (["data", "import", "d.npz", "-o", "x.npz", "--fs", "nan"], "--fs"),
    (["data", "import", "d.npz", "-o", "x.npz", "--target-fs", "0"], "--target-fs"),
    (["data", "import", "d.npz", "-o", "x.npz", "--window", "0"], "--window"),
    (["import", "m.drsn", "-o", "x.drsn", "--classes", "1"], "--classes"),
    (["calibration", "make", "--data", "d.npz", "-o", "c.npz", "--n", "0"], "--n"),
    (["check", "--target", "host", "--windows-per-class", "-1"], "--windows-per-class"),
]


@pytest.mark.parametrize("args,needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_number_refused_before_work(work, args, needle):
    expect(args, work("d.npz", "m.drsn"), "input", contains=needle)


TOML = """name = "{name}"
family = "{family}"
backend = "{backend}"
description = "test profile"
[hardware]
{hardware}
[check]
{check}
"""


def _profile(cwd, name, check="", family="host", backend="litert", hardware='cpu = "x86_64"'):
    d = cwd / "profiles"
    d.mkdir(exist_ok=True)
    (d / f"{name}.toml").write_text(TOML.format(name=name, family=family, backend=backend, hardware=hardware,
                                                check=check))
    return d


@pytest.mark.parametrize("check", ["min_accuracy = nan", "min_accuracy = 1.5", "max_drop_pp = inf",
                                   "max_drop_pp = -1", "max_latency_ms = nan"])
def test_target_thresholds_must_be_finite(work, check):
    cwd = work("d.npz")
    d = _profile(cwd, "hx", check)
    expect(["targets", "hx", "--targets-dir", d], cwd, "input", contains="hx")


@pytest.mark.parametrize("hw", ['cpu = "m"\nram_gb = inf', 'cpu = "m"\nram_gb = -1', 'cpu = "m"\nclock_mhz = nan'])
def test_target_hardware_numbers_must_be_finite(work, hw):
    cwd = work("d.npz")
    d = _profile(cwd, "hy", hardware=hw)
    expect(["targets", "hy", "--targets-dir", d], cwd, "input")


def test_nonfinite_loss_stops_training_and_writes_no_bundle(tmp_path, assets, monkeypatch):
    """A run whose loss turns non-finite stops with a clear error; neither bundle nor checkpoint is written."""
    import torch

    from drsn_edge.errors import InputError
    from drsn_edge.train import TrainConfig, train

    real = torch.nn.functional.cross_entropy
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", lambda *a, **k: real(*a, **k) * float("nan"))
    out = tmp_path / "m.drsn"
    cfg = TrainConfig(data=str(assets / "d.npz"), out=str(out), epochs=1, batch=8, width=0.5, depth=1, threads=1)
    with pytest.raises(InputError, match="diverged"):
        train(cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
