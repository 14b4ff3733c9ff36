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
    # the domain guard: (normalized windows, their raw levels from guard.window_level) → in-domain flags
    in_domain: Callable[[np.ndarray, np.ndarray | None], np.ndarray] | None = None
    bundle_path: str | None = None


def domain_guard(bundle_path: str | None):
    """The bundle's domain guard as a function of normalized windows and their raw levels, or None when it has
    none (or is gone)."""
    from ..bundle import load_bundle
    from ..guard import from_meta, guard_scores

    if not bundle_path or not Path(bundle_path).is_file():
        return None
    bundle = load_bundle(bundle_path)
    if from_meta(bundle.meta) is None:
        return None
    return lambda x, level=None: guard_scores(bundle, x, level)[1]


def load_model(path: str | None, guard: bool = True) -> MonitorModel:
    """A .drsn bundle runs in PyTorch (float); anything else is a build folder or an artifact in one. With
    guard, windows the model's domain guard flags vote `unknown` instead of a class."""
    if path is None:
        from ..bundle import default_model_path

        path = str(default_model_path())
    p = Path(path)
    m = _bundle_model(p) if p.suffix == ".drsn" else _build_model(p)
    if guard and m.in_domain is None:
        m.in_domain = domain_guard(str(p) if p.suffix == ".drsn" else m.bundle_path)
    elif not guard:
        m.in_domain = None
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
    infer, in_domain = _artifact_guard(runner, infer)
    m = MonitorModel(runner.name, str(build.artifact), build.class_names, build.fs, build.window,
                     build.normalization, infer, close, in_domain)
    m.bundle_path = build.manifest.get("source_model")
    return m


def _artifact_guard(runner, infer):
    """Where the artifact carries the domain guard (guard_score output), the monitor uses its flags: `infer`
    keeps the flags of the windows it ran, `in_domain(x)` hands them back for the same windows (running the
    artifact again only when x is not what was just inferred). (infer, None) without a guard."""
    if getattr(runner, "guard_meta", None) is None:
        return infer, None
    from ..guard_export import flags

    pending: list = []

    def run(x):
        logits = infer(x)
        pending.append((np.asarray(x), _last_scores(runner, infer, x)))
        return logits

    def in_domain(x, level=None):
        xs = [p[0] for p in pending]
        scores = [p[1] for p in pending]
        pending.clear()
        if xs and sum(len(v) for v in xs) == len(x) and np.array_equal(np.concatenate(xs), x):
            return flags(np.concatenate(scores), runner.guard_meta, x, level)
        return runner.infer_guard(x, level)[1]

    return run, in_domain


def _last_scores(runner, infer, x) -> np.ndarray:
    """The guard scores of the windows just run (the batched infer records its own: two runners)."""
    got = getattr(infer, "last_guard", runner.last_guard)
    return got if got is not None and len(got) == len(x) else runner.infer_guard(x)[0]


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
            out, parts = runner.infer(x), [runner.last_guard]
        else:
            out, parts = big.infer(x[:n]), [big.last_guard]
            if n < len(x):
                out = np.concatenate([out, runner.infer(x[n:])])
                parts.append(runner.last_guard)
        infer.last_guard = np.concatenate(parts) if all(p is not None for p in parts) else None
        return out

    return infer, lambda: (big.deactivate(), runner.deactivate())
