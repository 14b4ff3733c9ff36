"""The runner for a microcontroller that speaks the drsn-edge serial protocol, whatever carries the bytes
(a board's UART behind `serial://`, an emulated board behind `qemu`).

activate() opens the link, asks INFO and refuses a device whose protocol version, model CRC, input or output
shape or quantization differ from the build's (the mismatch named); infer() quantizes the windows with the
model's input scale and zero point exactly as the reference runtimes do, streams them with INFER, keeps the
int8 logits in `last_raw` and the device's per-inference count (cycles on a board, instructions on QEMU),
and returns dequantized float logits."""

from __future__ import annotations

import threading
import time
import zlib
from dataclasses import dataclass

import numpy as np

from ..backends.base import Timing
from ..errors import DeviceError, InputError
from ..firmware.protocol import VERSION, DeviceInfo, SerialClient


class LinkBase:
    """A byte link to a board (serial.SerialDevice, qemu.QemuDevice): `port()` gives an open pyserial-like port
    (non-blocking read, write), `failure_detail()` says why the link died if it knows. Shared here: closing
    the port and the context manager."""

    url: str = ""
    _port = None

    def open(self):
        return self

    def failure_detail(self) -> str:
        return ""

    def _close_port(self) -> None:
        if self._port is not None:
            try:
                self._port.close()
            except Exception:
                pass
            self._port = None

    def close(self) -> None:
        self._close_port()

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


@dataclass(frozen=True)
class Expected:
    """What the build says the firmware must be (from its sidecar or the model itself)."""

    input_len: int
    output_len: int
    input_scale: float
    input_zp: int
    output_scale: float
    output_zp: int
    model_crc: int | None = None
    proto: int = VERSION

    @classmethod
    def from_io(cls, io_in: dict, io_out: dict, model_crc: int | None = None) -> "Expected":
        """From the `input`/`output` entries of a build sidecar ({shape, scale, zero_point})."""
        return cls(int(np.prod(io_in["shape"])), int(np.prod(io_out["shape"])), float(io_in["scale"]),
                   int(io_in["zero_point"]), float(io_out["scale"]), int(io_out["zero_point"]), model_crc)

    @classmethod
    def from_tflite(cls, tflite_bytes: bytes) -> "Expected":
        """From the int8 model the firmware was generated from; the model CRC is its CRC-32."""
        from ..backends.tflite import check_integer_only

        g = check_integer_only(tflite_bytes)
        return cls.from_io(g["input"], g["output"], model_crc=model_crc(tflite_bytes))


def model_crc(tflite_bytes: bytes) -> int:
    """The model hash the firmware reports in INFO: CRC-32 (zlib) of the .tflite it was generated from."""
    return zlib.crc32(bytes(tflite_bytes)) & 0xFFFFFFFF


def check_info(info: DeviceInfo, exp: Expected, where: str) -> None:
    """Refuse a device that runs another model or firmware; the first mismatch is named."""
    checks = [
        ("protocol version", info.proto, exp.proto),
        ("model hash", info.model_crc, exp.model_crc),
        ("input length", info.input_len, exp.input_len),
        ("output length", info.output_len, exp.output_len),
        ("input zero point", info.input_zp, exp.input_zp),
        ("output zero point", info.output_zp, exp.output_zp),
        ("input scale", np.float32(info.input_scale), np.float32(exp.input_scale)),
        ("output scale", np.float32(info.output_scale), np.float32(exp.output_scale)),
    ]
    for what, got, want in checks:
        if want is not None and got != want:
            fmt = (lambda v: f"0x{int(v):08x}") if what == "model hash" else (lambda v: f"{v}")
            raise DeviceError(f"the device on {where} runs another build: its {what} is {fmt(got)}, the build's is "
                              f"{fmt(want)}; flash the firmware of this build")


