"""The Device protocol, the registry of device kinds and the helpers every kind shares.

A device is opened from a URL (`open_device("ssh://nvidia@jetson:22")`), gets files put into a private
work dir, runs the self-contained agent (`agent.py`) there with its own Python and hands back the agent's
JSON result; results are fetched with `get`, which never leaves a half-written file. Closing removes
the work dir. Every failure of the device or the transport is a one-line DeviceError (exit 4).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from pathlib import Path
from typing import Callable, Iterable, Protocol, runtime_checkable

from ..errors import DeviceError, InputError
from ..fileio import atomic_path

AGENT_PATH = Path(__file__).with_name("agent.py")
AGENT_REMOTE_NAME = "drsn-edge-agent.py"


@runtime_checkable
class Device(Protocol):
    """What every device kind offers. Remote names are paths relative to the device's work dir."""

    url: str

    def open(self) -> "Device":
        """Connect and create the work dir; returns self. Idempotent."""

    def info(self) -> dict:
        """Facts about the device: os, arch, python, free disk, Jetson facts, numpy/onnxruntime/tensorrt."""

    def put(self, local_path: str | os.PathLike, remote_name: str) -> str:
        """Copy a local file into the work dir (atomically there too); returns its path on the device."""

    def get(self, remote_name: str, local_path: str | os.PathLike) -> Path:
        """Fetch a file from the work dir to local_path atomically; on failure nothing is left locally."""

    def run_agent(self, command: str, args: dict | None = None, files: Iterable[str | os.PathLike] = (), *,
                  check: bool = True, timeout: float | None = None) -> dict:
        """Upload `files` (under their base names), run `agent.py <command> <args.json>` on the device
        and return its JSON result. With check=True a result carrying "error" raises DeviceError."""

    def close(self) -> None:
        """Remove the work dir and let go of the device. Safe to call twice; never raises."""

    def __enter__(self) -> "Device": ...

    def __exit__(self, *exc) -> None: ...


class DeviceBase:
    """Shared behaviour: context manager, info() through the agent."""

    url: str = ""
    transport: str = ""
    workdir: str | None = None

    def open(self):  # pragma: no cover - overridden
        return self

    def close(self) -> None:  # pragma: no cover - overridden
        pass

    def run_agent(self, command, args=None, files=(), *, check=True, timeout=None) -> dict:  # pragma: no cover
        raise NotImplementedError

    def _stage_agent_call(self, command, files) -> None:
        """What every run_agent does first: check the command, connect, upload the files."""
        if not isinstance(command, str) or not command:
            raise InputError(f"bad agent command {command!r}")
        self.open()
        for f in files:
            self.put(f, Path(f).name)

    def info(self) -> dict:
        facts = self.run_agent("info", {})
        facts.update({"device": self.url, "transport": self.transport, "workdir": self.workdir})
        return facts

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


# ---------------------------------------------------------------------------------------------- registry

def _open_local(url: str, **options) -> Device:
    from .local import LocalDevice

    if url.rstrip("/") not in ("local", "local:"):
        raise InputError(f"the local device takes no address, got '{url}'; use 'local'")
    return LocalDevice(**options)


def _open_ssh(url: str, **options) -> Device:
    from .ssh import SshDevice

    user, host, port = parse_ssh_url(url)
    return SshDevice(host, user=user, port=port, **options)


def _open_serial(url: str, **options):
    from .serial import SerialDevice, parse_serial_url

    path, baud = parse_serial_url(url)
    return SerialDevice(path, baud=options.pop("baud", baud), **options)


def _open_qemu(url: str, machine: str | None = None, **options):
    from .qemu import QemuDevice, parse_qemu_url

    machine = parse_qemu_url(url) or machine
    if not machine:
        raise InputError("the QEMU device needs a machine: use qemu://mps2-an500 or a target with [device] machine")
    return QemuDevice(machine, **options)


