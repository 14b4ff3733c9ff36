"""`drsn-edge build --target jetson` without --device: a portable package on a workstation, a local engine
build on a (fake, DRSN_EDGE_ROOT) Jetson, exit 3 naming the missing piece on a Jetson without TensorRT."""

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from drsn_edge.build import resolve_target
from drsn_edge.devices import LocalDevice

from .conftest import run_cli
from .jetson_fakes import DPKG_QUERY_STUB, JETSONS, PYTHON3_STUB, TRTEXEC_STUB, make_root, tool_dir

IS_JETSON = Path("/etc/nv_tegra_release").exists()
PORTABLE_FILES = ["build.json", "build_engine.sh", "model.int8.b32.onnx", "model.int8.b8.onnx", "model.int8.json",
                  "model.int8.onnx", "trt_builder.py", "trtexec.txt"]


def _build(tiny_model, tiny_calib, out, *extra, env=None):
    return run_cli("build", tiny_model, "--target", "jetson", "--calib", tiny_calib, "-o", out, "--max-drop", "100", "--max-cell-drop", "100",
                   "--json", *extra, env=env)


@pytest.mark.skipif(IS_JETSON, reason="this machine is a Jetson: the build runs here instead")
def test_on_this_machine_a_portable_package_that_builds_on_any_jetson(tiny_model, tiny_calib, tmp_path):
    out = tmp_path / "jetson"
    r = _build(tiny_model, tiny_calib, out)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["target"] == "jetson" and res["engine"] is None and res["trtexec"] is None
    assert res["tensorrt"] is None and res["sm"] is None and res["jetpack"] is None
    assert res["resolved"].startswith("jetson → portable package: this machine is not a Jetson (no /etc/nv_tegra_release)")
    assert f"scp -r {out} user@jetson:" in res["next_step"] and "./jetson/build_engine.sh" in res["next_step"]
    assert "--device ssh://user@jetson" in res["next_step"]
    assert sorted(p.name for p in out.iterdir()) == PORTABLE_FILES
    assert "# TensorRT 11 and later" in (out / "trtexec.txt").read_text()

    # finish on a (fake) Jetson Nano with JetPack 4.6: TensorRT 8.2 flags, sidecar from the ONNX's
    root = make_root(tmp_path / "nano", "jetson-nano", tensorrt=False)
    log = tmp_path / "log"
    log.mkdir()
    path = tool_dir(tmp_path / "bin", {"dpkg-query": DPKG_QUERY_STUB, "python3": PYTHON3_STUB,
                                       "trtexec": TRTEXEC_STUB})
    run = subprocess.run([shutil.which("bash"), str(out / "build_engine.sh")], capture_output=True, text=True,
                         env={"PATH": str(path), "DRSN_EDGE_ROOT": str(root), "STUB_LOG": str(log),
                              "FAKE_DPKG": "tensorrt=8.2.1.9-1+cuda10.2 nvidia-jetpack=4.6.1-b110"}, timeout=60)
    assert run.returncode == 0, run.stderr
    argv = (log / "trtexec.argv").read_text().splitlines()
    assert argv == ["--onnx=model.int8.onnx", "--saveEngine=model.engine.partial", "--int8", "--fp16",
                    "--workspace=256", "--timingCacheFile=timing-jetson.cache"]
    side = json.loads((out / "model.json").read_text())
    onnx_side = json.loads((out / "model.int8.json").read_text())
    assert (side["tensorrt"], side["sm"], side["jetpack"], side["l4t"]) == ("8.2.1.9", "53", "4.6.1", "32.7.1")
    assert side["target"] == "jetson" and side["precision"] == "int8" and side["dla_core"] is None
    assert side["class_names"] == onnx_side["class_names"] and side["input"] == onnx_side["input"]
    assert side["source_onnx_sha256"] == hashlib.sha256((out / "model.int8.onnx").read_bytes()).hexdigest()


@pytest.mark.parametrize("board", [
    pytest.param(b, marks=() if b == "jetson-orin-nano" else pytest.mark.slow) for b in sorted(JETSONS)])
def test_on_a_jetson_the_engine_is_built_here(tiny_model, tiny_calib, tmp_path, board):
    if shutil.which("dpkg-query") is None:
        pytest.skip("dpkg-query is not installed here (build_engine.sh reads the fake root's dpkg database with it)")
    root = make_root(tmp_path / "root", board, trtexec=True)
    log = tmp_path / "log"
    log.mkdir()
    out = tmp_path / "out"
    r = _build(tiny_model, tiny_calib, out, env={"DRSN_EDGE_ROOT": str(root), "STUB_LOG": str(log)})
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    want = JETSONS[board]["expect"]
    assert res["target"] == board and res["resolved"].startswith(f"jetson → {board}: this machine is")
    assert (res["tensorrt"], res["sm"], res["jetpack"]) == (want["tensorrt"], want["sm"], want["jetpack"])
    assert res["next_step"] is None and res["engine"]["tensorrt"] == want["tensorrt"]
    assert sorted(p.name for p in out.iterdir()) == sorted(PORTABLE_FILES + ["model.engine", "model.json"])
    side = json.loads((out / "model.json").read_text())
    assert (side["tensorrt"], side["sm"], side["jetpack"], side["l4t"]) == (
        want["tensorrt"], str(want["sm"]), want["jetpack"], want["l4t"])
    assert side["target"] == board and side["built_with"] == "trtexec" and side["board"] == JETSONS[board]["model"]
    assert side["sha256"] == hashlib.sha256((out / "model.engine").read_bytes()).hexdigest()
    argv = (log / "trtexec.argv").read_text().splitlines()
    workspace = "--workspace=256" if board == "jetson-nano" else "--memPoolSize=workspace:256M"
    assert argv == ["--onnx=model.int8.onnx", "--saveEngine=model.engine.partial", "--int8", "--fp16", workspace,
                    f"--timingCacheFile=timing-{board}.cache"]


@pytest.mark.parametrize("board", sorted(JETSONS))
def test_on_a_jetson_without_tensorrt_exit_3_before_any_work(tiny_model, tmp_path, board):
    root = make_root(tmp_path / "root", board, tensorrt=False)
    out = tmp_path / "out"
    r = run_cli("build", tiny_model, "--target", "jetson", "-o", out, env={"DRSN_EDGE_ROOT": str(root)})
    assert r.returncode == 3
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "has no TensorRT" in lines[0] and "sudo apt install nvidia-jetpack" in lines[0]
    assert JETSONS[board]["model"] in lines[0]
    assert not out.exists()


def test_portable_package_refuses_a_third_dla_core(tiny_model, tmp_path):
    r = run_cli("build", tiny_model, "--target", "jetson", "--dla-core", "2", "-o", tmp_path / "o",
                env={"DRSN_EDGE_ROOT": str(make_root(tmp_path / "ws", None))})
    assert r.returncode == 2 and "jetson has 2 DLA core(s); --dla-core 2 is not available" in r.stderr


def test_check_resolves_jetson_from_this_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("DRSN_EDGE_ROOT", str(make_root(tmp_path / "thor", "jetson-thor", tensorrt=False)))
    with LocalDevice() as dev:
        t = resolve_target("jetson", None, dev)
    assert t.name == "jetson-thor" and t.detected["sm"] == 110
    monkeypatch.setenv("DRSN_EDGE_ROOT", str(make_root(tmp_path / "ws", None)))
    with LocalDevice() as dev, pytest.raises(Exception, match="--target jetson needs a Jetson"):
        resolve_target("jetson", None, dev)
