"""`--target jetson` on this machine: detection under the DRSN_EDGE_ROOT seam (fake Nano, Xavier, Orin and
Thor trees, and a workstation), profile resolution and the one missing piece when TensorRT cannot build."""

import shutil
import subprocess

import pytest

from drsn_edge import jetson_local
from drsn_edge.backends.tensorrt import portable_build_script
from drsn_edge.errors import InputError, MissingDependencyError
from drsn_edge.jetson_local import (clean_version, detect_local_jetson, dpkg_installed, missing_piece,
                                    resolve_jetson_target)

from .jetson_fakes import JETSONS, dpkg_status, make_root


@pytest.fixture(autouse=True)
def _no_python3_tensorrt(monkeypatch):
    """Whatever python3 this machine has, the fake Jetsons' bindings are what each test says."""
    monkeypatch.setattr(jetson_local, "python3_tensorrt", lambda: None)
    monkeypatch.delenv("DRSN_EDGE_ROOT", raising=False)
    monkeypatch.delenv("DRSN_EDGE_TARGETS_DIR", raising=False)


@pytest.mark.parametrize("board", sorted(JETSONS))
def test_each_board_is_detected_and_resolved(tmp_path, board):
    root = make_root(tmp_path, board, trtexec=True)
    facts = detect_local_jetson(root)
    want = JETSONS[board]["expect"]
    assert facts["is_jetson"] and facts["model"] == JETSONS[board]["model"]
    assert {k: facts[k] for k in want} == want
    assert facts["tensorrt_from"] == "dpkg tensorrt" and facts["trtexec"] == str(root / "usr/src/tensorrt/bin/trtexec")
    assert facts["tensorrt_here"] is False  # never this interpreter's bindings under a fake root
    t = resolve_jetson_target(root=root)
    assert t.name == board and t.family == "jetson" and t.backend == "tensorrt"
    assert (t.tensorrt, t.sm, t.jetpack) == (want["tensorrt"], want["sm"], want["jetpack"])
    assert t.detected["profile"] == board
    assert t.detected["summary"].startswith(f"jetson → {board}: this machine is {JETSONS[board]['model']} "
                                            f"(L4T R{want['l4t']}, JetPack {want['jetpack']}, SM {want['sm']}, "
                                            f"TensorRT {want['tensorrt']} (dpkg tensorrt))")


def test_root_comes_from_the_environment(tmp_path, monkeypatch):
    root = make_root(tmp_path, "jetson-xavier-nx", trtexec=True)
    monkeypatch.setenv("DRSN_EDGE_ROOT", str(root))
    assert detect_local_jetson()["soc"] == "tegra194"
    assert resolve_jetson_target().name == "jetson-xavier-nx"


def test_a_workstation_gets_the_portable_profile(tmp_path):
    root = make_root(tmp_path, None)
    facts = detect_local_jetson(root)
    assert facts["is_jetson"] is False and facts["tensorrt"] is None and facts["trtexec"] is None
    t = resolve_jetson_target(root=root)
    assert t.name == "jetson" and t.tensorrt is None and t.sm is None and t.jetpack is None
    assert t.dla_cores == 2  # the most any Jetson profile has (Xavier NX, AGX Orin)
    assert t.detected["summary"] == (f"jetson → portable package: this machine is not a Jetson (no "
                                     f"{root}/etc/nv_tegra_release); build_engine.sh detects TensorRT, SM and JetPack "
                                     "on the Jetson when it runs")
    with pytest.raises(InputError, match="--target jetson needs a Jetson, and this machine is not one"):
        resolve_jetson_target(root=root, purpose="check")


def test_profile_pins_another_tensorrt(tmp_path):
    """An Orin Nano still on JetPack 6.0 (TensorRT 8.6): the engine is for what is installed."""
    root = make_root(tmp_path, "jetson-orin-nano", trtexec=True, tensorrt=False,
                     packages={"tensorrt": "8.6.2.3-1+cuda12.2", "nvidia-jetpack": "6.0+b106"})
    t = resolve_jetson_target(root=root)
    assert (t.tensorrt, t.jetpack) == ("8.6.2.3", "6.0")
    assert t.detected["summary"].endswith("; the profile pins TensorRT 10.3, this machine's is used")


