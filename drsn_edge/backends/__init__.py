"""Runtimes and compilers behind one contract (see base.py). One registry line per backend: the
target profile's `backend` names it; modules are imported only when used, so `--help` stays light."""

from __future__ import annotations

from importlib import import_module

from ..errors import InputError

# backend name → module that defines BACKEND
BACKENDS = {
    "onnxruntime": "onnxrt",
    "litert": "litert",
    "tflm": "tflm",
    "tensorrt": "tensorrt",
    "c": "cengine",
}


def get_backend(name: str):
    mod = BACKENDS.get(name)
    if mod is None:
        raise InputError(f"unknown backend '{name}'; registered: {', '.join(sorted(BACKENDS))}")
    return import_module(f".{mod}", __name__).BACKEND


def load_build(path):
    from .base import load_build as _load

    return _load(path)
