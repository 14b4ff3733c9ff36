"""Accuracy of a model on a dataset: overall, per class, per noise type × SNR, confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from .data.dataset import Dataset, normalize
from .data.noise import noise_sweep
from .errors import InputError


def predict_logits(model, x: np.ndarray, batch: int = 512) -> np.ndarray:
    """Run a torch model on already-normalized windows [N,1,L] and return float32 logits."""
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            out.append(model(torch.from_numpy(np.ascontiguousarray(x[i : i + batch]))).numpy())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    logits = np.concatenate(out).astype(np.float32)
    if not np.isfinite(logits).all():
        raise InputError("the model gave non-finite outputs on these windows; check the data (its scale) and the model")
    return logits


def accuracy_report(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str],
                    noise: np.ndarray, snr_db: np.ndarray) -> dict:
    """Accuracy overall, per class and per noise × SNR cell, plus the confusion matrix (rows = truth)."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    k = len(class_names)
    n = int(len(y_true))
    if n == 0:
        raise InputError("no windows to evaluate")
    conf = np.zeros((k, k), dtype=np.int64)
    np.add.at(conf, (y_true, y_pred), 1)
    correct = y_true == y_pred
    per_class = {}
    for i, name in enumerate(class_names):
        m = y_true == i
        if m.any():
            per_class[name] = float(correct[m].mean())
    per_snr: dict[str, dict[str, float]] = {}
    counts: dict[str, dict[str, int]] = {}
    for kind in sorted(set(np.asarray(noise).tolist())):
        mk = noise == kind
        if kind == "none":
            per_snr.setdefault("none", {})["clean"] = float(correct[mk].mean())
            counts.setdefault("none", {})["clean"] = int(mk.sum())
            continue
        for snr in sorted({float(s) for s in snr_db[mk]}):
            m = mk & (snr_db == snr)
            key = f"{snr:g}"
            per_snr.setdefault(kind, {})[key] = float(correct[m].mean())
            counts.setdefault(kind, {})[key] = int(m.sum())
    return {
        "accuracy": float(correct.mean()),
        "n": n,
        "per_class": per_class,
        "per_snr": per_snr,
        "per_snr_n": counts,
        "class_names": list(class_names),
        "confusion": conf.tolist(),
    }


def drop_pp(y_true: np.ndarray, ref_pred: np.ndarray, pred: np.ndarray) -> float:
    """Accuracy drop in percentage points of `pred` against `ref_pred`, from counts: 100·(k_ref − k)/n is the
    float nearest the exact value, so a drop of 1 window in 100 is exactly 1.0 and ties a threshold of 1
    (0.93 − 0.92 in floats is 0.010000000000000009)."""
    y_true = np.asarray(y_true)
    if len(y_true) == 0:
        raise InputError("no windows to compare")
    k_ref = int((np.asarray(ref_pred) == y_true).sum())
    k = int((np.asarray(pred) == y_true).sum())
    return 100 * (k_ref - k) / len(y_true)


@dataclass
class EvaluationResult:
    """A model's accuracy on one set of windows: overall, per class, per noise × SNR cell (and the window count
    of each), the confusion matrix (rows = truth), and the share its domain guard flags."""

    arch: str
    accuracy: float
    n: int
    per_class: dict
    per_snr: dict
    per_snr_n: dict
    class_names: list
    confusion: list
    classes_present: list
    domain: dict | None
    grid_mean_accuracy: float | None
    model_path: str | None = None
    data: str | None = None
    plot: str | None = None
    wall_s: float | None = None

    def to_json(self) -> dict:
        skip = {"arch", "model_path"}
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        return {"model": {"arch": self.arch, "classes": len(self.class_names), "path": self.model_path}, **d}


def evaluate(bundle, ds: Dataset, noise_kinds: list[str] | None = None, snrs: list[float] | None = None,
             seed: int = 0, include_clean: bool = True, splits: tuple[str, ...] | None = ("test",)) -> EvaluationResult:
    """Evaluate a loaded bundle on a dataset (it may hold a subset of the model's classes: per-class figures for
    those present, accuracy over them, argmax over all outputs). With noise kinds + SNRs, every window is swept."""
    ds = check_compatible(bundle.meta, ds)
    if splits:
        if not set(splits) & set(np.unique(ds.split)):
            raise InputError(f"dataset has no {'/'.join(splits)} windows; choose --split from "
                             f"{sorted(set(ds.split.tolist()))} or all")
        ds = ds.select_split(*splits)
    if noise_kinds and snrs:
        ds = noise_sweep(ds, noise_kinds, snrs, seed=seed, include_clean=include_clean)
    from .guard import window_level

    xn = normalize(ds.x, bundle.normalization)
    logits = predict_logits(bundle.model, xn)
    rep = accuracy_report(ds.y, logits.argmax(1), bundle.class_names, ds.noise, ds.snr_db)
    return EvaluationResult(arch=bundle.arch, **rep, grid_mean_accuracy=grid_mean(rep),
                            classes_present=[bundle.class_names[k] for k in sorted(set(ds.y.tolist()))],
                            domain=domain_report(bundle, xn, ds.noise, ds.snr_db, window_level(ds.x)))


