"""The `qemu` transport for real: firmware built with arm-none-eabi-gcc + picolibc around the stand-in engine
(tests/firmware/standin), run in qemu-system-arm on mps2-an386 (Cortex-M4) and mps2-an500 (Cortex-M7),
reached over the emulated UART on a loopback TCP port. QEMU must be gone after every way out: normal close,
an error, a timeout, Ctrl-C (SIGINT), SIGTERM and SIGKILL of the Python process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from drsn_edge.devices import open_device
from drsn_edge.devices.mcu import McuRunner
from drsn_edge.errors import DeviceError
from drsn_edge.targets import get_target

from ..firmware.standin_ref import HANG, NOISE, RESET, STANDIN_DIR, expected, hook, standin_logits, windows

pytestmark = pytest.mark.skipif(not (shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-gcc")),
                                reason="needs apt packages qemu-system-arm gcc-arm-none-eabi picolibc-arm-none-eabi")
MACHINES = {"qemu-m4": "mps2-an386", "qemu-m7": "mps2-an500", "qemu-m33": "mps2-an505", "qemu-m55": "mps3-an547"}
SYSCLK = {"qemu-m4": 25_000_000, "qemu-m7": 25_000_000, "qemu-m33": 20_000_000, "qemu-m55": 32_000_000}


@pytest.fixture(scope="module")
def elfs(tmp_path_factory):
    from drsn_edge.firmware.cfirmware import build_qemu_elf

    out = tmp_path_factory.mktemp("qemu-fw")
    built = {}
    for name in MACHINES:
        mem = build_qemu_elf(STANDIN_DIR, get_target(name), out / f"{name}.elf")
        built[name] = (out / f"{name}.elf", mem)
    return built


def _runner(elfs, name="qemu-m7", timeout_s=10.0, **exp):
    dev = open_device(f"qemu://{MACHINES[name]}", elf=elfs[name][0])
    return McuRunner(dev, expected(**exp), timeout_s=timeout_s)


def _gone(pid: int, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    return True  # exited, waiting to be reaped by its new parent
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("name", list(MACHINES))
def test_bit_exact_with_deterministic_instruction_counts(elfs, name):
    r = _runner(elfs, name)
    r.activate()
    try:
        hz = SYSCLK[name]
        assert (r.info.counter, r.info.clock_hz, r.info.model_crc) == ("instructions", hz, 0x5A17C0DE)
        x = windows(6, seed=1)
        x[3] = x[2]
        y = r.infer_int8(x)
        assert np.array_equal(y, standin_logits(x))
        counts = r.timing().counts
        # one SysTick tick under -icount shift=0 is 1e9/hz instructions (40 at 25 MHz); the same work counts
        # the same to within one tick (where the tick boundary falls)
        tick = 1e9 / hz
        if tick == int(tick):
            assert all(c % int(tick) == 0 for c in counts)
        assert max(counts) - min(counts) <= int(np.ceil(tick))
        # 20 480 MACs in a compiled loop: between 4 and 20 instructions per MAC
        assert 4 * 20480 < counts[0] < 20 * 20480
        t = r.timing()
        assert t.count_unit == "instructions" and "estimate" in t.source
        assert t.latencies_ms[0] == pytest.approx(counts[0] / hz * 1e3)
    finally:
        r.deactivate()
    assert r.link.proc.poll() is not None


def test_float_infer_quantizes_like_the_reference(elfs):
    from drsn_edge.backends.tflite import quantize_input

    x = np.random.default_rng(3).normal(0, 1, (4, 1, 2048)).astype(np.float32)
    r = _runner(elfs)
    r.activate()
    try:
        y = r.infer(x)
    finally:
        r.deactivate()
    raw = standin_logits(quantize_input(x.reshape(4, -1), 0.05, 0))
    assert np.array_equal(r.last_raw, raw)
    assert np.array_equal(y, (raw.astype(np.float32) + 3) * 0.125)


@pytest.mark.parametrize("change, named", [
    ({"model_crc": 0x12345678}, "model hash is 0x5a17c0de, the build's is 0x12345678"),
    ({"input_len": 1024}, "input length is 2048, the build's is 1024"),
    ({"output_zp": 0}, "output zero point is -3, the build's is 0"),
])
def test_other_build_is_refused_with_the_mismatch_named(elfs, change, named):
    r = _runner(elfs, **change)
    with pytest.raises(DeviceError, match=named) as exc:
        r.activate()
    assert "\n" not in str(exc.value) and exc.value.exit_code == 4
    assert r.link.proc.poll() is not None  # stopped on the error path


def test_reset_mid_run_is_detected(elfs):
    r = _runner(elfs)
    r.activate()
    try:
        r.infer_int8(windows(1))
        with pytest.raises(DeviceError, match=r"on qemu://mps2-an500 \(127\.0\.0\.1:\d+\) reset during the session"):
            r.infer_int8(hook(RESET)[None])
    finally:
        r.deactivate()


def test_silent_device_times_out_naming_the_port(elfs):
    r = _runner(elfs, timeout_s=0.5)
    r.activate()
    try:
        with pytest.raises(DeviceError, match=r"no answer from the device on qemu://mps2-an500 \(127\.0\.0\.1:\d+\) "
                                              r"within 0\.5 s \(sent 3 times\)"):
            r.infer_int8(hook(HANG)[None])
    finally:
        r.deactivate()
    assert r.link.proc.poll() is not None


def test_line_noise_from_the_device_is_skipped(elfs):
    r = _runner(elfs)
    r.activate()
    try:
        x = hook(NOISE)[None]
        assert np.array_equal(r.infer_int8(x), standin_logits(x))
        assert r.client.dec.dropped >= 1 and r.client.resends == 0
    finally:
        r.deactivate()


def test_missing_elf_is_input_error(tmp_path):
    from drsn_edge.errors import InputError

    r = McuRunner(open_device("qemu://mps2-an500", elf=tmp_path / "none.elf"))
    with pytest.raises(InputError, match="no firmware ELF"):
        r.activate()


# ------------------------------------------------------------------ no orphan QEMU on any exit path

CHILD = textwrap.dedent("""
    import sys, numpy as np
    from drsn_edge.devices import open_device
    from drsn_edge.devices.mcu import McuRunner
    elf, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    r = McuRunner([open_device("qemu://mps2-an500", elf=elf) for _ in range(n)], timeout_s=0.5)
    r.activate()
    print(" ".join(str(link.pid) for link in r.links), flush=True)
    x = np.zeros((n, 2048), np.int8)
    if mode == "error":
        raise RuntimeError("boom")
    if mode == "timeout":
        x[0, :3] = -128
        r.infer_int8(x)
    while True:  # sigint / sigterm / sigkill: stream until the signal comes
        r.infer_int8(x)
