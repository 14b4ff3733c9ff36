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


@pytest.mark.parametrize("counter", ["cycles", "instructions"])
def test_device_info_roundtrip(counter):
    # every field distinct; scales exactly representable in float32 so the roundtrip is exact
    info = DeviceInfo(1, 2048, 10, 0.046875, -5, 0.125, -3, 12345, 480_000_000, counter, 0xDEADBEEF, "board-µ")
    assert DeviceInfo.unpack(info.pack()) == info
    assert info.pack()[25] == (0 if counter == "cycles" else 1)  # the counter byte of the wire format
    assert DeviceInfo.unpack(info.pack() + b"\xff").name == "board-µ\ufffd"  # a broken name is still read


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
    # the fake device's guard: score = (input[1] & 0x7f) / 2, in domain up to its threshold 20
    assert (info.guard_dim, info.guard_threshold) == (4, 20.0)
    assert (client.last_guard.scored, client.last_guard.in_domain, client.last_guard.score) == (True, True, 1.0)
    x[1] = 41
    client.infer_int8(x)
    assert (client.last_guard.in_domain, client.last_guard.score) == (False, 20.5)


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


# ---------------------------------------------------------------- host side against a scripted line

import struct  # noqa: E402

from drsn_edge.firmware.protocol import ERROR, HELLO, INFER, INFO_RSP, VERSION  # noqa: E402

INFO_OK = DeviceInfo(VERSION, 4, 3, 0.05, 0, 0.1, 0, 1000, 1_000_000, "instructions", 1, "script")


def _head(ftype, seq, n, ver=VERSION):
    return b"\xa5\x5a" + struct.pack("<BBHH", ver, ftype, seq, n)


def _result(seq, logits=(1, 2, 3), counts=77, status=0, guard=b"\x00\x00\x00\x80\xbf"):  # not scored, −1.0
    return encode(RESULT, seq, struct.pack("<BI", status, counts) + bytes(np.int8(logits).tobytes()) + guard)


class ScriptedPort:
    """A pyserial-like port; `answer(ftype, seq, payload)` returns the bytes the 'device' sends back."""

    def __init__(self, answer, chunk=5, gaps=False):
        self.answer, self.chunk, self.pending, self.requests = answer, chunk, b"", []
        self.gaps, self.reads = gaps, 0

    def write(self, data):
        (fr,) = Decoder().feed(data)
        self.requests.append(fr)
        self.pending += self.answer(fr.type, fr.seq, fr.payload)

    def read(self, n):
        self.reads += 1
        if self.gaps and self.reads % 2:
            return b""  # a read that times out between two pieces of a frame, as pyserial's does
        out, self.pending = self.pending[: min(n, self.chunk)], self.pending[min(n, self.chunk):]
        return out


def _client(on_infer, timeout_s=2.0, **kw):
    def answer(ftype, seq, payload):
        if ftype == INFO:
            return encode(HELLO, 0) + encode(INFO_RSP, seq, INFO_OK.pack())
        return on_infer(seq, payload)

    return SerialClient(ScriptedPort(answer, **kw), timeout_s=timeout_s)


def _feed_all(stream, step=None):
    d, frames = Decoder(), []
    step = step or len(stream)
    for i in range(0, len(stream), step):
        frames += d.feed(stream[i : i + step])
    return d, [(f.type, f.seq, f.payload) for f in frames]


def test_bad_crc_skips_only_the_marker_not_the_frame_it_claimed():
    """A noise marker claiming 10 bytes: the good frame starts inside those bytes and must still be read."""
    good = _result(4)
    stream = _head(RESULT, 3, 10) + good + b"\x00" * 4
    for step in (1, 3, len(stream)):
        d, frames = _feed_all(stream, step)
        assert frames == [(RESULT, 4, good[8:-2])] and d.dropped == 1


def test_a_frame_arriving_in_pieces_is_waited_for():
    good = _result(2, logits=(5, 6, 7))
    d, frames = _feed_all(good, step=1)
    assert frames == [(RESULT, 2, good[8:-2])] and d.dropped == 0
    d = Decoder()
    assert d.feed(good[:-1]) == [] and len(d.feed(good[-1:])) == 1


def _frame(ver, ftype, seq, payload):
    """A frame with a correct CRC, of any version."""
    body = struct.pack("<BBHH", ver, ftype, seq, len(payload)) + payload
    return b"\xa5\x5a" + body + struct.pack("<H", crc16(body))


