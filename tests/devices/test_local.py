"""The local device: the agent in a subprocess with a temp work dir."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from drsn_edge.devices import LocalDevice, open_device
from drsn_edge.devices.base import AGENT_PATH
from drsn_edge.errors import DeviceError, InputError

from .conftest import fill_up, local_logits

PY36 = Path("/root/.pyenv/versions/3.6.15/bin/python3")


def test_info_local():
    with open_device("local") as dev:
        wd = dev.workdir
        assert Path(wd).is_dir()
        info = dev.info()
    assert not Path(wd).exists(), "close() must remove the work dir"
    assert info["device"] == "local" and info["transport"] == "local"
    assert info["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert info["arch"] and info["os"]["system"]
    assert info["disk"]["free_bytes"] > 0
    assert set(info["jetson"]) >= {"is_jetson", "nv_tegra_release", "model", "packages"}
    assert info["modules"]["numpy"]["available"] is True
    assert info["modules"]["onnxruntime"]["available"] is True
    assert "tensorrt" in info["modules"]


def test_put_get_hostile_names(tmp_path, hostile):
    names, check = hostile
    with LocalDevice() as dev:
        for i, name in enumerate(names):
            src = tmp_path / f"src{i}.bin"
            src.write_bytes(os.urandom(100 + i))
            remote = dev.put(src, name)
            assert Path(remote) == Path(dev.workdir, name)
            back = tmp_path / "back" / name
            dev.get(name, back)
            assert back.read_bytes() == src.read_bytes()
        check(dev.workdir)


def test_get_failure_leaves_nothing(tmp_path):
    target = tmp_path / "new" / "deeper" / "logits.npy"
    with LocalDevice() as dev:
        with pytest.raises(DeviceError, match="not in the local work dir"):
            dev.get("logits.npy", target)
        with pytest.raises(InputError):
            dev.get("../escape", target)
    assert not (tmp_path / "new").exists()


def test_run_onnx_local_matches_onnxruntime(tmp_path, tiny_onnx, windows):
    with LocalDevice() as dev:
        res = dev.run_agent("run-onnx", {"model": tiny_onnx.name, "input": windows.name, "output": "logits.npy",
                                         "warmup": 2, "sweep_runs": 3}, files=[tiny_onnx, windows])
        out = dev.get("logits.npy", tmp_path / "logits.npy")
    x = np.load(windows)
    np.testing.assert_allclose(np.load(out), local_logits(tiny_onnx, x, 1), rtol=1e-5, atol=1e-6)
    assert len(res["latency_ms"]) == len(x) and all(t > 0 for t in res["latency_ms"])
    assert res["throughput"][0]["batch"] == 1 and res["throughput"][0]["windows_per_s"] > 0


def test_run_onnx_input_errors(tmp_path, tiny_onnx):
    pickled = tmp_path / "obj.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((2, 1, 100), np.float32))
    with LocalDevice() as dev:
        with pytest.raises(DeviceError, match="pickled arrays are refused"):
            dev.run_agent("run-onnx", {"model": tiny_onnx.name, "input": pickled.name}, files=[tiny_onnx, pickled])
        with pytest.raises(DeviceError, match="does not fit the model input"):
            dev.run_agent("run-onnx", {"model": tiny_onnx.name, "input": wrong.name}, files=[wrong])
        with pytest.raises(DeviceError, match="not in the work dir"):
            dev.run_agent("run-onnx", {"model": "missing.onnx", "input": wrong.name})
        res = dev.run_agent("build-engine", {}, check=False)
        assert res["error"] == "tensorrt not available" and res["error_kind"] == "missing_dependency"


def test_agent_stdout_is_one_json_object(tmp_path):
    """Run the script as the device does; whatever it prints, stdout carries exactly one JSON object."""
    args = tmp_path / "a.json"
    args.write_text(json.dumps({}))
    for argv in (["info", str(args)], ["ping", str(args)], ["nope", str(args)], ["run-onnx", str(args)], []):
        p = subprocess.run([sys.executable, str(AGENT_PATH), *argv], capture_output=True, text=True, cwd=tmp_path)
        lines = p.stdout.strip().splitlines()
        assert len(lines) == 1, p.stdout
        obj = json.loads(lines[0])
        assert isinstance(obj, dict) and p.returncode == (1 if obj.get("error") else 0)


@pytest.mark.skipif(not PY36.exists(), reason="no Python 3.6 (JetPack 4's) interpreter here")
def test_agent_runs_on_python36_without_numpy():
    with LocalDevice(python=str(PY36)) as dev:
        info = dev.info()
        assert info["python"]["version"].startswith("3.6")
        res = dev.run_agent("run-onnx", {"model": "m.onnx", "input": "x.npy"}, check=False)
        assert res["error_kind"] == "missing_dependency" and "numpy" in res["error"]


def test_local_python_missing():
    with LocalDevice(python="/nonexistent/python3") as dev:
        with pytest.raises(DeviceError, match="python"):
            dev.run_agent("ping")


def test_local_agent_disk_full(tiny_tmpfs, tmp_path, windows):
    """The agent's own write hits a real ENOSPC: a DeviceError, and no partial logits."""
    from .conftest import make_onnx

    mnt = tiny_tmpfs("256k")
    small = make_onnx(tmp_path / "small.onnx")
    with LocalDevice(remote_tmp=mnt) as dev:
        dev.put(small, "m.onnx")
        dev.put(windows, "x.npy")
        dev.run_agent("ping")  # copies the agent in
        fill_up(mnt, leave_pages=1)  # room for the args file only
        with pytest.raises(DeviceError, match="disk full"):
            dev.run_agent("run-onnx", {"model": "m.onnx", "input": "x.npy", "output": "logits.npy", "warmup": 0,
                                       "sweep_runs": 1})
        assert not [p for p in os.listdir(dev.workdir) if "logits" in p]
