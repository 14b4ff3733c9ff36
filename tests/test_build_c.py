"""The `c` backend end to end: build for an emulated Cortex-M (bit-exact with TFLite Micro, flash and RAM from
the linked image) and check what was built on this machine and on QEMU over the serial protocol."""

import json
import shutil

import pytest

from .conftest import run_cli

pytest.importorskip("tflite_micro", reason="the tflite extra (tflite-micro) is not installed")
needs_arm = pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                               reason="needs apt packages gcc-arm-none-eabi picolibc-arm-none-eabi qemu-system-arm")
SPEC = ["--windows-per-class", "1", "--snr", "0"]  # 10 classes × (clean + 3 noise types at 0 dB) = 40 windows


@pytest.fixture(scope="module")
def m7_build(tiny_model, tiny_calib, tmp_path_factory):
    if not shutil.which("arm-none-eabi-gcc"):
        pytest.skip("needs apt package gcc-arm-none-eabi")
    out = tmp_path_factory.mktemp("c") / "m7"
    r = run_cli("build", tiny_model, "--target", "qemu-m7", "--calib", tiny_calib, "-o", out, "--max-drop", "100",
                *SPEC, "--json", timeout=900)
    assert r.returncode == 0, r.stderr
    return out, json.loads(r.stdout)


@needs_arm
def test_c_build_is_bit_exact_and_measured_from_the_image(m7_build):
    out, res = m7_build
    assert res["backend"] == "c" and res["bit_exact_with_tflm"] == 1.0 and res["accuracy"]["bit_exact"] == 1.0
    mem = res["memory"]
    assert mem["measured"] and mem["fits"] and 0 < mem["flash_bytes"] <= mem["flash_budget_bytes"]
    assert mem["ram_bytes"] >= mem["activation_bytes"] > 0  # the static plan lives in RAM (.bss)
    assert (out / "firmware.elf").read_bytes()[:4] == b"\x7fELF"
    for name in ("drsn_model.c", "drsn_model.h", "drsn_kernels.c", "main_c.c", "board_qemu_mps2.c", "drsn_proto.c",
                 "drsn_guard.c", "drsn_guard.h"):
        assert (out / "firmware" / name).is_file(), name
    assert json.loads((out / "build.json").read_text())["backend"] == "c"


@needs_arm
def test_check_on_qemu_runs_the_built_firmware(m7_build):
    out, built = m7_build
    r = run_cli("check", out, "--target", "qemu-m7", *SPEC, "--json", timeout=900)
    res = json.loads(r.stdout)
    assert r.returncode == (0 if res["passed"] else 1), r.stderr
    assert res["runtime"] == "c engine on qemu-m7 (int8)" and res["n"] == 40
    assert res["agreement_with_reference"] == 1.0 == res["bit_exact_with_tflm"]
    # the device computes exactly what the build verified on this machine
    assert res["accuracy"] == built["accuracy"]["accuracy"]
    assert res["instructions_per_inference"] > 0 and res["device_counts"]["macs"] > 0
    assert res["instructions_per_mac"] == pytest.approx(res["instructions_per_inference"] / res["device_counts"]["macs"])
    assert res["latency_is_estimate"] and res["flash_bytes"] == built["memory"]["flash_bytes"]
    # the firmware scores the domain guard and returns its flags with the logits (protocol version 2)
    assert res["domain"]["measured_on"] == "artifact" and res["domain"]["n"] == 40
    local = json.loads(run_cli("check", out, "--target", "qemu-m7", "--device", "local", *SPEC, "--json",
                               timeout=600).stdout)["domain"]
    # the same float32 C on the host: flags can differ only for a score within rounding of the threshold
    assert abs(res["domain"]["out_of_domain_share"] - local["out_of_domain_share"]) <= 1 / 40


@needs_arm
def test_check_on_this_machine_runs_the_same_c(m7_build):
    out, built = m7_build
    r = run_cli("check", out, "--target", "qemu-m7", "--device", "local", *SPEC, "--json", timeout=600)
    res = json.loads(r.stdout)
    assert res["runtime"] == "c engine (int8, host)" and res["bit_exact_with_tflm"] == 1.0
    assert res["accuracy"] == built["accuracy"]["accuracy"]


def test_engine_option_only_for_microcontrollers(tiny_model, tmp_path):
    r = run_cli("build", tiny_model, "--target", "jetson-orin-nano", "--engine", "c", "-o", tmp_path / "o", "--json")
    assert r.returncode == 2 and "--engine c does not apply to jetson-orin-nano" in r.stderr
    assert not (tmp_path / "o").exists()


def test_qemu_device_is_refused_for_a_jetson(tiny_model, tmp_path):
    r = run_cli("check", tmp_path, "--target", "jetson-orin-nano", "--device", "qemu", "--json")
    assert r.returncode == 2 and "--device qemu does not apply to jetson-orin-nano (jetson); use local or ssh" in r.stderr
