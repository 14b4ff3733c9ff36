"""Fuzzing the frame parsers with hypothesis: streams of valid frames (any version), corrupted and truncated
frames, impossible lengths and line noise, fed to the host's Decoder (in random chunks) and to the device's
C receiver (drsn_proto.c, host build with AddressSanitizer/UBSan, through tests/firmware/fuzz_driver.c).

Checked on every stream: neither parser crashes or hangs; both accept exactly the same frames (differential);
every accepted frame has a good CRC; the Decoder's result does not depend on how the bytes are chunked; when
the noise holds no 0xA5, every intact frame is recovered, in order; and the device answers every accepted
frame once, with the right frame type (INFO → INFO_RSP, INFER of the right length → RESULT, anything else →
ERROR). The slow run pushes more than 100 000 frames through each parser."""

from __future__ import annotations

import os
import select
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed: pip install hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from drsn_edge.firmware.protocol import (  # noqa: E402
    ERROR, INFER, INFO, INFO_RSP, RESULT, VERSION, Decoder, crc16, encode)

TEMPLATES = Path(__file__).resolve().parents[2] / "drsn_edge" / "firmware" / "templates"
BUF = 138  # receiver buffer: payloads up to 128 bytes fit, longer ones are impossible lengths
MAX_PAYLOAD = BUF - 10


def _frame(ver: int, ftype: int, seq: int, payload: bytes) -> bytes:
    body = struct.pack("<BBHH", ver, ftype, seq, len(payload)) + payload
    return b"\xa5\x5a" + body + struct.pack("<H", crc16(body))


frames = st.builds(_frame, st.sampled_from([VERSION, VERSION, VERSION, 2]),
                   st.one_of(st.sampled_from([INFO, INFER, INFER]), st.integers(0, 255)), st.integers(0, 0xFFFF),
                   st.one_of(st.binary(min_size=16, max_size=16), st.binary(max_size=MAX_PAYLOAD)))


@st.composite
def segments(draw, clean_noise: bool):
    """(kind, bytes): an intact frame, a damaged one, or line noise."""
    kind = draw(st.sampled_from(["frame"] * 6 + ["flip", "cut", "long", "noise"]))
    if kind == "noise":
        noise = draw(st.binary(min_size=1, max_size=24))
        return kind, noise.replace(b"\xa5", b"\x00") if clean_noise else noise
    f = draw(frames)
    if kind == "flip":
        i = draw(st.integers(2, len(f) - 1))
        f = f[:i] + bytes([f[i] ^ draw(st.integers(1, 255))]) + f[i + 1:]
    elif kind == "cut":
        f = f[:draw(st.integers(0, len(f) - 1))]
    elif kind == "long":  # a header whose length cannot fit the receiver
        f = b"\xa5\x5a" + struct.pack("<BBHH", VERSION, 0x82, 1, draw(st.integers(MAX_PAYLOAD + 1, 0xFFFF)))
    return kind, f


