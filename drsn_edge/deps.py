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
    from .errors import INTERRUPTED

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if INTERRUPTED["signal"] is not None:  # the import was interrupted, the package is there
            raise KeyboardInterrupt from None
        extra = extra or _EXTRAS.get(module.split(".")[0], "all")
        hint = "pip install drsn-edge" if extra == "core" else f"pip install 'drsn-edge[{extra}]'"
        raise MissingDependencyError(f"{module} is not installed ({exc}); run: {hint}") from exc


def torch() -> ModuleType:
    return require("torch")


def onnx() -> ModuleType:
    return require("onnx")


def onnxruntime() -> ModuleType:
    """ONNX Runtime; its import writes a session-id file '.ses' into TMPDIR, removed here when this import
    created it, so that no run leaves files behind."""
    import os
    import sys
    from pathlib import Path

    if "onnxruntime" in sys.modules:
        return sys.modules["onnxruntime"]
    ses = Path(os.environ.get("TMPDIR") or "/tmp") / ".ses"
    existed = ses.exists()
    mod = require("onnxruntime")
    if not existed:
        try:
            ses.unlink(missing_ok=True)
        except OSError:
            pass
    return mod


def pyplot() -> ModuleType:
    mpl = require("matplotlib")
    mpl.use("Agg")
    return require("matplotlib.pyplot")
