"""`drsn-edge check` end to end on what `build` produced: locally and over a real OpenSSH server on
127.0.0.1, with ONNX Runtime standing in for TensorRT on a device without it."""

import json
import shutil
import sys

import pytest

from ..conftest import run_cli


@pytest.fixture(scope="module")
def orin_build(tiny_model, tiny_calib, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("check") / "orin"
    r = run_cli("build", tiny_model, "--target", "jetson-orin-nano", "--calib", tiny_calib, "--data", tiny_data,
                "-o", out, "--max-drop", "100", "--max-cell-drop", "100", "--json")
    assert r.returncode == 0, r.stderr
    return out, json.loads(r.stdout)


def _check_args(build_dir, tiny_data):
    return ["check", build_dir, "--target", "jetson-orin-nano", "--data", tiny_data, "--json"]


def _valid(res, built):
    """The same artifact on the same windows (ONNX Runtime here or over SSH on this machine) gives the build's
    own figures exactly."""
    assert res["runtime"].startswith("onnxruntime")
    assert (res["n"], res["accuracy"], res["agreement_with_reference"]) == (
        built["accuracy"]["n"], built["accuracy"]["accuracy"], built["accuracy"]["agreement"])
    lat = res["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert res["throughput"]["batch1_per_s"] > 0 and set(res["throughput"]["sweep"]) == {"1", "8", "32"}
    # int8 on the device tracks float: the tiny model's logits are a few units wide and the int8 grid
    # steps are ~1/100 of that, so at most a handful of near-tie windows can flip
    assert res["agreement_with_reference"] > 0.8


def _fails_on_accuracy(r, res):
    """tiny_model is 3 epochs old and near chance on 10 classes: far below the profile's 90 % minimum, so
    the check must fail, on accuracy (the drop and latency verdicts are pinned in tests/test_verdicts.py)."""
    assert r.returncode == 1 and res["passed"] is False, r.stderr
    assert res["accuracy"] < 0.5 and res["failures"][0] == (f"accuracy {100 * res['accuracy']:.2f} % < "
                                                             f"{100 * res['thresholds']['min_accuracy']:.1f} %")


def test_check_local_with_report(orin_build, tiny_data, tmp_path):
    out, built = orin_build
    r = run_cli(*_check_args(out, tiny_data), "--report", tmp_path / "rep")
    res = json.loads(r.stdout)
    _valid(res, built)
    _fails_on_accuracy(r, res)
    md = (tmp_path / "rep" / "check.md").read_text()
    assert md.startswith("# drsn-edge check")
    share = 100 * res["domain"]["out_of_domain_share"]
    assert f"- out of domain: {share:.2f} % of the windows, measured on the artifact ({res['runtime']})" in md
    assert (tmp_path / "rep" / "latency.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "rep" / "check.json").read_text())["n"] == res["n"]


def test_check_runs_the_built_artifact_and_matches_the_build_figures(orin_build, tiny_data):
    """The same spec on the same artifact: check reproduces the build's measured figures exactly."""
    out, built = orin_build
    r = run_cli(*_check_args(out, tiny_data))
    res = json.loads(r.stdout)
    assert res["artifact"] == str(out / "model.int8.onnx")
    assert res["n"] == built["accuracy"]["n"]
    assert res["reference_accuracy"] == built["accuracy"]["reference_accuracy"]
    assert res["accuracy"] == built["accuracy"]["accuracy"]
    assert res["agreement_with_reference"] == built["accuracy"]["agreement"]


def test_check_over_ssh(sshd, orin_build, tiny_data):
    out, built = orin_build
    r = run_cli(*_check_args(out, tiny_data), "--device", sshd.url(),
                "--ssh-config", sshd.client_config, "--ssh-identity", sshd.user_key, "--remote-python", sys.executable)
    res = json.loads(r.stdout)
    _valid(res, built)
    _fails_on_accuracy(r, res)
    assert res["device"].startswith("ssh://") and res["device_facts"]["python"]["executable"] == sys.executable
    # the guard_score output of the artifact, fetched from the device: the same share as the in-process run
    local = json.loads(run_cli(*_check_args(out, tiny_data)).stdout)["domain"]
    dom = res["domain"]
    assert (dom["measured_on"], dom["runtime"]) == ("artifact", res["runtime"])
    assert dom["out_of_domain_share"] == local["out_of_domain_share"] and dom["n"] == res["n"]
    # int8 features move the score a little: flags agree with the float guard's away from the threshold
    # (test_guard_export.test_int8_guard_follows_the_float_guard measures the same bound)
    assert dom["float_guard"]["flag_agreement_far_from_threshold"] >= 0.95, dom
    assert dom["float_guard"]["flag_agreement"] >= 0.9, dom


def test_engine_runner_takes_output_names_and_guard_from_the_builds_onnx(orin_build):
    """The engine keeps the ONNX's output names: EngineRunner asks the device for the logits and guard_score by
    those names (running it needs TensorRT on the device: tests/test_build_jetson.py, skipped without it)."""
    from drsn_edge.backends import load_build
    from drsn_edge.backends.onnxrt import OrtRunner
    from drsn_edge.backends.tensorrt import EngineRunner

    build = load_build(orin_build[0])
    runner = EngineRunner(build, device=None)
    assert runner.logits_output == "logits"
    assert runner.guard_meta is not None and runner.guard_meta == OrtRunner(build.artifact).guard_meta


def test_check_unreachable_device_exit_4(sshd, orin_build, tiny_data):
    from .conftest import free_port

    out, _ = orin_build
    r = run_cli(*_check_args(out, tiny_data), "--device", sshd.url(port=free_port()),
                "--ssh-config", sshd.client_config, "--ssh-identity", sshd.user_key)
    assert r.returncode == 4 and "unreachable" in r.stderr
    assert json.loads(r.stdout)["exit_code"] == 4


def test_check_jetson_alias_needs_a_jetson(orin_build, tiny_data):
    out, _ = orin_build
    args = _check_args(out, tiny_data)
    args[args.index("jetson-orin-nano")] = "jetson"
    r = run_cli(*args)
    assert r.returncode == 2 and "needs a Jetson" in r.stderr


def test_prebuilt_engine_needs_tensorrt_on_the_device(orin_build, tiny_data, tmp_path):
    copy = tmp_path / "orin"
    shutil.copytree(orin_build[0], copy)
    (copy / "model.engine").write_bytes(b"not really an engine")
    (copy / "model.json").write_text(json.dumps({"tensorrt": "10.3.0", "sm": "87"}))
    r = run_cli(*_check_args(copy / "model.engine", tiny_data))
    assert r.returncode == 4 and "has no TensorRT to run the engine" in r.stderr


def test_build_on_a_device_without_tensorrt_exit_4(sshd, tiny_model, tiny_calib, tmp_path):
    out = tmp_path / "orin"
    r = run_cli("build", tiny_model, "--target", "jetson-orin-nano", "--calib", tiny_calib, "-o", out,
                "--max-drop", "100", "--max-cell-drop", "100", "--device", sshd.url(), "--ssh-config", sshd.client_config,
                "--ssh-identity", sshd.user_key, "--remote-python", sys.executable)
    # the loopback device has no TensorRT: the remote build fails cleanly and nothing is left behind
    assert r.returncode == 4 and "tensorrt not available" in r.stderr, r.stderr
    assert not out.exists()
