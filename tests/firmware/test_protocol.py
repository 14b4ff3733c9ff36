import os
import select
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from drsn_edge.errors import DeviceError
from drsn_edge.firmware.protocol import INFO, RESULT, Decoder, DeviceInfo, SerialClient, crc16, encode

TEMPLATES = Path(__file__).resolve().parents[2] / "drsn_edge" / "firmware" / "templates"


def test_crc16_ccitt_false_check_value():
    assert crc16(b"123456789") == 0x29B1


def test_decoder_resyncs_through_noise_and_drops_corrupt_frames():
    good = encode(RESULT, 7, b"\x00abc")
    bad = bytearray(encode(INFO, 8, b"xyz"))
    bad[-1] ^= 0xFF
    stream = b"\x00\xa5\x13noise\xa5" + bytes(bad) + good + b"\xa5"
    d = Decoder()
    frames = []
    for i in range(0, len(stream), 3):  # arrives in pieces
        frames += d.feed(stream[i : i + 3])
    assert [(f.type, f.seq, f.payload) for f in frames] == [(RESULT, 7, b"\x00abc")]
    assert d.dropped == 1


def test_device_info_roundtrip():
    info = DeviceInfo(1, 2048, 10, 0.05, 0, 0.1, -3, 12345, 480_000_000, "cycles", 0xDEADBEEF, "board")
    back = DeviceInfo.unpack(info.pack())
    assert back.input_len == 2048 and back.output_zp == -3 and back.name == "board"
    assert back.input_scale == pytest.approx(0.05)


class PipePort:
    """A pyserial-like port over the fake device's stdin/stdout pipes."""

    def __init__(self, proc):
        self.proc = proc

    def write(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def read(self, n):
        r, _, _ = select.select([self.proc.stdout], [], [], 0.05)
        return os.read(self.proc.stdout.fileno(), n) if r else b""


@pytest.fixture(scope="module")
def fake_device_bin(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler")
    out = tmp_path_factory.mktemp("fw") / "fake_device"
    subprocess.run([cc, "-std=c99", "-O2", "-Wall", "-Werror", "-D_DEFAULT_SOURCE", f"-I{TEMPLATES}",
                    str(TEMPLATES / "drsn_proto.c"), str(Path(__file__).with_name("fake_device.c")), "-o", str(out)],
                   check=True)
    return out


@pytest.fixture
def device(fake_device_bin):
    proc = subprocess.Popen([str(fake_device_bin)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    yield proc
    proc.kill()
    proc.wait()


def test_c_device_answers_info_and_infer(device):
    client = SerialClient(PipePort(device), timeout_s=5)
    info = client.get_info()  # the boot frame before it is skipped (it precedes the request)
    assert (info.input_len, info.output_len, info.name, info.counter) == (2048, 10, "fake-board", "cycles")
    assert info.model_crc == 0xDEADBEEF and info.output_zp == -3
    x = np.full(2048, 2, dtype=np.int8)
    logits, counts = client.infer_int8(x)
    assert logits.tolist() == [min(127, 2 * 2048 // 64 + k) for k in range(10)] and counts == 123456


def test_noise_on_the_line_is_survived(device):
    port = PipePort(device)
    client = SerialClient(port, timeout_s=5)
    client.get_info()
    port.write(b"\xa5\x5a\x01garbage" + bytes(range(200)))  # a broken frame and line noise
    x = np.ones(2048, dtype=np.int8)
    logits, _ = client.infer_int8(x)
    assert logits[0] == 2048 // 64


def test_device_reset_is_reported(device):
    client = SerialClient(PipePort(device), timeout_s=5)
    client.get_info()
    x = np.zeros(2048, dtype=np.int8)
    x[0] = 127
    with pytest.raises(DeviceError, match="reset"):
        client.infer_int8(x)


def test_timeout_is_reported(device):
    client = SerialClient(PipePort(device), timeout_s=0.5)
    client.get_info()
    x = np.zeros(2048, dtype=np.int8)
    x[0] = -128
    with pytest.raises(DeviceError, match="no answer"):
        client.infer_int8(x)


def test_wrong_input_length_refused_host_side(device):
    client = SerialClient(PipePort(device), timeout_s=5)
    client.get_info()
    with pytest.raises(DeviceError, match="expects 2048"):
        client.infer_int8(np.zeros(100, dtype=np.int8))