def domain_report(bundle, xn: np.ndarray, noise: np.ndarray, snr_db: np.ndarray,
                  level: np.ndarray | None = None) -> dict | None:
    """Share of windows the model's domain guard flags as unlike its training data (None without a guard);
    `level`: the raw windows' levels (guard.window_level), checked against the guard's level range."""
    from .guard import from_meta, guard_scores, summary

    g = from_meta(bundle.meta)
    if g is None:
        return None
    _, ind = guard_scores(bundle, xn, level)
    return {**summary(ind, noise, snr_db), "threshold": g.threshold, "quantile": g.quantile,
            **_level_fields(g.level, level, len(xn))}


def _level_fields(level_range: dict | None, level: np.ndarray | None, n: int) -> dict:
    """The guard's raw level range and the share of windows outside it (None where either is unknown)."""
    from .guard import level_ok

    known = level_range is not None and level is not None and n > 0
    return {"level_range": [level_range["lo"], level_range["hi"]] if level_range else None,
            "outside_level_range_share": float((~level_ok(level_range, level, n)).mean()) if known else None}


def artifact_domain_report(bundle, art: tuple | None, xn: np.ndarray, noise: np.ndarray, snr_db: np.ndarray,
                           level: np.ndarray | None = None) -> dict | None:
    """The out-of-domain share measured by the artifact's own guard (`art` = (score, in_domain) from its runner,
    level range included), with its agreement with the float model's guard on the same windows; the float
    guard's report where the artifact carries none."""
    from .guard import from_meta, guard_scores, summary
    from .guard_export import agreement

    g = from_meta(bundle.meta)
    if art is None:
        rep = domain_report(bundle, xn, noise, snr_db, level)
        return {**rep, "measured_on": "float model (host)"} if rep else None
    score, ok = art
    rep = {**summary(ok, noise, snr_db), "measured_on": "artifact", "threshold": g.threshold if g else None,
           **_level_fields(g.level if g else None, level, len(xn))}
    if g is not None:
        ref_score, ref_ok = guard_scores(bundle, xn, level)
        rep["float_guard"] = {"out_of_domain_share": float((~ref_ok).mean()) if len(ref_ok) else 0.0,
                              **agreement(score, ok, ref_score, ref_ok, g.threshold),
                              "tolerance": "int8 features move the score by a few per cent: flags may differ near "
                                           "the threshold, not far from it"}
    return rep


def check_compatible(meta: dict, ds: Dataset) -> Dataset:
    """Refuse a dataset whose sample rate, window or normalization differ from the model's, or that holds a class
    the model does not know; return it labelled in the model's class order (a subset of classes is fine)."""
    from .data.dataset import align_classes

    if abs(float(ds.fs) - float(meta["fs"])) > 1e-6:
        raise InputError(f"dataset sample rate {ds.fs:g} Hz differs from the model's {meta['fs']:g} Hz; resample on import")
    if int(ds.window) != int(meta["window"]):
        raise InputError(f"dataset window {ds.window} differs from the model's {meta['window']}")
    if ds.normalization != meta["normalization"]:
        raise InputError(f"dataset normalization {ds.normalization} differs from the model's {meta['normalization']}")
    return align_classes(ds, list(meta["class_names"]), what=f"dataset (classes {ds.class_names})")


def grid_mean(report: dict) -> float | None:
    """Mean accuracy over the noisy cells (each noise type × SNR weighted equally)."""
    vals = [v for kind, cells in report["per_snr"].items() if kind != "none" for v in cells.values()]
    return float(np.mean(vals)) if vals else None


def resolve_model(path=None):
    """Load a bundle, or the shipped default when no path is given."""
    from .bundle import default_model_path, load_bundle

    if path is None:
        path = default_model_path()
        if not path.exists():
            raise InputError("the shipped default model is missing from this installation; reinstall drsn-edge or pass a .drsn file")
    return load_bundle(path), str(path)


def fresh_test_set(meta: dict, windows_per_class: int, seed: int, condition: str = "nominal") -> Dataset:
    """Simulated recordings the shipped model never saw (own seed), with the model's classes."""
    from .data.simulator import CLASS_NAMES, synthesize

    unknown = [c for c in meta["class_names"] if c not in CLASS_NAMES]
    if unknown:
        raise InputError(f"the model's classes {unknown} are not simulated; pass --data with labelled windows")
    return synthesize(windows_per_class=windows_per_class, classes=meta["class_names"], seed=seed,
                      condition=condition, split=(0.0, 0.0, 1.0), fs=meta["fs"], window=meta["window"])


