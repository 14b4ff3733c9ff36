"""A device reached with the system OpenSSH client.

Only `ssh` itself is run locally (list arguments, never a local shell); the user's ~/.ssh/config, keys,
agent, ProxyJump and known_hosts apply unchanged. drsn-edge adds BatchMode=yes (it never prompts for
or stores a password), a ConnectTimeout and keep-alives. Files travel over the same channel with
`cat` (put writes `.<name>.drsn-part` and renames it, get streams into a local temp file and renames
it), so no scp/sftp path quoting rules are involved. Every remote word goes through shlex.quote: the
remote command line is interpreted by the device's login shell, which must be POSIX (sh, bash, dash,
zsh, ash).

A session lives in a work dir made with `mktemp -d` under $TMPDIR (or /tmp, or `remote_tmp`) and
removed on close(). By default the session's ssh calls share one connection (ControlMaster with a
private ControlPath in a local temp dir, ControlPersist 60 s, stopped on close()), so a device behind
a slow link or a ProxyJump pays for one handshake per session; multiplex=False turns that off.
"""

from __future__ import annotations

import itertools
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import DeviceError, InputError, MissingDependencyError
from .base import (AGENT_PATH, AGENT_REMOTE_NAME, DeviceBase, atomic_fetch, format_ssh_url, last_line,
                   parse_agent_output, relative_remote_name)

PYTHON_MISSING_MARKER = "drsn-edge: remote python not found:"

_UNREACHABLE = ("connection refused", "no route to host", "connection timed out", "operation timed out",
                "network is unreachable", "could not resolve hostname", "name or service not known",
                "temporary failure in name resolution", "nodename nor servname", "host is down",
                "timed out during banner exchange")
_AUTH = re.compile(r"permission denied \(|too many authentication failures|no more authentication methods",
                   re.IGNORECASE)
_HOSTKEY = ("host key verification failed", "remote host identification has changed",
            "no matching host key type found")


def classify_ssh_failure(rc: int, stderr: bytes | str, dest: str, what: str, phase: str = "run",
                         python: str = "python3") -> DeviceError:
    """One-line DeviceError for a failed ssh invocation. phase: connect | put | get | run | close."""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else (stderr or "")
    low = text.lower()
    last = last_line(text) or f"ssh exit status {rc}"
    if rc == 255 and any(k in low for k in _HOSTKEY):
        return DeviceError(f"host key verification failed for {dest}: its key is unknown to known_hosts or has "
                           f"changed; connect once with plain ssh to check and accept it, or fix known_hosts "
                           f"({last})")
    if rc == 255 and _AUTH.search(text):
        return DeviceError(f"auth refused by {dest} (Permission denied): set up key login (ssh-copy-id) or give "
                           f"the right key; drsn-edge never asks for passwords ({last})")
    if rc == 255 and any(k in low for k in _UNREACHABLE):
        reason = next(k for k in _UNREACHABLE if k in low)
        return DeviceError(f"{dest} is unreachable ({reason}): check the address and port, that the device is "
                           f"powered and on the network, and that sshd runs on it ({last})")
    if "no space left on device" in low:
        return DeviceError(f"remote disk full on {dest} while {what} (No space left on device): free space in "
                           f"the device's temp dir (df -h there) or choose another remote work dir")
    if PYTHON_MISSING_MARKER.lower() in low:
        return DeviceError(f"remote python '{python}' not found on {dest}: install it there (sudo apt-get install "
                           f"python3 python3-numpy) or pass the interpreter's path with python=...")
    if rc == 255 and phase != "connect":
        return DeviceError(f"connection to {dest} dropped while {what} (ssh exit 255: {last}); check the device's "
                           f"power and network, then rerun")
    if rc == 255:
        return DeviceError(f"cannot connect to {dest} with ssh: {last}; check the address and your ssh config "
                           f"(try plain ssh to it)")
    return DeviceError(f"{what} failed on {dest} (exit {rc}): {last}")


