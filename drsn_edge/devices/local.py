"""The host itself as a device: the agent runs in a subprocess (this interpreter by default) inside a
private temp work dir that close() removes."""

from __future__ import annotations

import errno
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable

from ..errors import DeviceError, InputError
from ..fileio import atomic_path
from .base import AGENT_PATH, AGENT_REMOTE_NAME, DeviceBase, atomic_fetch, parse_agent_output, relative_remote_name


class LocalDevice(DeviceBase):
    """python: interpreter for the agent (default: the current one). remote_tmp: folder for the work dir
    (default: the system temp dir). timeout: seconds one agent run may take."""

    transport = "local"

    def __init__(self, python: str | None = None, remote_tmp: str | os.PathLike | None = None,
                 timeout: float | None = 3600):
        self.python = python or sys.executable
        self.remote_tmp = str(remote_tmp) if remote_tmp is not None else None
        self.timeout = timeout
        self.url = "local"
        self.workdir: str | None = None
        self._counter = itertools.count()

    def open(self) -> "LocalDevice":
        if self.workdir is None:
            try:
                if self.remote_tmp:
                    os.makedirs(self.remote_tmp, exist_ok=True)
                self.workdir = tempfile.mkdtemp(prefix="drsn-edge.", dir=self.remote_tmp)
            except OSError as exc:
                raise DeviceError(f"cannot create a local work dir under '{self.remote_tmp or tempfile.gettempdir()}'"
                                  f": {exc.strerror or exc}") from None
        return self

    def _path(self, name) -> Path:
        self.open()
        return Path(self.workdir, relative_remote_name(name, self.workdir))

    def put(self, local_path, remote_name) -> str:
        src = Path(local_path)
        if not src.is_file():
            raise InputError(f"cannot send '{src}': no such file")
        dest = self._path(remote_name)
        try:
            with atomic_path(dest) as tmp:
                shutil.copyfile(src, tmp)
        except OSError as exc:
            full = getattr(exc, "errno", None) == errno.ENOSPC
            raise DeviceError(f"{'work dir disk full' if full else 'cannot copy'} '{src.name}' into {dest.parent}: "
                              f"{exc.strerror or exc}") from None
        return str(dest)

    def get(self, remote_name, local_path) -> Path:
        src = self._path(remote_name)
        if not src.is_file():
            raise DeviceError(f"'{relative_remote_name(remote_name, self.workdir)}' is not in the local work dir: "
                              f"run the step that makes it first")
        return atomic_fetch(local_path, lambda tmp: shutil.copyfile(src, tmp))

    def run_agent(self, command: str, args: dict | None = None, files: Iterable = (), *, check: bool = True,
                  timeout: float | None = None) -> dict:
        self._stage_agent_call(command, files)
        agent = self._path(AGENT_REMOTE_NAME)
        if not agent.exists():
            self.put(AGENT_PATH, AGENT_REMOTE_NAME)
        args_path = self._path(f".args-{next(self._counter)}.json")
        try:
            args_path.write_text(json.dumps(args or {}))
        except OSError as exc:
            raise DeviceError(f"cannot write the agent arguments into {self.workdir}: {exc.strerror or exc}") from None
        timeout = timeout or self.timeout
        try:
            proc = subprocess.run([self.python, str(agent), command, str(args_path)], cwd=self.workdir,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  timeout=timeout)
        except OSError as exc:
            raise DeviceError(f"cannot run python '{self.python}' on this machine ({exc.strerror or exc}): install it "
                              f"or pass python=...") from None
        except subprocess.TimeoutExpired:
            raise DeviceError(f"agent command '{command}' timed out after {timeout:g} s on the local device") from None
        return parse_agent_output(proc.stdout, proc.stderr, proc.returncode, "the local device", command, check)

    def close(self) -> None:
        workdir, self.workdir = self.workdir, None
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
