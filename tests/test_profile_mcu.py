"""`profile` of a C-engine build on the emulated Cortex-M: per-kernel instruction counts from the profiling
firmware (kernel markers, PROFILE request) run for real in QEMU, checked against the normal firmware's count
of the whole inference, the generated engine's kernel list and the model's MACs."""

import json
import re
import shutil
import struct
import subprocess

import numpy as np
import pytest

from .conftest import run_cli
from .test_profile import _deploy, _layer_macs

pytest.importorskip("tflite_micro", reason="the tflite extra (tflite-micro) is not installed")
needs_arm = pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                               reason="needs apt packages gcc-arm-none-eabi picolibc-arm-none-eabi qemu-system-arm")


@pytest.fixture(scope="module")
def m7(tiny_model, tiny_calib, tmp_path_factory):
    if not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")):
        pytest.skip("needs apt packages gcc-arm-none-eabi picolibc-arm-none-eabi qemu-system-arm")
    out = tmp_path_factory.mktemp("pm") / "m7"
    r = run_cli("build", tiny_model, "--target", "qemu-m7", "--calib", tiny_calib, "-o", out, "--max-drop", "100",
                "--windows-per-class", "1", "--noise", "none", "--json", timeout=900)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def prof(m7, tmp_path_factory):
    rep = tmp_path_factory.mktemp("rep") / "r"
    r = run_cli("profile", m7, "--target", "qemu-m7", "--repeats", "8", "--warmup", "1", "--json", "--report", rep,
                timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), rep


def _sidecar(m7):
    return json.loads((m7 / "model.int8.json").read_text())


@needs_arm
def test_kernel_rows_are_the_engines_kernels_with_the_models_names_and_macs(m7, prof, tiny_model):
    res, _ = prof
    side = _sidecar(m7)
    n_kernels = int(re.search(r"#define DRSN_NUM_KERNELS (\d+)", (m7 / "firmware" / "drsn_model.h").read_text())[1])
    assert [r["name"] for r in res["rows"]] == side["engine"]["kernels"] and len(res["rows"]) == n_kernels
    assert res["unit"] == "instructions" and res["runtime"] == "c engine on qemu-m7 (int8)"
    _, net = _deploy(tiny_model)
    places = {n for n, _ in net.named_modules() if n} | {"stem", "head"}
    assert all(r["module"] in places for r in res["rows"])  # every kernel named after a layer or a block
    got: dict[str, int] = {}
    for r in res["rows"]:
        if r["macs"]:
            got[r["module"]] = got.get(r["module"], 0) + r["macs"]
    # litert-torch names the classifier's FULLY_CONNECTED output without a scope: the layer names recorded at
    # build time (the host rows' too) put it in the head
    expected = {("head" if k == "fc" else k): v for k, v in _layer_macs(net, 2048).items()}
    assert got == expected and res["total_macs"] == side["engine"]["macs"] == sum(expected.values())
    assert [b["block"] for b in res["blocks"]] == ["stem", "units.0", "units.1", "units.2", "head"]
    # the soft threshold's kernels are the shrinkage branch, and only they
    assert {r["op_type"] for r in res["rows"] if r["shrinkage"]} >= {"MEAN", "LOGISTIC", "SUB"}
    assert all(".shrink" in r["module"] for r in res["rows"] if r["shrinkage"])


@needs_arm
def test_kernel_counts_sum_to_the_normal_firmwares_count(m7, prof):
    """The kernels' instructions add up to what the normal firmware counts for the whole inference (the
    path `check` takes), within one counter tick per reading plus drsn_infer's own few instructions."""
    from drsn_edge.backends import load_build
    from drsn_edge.devices.mcu import build_runner

    res, rep = prof
    c = res["counts"]
    assert c["per_tick"] == 40.0 and c["clock_hz"] == 25_000_000 and c["same_output"]
    assert c["tolerance"] == (len(res["rows"]) + 1) * 40 + 512 and c["within_tolerance"]
    assert abs(c["per_inference_unprofiled"] - c["kernels_sum"]) <= c["tolerance"]
    # the normal firmware through the check path, on the same window, in a fresh QEMU
    b = load_build(m7)
    x = np.random.default_rng(0).standard_normal((1, 1, b.window)).astype(np.float32)
    runner = build_runner(b, "qemu")
    runner.activate()
    try:
        runner.infer(np.repeat(x, 4, axis=0))
        counts = runner.timing().counts
    finally:
        runner.deactivate()
    assert abs(float(np.median(counts)) - c["kernels_sum"]) <= c["tolerance"]
    # the markers cost something on every kernel, and little: two calls that read the counter
    assert 0 < c["marker_overhead_per_inference"] / c["kernels"] < 100
    assert 0 < c["marker_bracket_inside"] < c["marker_overhead_per_inference"] / c["kernels"]
    assert sum(r["share"] for r in res["rows"]) == pytest.approx(1.0)
    assert sum(g["instructions"] for g in res["blocks"]) == pytest.approx(c["kernels_sum"])
    shrink = sum(r["instructions"] for r in res["rows"] if r["shrinkage"])
    assert res["shrinkage_share"] == pytest.approx(shrink / c["kernels_sum"])
    conv = [r for r in res["rows"] if r["op_type"] == "CONV_2D" and r["macs"] > 1000]
    assert all(r["instructions_per_mac"] == pytest.approx(r["instructions"] / r["macs"]) for r in conv)
    assert sorted(p.name for p in rep.iterdir()) == ["profile.json", "profile.md", "profile.png"]
    assert "| kernel | layer | block | op | MACs | instructions |" in (rep / "profile.md").read_text()


