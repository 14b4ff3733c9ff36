"""Atomic file writes: a temp file in the target folder, then rename. No half-written outputs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Iterator


def stage_prefix(path: str | os.PathLike) -> str:
    """Temporaries of an output are its hidden siblings '.<name>.<pid>.<random>' (name cut to 100 bytes), so
    that a later run can tell those of a killed run (dead pid) and remove them."""
    return f".{Path(path).name[:100]}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(path: str | os.PathLike) -> None:
    """Remove the temporaries (files or folders) that killed runs left beside the output `path`."""
    import shutil

    path = Path(path)
    if not path.parent.is_dir():
        return
    head = f".{path.name[:100]}."
    for p in path.parent.glob(glob_escape(head) + "*"):
        parts = p.name[len(head):].split(".")
        pid = parts[1] if parts and parts[0] == "old" and len(parts) > 1 else parts[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def glob_escape(text: str) -> str:
    import glob

    return glob.escape(text)


@contextlib.contextmanager
def private_tmpdir(out: str | os.PathLike) -> Iterator[Path]:
    """Send every temporary file of the block (ours and the libraries' through `tempfile`) into a hidden
    folder beside `out`, removed on the way out — also after Ctrl-C or SIGTERM, and by the next run after a kill."""
    from .interrupts import deferred

    out = Path(out)
    clean_stale(out)
    tmp = None
    saved, saved_env = tempfile.tempdir, os.environ.get("TMPDIR")
    try:
        with deferred():  # a signal cannot fall between creating the folder and knowing its name
            tmp = Path(tempfile.mkdtemp(prefix=stage_prefix(out), suffix=".tmp",
                                        dir=out.parent if out.parent.is_dir() else None))
        tempfile.tempdir = os.environ["TMPDIR"] = str(tmp)  # native libraries read the environment
        yield tmp
    finally:
        tempfile.tempdir = saved
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env
        remove_tree(tmp)


def remove_tree(path) -> None:
    """Remove a temporary folder completely, even when a second signal arrives meanwhile."""
    import shutil

    from .interrupts import deferred

    if path is not None:
        with deferred():
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    from .interrupts import deferred

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    tmp_path = None
    try:
        with deferred():  # a signal cannot fall between creating the file and knowing its name
            fd, tmp = tempfile.mkstemp(prefix=stage_prefix(path), suffix=suffix or path.suffix, dir=path.parent)
            os.close(fd)
            tmp_path = Path(tmp)
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path is not None:
            with deferred():
                tmp_path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def jsonable(obj):
    """Plain JSON types from numpy scalars/arrays, paths and tuples; non-finite floats become None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if hasattr(obj, "to_json") and callable(obj.to_json):  # result dataclasses
        return jsonable(obj.to_json())
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:  # numpy scalars
        return jsonable(obj.item())
    if hasattr(obj, "tolist"):
        return jsonable(obj.tolist())
    if hasattr(obj, "__fspath__"):
        return str(obj)
    return obj


def write_json(path: str | os.PathLike, obj) -> None:
    write_bytes(path, (json.dumps(jsonable(obj), indent=2, sort_keys=False) + "\n").encode())


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json(path: str | os.PathLike) -> dict:
    """A JSON file of at most limits.JSON_CAP bytes; a file that is not JSON is bad input (one line)."""
    from .errors import InputError
    from .limits import JSON_CAP, read_capped

    try:
        return json.loads(read_capped(path, JSON_CAP, "JSON file"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"'{path}' is not valid JSON: {exc}") from None
