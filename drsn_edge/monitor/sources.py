"""Where the monitor's samples come from: a recorded file (replayed at its real rate or as fast as
possible), stdin, a TCP sensor gateway or a serial port. One reader thread per source puts `Chunk`s on a
queue; the monitor loop waits on it with the stall timeout.

  path/to/file.{wav,csv,npy,npz,mat}   read with the dataset importers (WAV carries its rate)
  -                                    stdin: raw little-endian float32 or one number per line
  tcp://host:port                      connect to a gateway that pushes samples (same two formats);
                                       reconnects when the gateway goes away
  serial:///dev/ttyUSB0?baud=115200    a sensor on a serial port (same two formats); reopens on loss
"""

from __future__ import annotations

import os
import queue
import select
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np

from ..errors import DeviceError, InputError
from .stream import FORMATS, make_decoder, sniff_format

READ_SIZE = 1 << 16
POLL_S = 0.2  # how often a blocked reader looks at the stop flag


@dataclass
class Chunk:
    samples: np.ndarray   # float64, in the source's unit and rate
    arrived: float        # time.monotonic() when its last sample was read (or was due, for a paced file)
    bad_lines: int = 0    # garbage text lines since the previous chunk
    short_bytes: int = 0  # bytes of an incomplete float32 sample dropped since the previous chunk
    reconnects: int = 0


class End:
    """Put on the queue when a source has no more data (`error` when it failed)."""

    def __init__(self, error: Exception | None = None):
        self.error = error


@dataclass
class Source:
    """A configured source: `fs` is its sample rate when the source knows it (WAV), else None."""

    description: str
    fs: float | None
    reader: object  # callable(put, stop, rate) that produces chunks until the data ends or stop is set

    def start(self, q: "queue.Queue", stop: threading.Event, rate: float) -> threading.Thread:
        """Start reading; `rate` is the sample rate in use (paces a file replayed in real time)."""

        def run():
            try:
                self.reader(q.put, stop, rate)
                q.put(End())
            except Exception as exc:  # the loop reports it as one line
                q.put(End(exc))

        t = threading.Thread(target=run, name="monitor-source", daemon=True)
        t.start()
        return t


# ---------------------------------------------------------------------------------------------- files


def file_source(path: str, fs: float | None = None, realtime: bool = False, chunk: int = 2048,
                channel: str = "DE", column=None) -> Source:
    from ..data.importers import read_signal

    p = Path(path)
    if not p.is_file():
        raise InputError(f"source '{path}' is not a file, '-', tcp://host:port or serial://PORT")
    stored = p.suffix.lower() == ".wav"
    sig, rate, _ = read_signal(p, fs=None if stored else (fs or 1.0), channel=channel, column=column)
    if stored and fs is not None and abs(fs - rate) > 1e-9 * rate:
        raise InputError(f"'{p.name}' is a WAV recorded at {rate:g} Hz; drop --fs (WAV files carry their rate)")
    sig = np.asarray(sig, dtype=np.float64)

    def read(put, stop, rate):
        t0 = time.monotonic()
        for i in range(0, sig.size, chunk):
            if stop.is_set():
                return
            part = sig[i:i + chunk]
            due = t0 + (i + part.size) / rate if realtime and rate else None
            if due is not None:
                while not stop.is_set() and time.monotonic() < due:
                    time.sleep(min(POLL_S, max(0.0, due - time.monotonic())))
            put(Chunk(part, due if due is not None else time.monotonic()))

    return Source(f"file {p.name}" + (" (real time)" if realtime else ""), rate if stored else fs, read)


# ---------------------------------------------------------------------------------------------- byte streams


def _decode_loop(read_bytes, fmt: str, put, stop, state: dict) -> None:
    """Read byte blocks until EOF (b'') or stop; decode and put chunks. `read_bytes()` returns None when
    nothing arrived within its poll interval."""
    decoder, chosen = None, fmt
    bad = short = 0
    while not stop.is_set():
        data = read_bytes()
        if data is None:
            continue
        if decoder is None:
            if data == b"":
                return
            chosen = sniff_format(data[:64]) if fmt == "auto" else fmt
            decoder = make_decoder(chosen)
            state["format"] = chosen
        samples = decoder.feed(data) if data else decoder.finish()
        nb, ns = getattr(decoder, "bad_lines", 0), getattr(decoder, "short_bytes", 0)
        if samples.size or nb != bad or ns != short:
            put(Chunk(samples, time.monotonic(), nb - bad, ns - short, state.pop("reconnects", 0)))
            bad, short = nb, ns
        if data == b"":
            return


