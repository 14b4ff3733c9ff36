"""The `serial://` transport without a board: the firmware sources (main_c.c, drsn_proto.c, board_host_pty.c)
around the stand-in engine, built with the host's cc, serve the protocol on a pseudo-terminal they open
themselves; the host reaches it as serial:///dev/pts/N through pyserial, exactly as a board's USB port.
Protocol robustness: line noise both ways, a lost frame (timeout, bounded resend), a reset mid-run, a silent
device, a foreign protocol version — each a one-line DeviceError (exit 4)."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

import numpy as np
import pytest

from drsn_edge.devices import open_device
from drsn_edge.devices.mcu import McuRunner
from drsn_edge.devices.serial import parse_serial_url
from drsn_edge.errors import DeviceError, InputError
from drsn_edge.firmware.protocol import INFO_RSP, Decoder

from ..firmware.standin_ref import NOISE, RESET, STANDIN_DIR, expected, hook, standin_logits, windows

pytest.importorskip("serial", reason="pyserial is not installed: pip install pyserial")
pytestmark = pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="no host C compiler")


@pytest.fixture(scope="module")
def host_fw(tmp_path_factory):
    from drsn_edge.firmware.cfirmware import build_host

    return build_host(STANDIN_DIR, tmp_path_factory.mktemp("host-fw") / "drsn_fw")


@pytest.fixture
def board(host_fw):
    """The host firmware on its own pseudo-terminal: yields (process, /dev/pts/N)."""
    proc = subprocess.Popen([str(host_fw)], stdout=subprocess.PIPE, text=True, env={**os.environ, "DRSN_UART": "pty"})
    path = proc.stdout.readline().strip()
    assert path.startswith("/dev/pts/")
    yield proc, path
    proc.kill()
    proc.wait()


def _runner(url, timeout_s=5.0, **exp):
    return McuRunner(open_device(url), expected(**exp), timeout_s=timeout_s)


def test_parse_serial_url():
    assert parse_serial_url("serial:///dev/ttyACM0") == ("/dev/ttyACM0", 115200)
    assert parse_serial_url("serial:///dev/ttyUSB1?baud=921600") == ("/dev/ttyUSB1", 921600)
    for bad in ("serial://", "serial:///dev/x?baud=fast", "serial:///dev/x?parity=E", "ssh://x"):
        with pytest.raises(InputError):
            parse_serial_url(bad)


def test_bit_exact_over_the_pty(board):
    _, path = board
    r = _runner(f"serial://{path}?baud=115200")
    r.activate()
    try:
        assert (r.info.counter, r.info.clock_hz, r.info.name) == ("cycles", 1_000_000_000, "drsn-edge c engine")
        x = windows(20, seed=4)
        assert np.array_equal(r.infer_int8(x), standin_logits(x))
        t = r.timing()
        assert t.count_unit == "cycles" and len(t.counts) == 20 and min(t.counts) > 0
        assert t.latencies_ms[0] == pytest.approx(t.counts[0] / 1e6)  # ns of a 1 GHz clock
    finally:
        r.deactivate()


def test_line_noise_both_ways(board):
    _, path = board
    r = _runner(f"serial://{path}")
    r.activate()
    try:
        r.client.port.write(b"\xa5\x5a\x01\x02\xff\xff\xff\xff" + bytes(range(256)))  # noise towards the device
        x = np.concatenate([windows(1, 5), hook(NOISE)[None]])  # the device answers the 2nd after line noise
        assert np.array_equal(r.infer_int8(x), standin_logits(x))
        assert r.client.dec.dropped >= 1 and r.client.resends == 0
    finally:
        r.deactivate()


class LossyPort:
    """Corrupts the n-th frame written, as a glitch on the line would: the device drops it (bad CRC)."""

    def __init__(self, port, lose: int):
        self.port, self.lose, self.n = port, lose, 0
        self.name, self.timeout = port.name, port.timeout

    def fileno(self):
        return self.port.fileno()

    def read(self, n):
        return self.port.read(n)

    def write(self, data):
        self.n += 1
        if self.n == self.lose:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        return self.port.write(data)


def test_lost_frame_is_resent_once(board):
    _, path = board
    r = _runner(f"serial://{path}", timeout_s=0.5)
    r.activate()
    try:
        r.client.port = LossyPort(r.client.port, lose=2)  # the first INFER after INFO
        x = windows(3, seed=6)
        assert np.array_equal(r.infer_int8(x), standin_logits(x))
        assert r.client.resends == 1
    finally:
        r.deactivate()


def test_every_frame_lost_gives_up_after_bounded_retries(board):
    _, path = board
    r = _runner(f"serial://{path}", timeout_s=0.3)
    r.activate()
    try:
        r.client.port = LossyPort(r.client.port, lose=2)
        r.client.port.write = lambda data: None  # the line is dead from now on
        with pytest.raises(DeviceError, match=rf"no answer from the device on {path} within 0\.3 s \(sent 3 times\)"):
            r.infer_int8(windows(1))
    finally:
        r.deactivate()


def test_reset_mid_run_then_the_rebooted_board_answers(board):
    proc, path = board
    r = _runner(f"serial://{path}")
    r.activate()
    try:
        r.infer_int8(windows(1))
        with pytest.raises(DeviceError, match=f"the device on {path} reset during the session") as exc:
            r.infer_int8(hook(RESET)[None])
        assert "\n" not in str(exc.value) and exc.value.exit_code == 4
    finally:
        r.deactivate()
    assert proc.poll() is None  # it re-executed itself on the same terminal, like a board rebooting
    r2 = _runner(f"serial://{path}")
    r2.activate()
    try:
        x = windows(2, seed=7)
        assert np.array_equal(r2.infer_int8(x), standin_logits(x))
    finally:
        r2.deactivate()


def test_other_build_is_refused(board):
    _, path = board
    r = _runner(f"serial://{path}", model_crc=0xCAFEF00D)
    with pytest.raises(DeviceError, match=f"the device on {path} runs another build: its model hash is 0x5a17c0de, "
                                          "the build's is 0xcafef00d"):
        r.activate()


@pytest.fixture
def bare_pty():
    """A pseudo-terminal with nothing behind it but what the test writes (master fd, /dev/pts/N)."""
    import tty

    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    yield master, path
    os.close(master)
    os.close(slave)


def test_silent_device_times_out_naming_the_port(bare_pty):
    _, path = bare_pty
    r = _runner(f"serial://{path}", timeout_s=0.2)
    with pytest.raises(DeviceError, match=rf"no answer from the device on {path} within 0\.2 s \(sent 3 times\): "
                                          "is the firmware running"):
        r.activate()


def test_foreign_protocol_version_is_named(bare_pty):
    import binascii
    import struct

    master, path = bare_pty

    from drsn_edge.firmware.protocol import VERSION

    def old_firmware():  # answers anything with a frame of another protocol version
        data = os.read(master, 64)
        seq = Decoder().feed(data)[0].seq
        body = struct.pack("<BBHH", VERSION + 1, INFO_RSP, seq, 0)
        os.write(master, b"\xa5\x5a" + body + struct.pack("<H", binascii.crc_hqx(body, 0xFFFF)))

    t = threading.Thread(target=old_firmware, daemon=True)
    t.start()
    r = _runner(f"serial://{path}")
    with pytest.raises(DeviceError, match=f"the device on {path} speaks protocol version {VERSION + 1}, this drsn-edge speaks {VERSION}"):
        r.activate()
    t.join(5)


def test_missing_port_is_device_error():
    r = _runner("serial:///dev/ttyDRSN-none")
    with pytest.raises(DeviceError, match="cannot open serial port /dev/ttyDRSN-none"):
        r.activate()