# scheme -> factory(url, **options) returning an unopened device. `serial` and `qemu` give microcontroller
# links (no work dir, no agent): they carry the serial protocol for devices.mcu.McuRunner.
# scheme -> factory(url, **options) returning an unopened device; one line plugs in a transport
DEVICES: dict[str, Callable[..., Device]] = {"local": _open_local, "ssh": _open_ssh, "serial": _open_serial,
                                             "qemu": _open_qemu}
# scheme -> (target families it reaches, the keys a target's [device] table may set for it)
TRANSPORT_SCHEMA: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "local": (("jetson", "host"), ()), "ssh": (("jetson", "host"), ("host", "user", "port")),
    "serial": (("mcu",), ("port", "baud")), "qemu": (("mcu",), ("machine",))}


def device_scheme(url: str) -> str:
    url = str(url).strip()
    return url.split(":", 1)[0].lower() if ":" in url else url.lower()


def open_device(url: str, **options) -> Device:
    """Open a device from its URL: `local`, `ssh://[user@]host[:port]` (IPv6 as `ssh://user@[::1]:2222`),
    `serial://PATH[?baud=N]` or `qemu[://MACHINE]`. Keyword options go to the device kind's constructor
    (e.g. python=, identity_file= for ssh; machine=, elf= for qemu)."""
    scheme = device_scheme(url)
    factory = DEVICES.get(scheme)
    if factory is None:
        known = ", ".join(sorted(DEVICES))
        hint = f"; did you mean 'ssh://{url}'?" if "@" in url and "://" not in url else ""
        raise InputError(f"unknown device '{url}': use one of {known} (local, ssh://[user@]host[:port], "
                         f"serial:///dev/ttyACM0, qemu://mps2-an500){hint}")
    device = factory(str(url).strip(), **options)
    try:
        return device.open()
    except BaseException:
        device.close()
        raise


_HOST_RE = re.compile(r"^[A-Za-z0-9_.%-]+$")
_HOST6_RE = re.compile(r"^[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?$")
_USER_RE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.@-]*\$?$")


def parse_ssh_url(url: str) -> tuple[str | None, str, int | None]:
    """`ssh://[user@]host[:port]` -> (user or None, host, port or None). The host may be an ~/.ssh/config
    alias; IPv6 addresses go in brackets. Anything that could reach ssh as an option is refused."""
    url = str(url).strip()
    usage = "use ssh://[user@]host[:port], IPv6 as ssh://user@[::1]:22"
    if not url.lower().startswith("ssh://"):
        raise InputError(f"not an ssh device URL: '{url}'; {usage}")
    rest = url[len("ssh://"):]
    if any(c in rest for c in "?#"):
        raise InputError(f"ssh device URL '{url}' has a query or fragment; {usage}")
    rest = rest[:-1] if rest.endswith("/") else rest
    if "/" in rest:
        raise InputError(f"ssh device URL '{url}' has a path; {usage}")
    user = None
    if "@" in rest:
        user, rest = rest.rsplit("@", 1)
        if not _USER_RE.match(user):
            raise InputError(f"bad user name '{user}' in '{url}'; {usage}")
    port_text = None
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise InputError(f"unclosed '[' in '{url}'; {usage}")
        host, tail = rest[1:end], rest[end + 1:]
        if not _HOST6_RE.match(host) or ":" not in host:
            raise InputError(f"bad IPv6 address '{host}' in '{url}'; {usage}")
        if tail:
            if not tail.startswith(":"):
                raise InputError(f"unexpected '{tail}' after the address in '{url}'; {usage}")
            port_text = tail[1:]
    else:
        if rest.count(":") > 1:
            raise InputError(f"IPv6 addresses need brackets: '{url}'; {usage}")
        host, _, port_text = rest.partition(":") if ":" in rest else (rest, "", None)
        if not host or host.startswith("-") or not _HOST_RE.match(host):
            raise InputError(f"bad host name '{host}' in '{url}'; {usage}")
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise InputError(f"bad port '{port_text}' in '{url}': give a number in 1..65535")
        port = int(port_text)
    return user, host, port


