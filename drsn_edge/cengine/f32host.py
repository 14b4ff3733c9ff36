"""Compile the float32 host engine for this machine (gcc -O3 -march=native, cached by the hash of the
sources, flags and processor) and call `drsn_f32_infer` through ctypes. The output buffer holds the logits and,
when the engine has them, the guard's taps after them (f32codegen.py)."""

from __future__ import annotations

import ctypes
import shutil
from pathlib import Path

import numpy as np

from ..errors import InputError
from .f32codegen import KERNELS_H, META, MODEL_C
from .host import build_shared, cpu_signature

CFLAGS = ("-O3", "-march=native", "-std=gnu99", "-Wall", "-Wextra", "-Werror", "-Wno-unused-const-variable",
          "-shared", "-fPIC")
LIB = "libdrsn_f32.so"  # the library compiled at build time, kept in the build folder


def compile_f32(c_dir: Path, profile: bool = False) -> Path:
    """The shared library of the engine in c_dir (cached); `profile` adds per-kernel clocks."""
    return build_shared(Path(c_dir), ("DRSN_F32_PROFILE",) if profile else (), sources=(MODEL_C,),
                        headers=(KERNELS_H,), cflags=CFLAGS, what="the float host engine")


def install_lib(c_dir: Path) -> dict:
    """Compile the engine and copy its library next to the sources; what the library was built for."""
    lib = compile_f32(c_dir)
    shutil.copyfile(lib, Path(c_dir) / LIB)
    return {"library": LIB, "cflags": " ".join(CFLAGS), "cpu_signature": cpu_signature()}


class F32Engine:
    """The float host engine of `c_dir`: the library built there when it was built for this processor,
    else one compiled here from the same sources. `run` takes float32 windows [N, input size]."""

    def __init__(self, c_dir: Path, built_for: str | None = None, profile: bool = False):
        self.c_dir = Path(c_dir)
        own = self.c_dir / LIB
        use_own = not profile and own.is_file() and built_for == cpu_signature()
        self.lib_path = own if use_own else compile_f32(self.c_dir, profile)
        self._lib = ctypes.CDLL(str(_by_content(self.lib_path) if use_own else self.lib_path))
        self._fn = self._lib.drsn_f32_infer
        self._fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self._fn.restype = ctypes.c_int
        self.input_size = ctypes.c_int.in_dll(self._lib, "drsn_f32_input_size").value
        self.output_size = ctypes.c_int.in_dll(self._lib, "drsn_f32_output_size").value
        self.n_kernels = ctypes.c_int.in_dll(self._lib, "drsn_f32_num_kernels").value
        self.taps_size = _int_or_zero(self._lib, "drsn_f32_taps_size")
        self._buf = np.empty(self.output_size + self.taps_size, np.float32)  # the logits, then the taps
        self._out = self._buf[:self.output_size]
        self._out_ptr = self._buf.ctypes.data
        self.kernel_ns = (ctypes.c_double * self.n_kernels).in_dll(self._lib, "drsn_f32_kernel_ns") if profile else None

    def run_one(self, x: np.ndarray) -> np.ndarray:
        """One contiguous float32 window (input size values) → its logits (a copy)."""
        self._fn(x.ctypes.data, self._out_ptr)
        return self._out.copy()

    def run_one_all(self, x: np.ndarray) -> np.ndarray:
        """One window → its logits and then its taps, in one copy."""
        self._fn(x.ctypes.data, self._out_ptr)
        return self._buf.copy()

    def taps(self) -> np.ndarray:
        """The extra outputs (the guard's taps, drsn_f32_taps_size values) of the last window run (a copy)."""
        return self._buf[self.output_size:].copy()

    def run(self, x: np.ndarray, taps: bool = False):
        """Logits [N, output size] of float32 windows; with `taps`, (logits, taps [N, taps size])."""
        x = np.ascontiguousarray(x, np.float32).reshape(len(x), -1)
        if x.shape[1] != self.input_size:
            raise InputError(f"windows of {x.shape[1]} values do not fit the engine input of {self.input_size}")
        rows = [self.run_one_all(row) for row in x]
        both = np.stack(rows) if rows else np.zeros((0, len(self._buf)), np.float32)
        logits = both[:, :self.output_size]
        return (logits, both[:, self.output_size:]) if taps else logits


def _int_or_zero(lib, name: str) -> int:
    """An `int` the library exports, or 0 when it has none (an engine without taps declares no taps size)."""
    try:
        return ctypes.c_int.in_dll(lib, name).value
    except ValueError:
        return 0


def _by_content(lib: Path) -> Path:
    """A copy of `lib` named by its hash: the dynamic loader keeps one library per path for the life of the
    process, so a library rebuilt in place would otherwise not be loaded again."""
    import hashlib
    import os

    from .host import cache_dir

    data = lib.read_bytes()
    path = cache_dir() / f"f32-{hashlib.sha256(data).hexdigest()[:24]}" / LIB
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{LIB}.{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path


def read_meta(c_dir: Path) -> dict:
    from ..fileio import read_json

    return read_json(Path(c_dir) / META)
