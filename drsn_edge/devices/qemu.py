"""Transport `qemu`: an emulated Cortex-M board. The firmware ELF runs in `qemu-system-arm` on the target's
MPS2/MPS3 machine with `-icount shift=0` (every instruction is 1 ns of virtual time, so the firmware's timer counts
instructions) and semihosting; the board's UART0 is a TCP server on a free loopback port that pyserial
reaches as `socket://127.0.0.1:PORT`.

QEMU is stopped on every way out: close() (also from the context manager and the runner's deactivate()),
an exception or Ctrl-C in the caller (they unwind through close()), SIGTERM/SIGHUP to this process (handlers
stop QEMU, then let the signal take its course), normal interpreter exit (atexit), and the death of this
process by SIGKILL (QEMU is started with the parent-death signal set: Linux, util-linux's setpriv)."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from ..deps import require
from ..errors import DeviceError, InputError, MissingDependencyError
from ..firmware.cfirmware import QEMU_BOARDS
from .base import last_line
from .mcu import LinkBase

QEMU = "qemu-system-arm"
MPS2_MACHINES = tuple(QEMU_BOARDS)  # the machines board_qemu_mps2.c runs on

_LIVE: dict[int, subprocess.Popen] = {}  # pid -> QEMU process started by this interpreter
_LOCK = threading.Lock()
_OLD_HANDLERS: dict[int, object] = {}


def _stop(proc: subprocess.Popen, grace_s: float = 2.0) -> None:
    if proc.poll() is None:
        try:
            proc.terminate()
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        except ProcessLookupError:
            pass
    with _LOCK:
        _LIVE.pop(proc.pid, None)


def stop_all() -> None:
    """Stop every QEMU this process started (atexit and signal handlers call this)."""
    with _LOCK:
        procs = list(_LIVE.values())
    for p in procs:
        _stop(p, grace_s=1.0)


atexit.register(stop_all)


def _on_signal(signum, frame) -> None:
    stop_all()
    old = _OLD_HANDLERS.get(signum, signal.SIG_DFL)
    if callable(old):
        old(signum, frame)
    else:  # default action: die by the same signal, as without us
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _install_signal_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers; the parent-death signal still covers a kill
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is not _on_signal:
            _OLD_HANDLERS[sig] = signal.getsignal(sig)
            signal.signal(sig, _on_signal)


def _die_with_parent(cmd: list[str]) -> list[str]:
    """Prefix the command so that the kernel kills QEMU when this process dies, even by SIGKILL (Linux
    parent-death signal, set by util-linux's setpriv, kept across exec). Without setpriv the other exit
    paths still stop QEMU. (A preexec_fn would force a plain fork(), unsafe in a multithreaded process.)
    The kernel's "parent" is the spawning thread, so this is only done from the main thread: QEMU started
    by a worker thread must outlive that thread."""
    setpriv = shutil.which("setpriv")
    if not setpriv or threading.current_thread() is not threading.main_thread():
        return cmd
    return [setpriv, "--pdeathsig", "KILL", "--", *cmd]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def qemu_command(machine: str, elf: str | Path, port: int) -> list[str]:
    return [QEMU, "-M", machine, "-display", "none", "-monitor", "none", "-icount", "shift=0",
            "-semihosting-config", "enable=on,target=native",
            "-serial", f"tcp:127.0.0.1:{port},server=on,wait=on,nodelay=on", "-kernel", str(elf)]


class QemuDevice(LinkBase):
    """An emulated board; `port()` starts QEMU with the ELF (if not running) and returns the UART."""

    transport = "qemu"

    def __init__(self, machine: str, elf: str | Path | None = None, start_timeout_s: float = 20.0):
        if machine not in MPS2_MACHINES:
            raise InputError(f"QEMU machine '{machine}' is not supported by the firmware's board file: use one of "
                             f"{', '.join(MPS2_MACHINES)}")
        self.machine = machine
        self.elf = Path(elf) if elf else None
        self.start_timeout_s = start_timeout_s
        self.url = f"qemu://{machine}"
        self.proc: subprocess.Popen | None = None
        self._log = None

    def load(self, elf: str | Path) -> "QemuDevice":
        """Set the firmware to run (before port())."""
        self.elf = Path(elf)
        return self

    def port(self):
        if self._port is None:
            self._start()
        return self._port

    def _start(self) -> None:
        serial = require("serial", "mcu")
        if self.elf is None or not self.elf.is_file():
            raise InputError(f"no firmware ELF to run on {self.url}: build it first ({self.elf or 'none given'})")
        if not shutil.which(QEMU):
            raise MissingDependencyError(f"{QEMU} is not installed; run: apt-get install qemu-system-arm")
        _install_signal_handlers()
        for attempt in range(3):  # the free port may be taken between our probe and QEMU's bind
            port = self._launch()
            try:
                self._port = self._connect(serial, port)
                break
            except DeviceError:
                if attempt == 2 or "in use" not in self.failure_detail():
                    raise
                self.close()
        sock = getattr(self._port, "_socket", None)
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _launch(self) -> int:
        port = free_port()
        self._log = tempfile.TemporaryFile()
        with _LOCK:
            self.proc = subprocess.Popen(_die_with_parent(qemu_command(self.machine, self.elf, port)),
                                         stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
            _LIVE[self.proc.pid] = self.proc
        self.url = f"qemu://{self.machine} (127.0.0.1:{port})"
        return port

    def _connect(self, serial, port: int):
        """QEMU waits (wait=on) for this connection before the board starts."""
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self.proc.poll() is not None:
                raise DeviceError(f"QEMU stopped before it opened its UART on {self.url}: {self.failure_detail()}")
            try:
                return serial.serial_for_url(f"socket://127.0.0.1:{port}", timeout=0)
            except serial.SerialException:
                if time.monotonic() > deadline:
                    raise DeviceError(f"QEMU did not open its UART on 127.0.0.1:{port} within "
                                      f"{self.start_timeout_s:g} s") from None
                time.sleep(0.05)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def failure_detail(self) -> str:
        """Why QEMU is gone, if it is (exit status and its last line of output); '' while it runs. Called on
        error paths: a QEMU that is just going down (the link broke first) gets half a second to do so."""
        if self.proc is None:
            return ""
        try:
            self.proc.wait(0.5)
        except subprocess.TimeoutExpired:
            return ""
        text = b""
        if self._log is not None:
            self._log.seek(0)
            text = self._log.read()
        lines = text.decode("utf-8", "replace").splitlines()
        said = [ln.strip() for ln in lines  # its own words, not a register dump nor its notices
                if ln.startswith(("qemu", QEMU)) and " info: " not in ln]
        tail = said[0] if said else (last_line(text) or "no output")
        return f"QEMU exited with status {self.proc.returncode}: {tail}"

    def close(self) -> None:
        """Stop QEMU and release the port. Safe to call twice; never raises."""
        self._close_port()
        if self.proc is not None:
            _stop(self.proc)
        if self._log is not None:
            self._log.close()
            self._log = None


def parse_qemu_url(url: str) -> str | None:
    """`qemu` or `qemu://MACHINE` → the machine (None: take it from the target)."""
    url = str(url).strip()
    if url.lower() in ("qemu", "qemu:", "qemu://"):
        return None
    if not url.lower().startswith("qemu://"):
        raise InputError(f"not a QEMU device URL: '{url}'; use qemu or qemu://mps2-an500")
    machine = url[len("qemu://"):].strip("/")
    if machine not in MPS2_MACHINES:
        raise InputError(f"unknown QEMU machine '{machine}' in '{url}': use one of {', '.join(MPS2_MACHINES)}")
    return machine