class SshDevice(DeviceBase):
    """`ssh://[user@]host[:port]`. user/port None: ~/.ssh/config (or ssh's defaults) decides.

    python: the interpreter on the device that runs the agent. config_file / identity_file / options:
    extra `-F`, `-i` and `-o KEY=VALUE` for ssh (options come before drsn-edge's own defaults, so they
    win, except BatchMode=yes which always holds). timeout: seconds one agent run may take.
    remote_tmp: folder on the device under which the work dir is made (default $TMPDIR or /tmp).
    multiplex: share one ssh connection for the session (ControlMaster); False for one per call.
    """

    transport = "ssh"

    def __init__(self, host: str, user: str | None = None, port: int | None = None, *, python: str = "python3",
                 config_file: str | os.PathLike | None = None, identity_file: str | os.PathLike | None = None,
                 options: Sequence[str] = (), connect_timeout: float = 10, timeout: float | None = 3600,
                 transfer_timeout: float | None = 3600, remote_tmp: str | None = None, multiplex: bool = True,
                 ssh: str = "ssh"):
        if not host or host.startswith("-") or any(c.isspace() for c in host):
            raise InputError(f"bad ssh host {host!r}: give a host name, address or ~/.ssh/config alias")
        if user is not None and (not user or user.startswith("-") or any(c.isspace() for c in user)):
            raise InputError(f"bad ssh user {user!r}")
        if port is not None and not 1 <= int(port) <= 65535:
            raise InputError(f"bad ssh port {port!r}: give a number in 1..65535")
        if isinstance(options, str):
            options = [options]
        for opt in options:
            if "=" not in opt or opt.startswith("-"):
                raise InputError(f"ssh option {opt!r} must look like Key=Value (it is passed as -o Key=Value)")
        if not python or any(c in python for c in "\n\x00"):
            raise InputError(f"bad remote python {python!r}")
        self.host, self.user, self.port = host, user, (int(port) if port is not None else None)
        self.python = python
        self.config_file = str(config_file) if config_file is not None else None
        self.identity_file = str(identity_file) if identity_file is not None else None
        self.options = list(options)
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.transfer_timeout = transfer_timeout
        self.remote_tmp = remote_tmp
        self.ssh = ssh
        self.multiplex = multiplex
        self._control_dir: str | None = None
        self.url = format_ssh_url(user, host, self.port)
        self.workdir: str | None = None
        self._agent_uploaded = False
        self._counter = itertools.count()

    # ------------------------------------------------------------------------------------- plumbing

    def ssh_argv(self, *extra: str) -> list[str]:
        """The local ssh command line up to (and including) the destination; `extra` goes just before it."""
        argv = [self.ssh, "-o", "BatchMode=yes"]
        if self.config_file:
            argv += ["-F", self.config_file]
        if self.identity_file:
            argv += ["-i", self.identity_file]
        for opt in self.options:
            argv += ["-o", opt]
        argv += ["-o", f"ConnectTimeout={int(max(1, round(self.connect_timeout)))}",
                 "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3",
                 "-o", "ClearAllForwardings=yes", "-T"]
        if self._control_dir:
            argv += ["-o", "ControlMaster=auto", "-o", f"ControlPath={self._control_dir}/cm",
                     "-o", "ControlPersist=60"]
        if self.port is not None:
            argv += ["-p", str(self.port)]
        if self.user is not None:
            argv += ["-l", self.user]
        return argv + list(extra) + ["--", self.host]

    def _ssh(self, remote_command: str, *, what: str, phase: str, input: bytes | None = None, stdin=None,
             stdout=subprocess.PIPE, timeout: float | None = None, check: bool = True) -> subprocess.CompletedProcess:
        argv = self.ssh_argv() + [remote_command]
        if input is None and stdin is None:
            stdin = subprocess.DEVNULL
        try:
            proc = subprocess.run(argv, input=input, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                                  timeout=timeout)
        except FileNotFoundError:
            raise MissingDependencyError(f"the OpenSSH client '{self.ssh}' is not installed; install it "
                                         f"(apt-get install openssh-client)") from None
        except subprocess.TimeoutExpired:
            if phase == "connect":
                raise DeviceError(f"{self.url} is unreachable (timed out after {timeout:g} s): check the address, "
                                  f"the network and that sshd runs on it") from None
            raise DeviceError(f"{what} on {self.url} timed out after {timeout:g} s; the device may be stuck or too "
                              f"slow: rerun with a longer timeout") from None
        if check and proc.returncode != 0:
            raise classify_ssh_failure(proc.returncode, proc.stderr, self.url, what, phase, self.python)
        return proc

    def _path(self, name) -> str:
        if self.workdir is None:
            self.open()
        return posixpath.join(self.workdir, relative_remote_name(name, self.workdir))

    # ------------------------------------------------------------------------------------- protocol

    def open(self) -> "SshDevice":
        if self.workdir is not None:
            return self
        if self.multiplex and self._control_dir is None:
            # a short private folder: unix socket paths are limited to ~100 bytes
            base = None if len(tempfile.gettempdir()) < 60 else ("/tmp" if os.path.isdir("/tmp") else None)
            self._control_dir = tempfile.mkdtemp(prefix="drsn-ssh-", dir=base)
        if self.remote_tmp:
            base = self.remote_tmp.rstrip("/") or "/"
            cmd = (f"mkdir -p -- {shlex.quote(base)} && "
                   f"mktemp -d {shlex.quote(posixpath.join(base, 'drsn-edge.XXXXXXXX'))}")
        else:
            cmd = 'mktemp -d "${TMPDIR:-/tmp}/drsn-edge.XXXXXXXX"'
        timeout = self.connect_timeout * 3 + 30
        proc = self._ssh(cmd, what="creating the work dir", phase="connect", timeout=timeout)
        out = proc.stdout.decode("utf-8", "replace")
        lines = [ln for ln in out.splitlines() if ln.strip()]
        path = lines[-1].strip() if lines else ""
        if not path.startswith("/") or "drsn-edge." not in posixpath.basename(path):
            raise DeviceError(f"could not create a work dir on {self.url}: mktemp printed {last_line(out)!r}; "
                              f"check that the login shell there is POSIX and mktemp exists")
        self.workdir = path
        return self

    def put(self, local_path, remote_name) -> str:
        local_path = Path(local_path)
        if not local_path.is_file():
            raise InputError(f"cannot send '{local_path}': no such file")
        dest = self._path(remote_name)
        part = posixpath.join(posixpath.dirname(dest), f".{posixpath.basename(dest)}.drsn-part")
        q, qpart = shlex.quote(dest), shlex.quote(part)
        cmd = (f"mkdir -p -- {shlex.quote(posixpath.dirname(dest))} && cat > {qpart} && mv -f -- {qpart} {q} "
               f"|| {{ rc=$?; rm -f -- {qpart}; exit $rc; }}")
        with open(local_path, "rb") as f:
            self._ssh(cmd, what=f"sending '{local_path.name}'", phase="put", stdin=f, timeout=self.transfer_timeout)
        return dest

    def get(self, remote_name, local_path) -> Path:
        src = self._path(remote_name)
        label = posixpath.basename(src)

        def fetch(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                proc = self._ssh(f"cat -- {shlex.quote(src)}", what=f"fetching '{label}'", phase="get", stdout=f,
                                 timeout=self.transfer_timeout, check=False)
            if proc.returncode != 0:
                err = proc.stderr.decode("utf-8", "replace")
                if proc.returncode != 255 and "no such file" in err.lower():
                    raise DeviceError(f"'{relative_remote_name(remote_name, self.workdir)}' is not in the work dir "
                                      f"on {self.url}: run the step that makes it first")
                raise classify_ssh_failure(proc.returncode, err, self.url, f"fetching '{label}'", "get",
                                           self.python)

        return atomic_fetch(local_path, fetch)

    def _ensure_agent(self) -> str:
        if not self._agent_uploaded:
            self.put(AGENT_PATH, AGENT_REMOTE_NAME)
            self._agent_uploaded = True
        return AGENT_REMOTE_NAME

    def run_agent(self, command: str, args: dict | None = None, files: Iterable = (), *, check: bool = True,
                  timeout: float | None = None) -> dict:
        self._stage_agent_call(command, files)
        agent = self._ensure_agent()
        payload = json.dumps(args or {}).encode()
        args_name = f".args-{next(self._counter)}.json"
        py, qargs = shlex.quote(self.python), shlex.quote(args_name)
        cmd = (f"cd -- {shlex.quote(self.workdir)} || exit 1; "
               f"command -v {py} >/dev/null 2>&1 || {{ echo {shlex.quote(PYTHON_MISSING_MARKER + ' ' + self.python)} "
               f">&2; exit 127; }}; "
               f"cat > {qargs} && exec {py} {shlex.quote(agent)} {shlex.quote(command)} {qargs}")
        what = f"running agent command '{command}'"
        proc = self._ssh(cmd, what=what, phase="run", input=payload, timeout=timeout or self.timeout, check=False)
        err = proc.stderr.decode("utf-8", "replace")
        if proc.returncode == 255 or (proc.returncode == 127 and PYTHON_MISSING_MARKER in err):
            raise classify_ssh_failure(proc.returncode, err, self.url, what, "run", self.python)
        return parse_agent_output(proc.stdout, proc.stderr, proc.returncode, self.url, command, check)

    def close(self) -> None:
        workdir, self.workdir = self.workdir, None
        self._agent_uploaded = False
        try:
            if workdir and "drsn-edge." in posixpath.basename(workdir):
                self._ssh(f"rm -rf -- {shlex.quote(workdir)}", what="removing the work dir", phase="close",
                          timeout=self.connect_timeout * 3 + 30, check=False)
        except Exception:  # closing must not mask the error that made the caller close
            pass
        control, self._control_dir = self._control_dir, None
        if control:
            try:
                if os.path.exists(os.path.join(control, "cm")):
                    subprocess.run(self._argv_for_control(control, "exit"), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=15)
            except Exception:
                pass
            shutil.rmtree(control, ignore_errors=True)

    def _argv_for_control(self, control: str, op: str) -> list[str]:
        saved, self._control_dir = self._control_dir, control
        try:
            return self.ssh_argv("-O", op)
        finally:
            self._control_dir = saved
