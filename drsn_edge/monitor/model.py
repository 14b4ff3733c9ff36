"""The model the monitor runs: a build folder / artifact (int8) or a .drsn bundle (float, PyTorch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError


@dataclass
class MonitorModel:
    name: str                 # the runner, e.g. "onnxruntime (int8 QDQ)"
    source: str               # the artifact or bundle path
    class_names: list[str]
    fs: float
    window: int
    normalization: str
    infer: Callable[[np.ndarray], np.ndarray]  # float32 [N,1,L] normalized → float32 logits [N,C]
    close: Callable[[], None]
    # the domain guard of the model the artifact was built from: normalized windows → in-domain flags
    in_domain: Callable[[np.ndarray], np.ndarray] | None = None
    bundle_path: str | None = None


def domain_guard(bundle_path: str | None):
    """The bundle's domain guard as a function of normalized windows, or None when it has none (or is gone)."""
    from ..bundle import load_bundle
    from ..guard import from_meta, guard_scores

    if not bundle_path or not Path(bundle_path).is_file():
        return None
    bundle = load_bundle(bundle_path)
    if from_meta(bundle.meta) is None:
        return None
    return lambda x: guard_scores(bundle, x)[1]


def load_model(path: str | None, guard: bool = True) -> MonitorModel:
    """A .drsn bundle runs in PyTorch (float); anything else is a build folder or an artifact in one. With
    guard, windows the model's domain guard flags vote `unknown` instead of a class."""
    if path is None:
        from ..bundle import default_model_path

        path = str(default_model_path())
    p = Path(path)
    m = _bundle_model(p) if p.suffix == ".drsn" else _build_model(p)
    if guard:
        m.in_domain = domain_guard(str(p) if p.suffix == ".drsn" else m.bundle_path)
    return m


def _bundle_model(p: Path) -> MonitorModel:
    from ..bundle import load_bundle
    from ..deps import torch

    t = torch()
    bundle = load_bundle(p)
    net = bundle.model.eval()

    def infer(x):
        with t.inference_mode():
            return net(t.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()

    return MonitorModel("pytorch eager (float32)", str(p), bundle.class_names, bundle.fs, bundle.window,
                        bundle.normalization, infer, lambda: None)


def _build_model(p: Path) -> MonitorModel:
    from ..backends import load_build

    if not p.exists():
        raise InputError(f"'{p}' does not exist; pass a build folder (drsn-edge build --target host) or a .drsn model")
    build = load_build(p)
    runner = build.runner()
    runner.activate()
    infer, close = _batched(runner)
    m = MonitorModel(runner.name, str(build.artifact), build.class_names, build.fs, build.window,
                     build.normalization, infer, close)
    m.bundle_path = build.manifest.get("source_model")
    return m


def _batched(runner) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[], None]]:
    """Where a build also holds static-batch variants of its artifact (ONNX Runtime builds keep batch 8 and
    32 copies for throughput sweeps), run whole batches on the largest one: the monitor's backlog after
    a pause or a file replayed at full speed goes several times faster; single windows keep batch 1."""
    variants = getattr(runner, "variants", None) or {}
    if not variants or not hasattr(runner, "threads"):
        return runner.infer, runner.deactivate
    size = max(variants)
    big = type(runner)(variants[size], threads=runner.threads, name=runner.name)
    big.activate()

    def infer(x: np.ndarray) -> np.ndarray:
        n = len(x) // size * size
        if n == 0:
            return runner.infer(x)
        head = big.infer(x[:n])
        return head if n == len(x) else np.concatenate([head, runner.infer(x[n:])])

    return infer, lambda: (big.deactivate(), runner.deactivate())