class McuRunner:
    """Runner (activate / infer / timing / deactivate) for a protocol-speaking microcontroller.

    Given several links to identical devices (e.g. one QEMU per host core), infer() splits the windows
    into contiguous parts, one per device, streamed in parallel threads; outputs and counts keep the
    windows' order."""

    def __init__(self, link: LinkBase | list[LinkBase], expected: Expected | None = None, name: str | None = None,
                 timeout_s: float = 10.0, retries: int = 2):
        self.links = list(link) if isinstance(link, (list, tuple)) else [link]
        self.expected = expected
        self.name = name or f"c engine on {self.links[0].url} (int8)"
        self.timeout_s = timeout_s
        self.retries = retries
        self.clients: list[SerialClient] = []
        self.info: DeviceInfo | None = None
        self.last_raw: np.ndarray | None = None
        self.guard_meta: dict | None = None  # the build's guard (sidecar), when its firmware scores one
        self.last_guard: np.ndarray | None = None  # the device's guard scores of the last infer
        self.last_guard_flags: np.ndarray | None = None  # and its in-domain flags
        self._counts: list[int] = []
        self._wall_ms: list[float] = []
        self._stop = threading.Event()

    @property
    def link(self) -> LinkBase:
        return self.links[0]

    @property
    def client(self) -> SerialClient | None:
        return self.clients[0] if self.clients else None

    def activate(self) -> None:
        if self.clients:
            return
        try:
            for link in self.links:
                link.open()
                client = SerialClient(link.port(), self.timeout_s, self.retries, name=link.url)
                self.clients.append(client)
                self.info = self._guard(link, client.get_info)
                if self.expected is not None:
                    check_info(self.info, self.expected, link.url)
        except BaseException:
            self.deactivate()
            raise
        self._counts, self._wall_ms = [], []
        self._stop.clear()

    @staticmethod
    def _guard(link: LinkBase, fn, *args):
        """Call into a link; a dead link (port gone, QEMU exited) becomes one DeviceError line."""
        try:
            return fn(*args)
        except DeviceError as exc:
            detail = link.failure_detail()
            raise DeviceError(f"{exc} ({detail})" if detail else str(exc)) from None
        except (OSError, ValueError) as exc:  # pyserial's SerialException is an OSError
            detail = link.failure_detail() or str(exc) or type(exc).__name__
            raise DeviceError(f"lost the device on {link.url}: {detail}") from None

    def _stream(self, k: int, rows: np.ndarray) -> tuple[np.ndarray, list[int], list[float], list]:
        """Windows through device k, one by one (stops early once another part failed)."""
        out = np.empty((len(rows), self.info.output_len), dtype=np.int8)
        counts, wall, guards = [], [], []
        for i, row in enumerate(rows):
            if self._stop.is_set():
                break
            t0 = time.perf_counter()
            out[i], c = self._guard(self.links[k], self.clients[k].infer_int8, row)
            wall.append(1e3 * (time.perf_counter() - t0))
            counts.append(c)
            guards.append(self.clients[k].last_guard)
        return out, counts, wall, guards

    def infer_int8(self, x_q: np.ndarray) -> np.ndarray:
        """Raw int8 windows [N, input_len] → int8 logits [N, output_len] (also kept in last_raw)."""
        if not self.clients:
            raise InputError(f"runner '{self.name}' is not active: call activate() first")
        x_q = np.asarray(x_q, dtype=np.int8).reshape(len(x_q), -1)
        parts = np.array_split(np.arange(len(x_q)), min(len(self.clients), max(1, len(x_q))))
        if len(parts) == 1:
            results = [self._stream(0, x_q)]
        else:
            results = self._parallel(x_q, parts)
        out = np.concatenate([r[0] for r in results])
        guards = [g for r in results for g in r[3]]
        for _, counts, wall, _ in results:
            self._counts += counts
            self._wall_ms += wall
        self.last_raw = out
        scored = bool(guards) and all(g is not None and g.scored for g in guards)
        self.last_guard = np.array([g.score for g in guards], np.float64) if scored else None
        self.last_guard_flags = np.array([g.in_domain for g in guards], bool) if scored else None
        return out

    def guard_result(self, x: np.ndarray, level: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """(score, in_domain) of the last infer(x) as the device computed them (its flags; flat and clipped
        windows, and raw windows whose level is outside the guard's range, are out of domain too, checked here
        on the windows sent); None when the firmware has no guard."""
        if self.last_guard is None or len(self.last_guard) != len(x):
            return None
        from ..guard import level_ok, signal_flags

        flat, clipped = signal_flags(x)
        rng = (self.guard_meta or {}).get("level")
        return self.last_guard, self.last_guard_flags & ~flat & ~clipped & level_ok(rng, level, len(x))

    def _parallel(self, x_q: np.ndarray, parts) -> list:
        from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

        pool = ThreadPoolExecutor(len(parts), thread_name_prefix="mcu-link")
        try:
            futures = [pool.submit(self._stream, k, x_q[idx]) for k, idx in enumerate(parts)]
            wait(futures, return_when=FIRST_EXCEPTION)
            return [f.result() for f in futures]  # raises the first failure
        except BaseException:
            self._stop.set()  # the other parts stop after their current window
            raise
        finally:
            pool.shutdown(wait=True)
            self._stop.clear()

    def quantize(self, x: np.ndarray) -> np.ndarray:
        from ..backends.tflite import quantize_input

        x = np.asarray(x, dtype=np.float32)
        n_in = self.info.input_len
        if x.size == 0 or x.size % n_in:
            raise InputError(f"input of shape {list(x.shape)} does not fit the device's {n_in} input values")
        return quantize_input(x.reshape(-1, n_in), float(np.float32(self.info.input_scale)), self.info.input_zp)

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Normalized float windows [N, 1, L] → float32 logits [N, C] (int8 logits in last_raw)."""
        if not self.clients:
            raise InputError(f"runner '{self.name}' is not active: call activate() first")
        raw = self.infer_int8(self.quantize(x))
        scale, zp = float(np.float32(self.info.output_scale)), self.info.output_zp
        return ((raw.astype(np.float32) - zp) * scale).astype(np.float32)

    def timing(self) -> Timing:
        info = self.info
        unit = "instructions" if info is not None and info.counter == "instructions" else "cycles"
        hz = info.clock_hz if info is not None else 0
        if unit == "instructions":
            lat = [1e3 * c / hz for c in self._counts] if hz else []
            source = (f"estimate: QEMU -icount instruction count at the emulated board's {hz / 1e6:g} MHz, "
                      "one instruction per cycle (QEMU does not model timing)")
        else:
            lat = [1e3 * c / hz for c in self._counts] if hz else list(self._wall_ms)
            source = f"device timer ({hz / 1e6:g} MHz cycle counter)" if hz else "host wall clock"
        return Timing(latencies_ms=lat, source=source, counts=list(self._counts), count_unit=unit)

    def deactivate(self) -> None:
        self.clients = []
        for link in self.links:
            link.close()


def mcu_runner(target, device: str | None = None, elf=None, expected: Expected | None = None,
               instances: int = 1, **options) -> McuRunner:
    """The runner for a microcontroller target: over `device` (serial://PATH[?baud=N] or qemu[://MACHINE]), or
    the target's default transport when that is QEMU (the machine from the target, the firmware `elf`).
    QEMU only: `instances` emulated boards share the windows (one per host core is the fastest)."""
    from .base import device_scheme, open_device

    transport = (target.device or {}).get("transport")
    url = device or ("qemu" if transport == "qemu" else None)
    if url is None:
        raise InputError(f"{target.name} is reached over its serial port: give the device, e.g. "
                         f"serial:///dev/ttyACM0?baud={(target.device or {}).get('baud', 115200)}")
    scheme = device_scheme(url)
    if scheme not in ("serial", "qemu"):
        raise InputError(f"{target.name} is a microcontroller: use a serial:// or qemu device, not '{url}'")
    if scheme != "qemu" and instances != 1:
        raise InputError(f"one board on {url}: several instances are for emulated boards only")
    opts = {"machine": target.device.get("machine"), "elf": elf} if scheme == "qemu" else {}
    links = [open_device(url, **opts) for _ in range(max(1, int(instances)))]
    name = options.pop("name", None) or f"c engine on {target.name} (int8)"
    return McuRunner(links, expected, name=name, **options)


def build_runner(build, url: str) -> McuRunner:
    """A microcontroller build's firmware on an emulated board (qemu, the build's image) or a real one
    (serial://…, the firmware the user flashed; INFO must match the build's model)."""
    import os

    from ..targets import get_target

    target = get_target(build.target)
    image = build.sidecar.get("image")
    if url.startswith("qemu") and not image:
        raise InputError(f"{build.target} is not an emulated board: check it on the board (serial://…) or "
                         "with --device local")
    elf = build.file(image) if image else None
    # emulated boards: one per host core share the windows (every window's figures are the same on any board)
    instances = max(1, min(4, os.cpu_count() or 1)) if url.startswith("qemu") else 1
    engine = "tflm firmware" if build.backend == "tflm" else "c engine"
    runner = mcu_runner(target, url, elf=elf, expected=Expected.from_tflite(build.artifact.read_bytes()),
                        instances=instances, name=f"{engine} on {target.name} (int8)")
    runner.guard_meta = build.sidecar.get("guard")
    return runner
