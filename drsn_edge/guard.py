"""The domain guard: is an input window like the ones the model was trained on?

A class-conditional Mahalanobis score on pooled features of the network: score(f) = min_k (f − μ_k)ᵀ Σ⁻¹ (f − μ_k),
with one covariance Σ shared by the classes. The features are a list of named taps, concatenated:
  head                 the pooled features the classifier head sees (16 values for the paper model)
  stem.absmean         mean |x| per channel of the first convolution's output (4)
  units.K.absmean      mean |x| per channel of unit K's residual branch before its soft threshold: the value
                       the threshold branch computes anyway (4, 8 or 16), where the noise the shrinkage removes
                       is still visible
Taps from several depths (a feature ensemble, Lee et al. 2018) catch shifted operating conditions that the
head alone maps onto a known class. The exported artifacts compute the same taps as extra outputs.
The threshold is a high quantile of the scores of held-out in-domain windows (clean and noisy; the largest
per-noise-cell quantile, so no SNR level is flagged more often than the quantile allows). A window above the
threshold is out of domain: the model's answer about it means little, whatever its softmax says.

Per-window normalization (z-score) erases the signal's level, and with it the one thing that tells a dead or
disconnected sensor's electrical noise from a healthy machine's broadband vibration (on the simulator, 80 % of
clean healthy windows sit inside the feature cloud of pure white noise). So the guard also keeps the range of
raw window levels (standard deviation, in the data's units) it saw in training, widened by LEVEL_MARGIN_DB on
each side; a window quieter or louder than that is out of domain. It is checked where the raw window exists,
before normalization (the host, the monitor, or the device's own sensor code).

The guard is small (K means, a D×D matrix, a threshold) and lives in the bundle's metadata, so it adds no
weights and leaves the model's tensors untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InputError

KIND = "mahalanobis-shared-cov"
HEAD = "head"  # the taps of guards stored before taps existed
DEFAULT_QUANTILE = 0.995
RIDGE = 1e-6  # relative to the mean feature variance: keeps Σ invertible when a feature is (near) constant
FIT_WINDOWS = 4000  # windows per fit (training side); more adds time, not accuracy, for 16-dim features
LEVEL_QUANTILE = 0.001  # the fitted level range spans the in-domain windows' levels from this quantile to 1 − it
LEVEL_MARGIN_DB = 6.0  # ... widened by this much on each side (a factor 2 in amplitude)


@dataclass
class Guard:
    means: np.ndarray  # [K, D]
    precision: np.ndarray  # [D, D] inverse of the shared covariance
    threshold: float
    quantile: float = DEFAULT_QUANTILE
    info: dict = field(default_factory=dict)
    taps: list = field(default_factory=lambda: [HEAD])  # named feature taps, concatenated in this order
    tap_dims: list = field(default_factory=list)  # values per tap (empty: one tap of all the dimensions)
    level: dict | None = None  # raw window level range {"lo", "hi", ...} (fit_level); None: not checked

    def __post_init__(self):  # exactly symmetric, so that its packed upper triangle (pack_symmetric) is all of it
        p = np.asarray(self.precision, dtype=np.float64)
        self.precision = (p + p.T) / 2 if p.ndim == 2 and p.shape[0] == p.shape[1] else p

    def whitening(self) -> tuple[np.ndarray, np.ndarray]:
        """(W, m) with WᵀW = Σ⁻¹ (W upper triangular, from the Cholesky factor) and m_k = W μ_k, so that
        score(f) = min_k |W f − m_k|²: one D×D product and K·D differences per window (what the devices run)."""
        lower = np.linalg.cholesky(self.precision)  # exactly symmetric (__post_init__)
        w = lower.T
        return w, self.means @ w.T

    def score(self, feats: np.ndarray) -> np.ndarray:
        """Smallest squared Mahalanobis distance to a class mean, per row of `feats` [N, D]: min_k |W f − m_k|²
        (whitening; one D×D product per window, about 20 times faster than the quadratic form per class)."""
        f = np.asarray(feats, dtype=np.float64)
        w, m = self._whitened()
        if w is None:  # a precision that is not positive definite (never fitted here): the quadratic form
            d = f[:, None, :] - self.means[None, :, :]  # [N, K, D]
            return np.einsum("nkd,de,nke->nk", d, self.precision, d).min(axis=1)
        z = f @ w.T
        return ((z[:, None, :] - m[None, :, :]) ** 2).sum(axis=2).min(axis=1)

    def _whitened(self):
        """whitening() for the current means and precision, computed once per pair of arrays."""
        key = (id(self.means), id(self.precision))
        if getattr(self, "_wkey", None) != key:
            try:
                self._wcache = self.whitening()
            except np.linalg.LinAlgError:
                self._wcache = (None, None)
            self._wkey = key
        return self._wcache

    def in_domain(self, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.score(feats)
        return s, s <= self.threshold

    def layout(self) -> dict:
        """What a runner needs besides the matrices: kind, threshold, quantile, the feature taps, the level range."""
        return {"kind": KIND, "threshold": float(self.threshold), "quantile": float(self.quantile),
                "taps": list(self.taps), "tap_dims": [int(v) for v in self.tap_dims or [self.means.shape[1]]],
                "dim": int(self.means.shape[1]), "classes": int(self.means.shape[0]), "level": self.level}

    def to_json(self) -> dict:
        return {**self.layout(), "feature": "pooled features (taps, concatenated)", "means": self.means.tolist(),
                "precision": pack_symmetric(self.precision), "info": self.info}

    @classmethod
    def from_json(cls, d: dict) -> "Guard":
        if not isinstance(d, dict) or d.get("kind") != KIND:
            raise InputError(f"unknown domain guard {d.get('kind') if isinstance(d, dict) else d!r} in the bundle")
        means, prec = np.asarray(d["means"], dtype=np.float64), unpack_symmetric(d.get("precision"))
        if means.ndim != 2 or prec.shape != (means.shape[1], means.shape[1]) or not np.isfinite(prec).all():
            raise InputError("the bundle's domain guard is malformed (means/precision shapes); fit it again")
        taps, dims = list(d.get("taps") or [HEAD]), [int(v) for v in d.get("tap_dims") or [means.shape[1]]]
        if len(taps) != len(dims) or sum(dims) != means.shape[1]:
            raise InputError("the bundle's domain guard is malformed (taps do not add up to its dimension); fit it again")
        return cls(means=means, precision=prec, threshold=float(d["threshold"]),
                   quantile=float(d.get("quantile", DEFAULT_QUANTILE)), info=dict(d.get("info", {})),
                   taps=taps, tap_dims=dims, level=checked_level(d.get("level")))


PACKED = "upper triangle, row by row, float64 little-endian, base64"


def pack_symmetric(m: np.ndarray) -> dict:
    """A symmetric matrix as its upper triangle in base64 (exact float64, a quarter of the JSON list's size)."""
    import base64

    m = np.asarray(m, dtype="<f8")
    return {"format": PACKED, "dim": int(m.shape[0]),
            "data": base64.b64encode(m[np.triu_indices(m.shape[0])].tobytes()).decode("ascii")}


def unpack_symmetric(d) -> np.ndarray:
    """pack_symmetric's matrix; a nested list (guards written before packing) is read as it is."""
    import base64
    import binascii

    if not isinstance(d, dict):
        return np.asarray(d if d is not None else [], dtype=np.float64)
    try:
        n = int(d["dim"])
        upper = np.frombuffer(base64.b64decode(d["data"], validate=True), dtype="<f8")
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise InputError(f"the bundle's domain guard is malformed (precision: {exc}); fit it again") from None
    if d.get("format") != PACKED or n < 1 or len(upper) != n * (n + 1) // 2:
        raise InputError("the bundle's domain guard is malformed (precision: wrong size or format); fit it again")
    m = np.zeros((n, n))
    m[np.triu_indices(n)] = upper
    return m + np.triu(m, 1).T


def window_level(raw: np.ndarray) -> np.ndarray:
    """The level of each raw (not normalized) window [N, ..., L]: its standard deviation, in the data's units."""
    x = np.asarray(raw, dtype=np.float64)
    return x.reshape(len(x), -1).std(axis=1) if len(x) else np.zeros(0)


def fit_level(levels: np.ndarray) -> dict:
    """The range of levels a guard accepts: the in-domain windows' LEVEL_QUANTILE … 1 − LEVEL_QUANTILE quantiles,
    widened by LEVEL_MARGIN_DB on each side."""
    v = np.asarray(levels, dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    if not len(v):
        raise InputError("the domain guard's level range needs windows with a non-zero level")
    q_lo, q_hi = (float(np.quantile(v, q)) for q in (LEVEL_QUANTILE, 1 - LEVEL_QUANTILE))
    f = 10 ** (LEVEL_MARGIN_DB / 20)
    return {"lo": q_lo / f, "hi": q_hi * f, "quantiles": [q_lo, q_hi], "quantile": LEVEL_QUANTILE,
            "margin_db": LEVEL_MARGIN_DB, "windows": int(len(v)),
            "measure": "standard deviation of the raw window (before normalization), in the data's units"}


def checked_level(d) -> dict | None:
    if d is None:
        return None
    lo, hi = (d.get(k) if isinstance(d, dict) else None for k in ("lo", "hi"))
    if not all(isinstance(v, (int, float)) and np.isfinite(v) for v in (lo, hi)) or not 0 < lo < hi:
        raise InputError("the bundle's domain guard has a malformed level range (needs 0 < lo < hi); fit it again")
    return dict(d)


def level_ok(level_range: dict | None, levels: np.ndarray | None, n: int) -> np.ndarray:
    """Per window: its raw level is inside the guard's range (every window passes when either is unknown)."""
    if level_range is None or levels is None:
        return np.ones(n, dtype=bool)
    v = np.asarray(levels, dtype=np.float64).reshape(-1)
    if len(v) != n:
        raise InputError(f"got {len(v)} window levels for {n} windows")
    return (v >= float(level_range["lo"])) & (v <= float(level_range["hi"]))


def fit(train_feats: np.ndarray, train_y: np.ndarray, held_feats: np.ndarray, held_cells: np.ndarray | None = None,
        quantile: float = DEFAULT_QUANTILE, classes: int | None = None) -> Guard:
    """Means and shared covariance from training features; the threshold from held-out in-domain features
    (the largest `quantile` over the groups in `held_cells`, e.g. one group per noise × SNR cell)."""
    x = np.asarray(train_feats, dtype=np.float64)
    y = np.asarray(train_y)
    k = int(classes if classes is not None else y.max() + 1)
    present = [c for c in range(k) if (y == c).any()]
    if not present or len(x) < 2:
        raise InputError("the domain guard needs training features of at least one class")
    means = np.zeros((k, x.shape[1]))
    centered = np.empty_like(x)
    for c in present:
        m = y == c
        means[c] = x[m].mean(axis=0)
        centered[m] = x[m] - means[c]
    cov = centered.T @ centered / max(1, len(x) - len(present))
    cov += np.eye(x.shape[1]) * RIDGE * max(float(np.trace(cov)) / x.shape[1], 1e-12)
    means = means[present] if len(present) < k else means
    g = Guard(means=means, precision=np.linalg.inv(cov), threshold=np.inf, quantile=quantile)
    held = g.score(held_feats)
    cells = np.zeros(len(held), dtype=int) if held_cells is None else np.asarray(held_cells)
    g.threshold = float(max(np.quantile(held[cells == c], quantile) for c in np.unique(cells)))
    g.info = {"train_windows": int(len(x)), "held_out_windows": int(len(held)), "classes_fitted": len(present),
              "held_out_cells": int(len(np.unique(cells)))}
    return g


def available_taps(model) -> list[str]:
    """Every tap the model offers, from the input side to the head (the default feature set)."""
    units = getattr(model, "units", None) or []
    taps = ["stem.absmean"] if getattr(model, "stem", None) is not None else []
    taps += [f"units.{k}.absmean" for k, u in enumerate(units) if getattr(u, "threshold", None) is not None]
    return taps + [HEAD]


def _tap_hook(model, tap: str, sink: list):
    """Register a hook that appends tap `tap`'s values [N, C] of each forward pass to `sink`; returns it."""
    from .models.blocks import absolute

    if tap == HEAD:
        head = getattr(model, "fc", None)
        if head is None:
            raise InputError(f"{type(model).__name__} has no classifier head 'fc' to take features from")
        return head.register_forward_pre_hook(lambda mod, args: sink.append(args[0].detach().numpy().copy()))
    if tap == "stem.absmean" and getattr(model, "stem", None) is not None:
        return model.stem.register_forward_hook(lambda mod, a, out: sink.append(absolute(out).mean(-1).numpy().copy()))
    parts = tap.split(".")
    units = getattr(model, "units", None) or []
    if len(parts) == 3 and parts[0] == "units" and parts[2] == "absmean" and parts[1].isdigit() \
            and int(parts[1]) < len(units) and getattr(units[int(parts[1])], "threshold", None) is not None:
        thr = units[int(parts[1])].threshold
        return thr.register_forward_pre_hook(lambda mod, args: sink.append(absolute(args[0]).mean(-1).numpy().copy()))
    raise InputError(f"unknown guard tap '{tap}' for {type(model).__name__}; it offers {', '.join(available_taps(model))}")


def tap_features(model, x: np.ndarray, taps, batch: int = 256) -> tuple[np.ndarray, list[int]]:
    """The named taps' values for normalized windows x [N,1,L], concatenated in order: ([N, D], dims per tap)."""
    import torch

    sinks = {t: [] for t in taps}
    hooks = [_tap_hook(model, t, sinks[t]) for t in taps]
    try:
        model.eval()
        with torch.inference_mode():
            for i in range(0, len(x), batch):
                model(torch.from_numpy(np.ascontiguousarray(x[i: i + batch], dtype=np.float32)))
    finally:
        for h in hooks:
            h.remove()
    if not len(x):
        return np.zeros((0, 0), np.float32), [0] * len(taps)
    parts = [np.concatenate(sinks[t]) for t in taps]
    return np.concatenate(parts, axis=1), [p.shape[1] for p in parts]


def guard_features(guard: "Guard", model, x: np.ndarray) -> np.ndarray:
    return tap_features(model, x, guard.taps)[0]


def pooled_features(model, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """The input of the model's classifier head (`fc`), captured with a forward hook, for normalized x [N,1,L]."""
    return tap_features(model, x, [HEAD], batch)[0]


def fit_for_model(model, train_x: np.ndarray, train_y: np.ndarray, held_x: np.ndarray, held_cells: np.ndarray,
                  classes: int, quantile: float = DEFAULT_QUANTILE, taps=None, features=None) -> Guard:
    """Fit on normalized training windows and held-out in-domain windows of a model, on the named taps
    (default: every tap the model offers). `features(x, taps) -> ([N, D], dims)` replaces the model's own
    taps (tap_features), e.g. by a deploy-form network's (deploy_tap_features)."""
    taps = list(taps) if taps else available_taps(model)
    feats = features or (lambda x, t: tap_features(model, x, t))
    train_f, dims = feats(train_x, taps)
    g = fit(train_f, train_y, feats(held_x, taps)[0], held_cells, quantile, classes)
    g.taps, g.tap_dims = taps, dims
    return g


def from_meta(meta: dict) -> Guard | None:
    d = meta.get("guard")
    return Guard.from_json(d) if d else None


FLAT_STD = 1e-3  # a z-scored window has std 1 unless the raw window was constant (then 0)
RAIL_SHARE = 0.01  # share of samples sitting exactly on the window's max or min: a saturated (clipped) sensor


def signal_flags(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flat, clipped) per normalized window [N,1,L]: checks on the signal itself, for inputs the features cannot
    tell apart (a constant window normalizes to zeros; a saturated one has many samples exactly on its rails).
    Exact repeats of the extreme value also appear in coarsely quantized data (≤ 8-bit ADCs)."""
    x = np.asarray(x).reshape(len(x), -1)
    flat = x.std(axis=1) < FLAT_STD
    on_rails = (x == x.max(axis=1, keepdims=True)).sum(axis=1) + (x == x.min(axis=1, keepdims=True)).sum(axis=1)
    clipped = ~flat & (on_rails >= max(3, RAIL_SHARE * x.shape[1]))
    return flat, clipped


def guard_scores(model_or_runner, x: np.ndarray, level: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(score, in_domain) per normalized window x [N,1,L]: in domain when the feature score is within the
    threshold, the window is neither flat nor clipped and, when the raw windows' levels are given
    (window_level), their level is in the guard's range. Takes a Bundle (or anything with `.model` and
    `.meta`), or a runner that returns the guard itself (`infer_guard(x, level) -> (score, in_domain)`)."""
    if hasattr(model_or_runner, "infer_guard"):
        return model_or_runner.infer_guard(x, level)
    meta = getattr(model_or_runner, "meta", None)
    model = getattr(model_or_runner, "model", None)
    if meta is None or model is None:
        raise InputError("guard_scores needs a model bundle (with .model and .meta) or a runner with infer_guard")
    g = from_meta(meta)
    if g is None:
        raise InputError("this model has no domain guard; fit one with `drsn-edge guard fit MODEL --data DATA`")
    score, ok = g.in_domain(guard_features(g, model, x))
    flat, clipped = signal_flags(x)
    return score, ok & ~flat & ~clipped & level_ok(g.level, level, len(x))


def summary(in_domain: np.ndarray, noise: np.ndarray | None = None, snr_db: np.ndarray | None = None) -> dict:
    """Share of out-of-domain windows, overall and per noise × SNR cell."""
    ood = ~np.asarray(in_domain, dtype=bool)
    out = {"out_of_domain_share": float(ood.mean()) if len(ood) else 0.0, "n": int(len(ood))}
    if noise is not None and snr_db is not None and len(ood):
        cells: dict = {}
        for kind in sorted(set(np.asarray(noise).tolist())):
            mk = np.asarray(noise) == kind
            if kind == "none":
                cells.setdefault("none", {})["clean"] = float(ood[mk].mean())
                continue
            for s in sorted({float(v) for v in np.asarray(snr_db)[mk]}):
                cells.setdefault(kind, {})[f"{s:g}"] = float(ood[mk & (np.asarray(snr_db) == s)].mean())
        out["per_snr"] = cells
    return out


HELD_OUT_WINDOWS = 400  # val windows per fit, each swept clean + every noise type at the recipe's SNR range


def fit_on_data(model, train_ds, held_ds, noise=("gaussian", "laplacian", "pink"), snr_min: float = -5.0,
                snr_max: float = 5.0, clean_fraction: float = 0.2, seed: int = 0,
                quantile: float = DEFAULT_QUANTILE, taps=None, features=None) -> Guard:
    """Fit on a model's training windows (clean and noisy, as in training) and its held-out windows swept clean
    and over every noise type at the low, middle and high SNR of the training range (`features`: see
    fit_for_model)."""
    from .data.dataset import normalize
    from .data.noise import noise_sweep
    from .train import augment

    rng = np.random.default_rng([seed, 4099])
    if len(train_ds) > FIT_WINDOWS:
        train_ds = train_ds.subset(np.sort(rng.choice(len(train_ds), FIT_WINDOWS, replace=False)))
    if len(held_ds) > HELD_OUT_WINDOWS:
        held_ds = held_ds.subset(np.sort(rng.choice(len(held_ds), HELD_OUT_WINDOWS, replace=False)))
    if len(train_ds) == 0 or len(held_ds) == 0:
        raise InputError("the domain guard needs training windows and held-out (val) windows")
    tx, _, _ = augment(train_ds.x, rng, list(noise), snr_min, snr_max, clean_fraction)
    snrs = sorted({float(snr_min), float((snr_min + snr_max) / 2), float(snr_max)})
    held = noise_sweep(held_ds, list(noise), snrs, seed=seed + 1) if noise else held_ds
    cells = np.char.add(held.noise.astype(str), np.char.mod("%g", np.nan_to_num(held.snr_db, nan=0.0)))
    g = fit_for_model(model, normalize(tx, train_ds.normalization), train_ds.y, normalize(held.x, held.normalization),
                      cells, classes=len(train_ds.class_names), quantile=quantile, taps=taps, features=features)
    g.level = fit_level(np.concatenate([window_level(tx), window_level(held.x)]))
    g.info.update({"noise": list(noise), "snr_range": [float(snr_min), float(snr_max)], "held_out_snrs": snrs,
                   "seed": int(seed)})
    return g


def deploy_tap_features(deploy, x: np.ndarray, taps) -> tuple[np.ndarray, list[int]]:
    """The named taps of a deploy-form network (models/deploy.py DeployNet, e.g. after quantization-aware
    fine-tuning) for normalized windows x [N,1,L], concatenated, and the values per tap (as tap_features): what
    its exported graph's tap outputs give."""
    import torch

    deploy.taps, b = list(taps), int(deploy.batch)
    parts, dims = [], []
    with torch.inference_mode():
        for i in range(0, len(x), b):
            chunk = np.ascontiguousarray(x[i: i + b], dtype=np.float32)
            n = len(chunk)
            if n < b:
                chunk = np.concatenate([chunk, np.zeros((b - n,) + chunk.shape[1:], np.float32)])
            out = [t.reshape(b, -1) for t in deploy(torch.from_numpy(chunk))[1:]]
            dims = [int(t.shape[1]) for t in out]
            parts.append(torch.cat(out, dim=1)[:n].numpy())
    return (np.concatenate(parts) if parts else np.zeros((0, sum(dims)), np.float32)), dims


def tensors_sha256(path) -> str:
    """sha256 over a bundle's tensors (names, dtypes, shapes, bytes), independent of its metadata."""
    import hashlib

    from safetensors.numpy import load_file

    h = hashlib.sha256()
    for name, arr in sorted(load_file(str(path)).items()):
        h.update(f"{name}|{arr.dtype}|{list(arr.shape)}|".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def recipe_noise(meta: dict) -> dict:
    """The noise recipe a bundle was trained with (fit_on_data's noise, snr_min, snr_max, clean_fraction), the
    paper recipe's values where the bundle does not record one."""
    from .data.dataset import NOISE_TYPES

    r = (meta.get("training") or {}).get("recipe") or {}
    return {"noise": tuple(r.get("noise", NOISE_TYPES)), "snr_min": float(r.get("snr_min", -5.0)),
            "snr_max": float(r.get("snr_max", 5.0)), "clean_fraction": float(r.get("clean_fraction", 0.2))}


def fit_bundle(model_path, data, out, seed: int = 0, quantile: float = DEFAULT_QUANTILE, taps=None,
               data_label: str | None = None) -> dict:
    """`guard fit`: fit a guard for an existing bundle on its training data (train split: means and covariance;
    val split: threshold) with its recorded noise recipe, and write the bundle again with the same tensors."""
    from .bundle import load_bundle, save_bundle
    from .data.dataset import load_dataset
    from .evaluate import check_compatible
    from .validate import finite

    finite("--quantile", quantile, lo=0.5, hi=1.0)
    from .data.dataset import manifest_path
    from .outputs import guard_file

    guard_file(out, [data, manifest_path(data)])  # may be the model itself: rewritten whole, atomically
    b = load_bundle(model_path)
    ds = check_compatible(b.meta, load_dataset(data))
    train_ds, val_ds = ds.select_split("train"), ds.select_split("val")
    if len(train_ds) == 0 or len(val_ds) == 0:
        raise InputError(f"'{data}' needs a train split and a val split to fit the guard")
    g = fit_on_data(b.model, train_ds, val_ds, **recipe_noise(b.meta), seed=seed, quantile=quantile, taps=taps)
    g.info["data"] = data_label or str(data)
    before = tensors_sha256(model_path)
    save_bundle(b.model, {**b.meta, "guard": g.to_json()}, out)
    after = tensors_sha256(out)
    if after != before:  # never ship changed weights under an unchanged name
        raise InputError(f"writing '{out}' changed the model's tensors; nothing else was meant to change")
    return {"model": str(model_path), "out": str(out), "tensors_sha256": after, "threshold": g.threshold,
            "quantile": g.quantile, "taps": g.taps, "dim": int(g.means.shape[1]), "level": g.level, **g.info}
