"""The dataset file: one `.npz` (arrays only, loaded without pickle) plus a `.json` manifest beside it.

Arrays
  x          float32 [N, 1, L]  raw windows in the source unit (the model normalizes, see `normalize`)
  y          int64   [N]        class index into `class_names`
  noise      str     [N]        added-noise type per window: none | gaussian | laplacian | pink
  snr_db     float32 [N]        SNR of the added noise in dB (NaN where noise is none)
  recording  str     [N]        recording id; splits are by recording, never by window
  split      str     [N]        train | val | test (| calib)
Manifest (also stored inside the npz as `manifest_json`, so the npz alone is complete)
  class_names, fs, window, normalization, source, generator, params, counts, sha256 (of the npz)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fileio import atomic_path, jsonable, sha256_file, write_json

NOISE_TYPES = ("gaussian", "laplacian", "pink")
SPLITS = ("train", "val", "test", "calib")
NORMALIZATIONS = ("zscore",)
FORMAT_VERSION = 1
MAX_ABS_SAMPLE = 1e15  # 2048 squares of it still fit a float32 sum; no accelerometer reads near it


@dataclass
class Dataset:
    x: np.ndarray
    y: np.ndarray
    class_names: list[str]
    fs: float
    window: int
    noise: np.ndarray
    snr_db: np.ndarray
    recording: np.ndarray
    split: np.ndarray
    normalization: str = "zscore"
    source: str = "unknown"
    generator: str = ""
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        self.x = np.asarray(self.x, dtype=np.float32)
        self.y = np.asarray(self.y, dtype=np.int64)
        self.noise = np.asarray(self.noise, dtype="<U16")
        self.snr_db = np.asarray(self.snr_db, dtype=np.float32)
        self.recording = np.asarray(self.recording, dtype=str)
        self.split = np.asarray(self.split, dtype="<U8")
        self.class_names = [str(c) for c in self.class_names]
        self.fs = float(self.fs)
        self.window = int(self.window)
        validate(self)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, mask_or_index) -> "Dataset":
        idx = np.asarray(mask_or_index)
        return Dataset(
            x=self.x[idx].copy(), y=self.y[idx], class_names=list(self.class_names), fs=self.fs,
            window=self.window, noise=self.noise[idx], snr_db=self.snr_db[idx],
            recording=self.recording[idx], split=self.split[idx],
            normalization=self.normalization, source=self.source, generator=self.generator,
            params=dict(self.params),
        )

    def select_split(self, *names: str) -> "Dataset":
        return self.subset(np.isin(self.split, names))

    def counts(self) -> dict:
        out = {}
        for s in SPLITS:
            m = self.split == s
            if m.any():
                out[s] = {
                    "windows": int(m.sum()),
                    "recordings": int(len(np.unique(self.recording[m]))),
                    "per_class": [int(((self.y == k) & m).sum()) for k in range(len(self.class_names))],
                }
        return out

    def noise_grid(self) -> dict:
        grid: dict[str, list[float]] = {}
        for kind in np.unique(self.noise):
            m = self.noise == kind
            vals = sorted({float(v) for v in self.snr_db[m] if np.isfinite(v)})
            grid[str(kind)] = vals
        return grid

    def content_hash(self) -> str:
        """sha256 of the arrays and the fields that define them (stable across re-saves, unlike the file hash)."""
        import hashlib

        h = hashlib.sha256()
        h.update(json.dumps([self.class_names, self.fs, self.window, self.normalization]).encode())
        for arr in (self.x, self.y, self.noise, self.snr_db, self.recording, self.split):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    def manifest(self) -> dict:
        return {
            "format": "drsn-edge-dataset",
            "format_version": FORMAT_VERSION,
            "class_names": self.class_names,
            "fs": self.fs,
            "window": self.window,
            "normalization": self.normalization,
            "n": len(self),
            "source": self.source,
            "generator": self.generator,
            "params": self.params,
            "counts": self.counts(),
            "content_sha256": self.content_hash(),
            "noise_grid": self.noise_grid(),
        }


def validate(ds: Dataset) -> None:
    n = ds.y.shape[0]
    if ds.x.ndim != 3 or ds.x.shape[1] != 1:
        raise InputError(f"dataset x must have shape [N, 1, L], got {list(ds.x.shape)}")
    if ds.x.shape[0] != n:
        raise InputError(f"dataset x has {ds.x.shape[0]} windows but y has {n} labels")
    if ds.x.shape[2] != ds.window:
        raise InputError(f"dataset windows are {ds.x.shape[2]} points but the manifest says {ds.window}")
    for name in ("noise", "snr_db", "recording", "split"):
        arr = getattr(ds, name)
        if arr.shape != (n,):
            raise InputError(f"dataset field '{name}' has shape {list(arr.shape)}, expected [{n}]")
    if not ds.class_names:
        raise InputError("dataset has no class names")
    if n and (ds.y.min() < 0 or ds.y.max() >= len(ds.class_names)):
        raise InputError(f"dataset labels must be in 0..{len(ds.class_names) - 1}")
    if ds.fs <= 0 or not np.isfinite(ds.fs):
        raise InputError(f"dataset sample rate must be positive, got {ds.fs}")
    if ds.normalization not in NORMALIZATIONS:
        raise InputError(f"unknown normalization '{ds.normalization}' (known: {', '.join(NORMALIZATIONS)})")
    bad_split = set(np.unique(ds.split).tolist()) - set(SPLITS)
    if bad_split:
        raise InputError(f"unknown split name(s) {sorted(bad_split)}; use {', '.join(SPLITS)}")
    bad_noise = set(np.unique(ds.noise).tolist()) - set(NOISE_TYPES) - {"none"}
    if bad_noise:
        raise InputError(f"unknown noise type(s) {sorted(bad_noise)}")
    if not np.isfinite(ds.x).all():
        raise InputError("dataset contains NaN or inf samples; clean the source signal first")
    if ds.x.size and float(np.abs(ds.x).max()) > MAX_ABS_SAMPLE:
        raise InputError(f"dataset samples reach {float(np.abs(ds.x).max()):.3g}, beyond ±{MAX_ABS_SAMPLE:g}; float32 "
                         "normalization on a device would overflow — rescale the signal (e.g. to g or m/s²)")
    # Leakage guard: a recording belongs to exactly one split (calib may reuse training recordings).
    m = ds.split != "calib"
    pairs = np.unique(np.stack([ds.recording[m], ds.split[m]]), axis=1) if m.any() else np.zeros((2, 0), str)
    recs, counts = np.unique(pairs[0], return_counts=True)
    if (counts > 1).any():
        rec = recs[counts > 1][0]
        where = sorted(pairs[1][pairs[0] == rec])
        raise InputError(f"recording '{rec}' appears in both '{where[0]}' and '{where[1]}' splits; split by recording")


def concat(parts: list[Dataset]) -> Dataset:
    """Stack datasets that share classes, rate, window and normalization."""
    if not parts:
        raise InputError("nothing to concatenate")
    first = parts[0]
    for p in parts[1:]:
        if (p.class_names, p.fs, p.window, p.normalization) != (first.class_names, first.fs, first.window, first.normalization):
            raise InputError("cannot combine datasets with different classes, sample rate, window or normalization")
    return Dataset(
        x=np.concatenate([p.x for p in parts]), y=np.concatenate([p.y for p in parts]),
        class_names=first.class_names, fs=first.fs, window=first.window,
        noise=np.concatenate([p.noise for p in parts]), snr_db=np.concatenate([p.snr_db for p in parts]),
        recording=np.concatenate([p.recording for p in parts]), split=np.concatenate([p.split for p in parts]),
        normalization=first.normalization, source=first.source, generator=first.generator, params=first.params,
    )


def merge(parts: list[Dataset], names: list[str]) -> Dataset:
    """One dataset from several with the same rate, window and normalization. Classes are the union in order
    of first appearance; every recording id is prefixed with its source's name (`name:id`) so ids stay unique."""
    if len(parts) != len(names) or not parts:
        raise InputError("merge needs at least one dataset and one name per dataset")
    if len(set(names)) != len(names):
        raise InputError(f"merged sources need distinct names, got {names}")
    first = parts[0]
    for name, p in zip(names, parts):
        if not math.isclose(p.fs, first.fs, rel_tol=1e-9) or p.window != first.window:
            raise InputError(f"cannot merge '{name}' ({p.fs:g} Hz, window {p.window}) with '{names[0]}' "
                             f"({first.fs:g} Hz, window {first.window}); re-import with the same --target-fs and --window")
        if p.normalization != first.normalization:
            raise InputError(f"cannot merge '{name}': normalization {p.normalization} differs from {first.normalization}")
    classes: list[str] = []
    for p in parts:
        classes += [c for c in p.class_names if c not in classes]
    ys = [np.array([classes.index(c) for c in p.class_names], dtype=np.int64)[p.y] for p in parts]
    return Dataset(
        x=np.concatenate([p.x for p in parts]), y=np.concatenate(ys), class_names=classes, fs=first.fs,
        window=first.window, noise=np.concatenate([p.noise for p in parts]),
        snr_db=np.concatenate([p.snr_db for p in parts]),
        recording=np.concatenate([np.char.add(f"{n}:", p.recording.astype(str)) for n, p in zip(names, parts)]),
        split=np.concatenate([p.split for p in parts]), normalization=first.normalization, source="merge",
        generator=f"merge of {', '.join(names)}",
        params={"merged": [{"name": n, "source": p.source, "content_sha256": p.content_hash(), "windows": len(p)}
                           for n, p in zip(names, parts)]},
    )


