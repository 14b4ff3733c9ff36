import json
import os
import subprocess
import sys

import pytest

from drsn_edge.backends.tensorrt import engine_compat_error, trtexec_command

from .conftest import run_cli


@pytest.mark.parametrize("ver,expect,absent", [
    ("8.2", ["--int8", "--fp16", "--workspace=256"], ["--stronglyTyped", "--memPoolSize=workspace:256M"]),
    ("8.5", ["--int8", "--fp16", "--memPoolSize=workspace:256M"], ["--stronglyTyped"]),
    ("10.3", ["--int8", "--fp16", "--memPoolSize=workspace:256M", "--builderOptimizationLevel=4"], ["--stronglyTyped"]),
    ("11.0", ["--stronglyTyped"], ["--int8", "--fp16"]),
])
def test_trtexec_adapts_to_tensorrt_version(ver, expect, absent):
    cmd = trtexec_command(ver, "m.onnx", "m.engine", "int8", opt_level=4)
    assert cmd[:3] == ["trtexec", "--onnx=m.onnx", "--saveEngine=m.engine"]
    for e in expect:
        assert e in cmd, (ver, e)
    for a in absent:
        assert a not in cmd, (ver, a)
    if ver == "8.2":
        assert not any(c.startswith("--builderOptimizationLevel") for c in cmd)


def test_trtexec_dla_and_cache():
    cmd = trtexec_command("8.5", "m.onnx", "m.engine", "fp16", dla_core=1, timing_cache="t.cache")
    assert "--useDLACore=1" in cmd and "--allowGPUFallback" in cmd and "--fp16" in cmd and "--int8" not in cmd
    assert "--timingCacheFile=t.cache" in cmd


def test_engine_compat_names_both_values():
    side = {"tensorrt": "10.3.0", "sm": "87"}
    assert engine_compat_error(side, {"tensorrt": "10.3.1", "sm": "87"}) is None
    msg = engine_compat_error(side, {"tensorrt": "8.6.2", "sm": "87"})
    assert "10.3.0" in msg and "8.6.2" in msg
    msg = engine_compat_error(side, {"tensorrt": "10.3", "sm": "72"})
    assert "SM 87" in msg and "SM 72" in msg


