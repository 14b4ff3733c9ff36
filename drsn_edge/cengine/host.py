"""Run the generated C engine on this machine: gcc builds a shared library (cached by the hash of
the sources and flags), ctypes calls `drsn_infer` once per window."""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..errors import InputError, MissingDependencyError

SOURCES = ("drsn_model.c", "drsn_kernels.c")
GUARD_SOURCES = ("drsn_guard.c", "drsn_guard.h")
HEADERS = ("drsn_model.h", "drsn_kernels.h", "drsn_config.h")
CFLAGS = ("-O2", "-fwrapv", "-std=c99", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC")


def cache_dir() -> Path:
    base = os.environ.get("DRSN_EDGE_CACHE") or os.path.join(tempfile.gettempdir(), "drsn-edge-cache")
    return Path(base) / "cengine"


def _digest(c_dir: Path, flags: tuple[str, ...], files: tuple[str, ...]) -> str:
    h = hashlib.sha256(" ".join(flags).encode())
    if "-march=native" in flags:  # the code depends on this machine's instruction set
        h.update(cpu_signature().encode())
    for name in files:
        h.update(name.encode() + b"\0" + (c_dir / name).read_bytes())
    return h.hexdigest()[:24]


def cpu_signature() -> str:
    """This machine's processor model and instruction-set flags (what -march=native compiles for)."""
    import platform

    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    keep = [ln.split(":", 1)[1].strip() for ln in lines if ln.split(":")[0].strip() in ("model name", "flags")][:2]
    return hashlib.sha256(" | ".join([platform.machine(), *keep]).encode()).hexdigest()[:16]


def build_shared(c_dir: Path, defines: tuple[str, ...] = (), *, sources: tuple[str, ...] = SOURCES,
                 headers: tuple[str, ...] = HEADERS, cflags: tuple[str, ...] = CFLAGS, what: str = "the C engine") -> Path:
    """Compile the sources in c_dir into a shared library (or reuse a cached build)."""
    c_dir = Path(c_dir)
    missing = [n for n in sources + headers if not (c_dir / n).exists()]
    if missing:
        raise InputError(f"{c_dir} is not a generated C engine (missing {', '.join(missing)})")
    cc = shutil.which(os.environ.get("CC", "gcc"))
    if cc is None:
        raise MissingDependencyError(f"no C compiler (gcc) found; install gcc to run {what} on the host")
    flags = cflags + tuple(f"-D{d}" for d in defines)
    lib = cache_dir() / _digest(c_dir, flags, sources + headers) / "libdrsn.so"
    if lib.exists():
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    tmp = lib.with_name(f".libdrsn.{os.getpid()}.so")
    cmd = [cc, *flags, "-I", str(c_dir), *(str(c_dir / s) for s in sources), "-o", str(tmp)]
    p = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if p.returncode != 0:
        tmp.unlink(missing_ok=True)
        first = next((ln for ln in p.stderr.splitlines() if "error" in ln), p.stderr.strip()[:300])
        raise InputError(f"gcc could not compile {what} in {c_dir}: {first}")
    os.replace(tmp, lib)
    return lib


class HostEngine:
    """The C engine in `c_dir`, compiled for this host. `run_raw` takes int8 windows [N, L]."""

    def __init__(self, c_dir: Path, defines: tuple[str, ...] = ()):
        self.c_dir = Path(c_dir)
        c, h = ((n,) if (self.c_dir / n).is_file() else () for n in GUARD_SOURCES)  # older engines lack them
        self.lib_path = build_shared(self.c_dir, defines, sources=SOURCES + c, headers=HEADERS + h)
        self._lib = ctypes.CDLL(str(self.lib_path))
        self._lib.drsn_infer.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self._lib.drsn_infer.restype = ctypes.c_int
        header = (self.c_dir / "drsn_model.h").read_text()
        self.input_size = _define(header, "DRSN_INPUT_SIZE")
        self.output_size = _define(header, "DRSN_OUTPUT_SIZE")
        self.taps_size = _define(header, "DRSN_GUARD_TAPS_SIZE") if "DRSN_GUARD_TAPS_SIZE" in header else 0
        self.has_guard_code = (self.c_dir / GUARD_SOURCES[0]).is_file()
        if self.taps_size:
            self._lib.drsn_guard_taps.argtypes = [ctypes.c_void_p]
            self._lib.drsn_guard_taps.restype = None
        if self.has_guard_code:
            self._lib.drsn_guard_score.argtypes = [ctypes.c_void_p]
            self._lib.drsn_guard_score.restype = ctypes.c_float

    def run_taps(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(int8 logits [N, C], the guard's int8 taps [N, DRSN_GUARD_TAPS_SIZE]) per window."""
        logits = np.empty((len(x), self.output_size), np.int8)
        taps = np.empty((len(x), self.taps_size), np.int8)
        for i in range(len(x)):
            logits[i] = self.run_raw(x[i:i + 1])[0]
            if self.taps_size:
                self._lib.drsn_guard_taps(taps[i].ctypes.data)
        return logits, taps

    def guard_score(self, taps: np.ndarray) -> np.ndarray:
        """drsn_guard_score (the device's float code) on int8 taps [N, D]; −1 where the engine has no guard."""
        taps = np.ascontiguousarray(np.asarray(taps, np.int8).reshape(len(taps), -1))
        if not self.has_guard_code:
            return np.full(len(taps), -1.0)
        return np.array([self._lib.drsn_guard_score(t.ctypes.data) for t in taps], np.float64)

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype != np.int8:
            raise InputError(f"run_raw takes int8 windows, got {x.dtype}")
        x = np.ascontiguousarray(x.reshape(len(x) if x.ndim > 1 else 1, -1))
        if x.shape[1] != self.input_size:
            raise InputError(f"windows of {x.shape[1]} values do not fit the engine input of {self.input_size}")
        out = np.empty((len(x), self.output_size), np.int8)
        for i in range(len(x)):
            self._lib.drsn_infer(x[i].ctypes.data, out[i].ctypes.data)
        return out


def _define(header: str, name: str) -> int:
    for line in header.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "#define" and parts[1] == name:
            return int(parts[2].strip("()u"))
    raise InputError(f"generated header lacks {name}")