def align_classes(ds: Dataset, class_names: list[str], what: str = "dataset") -> Dataset:
    """The same windows labelled in the order of `class_names` (e.g. a model's). The dataset may hold a subset
    of those classes; a class outside them is refused."""
    names = list(class_names)
    if list(ds.class_names) == names:
        return ds
    unknown = [c for c in ds.class_names if c not in names]
    if unknown:
        raise InputError(f"{what} has class(es) {unknown} that the model does not know (its classes: {names}); "
                         "evaluate on data of the model's classes or train/fine-tune a model that has them")
    lut = np.array([names.index(c) for c in ds.class_names], dtype=np.int64)
    out = ds.subset(np.arange(len(ds)))
    out.y = lut[ds.y] if len(ds) else ds.y
    out.class_names = names
    return out


def normalize(x: np.ndarray, method: str = "zscore", eps: float = 1e-8) -> np.ndarray:
    """Per-window normalization applied before the model (the device does the same)."""
    if method != "zscore":
        raise InputError(f"unknown normalization '{method}'")
    x = np.asarray(x, dtype=np.float64)  # float32 sums of squares overflow for samples beyond ~1e17
    mean = x.mean(axis=-1, keepdims=True)
    std = x.std(axis=-1, keepdims=True)
    return ((x - mean) / (std + eps)).astype(np.float32)


