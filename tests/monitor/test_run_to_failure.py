"""The simulated run to failure: one machine, healthy then a growing fault, continuous and exact SNR."""

import json
import subprocess
import sys

import numpy as np
import pytest

from drsn_edge.data.noise import measured_snr_db
from drsn_edge.data.run_to_failure import RunToFailure, segments
from drsn_edge.errors import InputError


def test_schedule_and_length():
    s = RunToFailure(healthy_s=10, fault_s=20, severity=(7, 21), noise=None, snr_db=None, seed=0)
    assert s.onset_sample == 120_000
    assert s.n_samples == 30 * 12_000 // 2048 * 2048
    assert s.severity_at(119_999) is None
    assert s.severity_at(120_000) == 7.0
    assert s.severity_at(120_000 + 10 * 12_000) == 14.0  # halfway through the growth
    assert s.severity_at(10**9) == 21.0


def test_segments_are_seeded_and_noise_is_at_the_exact_snr():
    clean = RunToFailure(healthy_s=4, fault_s=4, noise=None, snr_db=None, seed=3)
    noisy = RunToFailure(healthy_s=4, fault_s=4, noise="gaussian", snr_db=-5.0, seed=3)
    a = np.concatenate(list(segments(clean, segment_s=3)))
    b = np.concatenate(list(segments(clean, segment_s=3)))
    np.testing.assert_array_equal(a, b)
    assert a.size == clean.n_samples and a.dtype == np.float32
    # same machine and same draws up to the noise: the noise is the difference, per 2048 block at −5 dB
    c = np.concatenate(list(segments(noisy, segment_s=3)))
    snr = measured_snr_db(a.reshape(-1, 2048), c.reshape(-1, 2048))
    np.testing.assert_allclose(snr, -5.0, atol=0.01)  # float32 storage of the sum


def test_fault_part_carries_impacts():
    s = RunToFailure(healthy_s=5, fault_s=5, severity=(21, 21), noise=None, snr_db=None, seed=1)
    x = np.concatenate(list(segments(s)))
    kurt = lambda v: float(((v - v.mean()) ** 4).mean() / v.var() ** 2)  # noqa: E731
    assert kurt(x[s.onset_sample:]) > 2 * kurt(x[:s.onset_sample])  # impulsive once the spall is there


@pytest.mark.parametrize("kw,msg", [({"fault": "X"}, "unknown fault"), ({"severity": (21, 7)}, "severity"),
                                    ({"healthy_s": 0, "fault_s": 0}, "not both 0"),
                                    ({"noise": "gaussian", "snr_db": None}, "one noise type")])
def test_bad_specs(kw, msg):
    with pytest.raises(InputError, match=msg):
        RunToFailure(**kw).validate()


def test_cli_writes_a_wav_and_its_description(tmp_path):
    out = tmp_path / "rtf.wav"
    res = subprocess.run([sys.executable, "-m", "drsn_edge", "data", "synth", "--run-to-failure", "-o", str(out),
                          "--healthy-s", "2", "--fault-s", "2", "--noise", "gaussian", "--snr", "0", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    from scipy.io import wavfile

    rate, x = wavfile.read(out)
    assert rate == 12000 and x.dtype == np.float32 and x.size == info["n_samples"] == 48000 // 2048 * 2048
    assert json.loads(out.with_suffix(".json").read_text())["onset_sample"] == 24000
    bad = subprocess.run([sys.executable, "-m", "drsn_edge", "data", "synth", "--run-to-failure", "-o",
                          str(tmp_path / "x.npz")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "written as .wav or .npy" in bad.stderr
