"""Runtimes and compilers behind one contract (see base.py). One registry line per backend: the
target profile's `backend` names it; modules are imported only when used, so `--help` stays light."""

from __future__ import annotations

from importlib import import_module

from ..errors import InputError

# backend name → (module that defines BACKEND, target families it builds for)
BACKENDS = {
    "onnxruntime": ("onnxrt", ("host",)),
    "litert": ("litert", ("host",)),
    "tflm": ("tflm", ("mcu",)),
    "tensorrt": ("tensorrt", ("jetson",)),
    "c": ("cengine", ("mcu",)),
    "host": ("host", ("host",)),
    "native": ("native", ("host",)),
}


def family_backends(family: str) -> tuple[str, ...]:
    """The backends a target family may name (the target schema reads this)."""
    return tuple(name for name, (_, families) in BACKENDS.items() if family in families)


def get_backend(name: str):
    mod = BACKENDS.get(name, (None,))[0]
    if mod is None:
        raise InputError(f"unknown backend '{name}'; registered: {', '.join(sorted(BACKENDS))}")
    return import_module(f".{mod}", __name__).BACKEND


def load_build(path):
    from .base import load_build as _load

    return _load(path)