def test_a_foreign_version_is_returned_so_that_it_can_be_named():
    """A frame of another protocol version with a good CRC is delivered with its version, not dropped."""
    good = _result(5)
    d = Decoder()
    frames = d.feed(_frame(VERSION + 1, RESULT, 5, b"\x00" * 8) + good)
    assert [(f.ver, f.type, f.seq) for f in frames] == [(VERSION + 1, RESULT, 5), (VERSION, RESULT, 5)]
    assert d.dropped == 0


def test_every_drop_is_counted_and_back_to_back_markers_resync():
    good = _result(6)
    d = Decoder()
    # a lone marker right before a good one, then two corrupt frames
    bad = bytearray(_result(1))
    bad[-2] ^= 0x40
    frames = d.feed(b"\xa5\x5a" + good + bytes(bad) + bytes(bad) + good)
    assert [f.seq for f in frames] == [6, 6] and d.dropped == 3


def test_encode_limits_and_layout():
    assert encode(INFO, 0x1234, b"") == b"\xa5\x5a\x02\x01\x34\x12\x00\x00" + struct.pack("<H", crc16(b"\x02\x01\x34\x12\x00\x00"))
    assert len(encode(RESULT, 1, bytes(65535))) == 2 + 6 + 65535 + 2
    with pytest.raises(ValueError, match="^payload too large for one frame$"):
        encode(RESULT, 1, bytes(65536))
    assert encode(RESULT, 0x1_0005, b"")[4:6] == b"\x05\x00"  # the sequence number wraps at 16 bits


def test_default_decoder_keeps_every_type_and_length():
    big = encode(0x33, 1, bytes(5000))
    assert [(f.type, len(f.payload)) for f in Decoder().feed(big)] == [(0x33, 5000)]


def test_marker_split_across_reads_and_trailing_noise():
    good = _result(8)
    d = Decoder()
    assert d.feed(b"noise\xa5") == [] and d.buf == bytearray(b"\xa5")  # keeps a possible half marker
    assert [f.seq for f in d.feed(good[1:])] == [8]
    assert d.feed(b"\x00\x01\x02") == [] and len(d.buf) == 1


@pytest.mark.parametrize("chunk", [5, 4096])
def test_stale_answers_are_skipped_by_sequence_number(chunk):
    """A late answer to an earlier request (same frame type, other logits) comes first on the line,
    in its own read or in the same read as the right answer."""
    def on_infer(seq, payload):
        return _result(seq - 1, logits=(-9, -9, -9)) + _result((seq + 7) & 0xFFFF, (-8, -8, -8)) + _result(seq)

    client = _client(on_infer, chunk=chunk)
    logits, counts = client.infer_int8(np.zeros(4, np.int8))
    assert logits.tolist() == [1, 2, 3] and counts == 77
    logits, _ = client.infer_int8(np.ones(4, np.int8))
    assert logits.tolist() == [1, 2, 3]
    assert [r.seq for r in client.port.requests] == [1, 2, 3] and [r.type for r in client.port.requests] == [
        INFO, INFER, INFER]
    assert client.port.requests[2].payload == bytes(np.ones(4, np.int8).tobytes())
    assert client.port.requests[0].payload == b""  # INFO carries nothing


def test_echo_of_the_request_on_the_line_is_ignored():
    """Some serial adapters echo what the host sends: the echoed INFER (same sequence number) is not an answer."""
    client = _client(lambda seq, p: encode(INFER, seq, p) + _result(seq), chunk=4096)
    assert client.infer_int8(np.zeros(4, np.int8))[0].tolist() == [1, 2, 3]


def test_input_of_any_integer_type_or_shape_is_sent_as_int8():
    client = _client(lambda seq, p: _result(seq, counts=3_000_000_000))
    logits, counts = client.infer_int8(np.array([[1, -2, 3, 127]], dtype=np.int64))
    assert client.port.requests[-1].payload == b"\x01\xfe\x03\x7f"
    assert counts == 3_000_000_000  # an unsigned 32-bit count above 2^31


def test_empty_reads_between_pieces_of_a_frame_are_harmless():
    client = SerialClient(ScriptedPort(lambda t, seq, p: encode(INFO_RSP, seq, INFO_OK.pack()) if t == INFO
                                       else _result(seq), chunk=3, gaps=True))
    assert client.timeout_s == 5.0  # the documented default
    assert client.infer_int8(np.zeros(4, np.int8))[0].tolist() == [1, 2, 3]