""")


@pytest.mark.parametrize("mode, sig, rc, n", [
    ("error", None, 1, 1), ("timeout", None, 1, 1),
    ("stream", signal.SIGINT, -signal.SIGINT, 1), ("stream", signal.SIGTERM, -signal.SIGTERM, 1),
    ("stream", signal.SIGKILL, -signal.SIGKILL, 1), ("stream", signal.SIGINT, -signal.SIGINT, 2),
])
def test_no_orphan_qemu(elfs, mode, sig, rc, n):
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(elfs["qemu-m7"][0]), mode, str(n)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ})
    try:
        pids = [int(v) for v in p.stdout.readline().split()]
        assert len(pids) == n
        if sig is not None:
            assert not any(_gone(pid, 0.3) for pid in pids)  # QEMU runs while the parent streams
            p.send_signal(sig)
        p.wait(30)
        err = p.stderr.read()
    finally:
        p.kill()
        p.wait()
    assert p.returncode == rc
    if mode == "timeout":
        assert "DeviceError: no answer from the device on qemu://mps2-an500" in err
    if sig == signal.SIGINT:  # unwound as KeyboardInterrupt; Python then exits by SIGINT, as the shell expects
        assert "KeyboardInterrupt" in err
    for pid in pids:
        assert _gone(pid), f"QEMU (pid {pid}) outlived its parent after {mode}/{sig}"


def test_mcu_runner_from_the_target(elfs):
    from drsn_edge.devices.mcu import mcu_runner
    from drsn_edge.errors import InputError

    r = mcu_runner(get_target("qemu-m4"), elf=elfs["qemu-m4"][0], expected=expected())
    assert r.link.machine == "mps2-an386" and r.name == "c engine on qemu-m4 (int8)"
    r.activate()
    try:
        x = windows(2, seed=9)
        assert np.array_equal(r.infer_int8(x), standin_logits(x))
    finally:
        r.deactivate()
    with pytest.raises(InputError, match=r"serial:///dev/ttyACM0\?baud=115200"):
        mcu_runner(get_target("stm32h743"))
    with pytest.raises(InputError, match="not 'ssh://jetson'"):
        mcu_runner(get_target("stm32h743"), "ssh://jetson")


def test_firmware_that_crashes_qemu_is_one_line(tmp_path):
    bad = tmp_path / "fw.elf"
    bad.write_bytes(b"not an ELF")  # loaded as a raw image: the core locks up at once
    r = McuRunner(open_device("qemu://mps2-an500", elf=bad))
    with pytest.raises(DeviceError, match=r"on qemu://mps2-an500 \(127\.0\.0\.1:\d+\)(: | \()QEMU exited with status "
                                          r"-6: qemu: fatal: Lockup") as exc:
        r.activate()
    assert "\n" not in str(exc.value)
    assert r.link.proc.poll() is not None


def test_two_emulated_boards_share_the_windows_in_order(elfs):
    from drsn_edge.devices.mcu import mcu_runner

    r = mcu_runner(get_target("qemu-m7"), elf=elfs["qemu-m7"][0], expected=expected(), instances=2)
    r.activate()
    try:
        pids = [link.pid for link in r.links]
        assert len(set(pids)) == 2
        x = windows(7, seed=11)
        x[5] = x[0]
        assert np.array_equal(r.infer_int8(x), standin_logits(x))
        counts = r.timing().counts
        assert len(counts) == 7 and abs(counts[5] - counts[0]) <= 40  # window 5 ran on the other board
        with pytest.raises(DeviceError, match="reset during the session"):
            r.infer_int8(np.stack([windows(1)[0]] * 3 + [hook(RESET)]))
    finally:
        r.deactivate()
    assert all(_gone(pid) for pid in pids)
