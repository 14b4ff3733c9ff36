"""The drsn-edge serial protocol, spoken by real boards and emulated ones alike.

Frame (little endian):  0xA5 0x5A | ver u8 | type u8 | seq u16 | len u16 | payload[len] | crc u16
  crc = CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over ver..payload.
Types:
  0x01 INFO      host → device, no payload
  0x81 INFO_RSP  device → host: proto u8, input_len u32, output_len u16, input_scale f32, input_zp i8,
                 output_scale f32, output_zp i8, arena_bytes u32, clock_hz u32, counter u8 (0 cycles,
                 1 instructions), model_crc u32, guard_dim u16 (0: no domain guard), guard_threshold f32,
                 name (rest, UTF-8)
  0x02 INFER     host → device: int8 input window [input_len]
  0x82 RESULT    device → host: status u8, counts u32 (cycles or instructions of the inference), int8 logits,
                 guard flags u8 (bit 0: scored, bit 1: in domain), guard score f32 (−1 when not scored)
  0x03 PROFILE   host → device, no payload (answered by the profiling firmware only; others send ERROR 1)
  0x83 PROFILE_RSP device → host: kernels u16, tick_hz u32, cal_pairs u32, cal_ticks u32, ticks u32[kernels]:
                 each kernel's raw counter ticks since the previous PROFILE (then cleared), and the ticks of
                 cal_pairs empty marker brackets (the markers' own cost)
  0x80 HELLO     device → host at boot (a device reset mid-session shows up as this frame)
  0xFF ERROR     device → host: code u16, message (UTF-8)
The host resynchronizes on the 0xA5 0x5A marker, drops frames with a bad CRC, an impossible length or a
stale sequence number, resends a request whose answer never came (bounded retries: a frame lost on the
line), and turns silence, resets, device errors and a foreign protocol version into one-line DeviceErrors
that name the port.
"""

from __future__ import annotations

import binascii
import select
import struct
import time
from dataclasses import dataclass

import numpy as np

from ..errors import DeviceError

SYNC = b"\xa5\x5a"
VERSION = 2  # 2: the domain guard in INFO_RSP and RESULT
INFO, INFER, PROFILE = 0x01, 0x02, 0x03
HELLO, INFO_RSP, RESULT, PROFILE_RSP, ERROR = 0x80, 0x81, 0x82, 0x83, 0xFF
MAX_PAYLOAD = 65535
_HEAD = struct.Struct("<BBHH")
_INFO = struct.Struct("<BIHfbfbIIBIHf")
_GUARD = struct.Struct("<Bf")


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE: the standard library's CRC-CCITT (poly 0x1021, MSB first) from 0xFFFF."""
    return binascii.crc_hqx(data, crc)


def encode(ftype: int, seq: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("payload too large for one frame")
    body = _HEAD.pack(VERSION, ftype, seq & 0xFFFF, len(payload)) + payload
    return SYNC + body + struct.pack("<H", crc16(body))


@dataclass
class Frame:
    type: int
    seq: int
    payload: bytes
    ver: int = VERSION


class Decoder:
    """Incremental frame decoder; skips noise and corrupt frames (counted in `dropped`).

    A frame with a good CRC is returned whatever its protocol version (Frame.ver), so that the caller can
    name a version mismatch instead of timing out. A length above `max_payload` is taken as line noise at
    once (the device-side parser does the same with its buffer size), so a corrupted header never makes the
    decoder wait for bytes that will not come."""

    def __init__(self, max_payload: int = MAX_PAYLOAD):
        self.buf = bytearray()
        self.dropped = 0
        self.max_payload = int(max_payload)

    def feed(self, data: bytes) -> list[Frame]:
        self.buf += data
        out = []
        while True:
            i = self.buf.find(SYNC)
            if i < 0:
                del self.buf[: max(0, len(self.buf) - 1)]
                return out
            if i:
                del self.buf[:i]
            if len(self.buf) < 2 + _HEAD.size:
                return out
            ver, ftype, seq, n = _HEAD.unpack_from(self.buf, 2)
            total = 2 + _HEAD.size + n + 2
            if n <= self.max_payload and len(self.buf) < total:
                return out
            body = bytes(self.buf[2 : total - 2])
            if n > self.max_payload or crc16(body) != struct.unpack_from("<H", self.buf, total - 2)[0]:
                self.dropped += 1
                del self.buf[:2]  # resync after this marker: a good frame may start inside what it claimed
                continue
            out.append(Frame(ftype, seq, body[_HEAD.size :], ver))
            del self.buf[:total]


@dataclass
class DeviceInfo:
    proto: int
    input_len: int
    output_len: int
    input_scale: float
    input_zp: int
    output_scale: float
    output_zp: int
    arena_bytes: int
    clock_hz: int
    counter: str
    model_crc: int
    name: str
    guard_dim: int = 0  # values the firmware's domain guard scores (0: none)
    guard_threshold: float = 0.0

    def pack(self) -> bytes:
        return _INFO.pack(self.proto, self.input_len, self.output_len, self.input_scale, self.input_zp,
                          self.output_scale, self.output_zp, self.arena_bytes, self.clock_hz,
                          0 if self.counter == "cycles" else 1, self.model_crc, self.guard_dim,
                          self.guard_threshold) + self.name.encode()

    @classmethod
    def unpack(cls, payload: bytes) -> "DeviceInfo":
        v = _INFO.unpack_from(payload)
        return cls(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], "cycles" if v[9] == 0 else "instructions",
                   v[10], payload[_INFO.size :].decode(errors="replace"), v[11], v[12])