def manifest_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def save_dataset(ds: Dataset, path: str | Path) -> dict:
    """Write `path` (.npz) and its manifest atomically; returns the manifest."""
    path = Path(path)
    if path.suffix != ".npz":
        raise InputError(f"dataset files end in .npz, got '{path.name}'")
    if len(ds) == 0:
        raise InputError(f"no windows to write to '{path}'; the source gave none (recordings shorter than a window?)")
    man = ds.manifest()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(
                f, x=ds.x, y=ds.y, noise=ds.noise, snr_db=ds.snr_db, recording=ds.recording,
                split=ds.split, manifest_json=np.array(json.dumps(jsonable(man))),
            )
    man["sha256"] = sha256_file(path)
    write_json(manifest_path(path), man)
    return man


def load_dataset(path: str | Path) -> Dataset:
    path = Path(path)
    if not path.exists():
        raise InputError(f"dataset '{path}' does not exist; make one with 'drsn-edge data synth' or 'data import'")
    from ..limits import check_npz

    check_npz(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # zipfile/np errors: not a readable npz
        raise InputError(f"'{path}' is not a readable dataset .npz ({type(exc).__name__}: {exc})") from exc
    missing = {"x", "y", "manifest_json"} - set(arrays)
    if missing:
        raise InputError(f"'{path}' is not a drsn-edge dataset: missing {sorted(missing)}")
    try:
        man = json.loads(str(arrays["manifest_json"]))
        if not isinstance(man, dict):
            raise ValueError("manifest is not an object")
        if man.get("format") != "drsn-edge-dataset":
            raise InputError(f"'{path}' is not a drsn-edge dataset (format={man.get('format')!r})")
        if int(man.get("format_version", 0)) > FORMAT_VERSION:
            raise InputError(f"'{path}' uses dataset format {man['format_version']}; upgrade drsn-edge")
        n = arrays["y"].shape[0]
        if n == 0:
            raise InputError(f"'{path}' holds no windows; make it again with 'drsn-edge data synth' or 'data import'")
        return Dataset(
            x=arrays["x"], y=arrays["y"], class_names=man["class_names"], fs=man["fs"], window=man["window"],
            noise=arrays.get("noise", np.full(n, "none")),
            snr_db=arrays.get("snr_db", np.full(n, np.nan, dtype=np.float32)),
            recording=arrays.get("recording", np.arange(n).astype(str)),
            split=arrays.get("split", np.full(n, "test")),
            normalization=man.get("normalization", "zscore"), source=man.get("source", "unknown"),
            generator=man.get("generator", ""), params=man.get("params", {}),
        )
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise InputError(f"'{path}' has a corrupt or incomplete manifest ({type(exc).__name__}: {exc})") from None
