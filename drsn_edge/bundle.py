"""The .drsn model bundle: one safetensors file (weights) whose header carries the metadata as JSON.

safetensors stores raw tensors and a JSON header only, so loading a bundle can never execute code
from it (unlike pickle). Loading validates the header, the architecture and every weight.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .errors import InputError
from .fileio import atomic_path

FORMAT = "drsn-edge-bundle"
FORMAT_VERSION = 1
_META_KEY = "drsn_edge"
REQUIRED = ("arch", "config", "class_names", "fs", "window", "normalization")


@dataclass
class Bundle:
    model: object  # torch.nn.Module in eval mode
    meta: dict = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def arch(self) -> str:
        return self.meta["arch"]

    @property
    def fs(self) -> float:
        return float(self.meta["fs"])

    @property
    def window(self) -> int:
        return int(self.meta["window"])

    @property
    def normalization(self) -> str:
        return self.meta["normalization"]


def make_meta(model, class_names, fs, window, normalization="zscore", **extra) -> dict:
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "drsn_edge_version": __version__,
        "arch": model.arch,
        "config": dict(model.config),
        "class_names": list(class_names),
        "fs": float(fs),
        "window": int(window),
        "normalization": normalization,
    }
    meta.update(extra)
    _validate_meta(meta, "<new bundle>")
    return meta


def _validate_meta(meta: dict, where: str) -> None:
    if not isinstance(meta, dict):
        raise InputError(f"'{where}' is not a drsn-edge model bundle (metadata is not an object)")
    if meta.get("format") != FORMAT:
        raise InputError(f"'{where}' is not a drsn-edge model bundle (format={meta.get('format')!r})")
    ver = meta.get("format_version")
    if not isinstance(ver, int) or ver < 1:
        raise InputError(f"'{where}' has an invalid bundle format_version {ver!r}")
    if ver > FORMAT_VERSION:
        raise InputError(
            f"'{where}' uses bundle format {ver}, this drsn-edge ({__version__}) reads up to {FORMAT_VERSION}; upgrade drsn-edge"
        )
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise InputError(f"'{where}' metadata lacks {', '.join(missing)}")
    from .models import ARCHITECTURES

    if meta["arch"] not in ARCHITECTURES:
        raise InputError(f"'{where}' has unknown architecture '{meta['arch']}'")
    if not isinstance(meta["config"], dict):
        raise InputError(f"'{where}' config must be an object")
    names = meta["class_names"]
    if (not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(names) < 2
            or len(set(names)) != len(names)):
        raise InputError(f"'{where}' needs at least two distinct class names")
    if meta["config"].get("classes", len(names)) != len(names):
        raise InputError(f"'{where}' config has {meta['config'].get('classes')} classes but {len(names)} class names")
    fs, window = meta["fs"], meta["window"]
    if not isinstance(fs, (int, float)) or not math.isfinite(fs) or fs <= 0:
        raise InputError(f"'{where}' has an invalid sample rate {fs!r}")
    if not isinstance(window, int) or window < 64:
        raise InputError(f"'{where}' has an invalid window {window!r} (≥ 64 points)")
    if meta["normalization"] != "zscore":
        raise InputError(f"'{where}' has unknown normalization {meta['normalization']!r}")


def save_bundle(model, meta: dict, path: str | Path) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    _validate_meta(meta, str(path))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={_META_KEY: json.dumps(meta)})
    return path


def read_meta(path: str | Path) -> dict:
    """Read and validate only the metadata (no weights, no torch needed)."""
    from .limits import regular_file

    path = regular_file(path, "model bundle")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("file too short")
            n = int.from_bytes(head, "little")
            size = path.stat().st_size
            if n <= 0 or n > min(100_000_000, size - 8):
                raise ValueError("bad header length")
            header = json.loads(f.read(n))
        meta = json.loads(header["__metadata__"][_META_KEY])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise InputError(f"'{path}' is not a drsn-edge model bundle (.drsn safetensors): {exc}") from None
    _validate_meta(meta, str(path))
    from .limits import check_model_config

    check_model_config(meta["config"], len(meta["class_names"]), meta["window"], size - 8 - n, str(path))
    return meta


def load_bundle(path: str | Path) -> Bundle:
    from safetensors.torch import load_file

    from .models import create_model

    path = Path(path)
    meta = read_meta(path)
    try:
        state = load_file(str(path))
    except Exception as exc:
        raise InputError(f"'{path}' has unreadable weights: {exc}") from None
    config = dict(meta["config"])
    config.setdefault("classes", len(meta["class_names"]))
    model = create_model(meta["arch"], **config)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {list(state[k].shape)} vs {list(v.shape)}" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        what = (f"missing weight '{missing[0]}'" if missing else f"unexpected weight '{unexpected[0]}'" if unexpected
                else f"shape of {wrong[0]}")
        n = len(missing) + len(unexpected) + len(wrong)
        raise InputError(f"'{path}' weights do not match architecture {meta['arch']}: {what}"
                         + (f" (and {n - 1} more)" if n > 1 else ""))
    model.load_state_dict(state, strict=True)
    import torch

    for k, v in state.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise InputError(f"'{path}' has non-finite values in weight '{k}'")
    model.eval()
    return Bundle(model=model, meta=meta)


def default_model_path() -> Path:
    return Path(__file__).parent / "pretrained" / "drsn-cw-default.drsn"


def shipped_models() -> list[dict]:
    """The bundles shipped in the package (metadata only; no torch import)."""
    folder = default_model_path().parent
    out = []
    for p in sorted(folder.glob("*.drsn")):
        meta = read_meta(p)
        out.append({
            "name": p.stem, "path": str(p), "default": p == default_model_path(), "arch": meta["arch"],
            "classes": len(meta["class_names"]), "fs": meta["fs"], "window": meta["window"],
            "metrics": meta.get("metrics", {}), "reproduce": meta.get("reproduce"),
        })
    return out