@dataclass
class GuardResult:
    """The device's domain guard on one window: scored (False when the firmware has none), in domain, score."""

    scored: bool
    in_domain: bool
    score: float

    def pack(self) -> bytes:
        return _GUARD.pack((1 if self.scored else 0) | (2 if self.in_domain else 0), self.score)

    @classmethod
    def unpack(cls, payload: bytes) -> "GuardResult":
        flags, score = _GUARD.unpack_from(payload)
        return cls(bool(flags & 1), bool(flags & 2), float(score))


@dataclass
class KernelTicks:
    """A PROFILE answer: raw counter ticks per kernel since the previous request, the counter's rate, and
    the ticks of `cal_pairs` empty marker brackets."""

    ticks: list[int]
    tick_hz: int
    cal_pairs: int
    cal_ticks: int

    @classmethod
    def unpack(cls, payload: bytes, where: str) -> "KernelTicks":
        if len(payload) < 14:
            raise DeviceError(f"the device on {where} sent a short PROFILE answer ({len(payload)} bytes)")
        n, hz, pairs, cal = struct.unpack_from("<HIII", payload)
        if len(payload) != 14 + 4 * n:
            raise DeviceError(f"the device on {where} sent a PROFILE answer of {len(payload)} bytes for {n} kernels")
        return cls(list(struct.unpack_from(f"<{n}I", payload, 14)), hz, pairs, cal)


def port_name(port) -> str:
    """What to call a pyserial-like port in messages: its device path or URL."""
    return str(getattr(port, "name", None) or getattr(port, "port", None) or "the serial port")