@pytest.mark.parametrize("board", sorted(JETSONS))
def test_no_tensorrt_names_the_missing_piece(tmp_path, board):
    root = make_root(tmp_path, board, tensorrt=False)
    with pytest.raises(MissingDependencyError) as ei:
        resolve_jetson_target(root=root)
    assert str(ei.value) == (f"this Jetson ({JETSONS[board]['model']}, L4T R{JETSONS[board]['expect']['l4t']}) has no "
                             "TensorRT (no tensorrt/libnvinfer package, no trtexec, python3 cannot import tensorrt): "
                             "install it with `sudo apt install nvidia-jetpack` and build again")
    # a check needs no TensorRT (ONNX Runtime stands in), so it resolves
    assert resolve_jetson_target(root=root, purpose="check").name == board


def test_tensorrt_without_trtexec_or_bindings(tmp_path, monkeypatch):
    root = make_root(tmp_path, "jetson-orin-nano")  # the library package, neither trtexec nor bindings
    with pytest.raises(MissingDependencyError, match=r"TensorRT 10\.3\.0\.30 is installed on this Jetson .* neither "
                                                     r"its Python bindings .* `sudo apt install python3-libnvinfer`"):
        resolve_jetson_target(root=root)
    monkeypatch.setattr(jetson_local, "python3_tensorrt", lambda: "10.3.0")  # bindings: enough to build
    assert resolve_jetson_target(root=root).name == "jetson-orin-nano"


def test_version_from_bindings_only(tmp_path, monkeypatch):
    root = make_root(tmp_path, "jetson-thor", tensorrt=False)
    monkeypatch.setattr(jetson_local, "python3_tensorrt", lambda: "10.13.3")
    facts = detect_local_jetson(root)
    assert (facts["tensorrt"], facts["tensorrt_from"], facts["tensorrt_python3"]) == ("10.13.3", "python3 tensorrt",
                                                                                     "10.13.3")
    assert missing_piece(facts) is None


def test_unknown_board_or_release_is_input_error(tmp_path):
    root = make_root(tmp_path, "jetson-orin-nano", trtexec=True)
    (root / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson Orin NX Engineering Reference Developer Kit\x00")
    with pytest.raises(InputError, match="no target profile fits the model 'NVIDIA Jetson Orin NX"):
        resolve_jetson_target(root=root)


def test_dpkg_status_parsing(tmp_path):
    (tmp_path / "var/lib/dpkg").mkdir(parents=True)
    (tmp_path / "var/lib/dpkg/status").write_text(dpkg_status(
        {"libnvinfer8": "8.2.1.9-1+cuda10.2", "libnvinfer10": "1:10.3.0.30-1+cuda12.5"},
        not_installed={"tensorrt": "8.6.2.3-1+cuda12.2"}))
    assert dpkg_installed(tmp_path) == {"libnvinfer8": "8.2.1.9-1+cuda10.2", "libnvinfer10": "1:10.3.0.30-1+cuda12.5"}
    assert jetson_local.tensorrt_from_dpkg(dpkg_installed(tmp_path)) == ("10.3.0.30", "libnvinfer10")
    assert dpkg_installed(tmp_path / "missing") == {}


@pytest.mark.parametrize("raw,clean", [("1:10.3.0.30-1+cuda12.5", "10.3.0.30"), ("6.2+b77", "6.2"),
                                       ("4.6.1-b110", "4.6.1"), ("8.6.2", "8.6.2"), ("", None), ("abc", None)])
def test_clean_version(raw, clean):
    assert clean_version(raw) == clean


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="dpkg-query is not installed here")
@pytest.mark.parametrize("board", sorted(JETSONS))
def test_python_detection_agrees_with_build_engine_sh(tmp_path, board):
    """The host's detection and the script's (real dpkg-query reading the fake root) say the same."""
    root = make_root(tmp_path / "root", board, trtexec=True)
    facts = detect_local_jetson(root)
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "model.int8.onnx").write_bytes(b"onnx")
    (pkg / "build_engine.sh").write_text(portable_build_script("model.int8.onnx", "model.engine",
                                                               {"precision": "int8"}, {}))
    r = subprocess.run(["bash", str(pkg / "build_engine.sh"), "--detect"], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "DRSN_EDGE_ROOT": str(root)}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[:4] == [f"tensorrt={facts['tensorrt']} (dpkg tensorrt)", f"sm={facts['sm']} (device tree)",
                                         f"jetpack={facts['jetpack']} (dpkg nvidia-jetpack)", f"l4t={facts['l4t']}"]
