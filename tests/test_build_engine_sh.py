"""The portable build_engine.sh, run for real by bash with PATH holding only POSIX tools and stubs for the
tools only a Jetson has (dpkg's TensorRT packages, `python3 -c 'import tensorrt'`, trtexec, nvidia-smi)."""

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from drsn_edge.backends.tensorrt import portable_build_script, portable_trtexec_table, trtexec_command

from .jetson_fakes import DPKG_QUERY_STUB, NVIDIA_SMI_STUB, PYTHON3_STUB, TRTEXEC_STUB, make_root, tool_dir

BASH = shutil.which("bash")
OPTS = {"precision": "int8", "workspace_mb": 256, "timing_cache": "timing-jetson.cache", "opt_level": 3,
        "dla_core": None, "strongly_typed": False}
STATIC = {"kind": "tensorrt-engine", "target": "jetson", "class_names": ["normal", "inner_007"],
          "input": {"name": "x", "shape": [1, 1, 2048]}}


class Run:
    def __init__(self, tmp: Path, board="jetson-orin-nano", stubs=("dpkg-query", "python3", "trtexec"), opts=None):
        self.root = make_root(tmp / "root", board, tensorrt=False, jetpack_package=False)
        self.pkg = tmp / "pkg"
        self.pkg.mkdir()
        (self.pkg / "model.int8.onnx").write_bytes(b"onnx")
        (self.pkg / "build_engine.sh").write_text(portable_build_script("model.int8.onnx", "model.engine",
                                                                        opts or OPTS, STATIC))
        self.log = tmp / "log"
        self.log.mkdir()
        table = {"dpkg-query": DPKG_QUERY_STUB, "python3": PYTHON3_STUB, "trtexec": TRTEXEC_STUB,
                 "nvidia-smi": NVIDIA_SMI_STUB}
        self.bin = tool_dir(tmp / "bin", {s: table[s] for s in stubs})

    def __call__(self, *args, **env):
        e = {"PATH": str(self.bin), "DRSN_EDGE_ROOT": str(self.root), "STUB_LOG": str(self.log)}
        e.update({k.upper(): v for k, v in env.items()})
        return subprocess.run([BASH, str(self.pkg / "build_engine.sh"), *args], env=e, capture_output=True, text=True,
                              timeout=60)

    def argv(self, tool):
        return (self.log / f"{tool}.argv").read_text().splitlines()

    def sidecar(self):
        return json.loads((self.pkg / "model.json").read_text())

    def files(self):
        return sorted(p.name for p in self.pkg.iterdir())


# the flags each TensorRT series gets, written out by hand (opt level 3, int8, 256 MB workspace)
FLAGS = {
    "8.2": ["--int8", "--fp16", "--workspace=256", "--timingCacheFile=timing-jetson.cache"],
    "8.6": ["--int8", "--fp16", "--memPoolSize=workspace:256M", "--timingCacheFile=timing-jetson.cache",
            "--builderOptimizationLevel=3"],
    "10.3": ["--int8", "--fp16", "--memPoolSize=workspace:256M", "--timingCacheFile=timing-jetson.cache",
             "--builderOptimizationLevel=3"],
    "11.0": ["--stronglyTyped", "--memPoolSize=workspace:256M", "--timingCacheFile=timing-jetson.cache",
             "--builderOptimizationLevel=3"],
}