def format_ssh_url(user: str | None, host: str, port: int | None) -> str:
    h = f"[{host}]" if ":" in host else host
    return "ssh://" + (f"{user}@" if user else "") + h + (f":{port}" if port else "")


# ---------------------------------------------------------------------------------------------- helpers

def check_remote_name(name: str | os.PathLike) -> str:
    """A path relative to the work dir: no absolute paths, no '..', no NUL. Returns it normalized."""
    text = os.fspath(name)
    if not isinstance(text, str) or not text or "\x00" in text:
        raise InputError(f"bad remote file name {text!r}: give a non-empty name inside the work dir")
    if text.startswith("/") or any(part == ".." for part in text.split("/")):
        raise InputError(f"remote file name {text!r} leaves the work dir: give a relative name without '..'")
    norm = posixpath.normpath(text)
    if norm in (".", ""):
        raise InputError(f"bad remote file name {text!r}: it names the work dir itself")
    return norm


def relative_remote_name(name: str | os.PathLike, workdir: str | None) -> str:
    """Accept a work-dir-relative name, or an absolute path inside the work dir (as put() returns)."""
    text = os.fspath(name)
    if workdir and isinstance(text, str) and text.startswith(workdir.rstrip("/") + "/"):
        text = text[len(workdir.rstrip("/")) + 1:]
    return check_remote_name(text)


def last_line(data: bytes | str | None, skip_warnings: bool = True) -> str:
    """The last non-empty line of some output (ssh 'Warning:' chatter skipped), or ''."""
    if not data:
        return ""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    lines = [ln.strip() for ln in text.replace("\r", "\n").split("\n") if ln.strip()]
    if skip_warnings:
        useful = [ln for ln in lines if not ln.startswith("Warning: Permanently added")]
        lines = useful or lines
    return lines[-1] if lines else ""


def parse_agent_output(stdout: bytes, stderr: bytes, rc: int, where: str, command: str,
                       check: bool = True) -> dict:
    """The agent's one JSON object, or a DeviceError that names the last stderr line."""
    text = (stdout or b"").decode("utf-8", "replace").strip()
    result = None
    for candidate in (text, last_line(text, skip_warnings=False)):
        if not candidate:
            continue
        try:
            result = json.loads(candidate)
            break
        except ValueError:
            continue
    err_text = (stderr or b"").decode("utf-8", "replace")
    if not isinstance(result, dict):
        if "No space left on device" in err_text:
            raise DeviceError(f"remote disk full on {where} while running '{command}' (No space left on device): "
                              f"free space in the device's temp dir and rerun")
        detail = last_line(err_text) or last_line(text) or "no output at all"
        raise DeviceError(f"the agent on {where} failed running '{command}' (exit {rc}, no JSON result): {detail}")
    if check and result.get("error"):
        if result.get("error_kind") == "disk_full":
            raise DeviceError(f"remote disk full on {where} while running '{command}': {result['error']}; "
                              f"free space in the device's temp dir and rerun")
        hint = f" ({result['hint']})" if result.get("hint") else ""
        raise DeviceError(f"agent command '{command}' failed on {where}: {result['error']}{hint}")
    return result


def atomic_fetch(local_path: str | os.PathLike, fetch: Callable[[Path], None]) -> Path:
    """Run fetch(tmp) into a temp file beside local_path, then rename. On any failure the temp file and
    any parent folders this call created are removed: nothing is left behind."""
    local_path = Path(local_path)
    if local_path.is_dir():
        raise InputError(f"'{local_path}' is a folder: give the path of the file to write")
    missing = []
    parent = local_path.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    try:
        with atomic_path(local_path) as tmp:
            fetch(tmp)
    except BaseException as exc:
        for folder in missing:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                break
        if isinstance(exc, OSError):
            raise InputError(f"cannot write '{local_path}': {exc.strerror or exc}; check the folder and free space") \
                from None
        raise
    return local_path
