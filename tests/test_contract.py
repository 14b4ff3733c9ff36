"""The backend contract: one build, checked as built, on every target family."""

import json
import shutil

import pytest

from .conftest import run_cli


def test_registry_names_every_backend_a_target_uses():
    from drsn_edge.backends import BACKENDS, get_backend
    from drsn_edge.targets import all_targets

    for t in all_targets().values():
        b = get_backend(t.backend)
        assert b.name == t.backend and t.backend in BACKENDS
    with pytest.raises(Exception, match="registered: "):
        get_backend("nope")


@pytest.mark.parametrize("args,needle", [
    (["--target", "stm32h743", "--dla-core", "0"], "--dla-core applies to tensorrt targets; stm32h743 builds with c"),
    (["--target", "stm32h743", "--method", "entropy"],
     "--method entropy is not a .tflite calibration; stm32h743 takes auto, minmax, percentile"),
    (["--target", "host", "--method", "minmax"], "--method applies to onnxruntime, litert, tflm, tensorrt and c targets; host builds with host"),
    (["--target", "host", "--opt-level", "3"], "--opt-level applies to tensorrt targets; host builds with host"),
    (["--target", "stm32h743", "--device", "ssh://u@127.0.0.1:1"], "--device applies to tensorrt targets"),
    (["--target", "jetson-nano", "--strongly-typed"], "--strongly-typed needs TensorRT ≥ 10"),
    (["--target", "jetson-orin-nano", "--opt-level", "9"], "--opt-level must be ≤ 5"),
    (["--target", "jetson-orin-nano", "--max-drop", "nan"], "--max-drop must be a finite number"),
])
def test_options_a_backend_does_not_take_are_refused(tiny_model, tmp_path, args, needle):
    out = tmp_path / "o"
    r = run_cli("build", tiny_model, *args, "-o", out, "--json")
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert json.loads(r.stdout)["exit_code"] == 2
    assert not out.exists()


@pytest.fixture(scope="module")
def host_build(tiny_model, tiny_calib, tiny_data, tmp_path_factory):
    pytest.importorskip("litert_torch", reason="the tflite extra (litert-torch) is not installed")
    out = tmp_path_factory.mktemp("host") / "host"
    r = run_cli("build", tiny_model, "--target", "host", "--calib", tiny_calib, "--data", tiny_data, "-o", out,
                "--max-drop", "100", "--max-cell-drop", "100", "--json", timeout=600)
    assert r.returncode == 0, r.stderr
    return out, json.loads(r.stdout)


def test_build_host_then_check_it(host_build, tiny_data):
    out, built = host_build
    choice = json.loads((out / "build.json").read_text())["choice"]
    stem = {"litert": ".tflite", "onnxruntime": ".onnx"}[choice["runtime"]]
    files = sorted(p.name for p in out.iterdir())
    assert built["backend"] == "host" and len(files) == 3 and "build.json" in files
    artifact = next(f for f in files if f.endswith(stem))
    assert artifact[: -len(stem)] + ".json" in files
    # the choice is the fastest measured candidate within the gate, and says so
    kept = [c for c in choice["candidates"] if c["within_gate"]]
    assert choice["candidate"] == min(kept, key=lambda c: c["p50_us"])["candidate"]
    assert choice["reason"].startswith(f"fastest of {len(kept)} candidates within the 100 pp accuracy gate")
    r = run_cli("check", out, "--target", "host", "--data", tiny_data, "--json")
    res = json.loads(r.stdout)
    assert res["runtime"].startswith(choice["runtime"]) and r.returncode == (0 if res["passed"] else 1)
    # the check ran the very file the build measured: identical figures
    assert res["accuracy"] == built["accuracy"]["accuracy"]
    assert res["reference_accuracy"] == built["accuracy"]["reference_accuracy"]


