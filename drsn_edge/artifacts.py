"""Build outputs and their sidecars: every artifact `<name>.<ext>` gets `<name>.json` beside it."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path

from . import __version__
from .fileio import sha256_file, write_json


def sidecar_path(artifact: str | Path) -> Path:
    return Path(artifact).with_suffix(".json")


def tool_versions(*packages: str) -> dict:
    out = {"drsn-edge": __version__, "python": platform.python_version()}
    for p in packages:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def write_sidecar(artifact: str | Path, info: dict) -> Path:
    """Write the sidecar of an artifact that already exists (hash and size are filled in here)."""
    artifact = Path(artifact)
    doc = {"artifact": artifact.name, "sha256": sha256_file(artifact), "bytes": artifact.stat().st_size}
    doc.update(info)
    path = sidecar_path(artifact)
    write_json(path, doc)
    return path