def test_an_impossible_length_is_dropped_as_soon_as_it_arrives():
    d = Decoder(max_payload=100)
    assert d.feed(_head(RESULT, 1, 101)) == [] and d.dropped == 1 and len(d.buf) <= 1
    assert Decoder(max_payload=100).feed(_head(RESULT, 1, 100)) == []  # a possible one is waited for
    assert [len(f.payload) for f in Decoder(max_payload=100).feed(encode(RESULT, 1, bytes(100)))] == [100]


def test_sequence_numbers_wrap_at_16_bits():
    client = _client(lambda seq, p: _result(seq))
    client.seq = 0xFFFE
    client.get_info()
    client.infer_int8(np.zeros(4, np.int8))
    assert [r.seq for r in client.port.requests] == [0xFFFF, 0]


def test_boot_frame_before_info_is_skipped_but_a_later_one_is_a_reset():
    client = _client(lambda seq, p: encode(HELLO, 0) + _result(seq))
    assert client.get_info().name == "script"
    with pytest.raises(DeviceError, match=r"^the device on the serial port reset during the session \(it sent its "
                                          r"boot frame\): check power and the firmware's stack size, then retry$"):
        client.infer_int8(np.zeros(4, np.int8))


@pytest.mark.parametrize("payload,message", [
    (struct.pack("<H", 7) + b"arena too small", "device error 7 on the serial port: arena too small"),
    (struct.pack("<H", 40000) + b"\xffx", "device error 40000 on the serial port: \ufffdx"),  # unsigned, bad UTF-8
    (struct.pack("<H", 5), "device error 5 on the serial port: no message"),
    (b"\x09", "device error 0 on the serial port: no message"),  # too short for a code
    (b"", "device error 0 on the serial port: no message"),
])
def test_device_error_frame_names_code_and_message(payload, message):
    client = _client(lambda seq, p: encode(ERROR, seq, payload))
    with pytest.raises(DeviceError) as ei:
        client.infer_int8(np.zeros(4, np.int8))
    assert str(ei.value) == message


def test_wrong_frame_type_with_the_right_sequence_is_an_error():
    client = _client(lambda seq, p: encode(INFO_RSP, seq, INFO_OK.pack()))
    with pytest.raises(DeviceError, match="answered frame type 0x81, expected 0x82"):
        client.infer_int8(np.zeros(4, np.int8))


@pytest.mark.parametrize("frame,needle", [
    (lambda s: _result(s, status=3), "status 3"),
    (lambda s: _result(s, logits=(1, 2)), "returned 2 outputs, expected 3"),
])
def test_bad_results_are_errors(frame, needle):
    client = _client(lambda seq, p: frame(seq))
    with pytest.raises(DeviceError, match=needle):
        client.infer_int8(np.zeros(4, np.int8))


def test_silence_is_a_timeout_and_a_wrong_protocol_is_refused():
    client = _client(lambda seq, p: b"", timeout_s=0.2)
    with pytest.raises(DeviceError, match=r"^no answer from the device on the serial port within 0.2 s \(sent 3 "
                                          r"times\): is the firmware running and the port and baud rate right\?$"):
        client.infer_int8(np.zeros(4, np.int8))
    old = DeviceInfo(VERSION + 1, 4, 3, 0.05, 0, 0.1, 0, 1000, 1, "cycles", 1, "old")
    port = ScriptedPort(lambda t, seq, p: encode(INFO_RSP, seq, old.pack()))
    with pytest.raises(DeviceError, match=f"^the device on the serial port speaks protocol version {VERSION + 1}, this "
                                          f"drsn-edge speaks {VERSION}: flash firmware built by this drsn-edge$"):
        SerialClient(port).get_info()


def test_a_long_result_frame_is_read():
    """A 2000-class head: a RESULT frame of 2005 bytes, arriving in reads of 4096 bytes."""
    info = DeviceInfo(VERSION, 4, 2000, 0.05, 0, 0.1, 0, 1000, 1, "cycles", 1, "wide")
    logits = (np.arange(2000) % 100).astype(np.int8)

    def answer(ftype, seq, payload):
        if ftype == INFO:
            return encode(INFO_RSP, seq, info.pack())
        return _result(seq, logits=logits)

    client = SerialClient(ScriptedPort(answer, chunk=4096), timeout_s=2)
    got, _ = client.infer_int8(np.zeros(4, np.int8))
    np.testing.assert_array_equal(got, logits)
    assert client.info.counter == "cycles"