@pytest.mark.parametrize("deb,version,series", [
    ("8.2.1.9-1+cuda10.2", "8.2.1.9", "8.2"),
    ("8.6.2.3-1+cuda12.2", "8.6.2.3", "8.6"),
    ("10.3.0.30-1+cuda12.5", "10.3.0.30", "10.3"),
    ("11.0.0.12-1+cuda13.0", "11.0.0.12", "11.0"),
])
def test_trtexec_flags_follow_the_dpkg_tensorrt_version(tmp_path, deb, version, series):
    run = Run(tmp_path)
    r = run(fake_dpkg=f"tensorrt={deb} nvidia-jetpack=6.2+b77")
    assert r.returncode == 0, r.stderr
    argv = run.argv("trtexec")
    base = ["--onnx=model.int8.onnx", "--saveEngine=model.engine.partial"]
    assert argv == base + FLAGS[series]
    # the same flags the host picks for a named profile with that TensorRT version
    assert argv == trtexec_command(version, "model.int8.onnx", "model.engine.partial", **{
        k: OPTS[k] for k in ("precision", "dla_core", "workspace_mb", "opt_level", "strongly_typed")},
        timing_cache=OPTS["timing_cache"])[1:]
    assert "--admindir=" + str(run.root) + "/var/lib/dpkg" in run.argv("dpkg-query")[0]
    assert run.files() == ["build_engine.sh", "model.engine", "model.int8.onnx", "model.json"]
    side = run.sidecar()
    assert side["tensorrt"] == version and side["sm"] == "87" and side["jetpack"] == "6.2" and side["l4t"] == "36.4.3"
    assert side["detected_from"] == {"tensorrt": "dpkg tensorrt", "sm": "device tree", "jetpack": "dpkg nvidia-jetpack"}
    assert side["built_with"] == "trtexec" and side["board"] == "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super"
    assert side["sha256"] == hashlib.sha256(b"fake engine").hexdigest() and side["bytes"] == len(b"fake engine")
    assert side["class_names"] == STATIC["class_names"] and side["input"] == STATIC["input"]


def test_libnvinfer_package_when_there_is_no_tensorrt_meta_package(tmp_path):
    run = Run(tmp_path)
    r = run(fake_dpkg="libnvinfer8=8.2.1.9-1+cuda10.2")
    assert r.returncode == 0, r.stderr
    assert "--workspace=256" in run.argv("trtexec")
    side = run.sidecar()
    assert side["tensorrt"] == "8.2.1.9" and side["detected_from"]["tensorrt"] == "dpkg libnvinfer8"
    assert side["jetpack"] == "6.x" and side["detected_from"]["jetpack"] == "L4T R36.4.3"  # no nvidia-jetpack package


def test_python_bindings_and_the_builder_when_trtexec_is_missing(tmp_path):
    run = Run(tmp_path, stubs=("python3",))  # no dpkg-query, no trtexec: a pip-installed TensorRT
    r = run(fake_py_trt="8.6.2")
    assert r.returncode == 0, r.stderr
    build = [ln for ln in run.argv("python3") if ln.startswith("trt_builder.py build")]
    assert build == ["trt_builder.py build --onnx model.int8.onnx --engine model.engine.partial --precision int8 "
                     "--workspace-mb 256 --timing-cache timing-jetson.cache --opt-level 3"]
    side = run.sidecar()
    assert side["tensorrt"] == "8.6.2" and side["built_with"] == "trt_builder.py"
    assert side["detected_from"]["tensorrt"] == "python3 tensorrt"


def test_dla_fp16_and_strongly_typed_options(tmp_path):
    opts = dict(OPTS, precision="fp16", dla_core=1, opt_level=None, strongly_typed=True)
    run = Run(tmp_path, opts=opts)
    assert run(fake_dpkg="tensorrt=10.3.0.30-1+cuda12.5").returncode == 0
    assert run.argv("trtexec")[2:] == ["--stronglyTyped", "--memPoolSize=workspace:256M", "--useDLACore=1",
                                       "--allowGPUFallback", "--timingCacheFile=timing-jetson.cache"]
    run2 = Run(tmp_path / "b", opts=dict(opts, strongly_typed=False))
    assert run2(fake_dpkg="tensorrt=8.5.2.2-1+cuda11.4").returncode == 0
    assert run2.argv("trtexec")[2:] == ["--fp16", "--memPoolSize=workspace:256M", "--useDLACore=1",
                                        "--allowGPUFallback", "--timingCacheFile=timing-jetson.cache"]