def stdin_source(fmt: str = "auto", stream=None) -> Source:
    stream = stream or sys.stdin.buffer

    def read(put, stop, rate):
        fd = stream.fileno()  # the reader holds the stream open

        def read_bytes():
            ready, _, _ = select.select([fd], [], [], POLL_S)
            return os.read(fd, READ_SIZE) if ready else None

        _decode_loop(read_bytes, fmt, put, stop, {})

    return Source("stdin", None, read)


def _host_port(url: str) -> tuple[str, int]:
    u = urlparse(url)
    if not u.hostname or u.port is None:
        raise InputError(f"'{url}' needs a host and a port: tcp://HOST:PORT")
    return u.hostname, u.port


def tcp_source(url: str, fmt: str = "auto", reconnect: bool = True, backoff=(0.2, 5.0)) -> Source:
    host, port = _host_port(url)

    def read(put, stop, rate):
        delay, state, first = backoff[0], {}, True
        while not stop.is_set():
            try:
                sock = socket.create_connection((host, port), timeout=5.0)
            except OSError:
                if first and not reconnect:
                    raise DeviceError(f"cannot connect to the sensor gateway at {host}:{port}; is it running?")
                stop.wait(delay)
                delay = min(delay * 2, backoff[1])
                continue
            if not first:
                state["reconnects"] = state.get("reconnects", 0) + 1
            first, delay = False, backoff[0]
            sock.settimeout(POLL_S)

            def read_bytes():
                try:
                    return sock.recv(READ_SIZE)
                except socket.timeout:
                    return None
                except OSError:
                    return b""

            with sock:
                _decode_loop(read_bytes, fmt, put, stop, state)
            if not reconnect:
                return

    return Source(f"tcp {host}:{port}", None, read)


def serial_source(url: str, fmt: str = "auto", reconnect: bool = True) -> Source:
    u = urlparse(url)
    port = u.path or u.netloc
    if not port:
        raise InputError(f"'{url}' names no port: serial:///dev/ttyUSB0?baud=115200")
    query = parse_qs(u.query)
    try:
        baud = int(query.get("baud", ["115200"])[0])
    except ValueError:
        raise InputError(f"baud in '{url}' must be a whole number") from None
    try:
        import serial
    except ImportError:
        from ..errors import MissingDependencyError

        raise MissingDependencyError("pyserial is not installed; run: pip install 'drsn-edge[mcu]'") from None

    def open_port():
        try:
            return serial.Serial(port, baudrate=baud, timeout=POLL_S)
        except (serial.SerialException, OSError) as exc:
            raise DeviceError(f"cannot open serial port {port} ({exc}); check the cable and permissions") from None

    ser = open_port()  # fail early on a wrong port

    def read(put, stop, rate):
        nonlocal ser
        state = {}
        while not stop.is_set():
            def read_bytes():
                try:
                    data = ser.read(max(1, min(READ_SIZE, ser.in_waiting)))  # what is there, or wait for 1
                except (serial.SerialException, OSError):
                    return b""
                return data or None

            with ser:
                _decode_loop(read_bytes, fmt, put, stop, state)
            while reconnect and not stop.is_set():
                stop.wait(1.0)
                try:
                    ser = open_port()
                    state["reconnects"] = state.get("reconnects", 0) + 1
                    break
                except DeviceError:
                    continue
            if not reconnect:
                return

    return Source(f"serial {port} @ {baud} baud", None, read)


def open_source(src: str, fs: float | None = None, fmt: str = "auto", realtime: bool = False,
                chunk: int = 2048, channel: str = "DE", column=None) -> Source:
    """The source named on the command line."""
    if fmt not in FORMATS:
        raise InputError(f"unknown --format '{fmt}'; use {', '.join(FORMATS)}")
    if src == "-":
        return stdin_source(fmt)
    if src.startswith("tcp://"):
        return tcp_source(src, fmt)
    if src.startswith("serial://"):
        return serial_source(src, fmt)
    if "://" in src:
        raise InputError(f"unknown source '{src}'; use a file, '-', tcp://HOST:PORT or serial://PORT")
    return file_source(src, fs, realtime, chunk, channel, column)