def test_guard_fields_round_trip_and_a_result_without_them_is_refused():
    from drsn_edge.firmware.protocol import GuardResult

    info = DeviceInfo(VERSION, 4, 3, 0.5, 0, 0.25, 0, 1000, 1, "cycles", 1, "g", 132, 571.25)
    assert DeviceInfo.unpack(info.pack()) == info  # the floats are exact in float32
    for g in (GuardResult(True, True, 3.5), GuardResult(True, False, 1e6), GuardResult(False, False, -1.0)):
        assert GuardResult.unpack(g.pack()) == g
    client = _client(lambda seq, p: _result(seq, guard=GuardResult(True, False, 600.0).pack()))
    client.infer_int8(np.zeros(4, np.int8))
    assert client.last_guard == GuardResult(True, False, 600.0)
    old = _client(lambda seq, p: encode(RESULT, seq, struct.pack("<BI", 0, 1) + bytes(3)))  # version 1's RESULT
    with pytest.raises(DeviceError, match=r"sent a short RESULT \(8 bytes\)"):
        old.infer_int8(np.zeros(4, np.int8))


# ---------------------------------------------------------------- port names, resends and the select read path

from drsn_edge.firmware import protocol  # noqa: E402
from drsn_edge.firmware.protocol import port_name  # noqa: E402


def test_port_name_prefers_name_then_port_then_a_generic_phrase():
    class P:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    assert port_name(P(name="/dev/ttyACM0", port="ignored")) == "/dev/ttyACM0"
    assert port_name(P(name="/dev/ttyACM0")) == "/dev/ttyACM0"
    assert port_name(P(name="", port="socket://localhost:4321")) == "socket://localhost:4321"
    assert port_name(P(port="socket://localhost:4321")) == "socket://localhost:4321"
    assert port_name(P()) == "the serial port"


def test_encode_without_a_payload_sends_an_empty_one():
    head = bytes([VERSION]) + b"\x01\x34\x12\x00\x00"  # version, type INFO, seq 0x1234, length 0
    assert encode(INFO, 0x1234) == encode(INFO, 0x1234, b"") == b"\xa5\x5a" + head + struct.pack("<H", crc16(head))


def test_a_client_decoder_drops_a_length_over_4096_at_once():
    """The client's decoder takes at most 4096 payload bytes (the firmware's receive buffer): a header that
    claims 4097 is noise at once, one that claims 4096 is waited for."""
    client = SerialClient(ScriptedPort(lambda *a: b""))
    assert client.dec.feed(_head(RESULT, 1, 4097)) == [] and client.dec.dropped == 1
    client = SerialClient(ScriptedPort(lambda *a: b""))
    assert client.dec.feed(_head(RESULT, 1, 4096)) == [] and client.dec.dropped == 0


def test_silence_is_sent_retries_plus_one_times_and_counted_as_resends():
    client = _client(lambda seq, p: b"", timeout_s=0.05)
    client.get_info()
    assert client.resends == 0  # an answered request is no resend
    with pytest.raises(DeviceError, match=r"\(sent 3 times\)"):
        client.infer_int8(np.zeros(4, np.int8))
    assert [(r.type, r.seq) for r in client.port.requests] == [(INFO, 1), (INFER, 2), (INFER, 3), (INFER, 4)]
    assert client.resends == 2  # the first send is no resend; the last failed one is not resent


@pytest.mark.parametrize("retries", [0, -3])
def test_no_retries_sends_once_and_says_nothing_of_resending(retries):
    port = ScriptedPort(lambda *a: b"")
    port.name = "/dev/ttyUSB7"
    client = SerialClient(port, timeout_s=0.05, retries=retries)
    with pytest.raises(DeviceError) as ei:
        client.get_info()
    assert str(ei.value) == ("no answer from the device on /dev/ttyUSB7 within 0.05 s: is the firmware running and "
                             "the port and baud rate right?")
    assert len(port.requests) == 1 and client.resends == 0


