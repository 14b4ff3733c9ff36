"""The one place that imports heavy or optional packages.

Every import is lazy, so `drsn-edge --help` stays fast and works without torch or any backend
installed. A missing optional package raises MissingDependencyError naming the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

# module name -> extra of drsn-edge that provides it
_EXTRAS = {
    "torch": "core",
    "onnx": "core",
    "onnxruntime": "core",
    "scipy": "core",
    "matplotlib": "core",
    "safetensors": "core",
}


def require(module: str, extra: str | None = None) -> ModuleType:
    """Import `module` or raise a one-line error that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = extra or _EXTRAS.get(module.split(".")[0], "all")
        hint = "pip install drsn-edge" if extra == "core" else f"pip install 'drsn-edge[{extra}]'"
        raise MissingDependencyError(f"{module} is not installed ({exc}); run: {hint}") from exc


def torch() -> ModuleType:
    return require("torch")


def onnx() -> ModuleType:
    return require("onnx")


def onnxruntime() -> ModuleType:
    return require("onnxruntime")


def pyplot() -> ModuleType:
    mpl = require("matplotlib")
    mpl.use("Agg")
    return require("matplotlib.pyplot")
