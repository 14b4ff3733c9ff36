"""Import recorded vibration signals (CWRU .mat, CSV, NPY/NPZ, WAV) into a `Dataset`.

Every file is one recording. Its id is its path relative to the common root of the sources, so ids
stay the same between imports. Labels come from the parent folder's name or from a label map
(file-name glob → class). Signals are resampled to `target_fs`, cut into windows, and the splits are
assigned per recording, stratified by class, so no recording leaks across train/val/test.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import InputError
from .dataset import Dataset
from .simulator import split_counts
from .windowing import resample, window_signal

SUPPORTED_SUFFIXES = (".mat", ".csv", ".npy", ".npz", ".wav")
CHANNELS = ("DE", "FE", "BA")
SPLIT_NAMES = ("train", "val", "test")
SPLIT_BY = ("recording", "time")
MIN_WINDOW = 64
_HEADER_LABEL_CELLS = {"label", "class", "class_name", "classname"}


@dataclass
class _Source:
    """One recording file before its signal is read."""

    rid: str
    path: Path
    label: str = ""
    info: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- files


def find_files(sources: Sequence[str | os.PathLike] | str | os.PathLike) -> tuple[list[Path], Path]:
    """Supported files under `sources` (folders walked recursively, sorted) and their common root."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    sources = [Path(s) for s in sources]
    if not sources:
        raise InputError("no sources given; pass one or more files or folders with recordings")
    files: list[Path] = []
    roots: list[Path] = []
    for src in sources:
        if not src.exists():
            raise InputError(f"source '{src}' does not exist; check the path")
        if src.is_dir():
            found = sorted(
                (p for p in src.rglob("*")
                 if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES and not p.name.startswith(".")),
                key=lambda p: p.relative_to(src).as_posix(),
            )
            if not found:
                raise InputError(
                    f"folder '{src}' holds no supported files ({', '.join(SUPPORTED_SUFFIXES)}); "
                    "point to the folder with the recordings"
                )
            files += found
            roots.append(src.resolve())
        else:
            if src.suffix.lower() not in SUPPORTED_SUFFIXES:
                raise InputError(
                    f"'{src}' has unsupported file type '{src.suffix or '(none)'}'; "
                    f"import {', '.join(SUPPORTED_SUFFIXES)} files"
                )
            files.append(src)
            roots.append(src.resolve().parent)
    unique: dict[Path, Path] = {}
    for f in files:
        unique.setdefault(f.resolve(), f)
    root = Path(os.path.commonpath([str(r) for r in roots]))
    return list(unique), root


