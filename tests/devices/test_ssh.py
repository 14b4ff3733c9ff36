"""The ssh device against a real OpenSSH server on loopback (see conftest.SshServer)."""

import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from drsn_edge.devices import SshDevice, open_device
from drsn_edge.devices.base import AGENT_REMOTE_NAME
from drsn_edge.errors import DeviceError

from .conftest import cmdline, fill_up, free_port, local_logits, make_onnx, sshd_missing_reason

pytestmark = pytest.mark.skipif(sshd_missing_reason() is not None, reason=str(sshd_missing_reason()))

VENV_PY = sys.executable  # the "remote" interpreter with numpy + onnxruntime (the remote is this host)


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


# ------------------------------------------------------------------------------------------ happy paths

def test_info_over_ssh(sshd):
    with open_device(sshd.url(), **sshd.device_options(python=VENV_PY)) as dev:
        wd = dev.workdir
        assert wd.startswith("/") and os.path.isdir(wd) and "drsn-edge." in wd
        info = dev.info()
    assert not os.path.exists(wd), "close() must remove the remote work dir"
    assert info["device"] == sshd.url() and info["transport"] == "ssh" and info["workdir"] == wd
    assert info["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert info["disk"]["free_bytes"] > 0 and info["arch"]
    assert info["modules"]["numpy"]["available"] and info["modules"]["onnxruntime"]["available"]
    # the sshd runs on this machine, a PC: no /etc/nv_tegra_release, so no Jetson and no release line
    assert (info["jetson"]["is_jetson"], info["jetson"]["nv_tegra_release"]) == (False, None)


def test_info_with_the_default_remote_python3(sshd):
    """Whatever `python3` the login shell finds (often without numpy) can still report facts."""
    with sshd.device() as dev:
        try:
            info = dev.info()
        except DeviceError as exc:
            if "not found" in str(exc):
                pytest.skip("no python3 on the test host's PATH")
            raise
    assert info["python"]["version"].startswith("3.")
    assert "numpy" in info["modules"]


def test_put_get_round_trip_hostile_names(sshd, tmp_path, hostile):
    names, check = hostile
    with sshd.device() as dev:
        for i, name in enumerate(names):
            src = tmp_path / f"src{i}.bin"
            payload = os.urandom(1000 + i) + name.encode()
            src.write_bytes(payload)
            remote = dev.put(src, name)
            assert remote == f"{dev.workdir}/{os.path.normpath(name)}"
            assert Path(remote).read_bytes() == payload  # the remote is this host: check the exact path
            back = tmp_path / "back" / name
            # get() takes the work-dir-relative name or the path put() returned
            assert dev.get(name if i % 2 else remote, back) == back
            assert back.read_bytes() == payload
        assert not [p for p in os.listdir(dev.workdir) if p.endswith(".drsn-part")]
        check(dev.workdir)
    check()


def test_open_device_ipv6(sshd):
    if not sshd.ipv6:
        pytest.skip("no IPv6 loopback here")
    with open_device(sshd.url("::1"), **sshd.device_options()) as dev:
        assert dev.run_agent("ping")["pong"] is True


def test_ssh_config_alias_and_proxyjump_are_honoured(sshd):
    """The device name is an ~/.ssh/config alias (HostName/Port/User/IdentityFile from the config), and a
    ProxyJump hop from the same config works: drsn-edge does not override them."""
    opts = sshd.device_options()
    del opts["identity_file"]
    for alias in ("drsn-alias", "drsn-jump"):
        with open_device(f"ssh://{alias}", **opts) as dev:
            assert os.path.isdir(dev.workdir)


def test_run_onnx_end_to_end(sshd, tmp_path, tiny_onnx, windows):
    model = tmp_path / "m o'd$(touch pwned).onnx"  # hostile names on the way through run_agent too
    model.write_bytes(tiny_onnx.read_bytes())
    inp = tmp_path / "win dows;$x`id`.npy"
    inp.write_bytes(windows.read_bytes())
    with sshd.device(python=VENV_PY) as dev:
        res = dev.run_agent("run-onnx", {"model": model.name, "input": inp.name, "output": "lo gits.npy",
                                         "warmup": 2, "sweep_runs": 5}, files=[model, inp])
        out = dev.get("lo gits.npy", tmp_path / "remote_logits.npy")
        assert not os.path.exists(os.path.join(dev.workdir, "pwned"))
    x = np.load(windows)
    got = np.load(out, allow_pickle=False)
    assert got.shape == (len(x), 10)
    np.testing.assert_allclose(got, local_logits(tiny_onnx, x, 1), rtol=1e-5, atol=1e-6)
    assert res["windows"] == len(x) and res["static_batch"] == 1
    assert len(res["latency_ms"]) == len(x) and all(t > 0 for t in res["latency_ms"])
    assert res["latency_summary_ms"]["p50"] > 0
    assert [t["batch"] for t in res["throughput"]] == [1] and res["throughput"][0]["windows_per_s"] > 0


def test_run_onnx_dynamic_batch_sweep(sshd, tmp_path, tiny_onnx_dynamic, windows):
    with sshd.device(python=VENV_PY) as dev:
        res = dev.run_agent("run-onnx", {"model": tiny_onnx_dynamic.name, "input": windows.name, "batch": 4,
                                         "output": "logits.npy", "batch_sizes": [1, 4, 8], "warmup": 1,
                                         "sweep_runs": 3, "repeat": 2}, files=[tiny_onnx_dynamic, windows])
        got = np.load(dev.get("logits.npy", tmp_path / "l.npy"))
    x = np.load(windows)
    np.testing.assert_allclose(got, local_logits(tiny_onnx_dynamic, x, 4), rtol=1e-5, atol=1e-6)
    assert res["batch"] == 4 and len(res["latency_ms"]) == 2 * 2  # 5 windows in batches of 4, two passes
    assert [t["batch"] for t in res["throughput"]] == [1, 4, 8]


def test_agent_error_results(sshd):
    with sshd.device() as dev:
        with pytest.raises(DeviceError, match="unknown command 'bogus'"):
            dev.run_agent("bogus")
        res = dev.run_agent("build-engine", {}, check=False)
        assert res["error"] == "tensorrt not available"
        with pytest.raises(DeviceError, match="tensorrt not available"):
            dev.run_agent("run-engine", {})


# ---------------------------------------------------------------------------------------------- failures

def test_unreachable_port(sshd):
    port = free_port()
    with pytest.raises(DeviceError, match="unreachable") as ei:
        open_device(sshd.url(port=port), **sshd.device_options())
    assert ei.value.exit_code == 4 and "\n" not in str(ei.value)


def test_auth_refused_with_wrong_key(sshd):
    with pytest.raises(DeviceError, match="auth refused") as ei:
        open_device(sshd.url(), **sshd.device_options(identity_file=sshd.wrong_key))
    assert "Permission denied" in str(ei.value)


def test_host_key_verification_failed(sshd):
    with pytest.raises(DeviceError, match="host key verification failed"):
        open_device(sshd.url(), **sshd.device_options(config_file=sshd.client_config_unknown_host))


def test_remote_python_missing(sshd):
    with sshd.device(python="python3-does-not-exist") as dev:
        with pytest.raises(DeviceError, match="remote python 'python3-does-not-exist' not found.*install"):
            dev.info()


def test_agent_without_json_reports_last_stderr_line(sshd, tmp_path):
    fake = tmp_path / "fake python"
    fake.write_text("#!/bin/sh\necho 'not json'\necho 'Traceback (most recent call last):' >&2\n"
                    "echo 'ImportError: libnvinfer.so.8: cannot open shared object file' >&2\nexit 1\n")
    fake.chmod(0o755)
    with sshd.device(python=str(fake)) as dev:
        with pytest.raises(DeviceError, match="no JSON result.*libnvinfer.so.8: cannot open shared object"):
            dev.run_agent("info")


def test_remote_disk_full_on_put(sshd, tiny_tmpfs, tmp_path):
    mnt = tiny_tmpfs("64k")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(256 * 1024))
    with sshd.device(remote_tmp=str(mnt)) as dev:
        with pytest.raises(DeviceError, match="remote disk full") as ei:
            dev.put(big, "big.bin")
        assert "No space left on device" in str(ei.value)
        assert os.listdir(dev.workdir) == [], "a failed put must leave no partial file"


