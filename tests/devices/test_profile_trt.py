"""`profile` of a TensorRT build: TensorRT's layer profiler (trtexec --exportProfile) through the device agent
over a real OpenSSH server on 127.0.0.1. No machine here has TensorRT: a stand-in trtexec on the server's
PATH writes the exported profile exactly as trtexec does, for layer names made the way TensorRT makes them
from the build's own ONNX node names. The test with the real trtexec runs only where it and a GPU are."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ..conftest import run_cli
from ..jetson_fakes import TRTEXEC_PROFILE_STUB, write_stub
from ..test_profile import _deploy, _layer_macs
from .conftest import SshServer, sshd_missing_reason


@pytest.fixture(scope="module")
def trt_build(tiny_model, tiny_calib, tmp_path_factory):
    out = tmp_path_factory.mktemp("trtp") / "orin"
    r = run_cli("build", tiny_model, "--target", "jetson-orin-nano", "--calib", tiny_calib, "-o", out,
                "--method", "minmax", "--max-drop", "100", "--max-cell-drop", "100", "--windows-per-class", "1",
                "--noise", "none", "--json")
    assert r.returncode == 0, r.stderr
    return out


def _onnx(build):
    return build / json.loads((build / "build.json").read_text())["artifact"]


def trt_layer_names(onnx_path) -> list[str]:
    """Engine layers as TensorRT names them for this QDQ graph: the input's reformat and quantize, each
    convolution (its Q/DQ absorbed) fused with the Relu that follows it ("A + B"), each run of a unit's
    threshold-branch ops as one Myelin region ("{ForeignNode[first...last]}"), the other ops alone."""
    import onnx

    qdq = ("QuantizeLinear", "DequantizeLinear", "Constant", "Unsqueeze")
    graph = list(onnx.load(str(onnx_path)).graph.node)
    first_q = next(n.name for n in graph if n.op_type == "QuantizeLinear" and not n.name.endswith("weight_QuantizeLinear"))
    nodes = [n for n in graph if n.op_type not in qdq]
    names = [f"Reformatting CopyNode for Input Tensor 0 to {first_q}", first_q]
    i = 0
    while i < len(nodes):
        n = nodes[i]
        if "/shrink/" in n.name and n.op_type != "Conv":
            j = i
            while j + 1 < len(nodes) and "/shrink/" in nodes[j + 1].name and nodes[j + 1].op_type != "Conv":
                j += 1
            names.append(f"{{ForeignNode[{n.name}...{nodes[j].name}]}}")
            i = j + 1
        elif n.op_type in ("Conv", "Gemm") and i + 1 < len(nodes) and nodes[i + 1].op_type == "Relu":
            names.append(f"{n.name} + {nodes[i + 1].name}")
            i += 2
        else:
            names.append(n.name)
            i += 1
    return names


@pytest.fixture(scope="module")
def stub_dir(trt_build, tmp_path_factory):
    d = tmp_path_factory.mktemp("trtbin")
    write_stub(d / "trtexec", TRTEXEC_PROFILE_STUB)
    names = trt_layer_names(_onnx(trt_build))
    (d / "layers.json").write_text(json.dumps([[n, 0.001 * (k + 1)] for k, n in enumerate(names)]))
    return d


@pytest.fixture(scope="module")
def sshd_trt(stub_dir, tmp_path_factory):
    reason = sshd_missing_reason()
    if reason:
        pytest.skip(reason)
    server = SshServer(tmp_path_factory.mktemp("sshd-trt"),
                       extra_config=f"SetEnv PATH={stub_dir}:/usr/local/bin:/usr/bin:/bin\n")
    server.start()
    yield server
    server.stop()


def _with_engine(build, tmp_path, content=b"engine plan"):
    folder = tmp_path / "b"
    shutil.copytree(build, folder)
    (folder / "model.engine").write_bytes(content)
    return folder


def _ssh(server):
    return ["--device", server.url(), "--ssh-config", server.client_config, "--ssh-identity", server.user_key,
            "--remote-python", sys.executable]


def test_exported_profile_is_read_as_trtexec_writes_it(trt_build, stub_dir, tmp_path, tiny_model):
    from drsn_edge.backends.trt_profile import layer_rows, parse_trtexec_profile

    (tmp_path / "e").write_bytes(b"plan")
    p = subprocess.run([str(stub_dir / "trtexec"), f"--loadEngine={tmp_path / 'e'}", "--iterations=4",
                        f"--exportProfile={tmp_path / 'p.json'}", f"--exportTimes={tmp_path / 't.json'}"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout
    text = (tmp_path / "p.json").read_text()
    assert text.startswith('[\n  { "count" : 4 }\n, { "name" : "Reformatting CopyNode for Input Tensor 0 to ')
    count, layers = parse_trtexec_profile(json.loads(text))
    names = json.loads((stub_dir / "layers.json").read_text())
    assert count == 4 and [la["name"] for la in layers] == [n for n, _ in names]
    assert [la["ms"] for la in layers] == pytest.approx([ms for _, ms in names], rel=1e-5)  # %g: 6 digits
    rows = layer_rows(layers, _onnx(trt_build).read_bytes())
    _, net = _deploy(tiny_model)
    places = {n for n, _ in net.named_modules() if n} | {"stem", "head", "guard"}  # guard: the exported domain guard
    assert all(r["module"] in places for r in rows), sorted({r["module"] for r in rows} - places)
    got = {}
    for r in rows:
        if r["macs"]:
            got[r["module"]] = got.get(r["module"], 0) + r["macs"]
    assert got == _layer_macs(net, 2048)  # each fused convolution charged once, to its own layer
    assert rows[0]["op_type"] == "Reformat" and rows[0]["macs"] == 0 and rows[0]["module"] == "stem"
    fused = [r for r in rows if r["op_type"] == "Conv+Relu"]
    assert fused and all(" + " in r["name"] for r in fused)
    assert {r["op_type"] for r in rows if ".shrink" in r["module"]} >= {"ForeignNode"}


def test_profile_over_ssh_runs_trtexec_on_the_device(trt_build, stub_dir, sshd_trt, tmp_path):
    folder = _with_engine(trt_build, tmp_path)
    r = run_cli("profile", folder, "--repeats", "30", *_ssh(sshd_trt), "--json", "--report", tmp_path / "rep")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    argv = (stub_dir / "trtexec.argv").read_text().split("\n")
    for flag in ("--loadEngine=model.engine", "--separateProfileRun", "--dumpProfile", "--exportProfile=profile.json",
                 "--exportTimes=times.json", "--iterations=30"):
        assert flag in argv
    names = json.loads((stub_dir / "layers.json").read_text())
    assert [row["name"] for row in res["rows"]] == [n for n, _ in names]
    assert res["runtime"].startswith("tensorrt engine on ssh://") and res["repeats"] == 30
    total_ms = sum(ms for _, ms in names)
    assert res["rows_total_us"] == pytest.approx(total_ms * 1000, rel=1e-4)
    # the unprofiled run's GPU compute times cycle 0.9, 1.0, 1.1 × the layers' sum: median 1.0 ×
    assert res["wall_p50_us"] == pytest.approx(total_ms * 1000, rel=1e-4)
    assert [b["block"] for b in res["blocks"]] == ["stem", "units.0", "units.1", "units.2", "head", "guard"]
    shrink = sum(row["time_us"] for row in res["rows"] if row["shrinkage"])
    assert 0 < res["shrinkage_share"] == pytest.approx(shrink / res["rows_total_us"])
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["profile.json", "profile.md", "profile.png"]


def test_an_engine_of_another_tensorrt_is_named(trt_build, sshd_trt, tmp_path):
    folder = _with_engine(trt_build, tmp_path, b"foreign plan")
    r = run_cli("profile", folder, *_ssh(sshd_trt), "--json")
    assert r.returncode == 4 and "Version tag does not match" in r.stderr, r.stderr


def test_without_a_device_away_from_a_jetson(trt_build, tmp_path):
    folder = _with_engine(trt_build, tmp_path)
    r = run_cli("profile", folder, "--json", env={"DRSN_EDGE_ROOT": str(tmp_path / "not-a-jetson")})
    assert r.returncode == 3 and "--device ssh://user@jetson" in r.stderr
    r = run_cli("profile", trt_build, *["--device", "ssh://nobody@127.0.0.1:1"], "--json")
    assert r.returncode == 2 and "has no TensorRT engine" in r.stderr


@pytest.mark.skipif(not shutil.which("trtexec") or not shutil.which("nvidia-smi"),
                    reason="needs TensorRT's trtexec and an NVIDIA GPU (a Jetson, or a machine with TensorRT)")
def test_real_trtexec_profiles_a_real_engine(trt_build, tmp_path):
    folder = tmp_path / "b"
    shutil.copytree(trt_build, folder)
    p = subprocess.run(["trtexec", f"--onnx={_onnx(folder)}", f"--saveEngine={folder / 'model.engine'}", "--int8",
                        "--fp16"], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout[-2000:]
    from drsn_edge.backends import load_build
    from drsn_edge.backends.trt_profile import profile_layers

    res = profile_layers(load_build(folder), np.zeros((1, 1, 2048), np.float32), repeats=50, device="local")
    assert res["rows"] and res["runs"] >= 1 and all(r["time_us"] >= 0 for r in res["rows"])
    assert sum(r["macs"] for r in res["rows"]) > 0 and os.path.isfile(folder / "model.engine")