class CReceiver:
    """The sanitizer-built C driver, fed one stream per call through pipes."""

    def __init__(self, exe: Path):
        self.proc = subprocess.Popen([str(exe), str(BUF)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.pending = b""

    def parse(self, stream: bytes) -> tuple[list[tuple], list[tuple], int]:
        """(accepted frames, the device's answers as (type, seq), frames dropped)."""
        self.proc.stdin.write(struct.pack("<I", len(stream)) + stream)
        self.proc.stdin.flush()
        frames_out, answers = [], []
        while True:
            line = self._line()
            if line.startswith(b"E "):
                return frames_out, answers, int(line[2:])
            if line.startswith(b"A "):
                answers.append(tuple(int(v) for v in line.split()[1:]))
                continue
            _, ver, ftype, seq, *hexed = line.decode().split(" ")
            frames_out.append((int(ver), int(ftype), int(seq), bytes.fromhex(hexed[0] if hexed else "")))

    def _line(self, timeout_s: float = 10.0) -> bytes:
        while b"\n" not in self.pending:
            r, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
            assert r, "the C receiver hangs"
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            assert chunk, f"the C receiver died (exit {self.proc.wait()})"
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return line

    def close(self):
        self.proc.stdin.write(struct.pack("<I", 0xFFFFFFFF))
        self.proc.stdin.close()
        assert self.proc.wait(10) == 0


@pytest.fixture(scope="module")
def c_receiver(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler")
    exe = tmp_path_factory.mktemp("fuzz") / "fuzz_driver"
    base = [cc, "-std=c99", "-O1", "-g", "-Wall", "-Werror", f"-I{TEMPLATES}", str(TEMPLATES / "drsn_proto.c"),
            str(Path(__file__).with_name("fuzz_driver.c")), "-o", str(exe)]
    san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
    if subprocess.run(base[:1] + san + base[1:], capture_output=True).returncode:
        subprocess.run(base, check=True)  # no sanitizer runtime here: still a crash/hang check
    rx = CReceiver(exe)
    yield rx
    rx.close()


def _decode(stream: bytes, cuts: list[int]) -> tuple[list[tuple], int]:
    dec = Decoder(MAX_PAYLOAD)
    out, start = [], 0
    for cut in sorted(c % (len(stream) + 1) for c in cuts) + [len(stream)]:
        out += dec.feed(stream[start:cut])
        start = max(start, cut)
    assert len(dec.buf) <= max(MAX_PAYLOAD + 10, 1)  # the decoder never holds more than one frame's worth
    return [(f.ver, f.type, f.seq, f.payload) for f in out], dec.dropped


def _answer_type(ver: int, ftype: int, seq: int, payload: bytes) -> int:
    """What the fuzz driver's device (16 inputs) answers to a frame."""
    if ver == VERSION and ftype == INFO:
        return INFO_RSP
    if ver == VERSION and ftype == INFER and len(payload) == 16:
        return RESULT
    return ERROR


def _check(c_receiver, segs, cuts, clean_noise, counter):
    stream = b"".join(s for _, s in segs)
    py, py_dropped = _decode(stream, cuts)
    assert py == _decode(stream, [])[0]  # chunking does not matter
    c, answers, c_dropped = c_receiver.parse(stream)
    assert c == py and c_dropped == py_dropped  # the two parsers agree byte for byte
    assert answers == [(_answer_type(*f), f[2]) for f in py]
    for ver, ftype, seq, payload in py:
        assert _frame(ver, ftype, seq, payload) in stream  # only frames with a good CRC
    if clean_noise and all(k in ("frame", "noise") for k, _ in segs):
        intact = [s for k, s in segs if k == "frame"]
        assert [_frame(*f) for f in py] == intact
    counter[0] += sum(k != "noise" for k, _ in segs)


def _fuzz(c_receiver, examples: int, min_segs: int, max_segs: int) -> int:
    counter = [0]

    @settings(max_examples=examples, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(st.booleans().flatmap(lambda clean: st.tuples(
        st.just(clean), st.lists(segments(clean), min_size=min_segs, max_size=max_segs),
        st.lists(st.integers(0, 1 << 20), max_size=6))))
    def run(case):
        clean, segs, cuts = case
        _check(c_receiver, segs, cuts, clean, counter)

    run()
    return counter[0]


def test_encode_is_what_the_parsers_accept():
    assert _frame(VERSION, 0x82, 7, b"\x00abc") == encode(0x82, 7, b"\x00abc")


def test_fuzz_parsers_fast(c_receiver):
    assert _fuzz(c_receiver, examples=60, min_segs=5, max_segs=40) >= 60 * 5 * 0.5


@pytest.mark.slow
def test_fuzz_parsers_100k_frames(c_receiver):
    n = _fuzz(c_receiver, examples=1100, min_segs=110, max_segs=160)
    assert n >= 100_000, n