def test_remote_disk_full_in_agent(sshd, tiny_tmpfs, tmp_path, windows):
    mnt = tiny_tmpfs("256k")
    small = make_onnx(tmp_path / "small.onnx")
    with sshd.device(python=VENV_PY, remote_tmp=str(mnt)) as dev:
        dev.put(small, "m.onnx")
        dev.put(windows, "x.npy")
        dev.run_agent("ping")  # uploads the agent
        fill_up(mnt, leave_pages=1)  # room for the args file, not for the logits
        with pytest.raises(DeviceError, match="remote disk full"):
            dev.run_agent("run-onnx", {"model": "m.onnx", "input": "x.npy", "output": "logits.npy", "warmup": 0,
                                       "sweep_runs": 1})
        assert not [p for p in os.listdir(dev.workdir) if "logits" in p]


@pytest.mark.parametrize("multiplex", [True, False], ids=["multiplexed", "one-connection-per-call"])
def test_connection_dropped_mid_run(sshd, multiplex):
    with sshd.device(python=VENV_PY, multiplex=multiplex) as dev:
        dev.run_agent("ping")
        caught = {}

        def call():
            try:
                dev.run_agent("ping", {"sleep_s": 20})
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                caught["exc"] = exc

        t = threading.Thread(target=call)
        t.start()
        wait_for(lambda: sshd.session_pids(AGENT_REMOTE_NAME), what="the remote agent to start")
        assert sshd.kill_sessions() > 0
        t.join(15)
        assert not t.is_alive()
    assert isinstance(caught.get("exc"), DeviceError), caught
    assert "dropped" in str(caught["exc"]) and "ping" in str(caught["exc"])


