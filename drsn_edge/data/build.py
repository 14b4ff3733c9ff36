"""The `data` stage as functions: simulate, import and describe dataset files."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import numpy as np

from ..errors import InputError
from .dataset import Dataset, load_dataset, save_dataset
from .noise import assign_noise, noise_sweep


def _check_out(out: str | Path) -> Path:
    out = Path(out)
    if out.suffix != ".npz":
        raise InputError(f"dataset files end in .npz, got '{out.name}'")
    return out


def apply_noise(ds: Dataset, kinds: list[str], snrs: list[float] | None, mode: str, seed: int) -> Dataset:
    """mode 'assign': one random grid cell per window; 'sweep': every window clean + in every cell."""
    if not kinds:
        return ds
    if not snrs:
        raise InputError("--noise needs --snr (a value, a list or a range such as -5:5)")
    if mode == "assign":
        return assign_noise(ds, kinds, snrs, seed=seed)
    if mode == "sweep":
        return noise_sweep(ds, kinds, snrs, seed=seed, include_clean=True)
    raise InputError(f"unknown noise mode '{mode}'; use assign or sweep")


def synth(out, *, windows_per_class=500, recordings_per_class=None, classes=None, seed=0,
          condition="nominal", split=(0.7, 0.15, 0.15), noise=(), snr=None, noise_mode="assign",
          progress=None) -> dict:
    from .simulator import synthesize

    out = _check_out(out)
    ds = synthesize(windows_per_class=windows_per_class, recordings_per_class=recordings_per_class,
                    classes=classes, seed=seed, condition=condition, split=split, progress=progress)
    ds = apply_noise(ds, list(noise), snr, noise_mode, seed + 1)
    ds.generator = "drsn-edge " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "synthesize()"
    ds.params.update({"noise": list(noise), "snr_db": list(snr or []), "noise_mode": noise_mode})
    man = save_dataset(ds, out)
    return {"out": str(out), **man}


def import_files(out, sources, *, noise=(), snr=None, noise_mode="assign", seed=0, progress=None, **kwargs) -> dict:
    from .importers import import_dataset

    out = _check_out(out)
    ds = import_dataset(list(sources), seed=seed, progress=progress, **kwargs)
    ds = apply_noise(ds, list(noise), snr, noise_mode, seed + 1)
    man = save_dataset(ds, out)
    return {"out": str(out), **man}


def merge_files(out, inputs) -> dict:
    """`data merge A.npz B.npz -o C.npz`: recording ids become '<file stem>:<id>' (the file's path when stems clash)."""
    from .dataset import merge

    out = _check_out(out)
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise InputError("data merge needs at least one dataset")
    stems = [p.stem for p in inputs]
    names = stems if len(set(stems)) == len(stems) else [p.as_posix() for p in inputs]
    ds = merge([load_dataset(p) for p in inputs], names)
    ds.params["sources"] = [str(p) for p in inputs]
    man = save_dataset(ds, out)
    return {"out": str(out), **man}


def info(path) -> dict:
    ds = load_dataset(path)
    man = ds.manifest()
    man["path"] = str(path)
    stats = ds.x.reshape(len(ds), -1)
    man["signal"] = {"rms_mean": float(np.sqrt((stats.astype(np.float64) ** 2).mean(axis=1)).mean()) if len(ds) else None}
    return man
