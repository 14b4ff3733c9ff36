"""`drsn-edge check` end to end: locally and over a real OpenSSH server on 127.0.0.1 with ONNX Runtime
standing in for TensorRT on the device."""

import json
import sys

from ..conftest import run_cli


def _check_args(tiny_model, tiny_calib, tiny_data):
    return ["check", tiny_model, "--target", "jetson-orin-nano", "--calib", tiny_calib, "--data", tiny_data,
            "--windows-per-class", "2", "--json"]


def _valid(res):
    assert res["runtime"].startswith("onnxruntime")
    assert 0 <= res["accuracy"] <= 1 and 0 <= res["agreement_with_reference"] <= 1
    lat = res["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert res["throughput"]["batch1_per_s"] > 0 and set(res["throughput"]["sweep"]) == {"1", "8", "32"}
    assert res["agreement_with_reference"] > 0.8  # int8 on the device tracks float here


def test_check_local_with_report(tiny_model, tiny_calib, tiny_data, tmp_path):
    r = run_cli(*_check_args(tiny_model, tiny_calib, tiny_data), "--report", tmp_path / "rep")
    assert r.returncode in (0, 1), r.stderr
    res = json.loads(r.stdout)
    _valid(res)
    assert res["passed"] == (r.returncode == 0) == (not res["failures"])
    assert (tmp_path / "rep" / "check.md").read_text().startswith("# drsn-edge check")
    assert (tmp_path / "rep" / "latency.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "rep" / "check.json").read_text())["n"] == res["n"]


def test_check_over_ssh(sshd, tiny_model, tiny_calib, tiny_data):
    r = run_cli(*_check_args(tiny_model, tiny_calib, tiny_data), "--device", sshd.url(),
                "--ssh-config", sshd.client_config, "--ssh-identity", sshd.user_key, "--remote-python", sys.executable)
    assert r.returncode in (0, 1), r.stderr
    res = json.loads(r.stdout)
    _valid(res)
    assert res["device"].startswith("ssh://") and res["device_facts"]["python"]["executable"] == sys.executable


def test_check_unreachable_device_exit_4(sshd, tiny_model, tiny_calib, tiny_data):
    from .conftest import free_port

    r = run_cli(*_check_args(tiny_model, tiny_calib, tiny_data), "--device", sshd.url(port=free_port()),
                "--ssh-config", sshd.client_config, "--ssh-identity", sshd.user_key)
    assert r.returncode == 4 and "unreachable" in r.stderr
    assert json.loads(r.stdout)["exit_code"] == 4


def test_check_jetson_alias_needs_a_jetson(tiny_model, tiny_calib, tiny_data):
    args = _check_args(tiny_model, tiny_calib, tiny_data)
    args[args.index("jetson-orin-nano")] = "jetson"
    r = run_cli(*args)
    assert r.returncode == 2 and "needs a Jetson" in r.stderr


def test_prebuilt_engine_needs_tensorrt_on_the_device(tiny_model, tiny_calib, tiny_data, tmp_path):
    eng = tmp_path / "model.engine"
    eng.write_bytes(b"not really an engine")
    (tmp_path / "model.json").write_text(json.dumps({"tensorrt": "10.3.0", "sm": "87"}))
    r = run_cli(*_check_args(tiny_model, tiny_calib, tiny_data), "--engine", eng)
    assert r.returncode == 4 and "has no TensorRT to run the engine" in r.stderr


def test_build_on_a_device_without_tensorrt_exit_4(sshd, tiny_model, tiny_calib, tmp_path):
    out = tmp_path / "orin"
    r = run_cli("build", tiny_model, "--target", "jetson-orin-nano", "--calib", tiny_calib, "-o", out,
                "--max-drop", "100", "--device", sshd.url(), "--ssh-config", sshd.client_config,
                "--ssh-identity", sshd.user_key, "--remote-python", sys.executable)
    # the loopback device has no TensorRT: the remote build fails cleanly and nothing is left behind
    assert r.returncode == 4 and "tensorrt not available" in r.stderr, r.stderr
    assert not out.exists()
