"""The domain guard of an ONNX run through the device agent: run-onnx saves named extra outputs (atomically,
logits first), refuses an output the model lacks, and AgentOnnxRunner reports the artifact's own guard_score —
on the local device (the agent in a child process) and over a real OpenSSH server on 127.0.0.1."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from drsn_edge.devices import LocalDevice
from drsn_edge.devices.base import AGENT_PATH
from drsn_edge.errors import DeviceError, InputError

from ..conftest import CLIPPED
from .conftest import local_logits, sshd_missing_reason

VENV_PY = sys.executable  # the "remote" interpreter with numpy + onnxruntime (the remote is this host)
PY36 = "/root/.pyenv/versions/3.6.15/bin/python3"
SCORE_FILE = {"guard_score": "guard_score.npy"}


def _run(dev, model, windows, **extra):
    return dev.run_agent("run-onnx", {"model": model.name, "input": windows.name, "output": "logits.npy", "warmup": 1,
                                      "sweep_runs": 1, **extra}, files=[model, windows], check=False)


def _leftovers(workdir) -> list[str]:
    return [p for p in os.listdir(workdir) if ".tmp" in p]


def test_run_onnx_saves_the_named_outputs_beside_the_logits(tmp_path, scored_onnx, windows):
    with LocalDevice() as dev:
        res = _run(dev, scored_onnx, windows, extra_outputs=SCORE_FILE)
        logits = np.load(dev.get("logits.npy", tmp_path / "l.npy"), allow_pickle=False)
        score = np.load(dev.get("guard_score.npy", tmp_path / "g.npy"), allow_pickle=False)
        assert _leftovers(dev.workdir) == []  # both written through a temp file and a rename
    x = np.load(windows)
    ref = local_logits(scored_onnx, x, 1)
    assert res.get("error") is None and res["extra_outputs"] == SCORE_FILE
    np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-6)  # output 0 stays the logits
    assert score.shape == (len(x),)
    # guard_score = Σ logits² per window (the test graph's ReduceSumSquare); float32 sums of 10 terms
    np.testing.assert_allclose(score, (ref.astype(np.float64) ** 2).sum(axis=1), rtol=1e-5)


@pytest.mark.parametrize("extra, message", [
    ({"guard_score": "g.npy"}, "the model has no output 'guard_score' (its outputs: logits)"),
    ({"logits": "logits.npy"}, "extra_outputs name a file twice (or the logits' file): logits.npy, logits.npy"),
    ({"logits": 3}, "argument 'extra_outputs' must map output names to file names"),
    (["guard_score"], "argument 'extra_outputs' must map output names to file names"),
])
def test_run_onnx_refuses_bad_extra_outputs_and_writes_nothing(tmp_path, tiny_onnx, windows, extra, message):
    with LocalDevice() as dev:
        res = _run(dev, tiny_onnx, windows, extra_outputs=extra)
        written = sorted(p for p in os.listdir(dev.workdir) if p.endswith(".npy") and p != windows.name)
    assert (res["error"], res["error_kind"]) == (message, "input")
    assert written == []


@pytest.mark.skipif(not os.path.exists(PY36), reason="no Python 3.6 (JetPack 4's) interpreter here")
def test_extra_outputs_check_runs_on_python36():
    """The argument check itself under a real Python 3.6 (numpy is not needed for it)."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import agent\n"
            "print(json.dumps(agent.extra_outputs({'extra_outputs': {'guard_score': 'g.npy'}}, ['logits', "
            "'guard_score'], 'logits.npy')))\n"
            "try:\n    agent.extra_outputs({'extra_outputs': {'nope': 'n.npy'}}, ['logits'], None)\n"
            "except agent.AgentError as e:\n    print(e.kind, e)\n")
    p = subprocess.run([PY36, "-c", code, str(AGENT_PATH.parent)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ['{"guard_score": "g.npy"}', "input the model has no output 'nope' (its outputs: logits)"]


# ------------------------------------------------------------------ AgentOnnxRunner on a real guarded artifact

@pytest.fixture(scope="module")
def guarded_int8(int8_onnx, guard_windows):
    return int8_onnx, guard_windows[-28:]  # 20 test windows and the 8 clipped ones


def _agent_vs_in_process(dev, path, x):
    from drsn_edge.backends.onnxrt import AgentOnnxRunner, OrtRunner

    here = OrtRunner(path)
    here_logits = here.infer(x)
    ref_score, ref_ok = here.guard_result(x)
    runner = AgentOnnxRunner(dev, path, warmup=1)
    assert runner.guard_meta == here.guard_meta and runner.guard_meta is not None
    logits = runner.infer(x)
    score, ok = runner.guard_result(x)
    # the same ONNX Runtime on the same machine with one intra-op thread: the same float sums in the same order
    np.testing.assert_allclose(logits, here_logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(score, ref_score, rtol=1e-6)
    np.testing.assert_array_equal(ok, ref_ok)
    assert not ok[-CLIPPED:].any()  # clipped windows are out of domain whatever their score


def test_agent_runner_reports_the_artifacts_guard_on_the_local_device(guarded_int8):
    path, x = guarded_int8
    with LocalDevice() as dev:
        _agent_vs_in_process(dev, path, x)


@pytest.mark.skipif(sshd_missing_reason() is not None, reason=str(sshd_missing_reason()))
def test_agent_runner_reports_the_artifacts_guard_over_ssh(sshd, guarded_int8):
    path, x = guarded_int8
    with sshd.device(python=VENV_PY) as dev:
        _agent_vs_in_process(dev, path, x)


def test_agent_runner_without_guard_fetches_the_logits_alone(tiny_onnx, windows):
    from drsn_edge.backends.onnxrt import AgentOnnxRunner

    x = np.load(windows)
    with LocalDevice() as dev:
        runner = AgentOnnxRunner(dev, tiny_onnx, warmup=0)
        runner.infer(x)
        assert runner.guard_meta is None and runner.guard_result(x) is None
        with pytest.raises(InputError, match="carries no domain guard"):
            runner.infer_guard(x)
        assert sorted(p for p in os.listdir(dev.workdir) if p.endswith(".npy")) == ["logits.npy", "windows.npy"]


def test_run_onnx_result_is_one_json_object_with_extra_outputs(tmp_path, scored_onnx, windows):
    """The agent as the device runs it: one JSON object on stdout, naming the extra outputs it saved."""
    import shutil

    shutil.copy(scored_onnx, tmp_path / "m.onnx")
    shutil.copy(windows, tmp_path / "x.npy")
    args = tmp_path / "a.json"
    args.write_text(json.dumps({"model": "m.onnx", "input": "x.npy", "output": "l.npy", "warmup": 0,
                                "sweep_runs": 1, "extra_outputs": SCORE_FILE}))
    p = subprocess.run([sys.executable, str(AGENT_PATH), "run-onnx", str(args)], capture_output=True, text=True,
                       cwd=tmp_path)
    lines = p.stdout.strip().splitlines()
    assert p.returncode == 0 and len(lines) == 1, p.stderr
    assert json.loads(lines[0])["extra_outputs"] == SCORE_FILE
    assert np.load(tmp_path / "guard_score.npy").shape == (len(np.load(windows)),)


def test_device_error_names_the_missing_output(tiny_onnx, windows):
    with LocalDevice() as dev:
        with pytest.raises(DeviceError, match="the model has no output 'guard_score'"):
            dev.run_agent("run-onnx", {"model": tiny_onnx.name, "input": windows.name,
                                       "extra_outputs": SCORE_FILE}, files=[tiny_onnx, windows])