def test_a_lost_request_is_resent_and_the_answer_to_the_resend_is_taken():
    """The first INFER never reaches the device (no answer); the resend (next sequence number) is answered."""
    seen = []

    def on_infer(seq, payload):
        seen.append(seq)
        return b"" if len(seen) == 1 else _result(seq, logits=(4, 5, 6), counts=9)

    client = _client(on_infer, timeout_s=0.05)
    logits, counts = client.infer_int8(np.zeros(4, np.int8))
    assert (logits.tolist(), counts, seen, client.resends) == ([4, 5, 6], 9, [2, 3], 1)


def test_a_frame_of_another_protocol_version_is_named():
    client = _client(lambda seq, p: _frame(VERSION + 1, RESULT, seq, b"\x00" * 8))
    with pytest.raises(DeviceError) as ei:
        client.infer_int8(np.zeros(4, np.int8))
    assert str(ei.value) == (f"the device on the serial port speaks protocol version {VERSION + 1}, this drsn-edge "
                             f"speaks {VERSION}: flash firmware built by this drsn-edge")


def test_info_answer_of_exactly_the_fixed_fields_is_read_and_one_byte_less_is_short():
    fixed = DeviceInfo(VERSION, 4, 3, 0.05, 0, 0.1, 0, 1000, 1, "cycles", 1, "").pack()
    assert len(fixed) == 36  # version 2: 30 bytes of version 1 + guard_dim u16 + guard_threshold f32
    port = ScriptedPort(lambda t, seq, p: encode(INFO_RSP, seq, fixed))
    assert SerialClient(port).get_info().name == ""
    port = ScriptedPort(lambda t, seq, p: encode(INFO_RSP, seq, fixed[:35]))
    with pytest.raises(DeviceError) as ei:
        SerialClient(port).get_info()
    assert str(ei.value) == "the device on the serial port sent a short INFO answer (35 bytes)"


@pytest.mark.parametrize("payload,message", [
    # status, count, guard flags and score (10 bytes): no logits
    (struct.pack("<BIBf", 0, 7, 0, 0.0), "the device on the serial port returned 0 outputs, expected 3"),
    (struct.pack("<BIBf", 0, 7, 0, 0.0)[:9], "the device on the serial port sent a short RESULT (9 bytes)"),
])
def test_result_of_exactly_status_and_count_is_not_short(payload, message):
    client = _client(lambda seq, p: encode(RESULT, seq, payload))
    with pytest.raises(DeviceError) as ei:
        client.infer_int8(np.zeros(4, np.int8))
    assert str(ei.value) == message


class PipeLinePort:
    """A pyserial-like port over an OS pipe, opened like SerialDevice opens a board (timeout=0: reads never
    block, so the client waits on the pipe's file descriptor with select)."""

    def __init__(self, answer, timeout=0):
        self.rfd, self.wfd = os.pipe()
        os.set_blocking(self.rfd, False)
        self.answer, self.timeout, self.reads = answer, timeout, 0

    def fileno(self):
        return self.rfd

    def write(self, data):
        (fr,) = Decoder().feed(data)
        os.write(self.wfd, self.answer(fr.type, fr.seq, fr.payload))

    def read(self, n):
        self.reads += 1
        try:
            return os.read(self.rfd, n)
        except BlockingIOError:
            return b""

    def close(self):
        os.close(self.rfd)
        os.close(self.wfd)


@pytest.fixture
def select_calls(monkeypatch):
    """Every select call the protocol module makes, (read list, write list, error list, timeout), passed on
    to the real select."""
    calls = []

    def spy(r, w, x, timeout):
        calls.append((list(r), list(w), list(x), timeout))
        return select.select(r, w, x, timeout)

    monkeypatch.setattr(protocol, "select", type("SelectSpy", (), {"select": staticmethod(spy)}))
    return calls


def _answer(ftype, seq, payload):
    if ftype == INFO:
        return encode(INFO_RSP, seq, INFO_OK.pack())
    return _result(seq) if ftype == INFER else b""


def test_a_non_blocking_port_is_waited_on_with_select_for_at_most_a_tenth_of_a_second(select_calls):
    """The answer is on the line before the client waits: one select on the port's descriptor (timeout
    min(time left, 0.1 s) = 0.1 s of a 5 s budget) and one read per request, no busy loop of empty reads."""
    port = PipeLinePort(_answer)
    try:
        client = SerialClient(port, timeout_s=5.0)
        assert client.infer_int8(np.zeros(4, np.int8))[0].tolist() == [1, 2, 3]
        assert select_calls == [([port.rfd], [], [], 0.1)] * 2 and port.reads == 2
    finally:
        port.close()