def test_connection_dropped_mid_get_leaves_nothing(sshd, tmp_path):
    """A transfer cut halfway: partial data had reached the local temp file; afterwards neither the
    target nor the temp file (nor the folder get() made) exists."""
    target_dir = tmp_path / "out" / "sub"
    target = target_dir / "engine.bin"
    with sshd.device() as dev:
        fifo = Path(dev.workdir) / "stream.bin"
        os.mkfifo(fifo)
        release = threading.Event()

        def writer():
            fd = os.open(fifo, os.O_WRONLY)  # blocks until the remote cat opens it
            try:
                os.write(fd, b"x" * 32768)
                release.wait(20)
            finally:
                os.close(fd)

        w = threading.Thread(target=writer)
        w.start()
        caught = {}

        def call():
            try:
                dev.get("stream.bin", target)
            except BaseException as exc:  # noqa: BLE001
                caught["exc"] = exc

        g = threading.Thread(target=call)
        g.start()
        wait_for(lambda: target_dir.is_dir() and any(p.stat().st_size > 0 for p in target_dir.iterdir()),
                 what="partial data in the local temp file")
        sshd.kill_sessions()
        g.join(15)
        release.set()
        w.join(5)
    assert isinstance(caught.get("exc"), DeviceError) and "dropped" in str(caught["exc"]), caught
    assert not target.exists()
    assert not (tmp_path / "out").exists(), "get() must remove the temp file and the folders it created"


def test_get_missing_file_leaves_nothing(sshd, tmp_path):
    target = tmp_path / "a" / "logits.npy"
    with sshd.device() as dev:
        with pytest.raises(DeviceError, match="not in the work dir"):
            dev.get("logits.npy", target)
    assert not (tmp_path / "a").exists()


def test_agent_timeout(sshd):
    with sshd.device() as dev:
        t0 = time.monotonic()
        with pytest.raises(DeviceError, match="timed out after 1 s"):
            dev.run_agent("ping", {"sleep_s": 3}, timeout=1)
        assert time.monotonic() - t0 < 3


def test_closed_device_reopens_and_close_is_idempotent(sshd):
    dev: SshDevice = sshd.device()
    dev.open()
    first = dev.workdir
    control = dev._control_dir
    assert control and f"ControlPath={control}/cm" in dev.ssh_argv()
    dev.run_agent("ping")
    dev.close()
    dev.close()
    assert not os.path.exists(first)
    assert not os.path.exists(control), "close() must stop the ControlMaster and remove its folder"
    masters = [pid for pid in os.listdir("/proc") if pid.isdigit() and control in cmdline(int(pid))]
    assert not masters, "the ControlMaster process outlived close()"
    with dev:
        assert dev.workdir != first and os.path.isdir(dev.workdir)