def _recording_id(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


# --------------------------------------------------------------------------------------------- labels


def load_label_map(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(glob pattern, class name) pairs, in file order, from a JSON object or a 2-column CSV."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"label map '{path}' does not exist; give a JSON object or 2-column CSV of pattern → class")
    try:
        from ..limits import JSON_CAP, read_capped

        text = read_capped(path, JSON_CAP, "label map").decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read label map '{path}' ({exc})") from exc
    pairs = _label_pairs_json(text, path) if path.suffix.lower() == ".json" else _label_pairs_csv(text, path)
    if not pairs:
        raise InputError(f"label map '{path}' is empty; add pattern → class entries")
    for pattern, label in pairs:
        if not pattern or not label:
            raise InputError(f"label map '{path}' has an empty pattern or class ('{pattern}' → '{label}')")
    return pairs


def _label_pairs_json(text: str, path: Path) -> list[tuple[str, str]]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"label map '{path}' is not valid JSON ({exc})") from exc
    if not isinstance(obj, dict) or not all(isinstance(v, str) for v in obj.values()):
        raise InputError(f"label map '{path}' must be a JSON object of \"pattern\": \"class\" strings")
    return [(str(k).strip(), v.strip()) for k, v in obj.items()]


def _label_pairs_csv(text: str, path: Path) -> list[tuple[str, str]]:
    pairs = []
    for lineno, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if len(cells) != 2:
            raise InputError(f"label map '{path}' line {lineno} has {len(cells)} columns; use 'pattern,class'")
        if not pairs and cells[1].lower() in _HEADER_LABEL_CELLS:
            continue  # header row
        pairs.append((cells[0], cells[1]))
    return pairs


def label_for(rid: str, path: Path, patterns: list[tuple[str, str]] | None, map_name: str = "") -> str:
    """The class of one file: first label-map pattern matching its relative path or name, else its folder."""
    if patterns is None:
        return path.resolve().parent.name
    for pattern, label in patterns:
        if fnmatchcase(rid, pattern) or fnmatchcase(path.name, pattern):
            return label
    raise InputError(
        f"file '{rid}' matches no pattern in label map '{map_name}'; add a pattern for it or leave the file out"
    )


def _resolve_classes(labels: list[str], rids: list[str], class_names: Sequence[str] | None) -> list[str]:
    if class_names is None:
        return sorted(set(labels))
    names = [str(c) for c in class_names]
    dupes = sorted(c for c, k in Counter(names).items() if k > 1)
    if dupes:
        raise InputError(f"class_names lists {dupes} more than once; give each class once")
    unknown = sorted(set(labels) - set(names))
    if unknown:
        example = rids[labels.index(unknown[0])]
        raise InputError(
            f"label(s) {unknown} (e.g. file '{example}') are not in class_names {names}; "
            "add them to class_names or fix the labels"
        )
    unused = [c for c in names if c not in set(labels)]
    if unused:
        raise InputError(f"class(es) {unused} in class_names have no file; add recordings for them or drop them")
    return names


# --------------------------------------------------------------------------------------------- splits


def _check_split(split: Sequence[float]) -> tuple[float, float, float]:
    try:
        fr = tuple(float(v) for v in split)
    except (TypeError, ValueError) as exc:
        raise InputError(f"split must be three numbers (train, val, test), got {split!r}") from exc
    if len(fr) != 3 or min(fr) < 0 or not all(math.isfinite(v) for v in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise InputError(f"split fractions (train, val, test) must be ≥ 0 and sum to 1, got {split!r}")
    return fr  # type: ignore[return-value]


def assign_splits(
    labels: dict[str, str], class_names: Sequence[str], split: Sequence[float], seed: int = 0
) -> dict[str, str]:
    """Split name per recording id: per class, recordings (sorted) are shuffled with `seed` and divided."""
    fr = _check_split(split)
    rng = np.random.default_rng(seed)
    out: dict[str, str] = {}
    for name in class_names:
        rids = sorted(r for r, lab in labels.items() if lab == name)
        counts = split_counts(len(rids), fr, what=f"class '{name}'")
        rec_split = np.repeat(np.arange(3), counts)[rng.permutation(len(rids))]
        out.update({rid: SPLIT_NAMES[int(s)] for rid, s in zip(rids, rec_split)})
    return out


def time_cuts(n_samples: int, fractions: Sequence[float]) -> tuple[int, int]:
    """Sample indices where a recording of `n_samples` is cut into train | val | test (rounded)."""
    c1 = int(round(fractions[0] * n_samples))
    c2 = int(round((fractions[0] + fractions[1]) * n_samples))
    return c1, c2


def time_segments(n_samples: int, fractions: Sequence[float], window: int, rid: str) -> list[tuple[str, int, int]]:
    """(split, start, stop) of the contiguous segments of one recording; every split with a non-zero fraction
    must hold at least one whole window (windows never cross a cut)."""
    c1, c2 = time_cuts(n_samples, fractions)
    out = []
    for name, start, stop, fr in zip(SPLIT_NAMES, (0, c1, c2), (c1, c2, n_samples), fractions):
        if fr <= 0:
            continue
        if stop - start < window:
            raise InputError(
                f"'{rid}': its {name} segment ({stop - start} samples, {100 * fr:g} % of {n_samples}) is shorter "
                f"than one window of {window} points; use a longer recording, a smaller window or other fractions"
            )
        out.append((name, start, stop))
    return out


def single_class_warning(classes: list[str], patterns) -> list[str]:
    """Without a label map, a folder of files all gets the folder's name as its class: say so."""
    if patterns is None and len(classes) == 1:
        return [f"every file got the class '{classes[0]}' (its folder's name); to import several classes, put each "
                "class in its own sub-folder or pass a label map (--labels)"]
    return []


# -------------------------------------------------------------------------------------------- readers


def _as_signal(arr: np.ndarray, rid: str, what: str) -> np.ndarray:
    """A real numeric 1-D float64 signal (column/row vectors are flattened)."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "iuf":
        raise InputError(f"'{rid}' {what} has non-numeric type {arr.dtype}; store the signal as real numbers")
    if arr.ndim != 1:
        if sum(d > 1 for d in arr.shape) > 1:
            raise InputError(
                f"'{rid}' {what} has shape {list(arr.shape)}; store one 1-D signal per file (or pick a column)"
            )
        arr = arr.reshape(-1)
    return arr.astype(np.float64)


def _file_numbers(stem: str) -> set[int]:
    return {int(d) for d in re.findall(r"\d+", stem)}


def _read_mat(path: Path, rid: str, channel: str, column) -> tuple[np.ndarray, dict]:
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
    except NotImplementedError as exc:
        raise InputError(
            f"'{rid}' is a MATLAB v7.3 (HDF5) file, which cannot be read here; re-save it with save(..., '-v7')"
        ) from exc
    except Exception as exc:  # scipy raises several types for corrupt files
        raise InputError(f"cannot read '{rid}' as a MATLAB .mat file ({type(exc).__name__}: {exc})") from exc
    keys = sorted(k for k in mat if not k.startswith("__"))
    info: dict = {}
    if column is not None:
        key = str(column)
        if key not in mat:
            raise InputError(f"'{rid}' has no key '{key}'; its keys are {keys}")
    else:
        pat = re.compile(rf"^X(\d+)_{channel}_time$")
        prefixes = sorted({m.group(1) for k in keys if (m := pat.match(k))}, key=lambda p: (int(p), p))
        if not prefixes:
            raise InputError(
                f"'{rid}' has no {channel} channel (no 'X<nnn>_{channel}_time' key); its keys are {keys}; "
                "choose another channel (DE, FE, BA) or name a key with column=..."
            )
        numbers = _file_numbers(path.stem)
        prefix = next((p for p in prefixes if int(p) in numbers), prefixes[0])
        key = f"X{prefix}_{channel}_time"
        rpm = mat.get(f"X{prefix}RPM")
        if rpm is not None and np.asarray(rpm).dtype.kind in "iuf" and np.asarray(rpm).size:
            info["rpm"] = float(np.asarray(rpm).reshape(-1)[0])
    info["key"] = key
    return _as_signal(mat[key], rid, f"key '{key}'"), info


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _pick_column(column, header: list[str] | None, ncol: int, rid: str) -> int:
    names = header if header is not None else [str(i) for i in range(ncol)]
    if column is None:
        if ncol == 1:
            return 0
        raise InputError(f"'{rid}' has {ncol} columns {names}; pick one with column=<name or index>")
    if isinstance(column, str) and header is not None and column.strip() in header:
        return header.index(column.strip())
    if isinstance(column, str) and header is not None:
        lowered = [h.lower() for h in header]
        if column.strip().lower() in lowered:
            return lowered.index(column.strip().lower())
    try:
        idx = int(column)
    except (TypeError, ValueError):
        raise InputError(f"'{rid}' has no column '{column}'; its columns are {names}") from None
    if not 0 <= idx < ncol:
        raise InputError(f"column index {idx} is out of range for '{rid}', which has {ncol} column(s) {names}")
    return idx


def _csv_delimiter(line: str) -> str:
    counts = {d: line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _read_csv(path: Path, rid: str, column) -> tuple[np.ndarray, dict]:
    try:
        from ..limits import memory_budget, read_capped

        text = read_capped(path, memory_budget() // 16, "CSV recording").decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read '{rid}' as a text CSV file ({exc})") from exc
    numbered = [(i, ln) for i, ln in enumerate(text.splitlines(), start=1) if ln.strip()]
    if not numbered:
        raise InputError(f"'{rid}' is empty; a CSV recording needs one numeric column of samples")
    delim = _csv_delimiter(numbered[0][1])
    reader = csv.reader([ln for _, ln in numbered], delimiter=delim)
    rows = [(lineno, [c.strip() for c in row]) for (lineno, _), row in zip(numbered, reader)]
    header = None
    if not all(_is_number(c) for c in rows[0][1]):
        header, rows = rows[0][1], rows[1:]
    ncol = len(header) if header is not None else len(rows[0][1])
    idx = _pick_column(column, header, ncol, rid)
    values = np.empty(len(rows), dtype=np.float64)
    for k, (lineno, cells) in enumerate(rows):
        if len(cells) != ncol:
            raise InputError(f"'{rid}' line {lineno} has {len(cells)} columns, expected {ncol}; fix the CSV")
        try:
            values[k] = float(cells[idx])
        except ValueError:
            raise InputError(f"'{rid}' line {lineno} has a non-numeric value '{cells[idx]}'; fix the CSV") from None
    info = {"column": header[idx] if header is not None else idx}
    return values, info


def _read_npy(path: Path, rid: str) -> tuple[np.ndarray, dict]:
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # object arrays raise ValueError, corrupt files several types
        raise InputError(f"cannot read '{rid}' as a .npy array ({type(exc).__name__}: {exc})") from exc
    return _as_signal(arr, rid, "array"), {}


def _read_npz(path: Path, rid: str, column) -> tuple[np.ndarray, dict]:
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.files)
            if column is not None:
                key = str(column)
                if key not in keys:
                    raise InputError(f"'{rid}' has no array '{key}'; its arrays are {keys}")
            elif len(keys) == 1:
                key = keys[0]
            else:
                raise InputError(f"'{rid}' holds {len(keys)} arrays {keys}; pick one with column=<name>")
            arr = z[key]
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read '{rid}' as a .npz archive ({type(exc).__name__}: {exc})") from exc
    return _as_signal(arr, rid, f"array '{key}'"), {"key": key}


def _pcm_to_float(data: np.ndarray) -> np.ndarray:
    if data.dtype.kind == "u":
        half = float(2 ** (8 * data.dtype.itemsize - 1))
        return (data.astype(np.float64) - half) / half
    if data.dtype.kind == "i":
        return data.astype(np.float64) / float(2 ** (8 * data.dtype.itemsize - 1))
    return data.astype(np.float64)


def _read_wav(path: Path, rid: str, column) -> tuple[np.ndarray, float, dict]:
    from scipy.io import wavfile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", wavfile.WavFileWarning)
            rate, data = wavfile.read(str(path))
    except Exception as exc:
        raise InputError(f"cannot read '{rid}' as a WAV file ({type(exc).__name__}: {exc})") from exc
    sig = _pcm_to_float(np.asarray(data))
    info: dict = {"pcm": str(np.asarray(data).dtype)}
    if sig.ndim == 2:
        nch = sig.shape[1]
        try:
            ch = 0 if column is None else int(column)
        except (TypeError, ValueError):
            raise InputError(f"WAV channel must be an index 0..{nch - 1}, got column='{column}' for '{rid}'") from None
        if not 0 <= ch < nch:
            raise InputError(f"'{rid}' has {nch} channel(s); column={ch} is out of range, use 0..{nch - 1}")
        sig = sig[:, ch]
        info["wav_channel"] = ch
    return sig, float(rate), info


def read_signal(
    path: str | os.PathLike, *, fs: float | None = None, channel: str = "DE", column=None, rid: str | None = None
) -> tuple[np.ndarray, float, dict]:
    """(1-D float64 signal, its sample rate, format info) of one recording file."""
    path = Path(path)
    rid = rid or path.name
    suffix = path.suffix.lower()
    if suffix == ".wav":
        sig, rate, info = _read_wav(path, rid, column)
        if fs is not None and not math.isclose(fs, rate, rel_tol=1e-9):
            raise InputError(
                f"'{rid}' is a WAV recorded at {rate:g} Hz but fs={fs:g} was given; "
                "drop fs (WAV files carry their own rate) or import the WAV files separately"
            )
        return sig, rate, {"format": "wav", **info}
    if suffix not in SUPPORTED_SUFFIXES:
        raise InputError(f"'{rid}' has unsupported file type '{suffix}'; import {', '.join(SUPPORTED_SUFFIXES)} files")
    if fs is None:
        raise InputError(
            f"'{rid}' does not store its sample rate; pass fs=<Hz> (CWRU: 12000 or 48000 as recorded)"
        )
    if suffix == ".mat":
        sig, info = _read_mat(path, rid, channel, column)
    elif suffix == ".csv":
        sig, info = _read_csv(path, rid, column)
    elif suffix == ".npy":
        sig, info = _read_npy(path, rid)
    else:
        sig, info = _read_npz(path, rid, column)
    return sig, float(fs), {"format": suffix[1:], **info}


def _check_finite(sig: np.ndarray, rid: str) -> None:
    bad = ~np.isfinite(sig)
    if bad.any():
        raise InputError(
            f"'{rid}' contains {int(bad.sum())} NaN/inf sample(s) (first at index {int(np.argmax(bad))}); "
            "clean or trim the signal and import again"
        )


# --------------------------------------------------------------------------------------------- import


def _check_rate(value: float | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a sample rate in Hz, got {value!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"{name} must be a positive sample rate in Hz, got {value}")
    return value


def _check_args(window: int, hop: int | None, channel: str) -> tuple[int, int, str]:
    if int(window) != window or window < MIN_WINDOW:
        raise InputError(f"window must be a whole number of at least {MIN_WINDOW} points, got {window}")
    hop = int(window) if hop is None else hop
    if int(hop) != hop or hop < 1:
        raise InputError(f"hop must be a whole number of at least 1 point, got {hop}")
    ch = str(channel).upper()
    if ch not in CHANNELS:
        raise InputError(f"unknown channel '{channel}'; use one of {', '.join(CHANNELS)}")
    return int(window), int(hop), ch


def _plan_splits(recs, classes, fractions, seed: int, split_by: str) -> dict:
    """Recording id → split ("time": each recording is cut into segments later)."""
    if split_by == "time":
        return {r.rid: "time" for r in recs}
    try:
        return assign_splits({r.rid: r.label for r in recs}, classes, fractions, seed)
    except InputError as exc:
        raise InputError(f"{exc}; with one long recording per class, cut each in time with --split-by time") from None


def _read_recording(r, fs, channel, column, target_fs, window: int, common_fs):
    """One recording read, checked and resampled: (signal, source rate, (up, down), reader info, common rate)."""
    sig, rate, info = read_signal(r.path, fs=fs, channel=channel, column=column, rid=r.rid)
    _check_finite(sig, r.rid)
    if target_fs is None:
        if common_fs is None:
            common_fs = (rate, r.rid)
        elif not math.isclose(rate, common_fs[0], rel_tol=1e-9):
            raise InputError(
                f"recordings have different sample rates ({common_fs[0]:g} Hz in '{common_fs[1]}', "
                f"{rate:g} Hz in '{r.rid}'); set target_fs to resample them to one rate"
            )
        up, down = 1, 1
    else:
        sig, up, down = resample(sig, rate, target_fs)
    if sig.shape[0] < window:
        where = f" after resampling to {target_fs:g} Hz" if up != down else ""
        raise InputError(
            f"'{r.rid}' has {sig.shape[0]} samples{where} but one window is {window} points; "
            "use a smaller window or a longer recording"
        )
    return sig, rate, (up, down), info, common_fs


def import_dataset(
    sources: Sequence[str | os.PathLike] | str | os.PathLike,
    *,
    fs: float | None = None,
    target_fs: float | None = 12000.0,
    window: int = 2048,
    hop: int | None = None,
    channel: str = "DE",
    column: int | str | None = None,
    label_map: str | os.PathLike | None = None,
    class_names: Sequence[str] | None = None,
    split: Sequence[float] = (0.7, 0.15, 0.15),
    split_by: str = "recording",
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Dataset:
    """Read recordings, resample to `target_fs` (None: keep the common rate), window them and split them:
    by recording (default), or by time (`split_by="time"`: every recording cut into contiguous
    train/val/test segments, no window crossing a cut)."""
    sources = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    window, hop, channel = _check_args(window, hop, channel)
    fs = _check_rate(fs, "fs")
    target_fs = _check_rate(target_fs, "target_fs")
    fractions = _check_split(split)
    if split_by not in SPLIT_BY:
        raise InputError(f"unknown split mode '{split_by}'; use {' or '.join(SPLIT_BY)}")
    paths, root = find_files(sources)
    patterns = load_label_map(label_map) if label_map is not None else None
    recs = [_Source(rid=_recording_id(p.resolve(), root), path=p) for p in paths]
    for r in recs:
        r.label = label_for(r.rid, r.path, patterns, str(label_map))
    classes = _resolve_classes([r.label for r in recs], [r.rid for r in recs], class_names)
    notes = single_class_warning(classes, patterns)
    rec_split = _plan_splits(recs, classes, fractions, seed, split_by)
    xs, ys, rids, splits = [], [], [], []
    common_fs: tuple[float, str] | None = None
    for i, r in enumerate(recs, start=1):
        sig, rate, (up, down), info, common_fs = _read_recording(r, fs, channel, column, target_fs, window, common_fs)
        segments = (time_segments(sig.shape[0], fractions, window, r.rid) if split_by == "time"
                    else [(rec_split[r.rid], 0, sig.shape[0])])
        n_win = 0
        for name, start, stop in segments:
            w = window_signal(sig[start:stop], window, hop)
            xs.append(w)
            ys.append(np.full(len(w), classes.index(r.label), dtype=np.int64))
            rids += [r.rid if split_by != "time" else f"{r.rid}#{name}"] * len(w)
            splits += [name] * len(w)
            n_win += len(w)
        r.info = {
            "label": r.label, "split": rec_split[r.rid], "source_fs": rate, "resample": [up, down],
            "samples": int(sig.shape[0]), "windows": n_win, **info,
        }
        if split_by == "time":
            r.info["segments"] = {name: [int(a), int(b)] for name, a, b in segments}
        if progress:
            progress(i, len(recs))

    out_fs = target_fs if target_fs is not None else common_fs[0]  # type: ignore[index]
    n = len(rids)
    formats = Counter(r.info["format"] for r in recs)
    fmt_text = ", ".join(f"{k} {v}" for k, v in sorted(formats.items()))
    return Dataset(
        x=np.concatenate(xs), y=np.concatenate(ys), class_names=classes, fs=out_fs, window=window,
        noise=np.full(n, "none"), snr_db=np.full(n, np.nan, dtype=np.float32),
        recording=np.array(rids), split=np.array(splits), normalization="zscore", source="import",
        generator=(
            f"import of {len(recs)} recording(s) ({fmt_text}), channel {channel}, "
            f"window {window}, hop {hop}, {out_fs:g} Hz"
        ),
        params={
            "sources": [str(s) for s in sources], "root": str(root), "channel": channel,
            "column": column if column is None or isinstance(column, str) else int(column),
            "window": window, "hop": hop, "fs": fs, "target_fs": target_fs,
            "label_map": None if label_map is None else str(label_map), "split": list(fractions),
            "split_by": split_by, "seed": int(seed), "warnings": notes,
            "recordings": {r.rid: r.info for r in recs},
        },
    )