def test_select_never_waits_past_the_deadline(select_calls):
    """With 0.05 s to wait in all, no select may wait longer than the time left (so never 0.1 s); silence
    ends in the timeout error."""
    port = PipeLinePort(lambda *a: b"")
    try:
        with pytest.raises(DeviceError, match="^no answer from the device"):
            SerialClient(port, timeout_s=0.05, retries=0).get_info()
        assert select_calls and all(r == [port.rfd] and 0.0 <= t <= 0.05 for r, _, _, t in select_calls)
        assert port.reads == len(select_calls)
    finally:
        port.close()


def test_a_port_with_its_own_read_timeout_is_not_selected_on(select_calls):
    """A port opened with a read timeout paces the loop itself (pyserial blocks in read): no select."""
    port = PipeLinePort(_answer, timeout=0.5)
    try:
        assert SerialClient(port, timeout_s=5.0).get_info().name == "script"
        assert select_calls == [] and port.reads == 1
    finally:
        port.close()


# ---------------------------------------------------------------- PROFILE (the profiling firmware's per-kernel ticks)

from drsn_edge.firmware.protocol import PROFILE, PROFILE_RSP, KernelTicks  # noqa: E402


def test_kernel_ticks_are_decoded_and_every_bad_length_is_named():
    payload = struct.pack("<HIII3I", 3, 25_000_000, 1024, 512, 101, 1, 50)
    assert KernelTicks.unpack(payload, "p") == KernelTicks([101, 1, 50], 25_000_000, 1024, 512)
    assert KernelTicks.unpack(struct.pack("<HIII", 0, 1, 2, 3), "p") == KernelTicks([], 1, 2, 3)  # 14 bytes
    big = struct.pack("<HIII1I", 1, 3_000_000_000, 2**31, 2**32 - 1, 2**32 - 2)  # unsigned 32-bit fields
    assert KernelTicks.unpack(big, "p") == KernelTicks([2**32 - 2], 3_000_000_000, 2**31, 2**32 - 1)
    for cut, message in [(payload[:13], "the device on p sent a short PROFILE answer (13 bytes)"),
                         (payload[:25], "the device on p sent a PROFILE answer of 25 bytes for 3 kernels"),
                         (payload + b"\0" * 4, "the device on p sent a PROFILE answer of 30 bytes for 3 kernels")]:
        with pytest.raises(DeviceError) as ei:
            KernelTicks.unpack(cut, "p")
        assert str(ei.value) == message


def test_kernel_ticks_request_and_a_firmware_without_the_profiler():
    payload = struct.pack("<HIII2I", 2, 1000, 8, 4, 7, 9)
    port = ScriptedPort(lambda t, seq, p: encode(PROFILE_RSP, seq, payload) if t == PROFILE else b"")
    client = SerialClient(port, timeout_s=0.5)
    assert client.kernel_ticks() == KernelTicks([7, 9], 1000, 8, 4)
    assert [(r.type, r.payload) for r in port.requests] == [(PROFILE, b"")]
    normal = ScriptedPort(lambda t, seq, p: encode(ERROR, seq, struct.pack("<H", 1) + b"unknown request"))
    with pytest.raises(DeviceError) as ei:
        SerialClient(normal).kernel_ticks()
    assert str(ei.value) == ("the firmware on the serial port has no per-kernel profiler (it is the normal firmware): "
                             "run the build's profiling firmware")
    other = ScriptedPort(lambda t, seq, p: encode(ERROR, seq, struct.pack("<H", 2) + b"arena too small"))
    with pytest.raises(DeviceError) as ei:
        SerialClient(other).kernel_ticks()
    assert str(ei.value) == "device error 2 on the serial port: arena too small"
    short = ScriptedPort(lambda t, seq, p: encode(PROFILE_RSP, seq, payload[:10]))
    short.name = "/dev/ttyACM3"
    with pytest.raises(DeviceError) as ei:
        SerialClient(short).kernel_ticks()
    assert str(ei.value) == "the device on /dev/ttyACM3 sent a short PROFILE answer (10 bytes)"
    echo = ScriptedPort(lambda t, seq, p: encode(PROFILE, seq) + encode(PROFILE_RSP, seq, payload))
    assert SerialClient(echo).kernel_ticks().ticks == [7, 9]  # the echoed request is not the answer
