"""Transport `serial://PATH[?baud=N]`: a board's UART (USB CDC or a USB-serial bridge) through pyserial,
e.g. `serial:///dev/ttyACM0?baud=115200`. Any path pyserial opens works, a pseudo-terminal (`/dev/pts/N`)
included: the host build of the firmware serves the protocol on one (tests, no board needed)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from ..deps import require
from ..errors import DeviceError, InputError
from .mcu import LinkBase

DEFAULT_BAUD = 115200
_USAGE = "use serial:///dev/ttyACM0 or serial:///dev/ttyUSB0?baud=115200"


def parse_serial_url(url: str) -> tuple[str, int]:
    """`serial://PATH[?baud=N]` → (path, baud)."""
    parts = urlsplit(str(url).strip())
    if parts.scheme.lower() != "serial":
        raise InputError(f"not a serial device URL: '{url}'; {_USAGE}")
    path = parts.netloc + parts.path
    if not path or parts.fragment:
        raise InputError(f"serial device URL '{url}' names no port; {_USAGE}")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"baud"})
    if unknown:
        raise InputError(f"unknown option '{unknown[0]}' in '{url}': only baud is understood; {_USAGE}")
    baud = DEFAULT_BAUD
    if "baud" in query:
        text = query["baud"][-1]
        if not text.isdigit() or int(text) <= 0:
            raise InputError(f"bad baud rate '{text}' in '{url}': give a positive number such as 115200")
        baud = int(text)
    return path, baud


class SerialDevice(LinkBase):
    """A board on a serial port; `port()` opens it (8N1, exclusive) on first use."""

    transport = "serial"

    def __init__(self, path: str, baud: int = DEFAULT_BAUD):
        self.path = path
        self.baud = int(baud)
        self.url = path

    def port(self):
        if self._port is None:
            serial = require("serial", "mcu")
            try:
                self._port = serial.Serial(self.path, self.baud, timeout=0, write_timeout=10, exclusive=True)
            except (serial.SerialException, OSError, ValueError) as exc:
                why = getattr(exc, "strerror", None) or str(exc)
                raise DeviceError(f"cannot open serial port {self.path}: {why}; check the cable, the path and "
                                  "that no other program (a serial monitor) holds it") from None
            self._port.reset_input_buffer()
        return self._port

    def __repr__(self) -> str:
        return f"<SerialDevice {self.path} @ {self.baud}>"