@needs_arm
def test_the_normal_firmware_has_no_markers_and_refuses_profile(m7):
    """The profiling code exists only in the profiling image; the normal firmware answers PROFILE as any
    unknown request, which the host names."""
    from drsn_edge.devices.qemu import QemuDevice
    from drsn_edge.errors import DeviceError
    from drsn_edge.firmware.protocol import SerialClient

    def symbols(elf):
        return subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True, check=True).stdout

    normal, profiling = symbols(m7 / "firmware.elf"), symbols(m7 / "firmware.profile.elf")
    for sym in ("drsn_prof_begin", "drsn_prof_end", "drsn_prof_answer", "board_ticks"):
        assert sym not in normal and sym in profiling
    dev = QemuDevice("mps2-an500", m7 / "firmware.elf")
    try:
        client = SerialClient(dev.port(), 20.0, name=dev.url)
        assert client.get_info().name == "drsn-edge c engine"
        with pytest.raises(DeviceError, match="has no per-kernel profiler"):
            client.kernel_ticks()
    finally:
        dev.close()


@needs_arm
def test_other_emulated_boards_count_per_kernel(m7, tmp_path):
    """The profiling firmware on the Cortex-M55 board (SysTick at 32 MHz: 31.25 instructions a tick)."""
    from drsn_edge.backends.cengine_profile import kernel_rows
    from drsn_edge.cengine.kernels import kernel_table
    from drsn_edge.devices.qemu import QemuDevice
    from drsn_edge.firmware.cfirmware import build_qemu_elf
    from drsn_edge.firmware.protocol import SerialClient
    from drsn_edge.targets import get_target

    t = get_target("qemu-m55")
    x = np.random.default_rng(1).integers(-128, 128, int(np.prod(_sidecar(m7)["input"]["shape"])), dtype=np.int8)
    got = {}
    for profiling in (False, True):
        elf = tmp_path / f"fw{int(profiling)}.elf"
        build_qemu_elf(m7 / "firmware", t, elf, profile=profiling)
        dev = QemuDevice("mps3-an547", elf)
        try:
            client = SerialClient(dev.port(), 20.0, name=dev.url)
            info = client.get_info()
            counts = [client.infer_int8(x)[1] for _ in range(3)]
            got[profiling] = (counts, client.kernel_ticks() if profiling else None, info)
        finally:
            dev.close()
    kernels = kernel_table((m7 / "model.int8.tflite").read_bytes())
    res = kernel_rows(kernels, got[True][1], got[True][2], 3, got[False][0], got[True][0])
    assert res["counts"]["per_tick"] == 31.25 and res["counts"]["within_tolerance"]


def test_profile_answer_and_rows_by_hand():
    """A PROFILE answer decoded and turned into rows: 3 kernels over 2 runs, 40 instructions a tick, the
    markers' bracket 1024 pairs in 512 ticks = 20 instructions."""
    from drsn_edge.backends.cengine_profile import kernel_rows
    from drsn_edge.errors import DeviceError
    from drsn_edge.firmware.protocol import DeviceInfo, KernelTicks

    payload = struct.pack("<HIII3I", 3, 25_000_000, 1024, 512, 101, 1, 50)
    kt = KernelTicks.unpack(payload, "test")
    assert (kt.ticks, kt.tick_hz, kt.cal_pairs, kt.cal_ticks) == ([101, 1, 50], 25_000_000, 1024, 512)
    with pytest.raises(DeviceError, match="12 bytes for 3 kernels|short PROFILE"):
        KernelTicks.unpack(payload[:12], "test")
    with pytest.raises(DeviceError, match="for 3 kernels"):
        KernelTicks.unpack(payload + b"\0\0\0\0", "test")
    info = DeviceInfo(1, 2048, 10, 0.1, 0, 0.1, 0, 0, 25_000_000, "instructions", 0, "x")
    kernels = [{"label": "CONV_2D#1", "module": "stem", "op_type": "CONV_2D", "macs": 100},
               {"label": "MEAN#2", "module": "units.0.shrink", "op_type": "MEAN", "macs": 0},
               {"label": "FULLY_CONNECTED#3", "module": "head", "op_type": "FULLY_CONNECTED", "macs": 20}]
    res = kernel_rows(kernels, kt, info, 2, [3000, 3040], [3100, 3140])
    assert [r["instructions"] for r in res["rows"]] == [101 * 40 / 2 - 20, 1 * 40 / 2 - 20, 50 * 40 / 2 - 20]
    c = res["counts"]
    assert c["kernels_sum"] == 2020 - 20 + 0 + 1000 - 20 and c["per_inference_unprofiled"] == 3020
    assert c["outside_kernels"] == 3020 - 2980 and c["marker_overhead_per_inference"] == 100
    assert c["tolerance"] == 4 * 40 + 512 and c["within_tolerance"]
    assert res["rows"][0]["time_us"] == pytest.approx(2000 / 25)  # instructions at one per cycle of 25 MHz