def test_check_on_a_non_default_method_build_reports_that_build(tiny_model, tiny_calib, tiny_data, tmp_path):
    out = tmp_path / "orin"
    r = run_cli("build", tiny_model, "--target", "jetson-orin-nano", "--calib", tiny_calib, "--data", tiny_data,
                "-o", out, "--method", "minmax", "--max-drop", "100", "--max-cell-drop", "100", "--json")
    assert r.returncode == 0, r.stderr
    built = json.loads(r.stdout)
    side = json.loads((out / "model.int8.json").read_text())
    assert side["calibration"]["method"] == "minmax" and json.loads((out / "build.json").read_text())["options"][
        "method"] == "minmax"
    r = run_cli("check", out, "--target", "jetson-orin-nano", "--data", tiny_data, "--json")
    res = json.loads(r.stdout)
    # figures of the minmax artifact: what its sidecar recorded at build time
    assert res["accuracy"] == side["accuracy"]["int8_accuracy"] == built["accuracy"]["accuracy"]
    assert res["reference_accuracy"] == side["accuracy"]["float_accuracy"]


def test_a_build_folder_for_another_target_model_or_calibration_is_refused(host_build, tiny_data, tiny_calib,
                                                                          tiny_model, tmp_path):
    out, _ = host_build
    r = run_cli("check", out, "--target", "jetson-orin-nano", "--data", tiny_data)
    assert r.returncode == 2 and "was built for host, not jetson-orin-nano" in r.stderr
    other = tmp_path / "other.drsn"
    shutil.copyfile(tiny_model, other)
    with open(other, "ab") as f:
        f.write(b" ")
    r = run_cli("check", out, "--target", "host", "--model", other, "--data", tiny_data)
    assert r.returncode == 2 and "was built from another model" in r.stderr
    cal = tmp_path / "cal.npz"
    cal.write_bytes(tiny_calib.read_bytes() + b"x")
    r = run_cli("check", out, "--target", "host", "--calib", cal, "--data", tiny_data)
    assert r.returncode == 2 and "was calibrated with another set" in r.stderr


def test_check_without_a_build_says_how_to_make_one(tmp_path):
    r = run_cli("check", tmp_path / "nothing", "--target", "host", "--json")
    assert r.returncode == 2 and "run drsn-edge build --target host first, or pass --build" in r.stderr


def test_same_float_accuracy_everywhere_on_the_default_spec(tiny_model, tiny_calib, tiny_data, tmp_path, host_build):
    """quantize, build (QDQ and TFLite) and check measure the same float model on the same spec."""
    q = run_cli("quantize", tiny_model, "--calib", tiny_calib, "--data", tiny_data, "-o", tmp_path / "q.onnx",
                "--max-drop", "100", "--max-cell-drop", "100", "--json")
    qf = json.loads(q.stdout)["float_accuracy"]
    _, built = host_build
    assert built["accuracy"]["reference_accuracy"] == qf


def test_a_new_family_is_one_module_one_registry_line_and_one_toml(tmp_path):
    """A family the tool has never heard of: its module (hardware schema, default transport, summary), one line
    in the registry and one profile are all a target needs to load, validate and be listed."""
    import subprocess
    import sys

    (tmp_path / "edge-npu.toml").write_text('name = "edge-npu"\nfamily = "npu"\nbackend = "onnxruntime"\n'
                                            '[hardware]\ntops = 4.0\n')
    (tmp_path / "bad-npu.toml").write_text('name = "bad-npu"\nfamily = "npu"\nbackend = "onnxruntime"\n'
                                           '[hardware]\ntops = -1.0\n')
    script = f"""
import sys, types
import drsn_edge.families as fams
from drsn_edge.families.base import POSITIVE, Family, field_spec
mod = types.ModuleType("drsn_edge.families.npu")
mod.FAMILY = Family(name="npu", description="a neural accelerator", hardware={{"tops": field_spec("float", True, check=POSITIVE)}},
                    default_transport="local", summary=lambda t: {{"chip": "npu", "clock": None, "flash": None,
                    "stack": f"{{t.hardware['tops']:g}} TOPS"}}, backends=("onnxruntime",))
sys.modules["drsn_edge.families.npu"] = mod
fams.FAMILIES["npu"] = "npu"
from drsn_edge.errors import InputError
from drsn_edge.targets import load_target_file, summary_row
t = load_target_file({str(tmp_path / "edge-npu.toml")!r})
print(t.family, t.backend, t.transport, summary_row(t)["stack"])
try:
    load_target_file({str(tmp_path / "bad-npu.toml")!r})
except InputError as e:
    print("refused:", e)
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "npu onnxruntime local 4 TOPS"
    assert lines[1].startswith("refused:") and "hardware.tops" in lines[1]
