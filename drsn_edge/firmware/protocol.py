"""The drsn-edge serial protocol, spoken by real boards and emulated ones alike.

Frame (little endian):  0xA5 0x5A | ver u8 | type u8 | seq u16 | len u16 | payload[len] | crc u16
  crc = CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over ver..payload.
Types:
  0x01 INFO      host → device, no payload
  0x81 INFO_RSP  device → host: proto u8, input_len u32, output_len u16, input_scale f32, input_zp i8,
                 output_scale f32, output_zp i8, arena_bytes u32, clock_hz u32, counter u8 (0 cycles,
                 1 instructions), model_crc u32, name (rest, UTF-8)
  0x02 INFER     host → device: int8 input window [input_len]
  0x82 RESULT    device → host: status u8, counts u32 (cycles or instructions of the inference), int8 logits
  0x80 HELLO     device → host at boot (a device reset mid-session shows up as this frame)
  0xFF ERROR     device → host: code u16, message (UTF-8)
The host resynchronizes on the 0xA5 0x5A marker, drops frames with a bad CRC or a stale sequence
number, and turns timeouts, resets and device errors into one-line DeviceErrors.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

import numpy as np

from ..errors import DeviceError

SYNC = b"\xa5\x5a"
VERSION = 1
INFO, INFER = 0x01, 0x02
HELLO, INFO_RSP, RESULT, ERROR = 0x80, 0x81, 0x82, 0xFF
MAX_PAYLOAD = 65535
_HEAD = struct.Struct("<BBHH")
_INFO = struct.Struct("<BIHfbfbIIBI")


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


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


class Decoder:
    """Incremental frame decoder; skips noise and corrupt frames (counted in `dropped`).

    A marker whose header cannot start a frame we accept (another version, a type outside `types`) is
    dropped at once. A marker whose claimed frame has not fully arrived yet is also
    dropped when a complete, valid frame starts later in the buffer: it was a truncated frame (a device reset
    mid-frame) or noise, and waiting for its claimed length would hold back the good frame behind it."""

    def __init__(self, types: set[int] | None = None):
        self.buf = bytearray()
        self.dropped = 0
        self.types = types

    def _frame_at(self, i: int) -> tuple[str, Frame | None, int]:
        """('ok', frame, end) | ('short', None, 0) | ('bad', None, 0) for a marker at buf[i]."""
        if len(self.buf) < i + 2 + _HEAD.size:
            return "short", None, 0
        ver, ftype, seq, n = _HEAD.unpack_from(self.buf, i + 2)
        if ver != VERSION or (self.types is not None and ftype not in self.types):
            return "bad", None, 0
        end = i + 2 + _HEAD.size + n + 2
        if len(self.buf) < end:
            return "short", None, 0
        body = bytes(self.buf[i + 2 : end - 2])
        (crc,) = struct.unpack_from("<H", self.buf, end - 2)
        if crc16(body) != crc:
            return "bad", None, 0
        return "ok", Frame(ftype, seq, body[_HEAD.size :]), end

    def _valid_frame_after(self, i: int) -> bool:
        j = self.buf.find(SYNC, i + 1)
        while j >= 0:
            if self._frame_at(j)[0] == "ok":
                return True
            j = self.buf.find(SYNC, j + 1)
        return False

    def feed(self, data: bytes) -> list[Frame]:
        self.buf += data
        out = []
        while True:
            i = self.buf.find(SYNC)
            if i < 0:
                del self.buf[: max(0, len(self.buf) - 1)]  # keep a last 0xA5: it may start a marker
                return out
            if i:
                del self.buf[:i]
            status, frame, end = self._frame_at(0)
            if status == "short" and not self._valid_frame_after(0):
                return out
            if status != "ok":
                self.dropped += 1
                del self.buf[:2]  # resync after this marker: a good frame may start inside what it claimed
                continue
            out.append(frame)
            del self.buf[:end]


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

    def pack(self) -> bytes:
        return _INFO.pack(self.proto, self.input_len, self.output_len, self.input_scale, self.input_zp,
                          self.output_scale, self.output_zp, self.arena_bytes, self.clock_hz,
                          0 if self.counter == "cycles" else 1, self.model_crc) + self.name.encode()

    @classmethod
    def unpack(cls, payload: bytes) -> "DeviceInfo":
        v = _INFO.unpack_from(payload)
        return cls(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], "cycles" if v[9] == 0 else "instructions",
                   v[10], payload[_INFO.size :].decode(errors="replace"))


class SerialClient:
    """Host side over any pyserial-like port (read(n) with timeout, write(bytes))."""

    def __init__(self, port, timeout_s: float = 5.0):
        self.port = port
        self.timeout_s = timeout_s
        # the host only ever receives these frames (an echo of its own request on the line is dropped)
        self.dec = Decoder(types={HELLO, INFO_RSP, RESULT, ERROR})
        self.seq = 0
        self.info: DeviceInfo | None = None

    def _request(self, ftype: int, payload: bytes, want: int) -> Frame:
        self.seq = (self.seq + 1) & 0xFFFF
        self.port.write(encode(ftype, self.seq, payload))
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            data = self.port.read(4096)
            for fr in self.dec.feed(data or b""):
                if fr.type == HELLO and self.info is None:
                    continue  # the boot frame of a device we just connected to
                if fr.type == HELLO:
                    raise DeviceError("the device reset during the session (it sent its boot frame); check power and "
                                      "the firmware's stack/arena size, then retry")
                if fr.type == ERROR:
                    code = struct.unpack_from("<H", fr.payload)[0] if len(fr.payload) >= 2 else 0
                    text = fr.payload[2:].decode(errors="replace").strip() or "no message"
                    raise DeviceError(f"device error {code}: {text}")
                if fr.seq != self.seq:
                    continue  # a late answer to an earlier request
                if fr.type != want:
                    raise DeviceError(f"device answered frame type 0x{fr.type:02x}, expected 0x{want:02x}")
                return fr
        raise DeviceError(f"no answer from the device within {self.timeout_s:g} s (is the firmware running and "
                          "the port/baud right?)")

    def get_info(self) -> DeviceInfo:
        self.info = DeviceInfo.unpack(self._request(INFO, b"", INFO_RSP).payload)
        if self.info.proto != VERSION:
            raise DeviceError(f"device speaks protocol {self.info.proto}, this drsn-edge speaks {VERSION}; "
                              "rebuild the firmware bundle")
        return self.info

    def infer_int8(self, x_q: np.ndarray) -> tuple[np.ndarray, int]:
        """Send one int8 window; returns (int8 logits, cycle/instruction count)."""
        info = self.info or self.get_info()
        x_q = np.asarray(x_q, dtype=np.int8).reshape(-1)
        if x_q.size != info.input_len:
            raise DeviceError(f"device expects {info.input_len} input values, got {x_q.size}")
        fr = self._request(INFER, x_q.tobytes(), RESULT)
        status, counts = struct.unpack_from("<BI", fr.payload)
        if status != 0:
            raise DeviceError(f"inference failed on the device (status {status})")
        logits = np.frombuffer(fr.payload[5:], dtype=np.int8)
        if logits.size != info.output_len:
            raise DeviceError(f"device returned {logits.size} outputs, expected {info.output_len}")
        return logits.copy(), int(counts)