def test_no_tensorrt_exit_3_and_nothing_written(tmp_path):
    run = Run(tmp_path, stubs=("dpkg-query", "python3"))
    r = run(fake_dpkg="nvidia-l4t-core=36.4.3-20250108")
    assert r.returncode == 3
    assert r.stderr.strip() == ("build_engine.sh: no TensorRT on this machine (no tensorrt/libnvinfer package, no "
                                "trtexec, python3 cannot import tensorrt); install it: sudo apt install nvidia-jetpack")
    assert run.files() == ["build_engine.sh", "model.int8.onnx"]


def test_tensorrt_without_trtexec_or_bindings_exit_3(tmp_path):
    run = Run(tmp_path, stubs=("dpkg-query", "python3"))
    r = run(fake_dpkg="tensorrt=10.3.0.30-1+cuda12.5")
    assert r.returncode == 3 and "TensorRT 10.3.0.30 is installed but neither trtexec" in r.stderr
    assert "sudo apt install python3-libnvinfer" in r.stderr
    assert run.files() == ["build_engine.sh", "model.int8.onnx"]


def test_a_failed_build_leaves_no_engine(tmp_path):
    run = Run(tmp_path)
    r = run(fake_dpkg="tensorrt=10.3.0.30-1+cuda12.5", fake_trtexec_fail="1")
    assert r.returncode == 1 and "trtexec failed (exit 1)" in r.stderr.splitlines()[-1]
    assert run.files() == ["build_engine.sh", "model.int8.onnx"]


def test_detect_builds_nothing(tmp_path):
    run = Run(tmp_path, board="jetson-thor")
    r = run("--detect", fake_dpkg="tensorrt=10.13.3.9-1+cuda13.0 nvidia-jetpack=7.0+b128")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:4] == ["tensorrt=10.13.3.9 (dpkg tensorrt)", "sm=110 (device tree)",
                         "jetpack=7.0 (dpkg nvidia-jetpack)", "l4t=38.2.1"]
    assert run.files() == ["build_engine.sh", "model.int8.onnx"] and not (run.log / "trtexec.argv").exists()


def test_sm_from_nvidia_smi_then_the_cuda_runtime(tmp_path):
    """No device tree (a GPU machine rather than a Jetson): nvidia-smi, then trt_builder.py info."""
    run = Run(tmp_path, board=None, stubs=("dpkg-query", "python3", "trtexec", "nvidia-smi"))
    r = run("--detect", fake_dpkg="tensorrt=10.3.0.30-1+cuda12.5", fake_compute_cap="9.0")
    assert "sm=90 (nvidia-smi)" in r.stdout and "l4t=none" in r.stdout
    r = run("--detect", fake_dpkg="tensorrt=10.3.0.30-1+cuda12.5", fake_compute_cap="", fake_py_trt="10.3.0",
            fake_py_sm="89")
    assert "sm=89 (CUDA runtime)" in r.stdout


def test_missing_onnx_exit_2(tmp_path):
    run = Run(tmp_path)
    (run.pkg / "model.int8.onnx").unlink()
    r = run(fake_dpkg="tensorrt=10.3.0.30-1+cuda12.5")
    assert r.returncode == 2 and "model.int8.onnx is not in" in r.stderr


def test_trtexec_table_lists_each_series():
    text = portable_trtexec_table("model.int8.onnx", "model.engine", OPTS)
    cmds = [ln for ln in text.splitlines() if ln.startswith("trtexec ")]
    assert len(cmds) == 4
    assert "--workspace=256" in cmds[0] and "--builderOptimizationLevel" not in cmds[0]
    assert "--memPoolSize=workspace:256M" in cmds[1] and "--builderOptimizationLevel" not in cmds[1]
    assert "--builderOptimizationLevel=3" in cmds[2] and "--int8" in cmds[2]
    assert "--stronglyTyped" in cmds[3] and "--int8" not in cmds[3]


def test_unsafe_file_names_are_refused():
    from drsn_edge.errors import InputError

    with pytest.raises(InputError, match="file name 'my model.onnx'"):
        portable_build_script("my model.onnx", "model.engine", OPTS, STATIC)