class SerialClient:
    """Host side over any pyserial-like port (read(n) with timeout, write(bytes)).

    Each request waits `timeout_s` for its answer and is sent again up to `retries` times (a frame lost or
    corrupted on the line is not answered); requests are idempotent, so a resend is safe."""

    def __init__(self, port, timeout_s: float = 5.0, retries: int = 2, name: str | None = None,
                 max_payload: int = 4096):
        self.port = port
        self.timeout_s = float(timeout_s)
        self.retries = max(0, int(retries))
        self.name = name or port_name(port)
        self.dec = Decoder(max_payload)
        self.seq = 0
        self.info: DeviceInfo | None = None
        self.resends = 0
        self.last_guard: GuardResult | None = None  # the domain guard of the last RESULT

    def _request(self, ftype: int, payload: bytes, want: int) -> Frame:
        for attempt in range(self.retries + 1):
            self.seq = (self.seq + 1) & 0xFFFF
            self.port.write(encode(ftype, self.seq, payload))
            fr = self._await(want)
            if fr is not None:
                return fr
            self.resends += attempt < self.retries
        tries = f" (sent {self.retries + 1} times)" if self.retries else ""
        raise DeviceError(f"no answer from the device on {self.name} within {self.timeout_s:g} s{tries}: is the "
                          "firmware running and the port and baud rate right?")

    def _read(self, wait_s: float) -> bytes:
        """What has arrived. A port opened with timeout=0 (non-blocking) is waited on with select, so a read
        returns as soon as bytes arrive; otherwise the port's own read timeout paces the loop."""
        if getattr(self.port, "timeout", None) == 0 and hasattr(self.port, "fileno"):
            select.select([self.port.fileno()], [], [], max(0.0, min(wait_s, 0.1)))
        return self.port.read(4096) or b""

    def _await(self, want: int) -> Frame | None:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            for fr in self.dec.feed(self._read(deadline - time.monotonic())):
                if fr.ver != VERSION:
                    raise DeviceError(f"the device on {self.name} speaks protocol version {fr.ver}, this drsn-edge "
                                      f"speaks {VERSION}: flash firmware built by this drsn-edge")
                if fr.type in (INFO, INFER, PROFILE):
                    continue  # the line echoed the host's own request (some adapters do): not an answer
                if fr.type == HELLO and self.info is None:
                    continue  # the boot frame of a device we just connected to
                if fr.type == HELLO:
                    raise DeviceError(f"the device on {self.name} reset during the session (it sent its boot "
                                      "frame): check power and the firmware's stack size, then retry")
                if fr.type == ERROR:
                    code = struct.unpack_from("<H", fr.payload)[0] if len(fr.payload) >= 2 else 0
                    text = fr.payload[2:].decode(errors="replace").strip() or "no message"
                    raise DeviceError(f"device error {code} on {self.name}: {text}")
                if fr.seq != self.seq:
                    continue  # a late answer to an earlier request
                if fr.type != want:
                    raise DeviceError(f"the device on {self.name} answered frame type 0x{fr.type:02x}, "
                                      f"expected 0x{want:02x}")
                return fr
        return None

    def get_info(self) -> DeviceInfo:
        fr = self._request(INFO, b"", INFO_RSP)
        if len(fr.payload) < _INFO.size:
            raise DeviceError(f"the device on {self.name} sent a short INFO answer ({len(fr.payload)} bytes)")
        self.info = DeviceInfo.unpack(fr.payload)
        if self.info.proto != VERSION:
            raise DeviceError(f"the device on {self.name} speaks protocol version {self.info.proto}, this "
                              f"drsn-edge speaks {VERSION}: flash firmware built by this drsn-edge")
        return self.info

    def infer_int8(self, x_q: np.ndarray) -> tuple[np.ndarray, int]:
        """Send one int8 window; returns (int8 logits, cycle/instruction count)."""
        info = self.info or self.get_info()
        x_q = np.asarray(x_q, dtype=np.int8).reshape(-1)
        if x_q.size != info.input_len:
            raise DeviceError(f"the device on {self.name} expects {info.input_len} input values, got {x_q.size}")
        fr = self._request(INFER, x_q.tobytes(), RESULT)
        if len(fr.payload) < 5 + _GUARD.size:  # status, count, guard flags and score: the fixed part
            raise DeviceError(f"the device on {self.name} sent a short RESULT ({len(fr.payload)} bytes)")
        status, counts = struct.unpack_from("<BI", fr.payload)
        if status != 0:
            raise DeviceError(f"inference failed on the device on {self.name} (status {status})")
        if len(fr.payload) != 5 + info.output_len + _GUARD.size:
            raise DeviceError(f"the device on {self.name} returned {len(fr.payload) - 5 - _GUARD.size} outputs, "
                              f"expected {info.output_len}")
        logits = np.frombuffer(fr.payload[5: 5 + info.output_len], dtype=np.int8)
        self.last_guard = GuardResult.unpack(fr.payload[5 + info.output_len:])
        return logits.copy(), int(counts)

    def kernel_ticks(self) -> KernelTicks:
        """Ask the profiling firmware for its per-kernel totals (which it then clears); a firmware without the
        profiler is named as such."""
        try:
            fr = self._request(PROFILE, b"", PROFILE_RSP)
        except DeviceError as exc:
            if "unknown request" in str(exc):
                raise DeviceError(f"the firmware on {self.name} has no per-kernel profiler (it is the normal "
                                  "firmware): run the build's profiling firmware") from None
            raise
        return KernelTicks.unpack(fr.payload, self.name)