def test_build_jetson_without_tensorrt(tiny_model, tiny_calib, tmp_path):
    out = tmp_path / "orin"
    r = run_cli("build", tiny_model, "--target", "jetson-orin-nano", "--calib", tiny_calib, "-o", out,
                "--max-drop", "100", "--max-cell-drop", "100", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["engine"] is None and "build_engine.sh" in res["next_step"]
    assert sorted(p.name for p in out.iterdir()) == ["build.json", "build_engine.sh", "model.int8.b32.onnx",
                                                      "model.int8.b8.onnx", "model.int8.json", "model.int8.onnx",
                                                      "trt_builder.py", "trtexec.txt"]
    man = json.loads((out / "build.json").read_text())
    assert man["target"] == "jetson-orin-nano" and man["backend"] == "tensorrt" and man["artifact"] == "model.int8.onnx"
    side = json.loads((out / "model.int8.json").read_text())
    assert side["engine_for"] == {"tensorrt": "10.3", "sm": 87, "jetpack": "6.2"}
    assert side["target"] == "jetson-orin-nano"
    assert "--int8" in (out / "trtexec.txt").read_text()
    assert os.access(out / "build_engine.sh", os.X_OK)
    # the copied builder is self-contained and runs without TensorRT: it reports the absence
    import importlib.util

    info = subprocess.run([sys.executable, str(out / "trt_builder.py"), "info"], capture_output=True, text=True)
    have_trt = importlib.util.find_spec("tensorrt") is not None
    assert (json.loads(info.stdout)["tensorrt"] is None) != have_trt
    r = run_cli("lint", out / "model.int8.onnx")
    assert r.returncode == 0


@pytest.mark.parametrize("args,needle", [
    (["--target", "jetson-orin-nan"], "did you mean jetson-orin-nano"),
    (["--target", "jetson-orin-nano", "--dla-core", "0"], "no DLA"),
    (["--target", "jetson-xavier-nx", "--dla-core", "2"], "2 DLA core"),
    (["--target", "jetson-agx-orin", "--dla-core", "0", "--precision", "fp32"], "DLA runs FP16 or INT8"),
])
def test_build_bad_options_exit_2_and_leave_nothing(tiny_model, tmp_path, args, needle):
    out = tmp_path / "o"
    r = run_cli("build", tiny_model, *args, "-o", out)
    assert r.returncode == 2 and needle in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []


def test_engine_outputs_are_selected_by_name_not_by_position():
    """What trt_builder.run keeps of each TrtRunner.infer result (an output name → array mapping, per Polygraphy's
    documented API): the logits and the guard's score by name, whatever order the engine lists them in."""
    import numpy as np

    from drsn_edge.backends.trt_builder import OutputError, pick_outputs

    feats, score, logits = np.zeros((1, 16)), np.ones(1), np.arange(10.0)[None]
    res = {"guard_features": feats, "guard_score": score, "logits": logits}  # logits not first
    got, extra = pick_outputs(res, "logits", ["guard_score"])
    assert got is logits and len(extra) == 1 and extra[0] is score
    assert pick_outputs({"out": logits}) == (logits, [])  # one output: the logits, whatever its name
    with pytest.raises(OutputError, match=r"^the engine has 3 outputs \(guard_features, guard_score, logits\): "
                                          "name the logits output$"):
        pick_outputs(res)
    with pytest.raises(OutputError, match=r"^the engine has no output 'guard_score' \(its outputs: logits\)$"):
        pick_outputs({"logits": logits}, "logits", ["guard_score"])


def test_trt_builder_run_refuses_a_malformed_save(tmp_path):
    from drsn_edge.backends.trt_builder import __file__ as builder

    p = subprocess.run([sys.executable, builder, "run", "--engine", "e", "--inputs", "x.npy", "--outputs", "y.npy",
                        "--save", "guard_score"], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 2 and "expected NAME=FILE.npy, got 'guard_score'" in p.stderr


def test_engine_build_and_run_match_onnxruntime(tiny_model, tiny_calib, tmp_path):
    """Real engine build + run; only where TensorRT and a CUDA GPU exist (a Jetson or a GPU host)."""
    pytest.importorskip("tensorrt", reason="TensorRT is not installed here (engines are built on the Jetson)")
    pytest.importorskip("polygraphy", reason="Polygraphy is needed to run engines")
    import numpy as np

    from drsn_edge.backends.trt_builder import build, cuda_sm, run
    from drsn_edge.export import ort_session, run_ort
    from drsn_edge.quantize.run import quantize_model

    if cuda_sm() is None:
        pytest.skip("no CUDA GPU on this machine")
    onnx_path = tmp_path / "m.int8.onnx"
    quantize_model(tiny_model, tiny_calib, onnx_path, max_drop=100, max_cell_drop=100, noise_kinds=[], snrs=[])
    info = build(str(onnx_path), str(tmp_path / "m.engine"), "int8", timing_cache=str(tmp_path / "t.cache"))
    assert info["sm"] == cuda_sm() and (tmp_path / "t.cache").exists()
    x = np.random.default_rng(0).standard_normal((8, 1, 2048)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    # the engine has the guard's outputs too (logits, guard_features, guard_score): picked by name
    res = run(str(tmp_path / "m.engine"), str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), 20, "logits",
              {"guard_score": str(tmp_path / "g.npy")})
    got, score = np.load(tmp_path / "y.npy"), np.load(tmp_path / "g.npy")
    session = ort_session(onnx_path.read_bytes())
    ref = run_ort(session, x, 1)
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.75 and len(res["latency_ms"]) == 8
    # the engine computes the score from its own int8 activations: within the int8 ONNX's spread of the ONNX
    # Runtime score (median relative difference < 0.5, tests/test_guard_export.py)
    ort_score = run_ort(session, x, 1, "guard_score")
    assert score.shape == (8,) and np.median(np.abs(score - ort_score) / np.abs(ort_score)) < 0.5