def run_evaluation(model=None, data=None, noise_kinds=None, snrs=None, seed=0, split="test",
                   windows_per_class=40, condition="nominal", plot=None) -> EvaluationResult:
    """The `evaluate` command: load, pick or simulate data, evaluate, optionally plot. Without --data the
    simulated test set is swept over every noise type at −5…5 dB unless noise_kinds/snrs say otherwise."""
    import time

    from .data.dataset import load_dataset
    from .data.noise import parse_noise, parse_snr

    if data is None:
        noise_kinds = parse_noise("all") if noise_kinds is None else noise_kinds
        snrs = parse_snr("-5:5") if snrs is None else snrs

    t0 = time.perf_counter()
    bundle, model_path = resolve_model(model)
    if plot:
        from .outputs import guard_file

        guard_file(plot, [model_path, data], flag="--plot")
    if data is None and not simulated_classes(bundle.meta):
        ds, source = recorded_test_windows(bundle.meta)
    elif data is None:
        ds = fresh_test_set(bundle.meta, windows_per_class, seed=100_000 + seed, condition=condition)
        source = f"simulated ({condition}, {windows_per_class} windows/class, seed {100_000 + seed})"
    else:
        ds = load_dataset(data)
        source = str(data)
    splits = tuple(s for s in split.split(",") if s) if split and split != "all" else None
    result = evaluate(bundle, ds, noise_kinds, snrs, seed=seed, splits=splits)
    result.model_path, result.data = model_path, source
    if plot:
        from .plots import evaluation_figure

        result.plot = str(evaluation_figure(result.to_json(), plot, title=f"{bundle.arch} on {source}"))
    result.wall_s = time.perf_counter() - t0
    return result


def load_test_windows(meta: dict, data) -> tuple[Dataset, str]:
    """A user's dataset checked against the model, reduced to its test split when it has one."""
    from .data.dataset import load_dataset

    ds = check_compatible(meta, load_dataset(data))
    if (ds.split == "test").any():
        ds = ds.select_split("test")
    return ds, str(data)


def simulated_classes(meta: dict) -> bool:
    from .data.simulator import CLASS_NAMES

    return all(c in CLASS_NAMES for c in meta["class_names"])


def recorded_data(meta: dict) -> str:
    """Path of the model's training data as recorded in its bundle, checked to be the same file (sha256)."""
    from pathlib import Path

    from .fileio import sha256_file

    tr = meta.get("training") or {}
    path, sha = tr.get("data"), tr.get("data_sha256")
    if not path:
        raise InputError(f"the model's classes {meta['class_names']} are not simulated and its bundle records no "
                         "labelled data; pass --data with labelled windows of its classes")
    if not Path(path).is_file():
        raise InputError(f"the model's training data '{path}' (whose test split it is evaluated on) is gone; "
                         "pass --data with labelled windows of its classes")
    if sha and sha256_file(path) != sha:
        raise InputError(f"'{path}' changed since the model was trained (sha256 differs), so its test split is not "
                         "the recorded one; pass --data with labelled windows of its classes")
    return path


def recorded_test_windows(meta: dict) -> tuple[Dataset, str]:
    """The labelled test split recorded in the bundle at training time (the training file's path, sha256 and
    test recording ids), for models whose classes the simulator cannot make. Refuses a missing or changed file."""
    from .data.dataset import load_dataset

    ids = (meta.get("training") or {}).get("test_recordings")
    if not ids and not (meta.get("training") or {}).get("data"):
        raise InputError(f"the model's classes {meta['class_names']} are not simulated and its bundle records no "
                         "labelled test split; pass --data with labelled windows of its classes")
    path = recorded_data(meta)
    ds = check_compatible(meta, load_dataset(path))
    if not ids:  # a bundle that records its training data but not the test recordings: the data's test split
        if not (ds.split == "test").any():
            raise InputError(f"'{path}', the model's training data, has no test split; pass --data")
        return ds.select_split("test"), f"test split of {path} recorded in the model"
    keep = np.isin(ds.recording, np.asarray(ids, dtype=str))
    if not keep.any():
        raise InputError(f"'{path}' holds none of the model's recorded test recordings; pass --data")
    return ds.subset(keep), f"test split of {path} recorded in the model ({len(ids)} recording(s))"


def val_windows(meta: dict, data=None) -> tuple[Dataset, str]:
    """Windows for choosing among candidates without touching the test split: the val split of `data`, else of
    the model's recorded training data."""
    from .data.dataset import load_dataset

    if data is not None:
        ds = check_compatible(meta, load_dataset(data))
        if (ds.split == "val").any():
            return ds.select_split("val"), f"val split of {data}"
    if (meta.get("training") or {}).get("data"):
        path = recorded_data(meta)
        ds = check_compatible(meta, load_dataset(path))
        if (ds.split == "val").any():
            return ds.select_split("val"), f"val split of {path} (the model's training data)"
    raise InputError("no validation windows to choose the calibration method with (no val split in --data or in "
                     "the model's training data); pass --data with a val split or choose --method")
