"""Calibration sets: a few hundred real windows, stratified by class, noise type and SNR, drawn from
recordings that are not in the test split. Stored in the dataset format (split = 'calib') with
provenance in the manifest."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import numpy as np

from .data.dataset import Dataset, load_dataset, save_dataset
from .errors import InputError

MIN_RECOMMENDED = 128


def default_calibration_path() -> Path:
    env = os.environ.get("DRSN_EDGE_CALIBRATION_DIR")
    folder = Path(env) if env else Path(__file__).resolve().parents[1] / "calibration"
    return folder / "default.npz"


def load_calibration(path: str | Path) -> Dataset:
    ds = load_dataset(path)
    if len(ds) == 0:
        raise InputError(f"calibration set '{path}' is empty; make one with 'drsn-edge calibration make'")
    return ds


def resolve_calibration(path: str | Path | None) -> tuple[Dataset, str]:
    path = Path(path) if path else default_calibration_path()
    if not path.exists():
        raise InputError(f"calibration set '{path}' does not exist; make one with 'drsn-edge calibration make'")
    return load_calibration(path), str(path)


def check_against_model(meta: dict, cal: Dataset) -> list[str]:
    """Refuse calibration data that does not match the model; return warnings."""
    from .evaluate import check_compatible

    try:
        cal = check_compatible(meta, cal)
    except InputError as exc:
        raise InputError(f"calibration set does not match the model: {exc}") from None
    warnings = []
    if len(cal) < MIN_RECOMMENDED:
        warnings.append(f"only {len(cal)} calibration windows; at least {MIN_RECOMMENDED} are recommended")
    missing = [cal.class_names[k] for k in range(len(cal.class_names)) if not (cal.y == k).any()]
    if missing:
        warnings.append(f"calibration set has no windows of class(es) {', '.join(missing)}")
    return warnings


def model_and_calibration(model=None, calib=None):
    """Load a bundle (default: shipped) and a calibration set (default: shipped) that matches it.
    Returns (bundle, model_path, calibration, calibration_path, warnings, normalized calibration windows)."""
    from .data.dataset import normalize
    from .evaluate import resolve_model

    bundle, model_path = resolve_model(model)
    cal, cal_path = resolve_calibration(calib)
    warnings = check_against_model(bundle.meta, cal)
    return bundle, model_path, cal, cal_path, warnings, normalize(cal.x, bundle.normalization)


def make_calibration(data, out, n: int = 512, seed: int = 0, noise=("gaussian", "laplacian", "pink"),
                     snrs=tuple(float(s) for s in range(-5, 6)), include_clean: bool = True) -> dict:
    """Draw `n` windows from the non-test recordings of `data`, stratified by class and noise cell."""
    from .data.noise import add_noise

    out = Path(out)
    if out.suffix != ".npz":
        raise InputError(f"calibration sets end in .npz, got '{out.name}'")
    if n < 1:
        raise InputError(f"--n must be at least 1, got {n}")
    src = load_dataset(data)
    pool = src.subset(np.flatnonzero(src.split != "test"))
    if len(pool) == 0:
        raise InputError(f"'{data}' has no windows outside the test split to calibrate with")
    rng = np.random.default_rng(seed)
    already_noisy = (pool.noise != "none").any()
    cells = [("none", np.nan)] if include_clean or not noise else []
    if not already_noisy:
        # interleave noise types within shuffled SNRs so any prefix of the list is balanced by type
        cells += [(k, float(snrs[j])) for j in rng.permutation(len(snrs)) for k in noise]
    k = len(src.class_names)
    per_class = np.full(k, n // k)
    per_class[: n % k] += 1
    picks, kinds, levels = [], [], []
    for c in range(k):
        idx = np.flatnonzero(pool.y == c)
        if len(idx) == 0 or per_class[c] == 0:
            continue
        # one window from every recording first, then a second from each, ...
        perm = rng.permutation(idx)
        rank, seen = np.zeros(len(perm), dtype=np.int64), {}
        for i, rec in enumerate(pool.recording[perm]):
            rank[i] = seen.get(rec, 0)
            seen[rec] = rank[i] + 1
        order = perm[np.argsort(rank, kind="stable")]
        take = order[np.arange(per_class[c]) % len(order)]
        picks.append(take)
        start = int(rng.integers(len(cells)))
        cell_idx = rng.permutation((start + np.arange(len(take))) % len(cells))
        kinds += [cells[j][0] for j in cell_idx]
        levels += [cells[j][1] for j in cell_idx]
    if not picks:
        raise InputError(f"'{data}' gave no calibration windows")
    take = np.concatenate(picks)
    cal = pool.subset(take)
    kinds_a, levels_a = np.array(kinds), np.array(levels, dtype=np.float32)
    if not already_noisy:
        for kind in set(kinds) - {"none"}:
            m = kinds_a == kind
            cal.x[m] = add_noise(cal.x[m], kind, levels_a[m], rng)
        cal.noise, cal.snr_db = kinds_a, levels_a
    cal.split = np.full(len(cal), "calib")
    cal.source = "calibration"
    cal.generator = ("drsn-edge " + " ".join(shlex.quote(a) for a in sys.argv[1:])) if sys.argv[1:] else "make_calibration()"
    from .fileio import sha256_file

    cal.params = {
        "provenance": {"dataset": str(data), "dataset_sha256": sha256_file(data), "dataset_source": src.source,
                       "dataset_generator": src.generator, "splits_used": sorted(set(pool.split.tolist())),
                       "recordings": int(len(np.unique(cal.recording)))},
        "seed": seed, "n": int(len(cal)), "stratified_by": ["class", "noise", "snr_db"],
        "noise": list(noise), "snr_db": list(snrs), "include_clean": include_clean,
    }
    man = save_dataset(cal, out)
    warnings = [f"only {len(cal)} calibration windows; at least {MIN_RECOMMENDED} are recommended"] \
        if len(cal) < MIN_RECOMMENDED else []
    return {"out": str(out), **man, "warnings": warnings}


def info(path) -> dict:
    ds = load_calibration(path)
    man = ds.manifest()
    man["path"] = str(path)
    from .fileio import sha256_file

    man["sha256"] = sha256_file(path)
    return man
