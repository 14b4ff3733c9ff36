"""One evaluation spec for every stage that measures a model: quantize, build and check (and the
benchmarks). The same spec on the same model gives the same windows, so the float figure is the same
everywhere; it is written into every sidecar, build manifest and report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .errors import InputError

DEFAULT_NOISE = ("gaussian", "laplacian", "pink")
DEFAULT_SNRS = (-5.0, 0.0, 5.0)
DEFAULT_WINDOWS_PER_CLASS = 10
SIMULATED_SEED_OFFSET = 100_000  # evaluation recordings never share a seed with training data
SELECTION_SEED_OFFSET = 50_000  # simulated windows for choosing among candidates, never the test windows


@dataclass(frozen=True)
class EvalSpec:
    """Where the evaluation windows come from and which noise grid they are swept over.

    data: a labelled dataset (.npz; its test split when it has one) or None: fresh simulated recordings of
    the model's classes when the simulator makes them, else the labelled test split recorded in the model's
    bundle at training time. Every window is kept clean and copied once per (noise, SNR) cell."""

    data: str | None = None
    windows_per_class: int = DEFAULT_WINDOWS_PER_CLASS
    noise: tuple[str, ...] = DEFAULT_NOISE
    snrs: tuple[float, ...] = DEFAULT_SNRS
    seed: int = 0
    calibration: str | None = None  # fallback source for models whose classes the simulator lacks

    def __post_init__(self):
        if self.windows_per_class < 1:
            raise InputError(f"windows per class must be at least 1, got {self.windows_per_class}")
        if self.seed < 0:
            raise InputError(f"seed must be ≥ 0, got {self.seed}")
        for s in self.snrs:
            if not np.isfinite(s) or abs(s) > 100:
                raise InputError(f"SNR {s} dB is out of range (finite, within ±100 dB)")
        object.__setattr__(self, "noise", tuple(self.noise or ()))
        object.__setattr__(self, "snrs", tuple(float(s) for s in (self.snrs or ())) if self.noise else ())

    def to_json(self) -> dict:
        d = asdict(self)
        d["noise"], d["snrs"] = list(self.noise), list(self.snrs)
        return d

    @classmethod
    def from_json(cls, d: dict | None) -> "EvalSpec":
        d = d or {}
        return cls(data=d.get("data"), windows_per_class=int(d.get("windows_per_class", DEFAULT_WINDOWS_PER_CLASS)),
                   noise=tuple(d.get("noise", DEFAULT_NOISE)), snrs=tuple(d.get("snrs", DEFAULT_SNRS)),
                   seed=int(d.get("seed", 0)), calibration=d.get("calibration"))

    def source(self, meta: dict | None = None) -> tuple[str, str | None, str]:
        """Where the windows come from, as (kind, path, words): 'data' (--data), 'simulated', or — for a model
        whose classes the simulator lacks — 'recorded' (the test split of the training data the bundle records)
        or 'calibration' (the calibration set, which also set the INT8 scales)."""
        if self.data is not None:
            return "data", self.data, str(self.data)
        sim = f"simulated recordings ({self.windows_per_class} windows/class, seed {self.seed})"
        if meta is None or simulated(meta):
            return "simulated", None, sim
        unknown = [c for c in meta["class_names"] if not simulated({"class_names": [c]})][:3]
        recorded = recorded_test_split(meta)
        if recorded:
            return "recorded", recorded, (f"test split of {recorded}, the training data recorded in the model "
                                          f"(classes {unknown} are not simulated and no --data was given)")
        if self.calibration:
            return "calibration", self.calibration, (
                f"calibration set {self.calibration} (classes {unknown} are not simulated, no --data was given and "
                "the training data is not at hand; these windows also set the INT8 scales, so the figure is optimistic)")
        raise InputError(f"the model's classes {unknown} are not simulated and its training data is not at hand; "
                         "pass --data with labelled windows of these classes")

    def describe(self, meta: dict | None = None) -> str:
        src = self.source(meta)[2]
        grid = (f"clean + {','.join(self.noise)} at {','.join(f'{s:g}' for s in self.snrs)} dB"
                if self.noise and self.snrs else "clean")
        return f"{src}; {grid}"

    def preflight(self, meta: dict | None = None) -> None:
        """Refuse, before any long work, evaluation data that cannot be used (missing, empty, another model's)."""
        from .data.dataset import load_dataset
        from .evaluate import check_compatible
        from .limits import check_alloc, windows_bytes

        n, window = 0, int((meta or {}).get("window", 2048))
        if self.data is not None:
            ds = load_dataset(self.data)
            n, window = len(ds), ds.window
            if meta is not None:
                check_compatible(meta, ds)
        elif meta is not None and self.source(meta)[0] == "simulated":
            k = len(meta["class_names"])
            n = self.windows_per_class * k
            check_alloc(f"{self.windows_per_class:,} windows per class × {k} classes", windows_bytes(n, window),
                        "simulate fewer windows per class")
        cells = 1 + len(self.noise) * len(self.snrs) if self.noise and self.snrs else 1
        check_alloc(f"a noise sweep of {n:,} windows × {cells} cells", windows_bytes(n * cells, window),
                    "use fewer windows, noise kinds or SNR levels")

    def windows(self, meta: dict, split: str = "test") -> "EvalWindows":
        """The evaluation windows for a model (its metadata: classes, fs, window, normalization).

        split "val": windows for choosing among candidates (e.g. calibration methods), disjoint from the
        test windows: the val split of the data (or of the model's recorded training data), or simulated
        recordings with another seed."""
        from .data.dataset import normalize
        from .data.noise import noise_sweep

        ds, description = self._source(meta, split)
        if len(ds) == 0:
            raise InputError(f"no evaluation windows in {description}")
        if self.noise and self.snrs:
            ds = noise_sweep(ds, list(self.noise), list(self.snrs), seed=self.seed + 1)
        from .guard import window_level

        x = normalize(ds.x, meta["normalization"])
        return EvalWindows(x=x, y=ds.y, noise=ds.noise, snr_db=ds.snr_db, description=description,
                           level=window_level(ds.x))

    def _source(self, meta: dict, split: str):
        from .evaluate import fresh_test_set, load_test_windows, recorded_test_windows, simulated_classes, val_windows

        grid = self.describe().split("; ", 1)[1]
        if split not in ("test", "val"):
            raise InputError(f"unknown evaluation split '{split}'; use test or val")
        simulated = simulated_classes(meta)
        if split == "val" and self.data is not None:
            try:
                ds, src = val_windows(meta, self.data)
                return ds, f"{src}; {grid}"
            except InputError:
                if not simulated:
                    raise  # else: no val split anywhere, simulated recordings of the model's classes below
        if simulated and (self.data is None or split == "val"):  # --data, when given, is the test set
            seed = SIMULATED_SEED_OFFSET + self.seed + (SELECTION_SEED_OFFSET if split == "val" else 0)
            return (fresh_test_set(meta, self.windows_per_class, seed=seed),
                    f"simulated recordings ({self.windows_per_class} windows/class, seed {seed}); {grid}")
        if split == "val":
            ds, src = val_windows(meta)
            return ds, f"{src}; {grid}"
        if self.data is not None:
            return load_test_windows(meta, self.data)[0], self.describe()
        # not the simulator's classes: never simulated windows of other classes — the recorded test split, else
        # the calibration set (said so: its windows also set the INT8 scales)
        try:
            ds, src = recorded_test_windows(meta)
        except InputError:
            if not self.calibration:
                raise
            from .calibration import load_calibration

            return load_calibration(self.calibration), f"{self.source(meta)[2]}; {grid}"
        return ds, f"{src}; {grid}"


@dataclass
class EvalWindows:
    x: np.ndarray  # normalized float32 [N, 1, L]
    y: np.ndarray
    noise: np.ndarray
    snr_db: np.ndarray
    description: str = ""
    extra: dict = field(default_factory=dict)
    level: np.ndarray | None = None  # each raw window's level (guard.window_level), for the domain guard

    def __len__(self) -> int:
        return int(len(self.x))


def simulated(meta: dict) -> bool:
    from .data.simulator import CLASS_NAMES

    return all(c in CLASS_NAMES for c in meta["class_names"])


def recorded_test_split(meta: dict) -> str | None:
    """The training dataset a bundle records, when it is still here unchanged and has a test split."""
    from pathlib import Path

    from .fileio import sha256_file

    tr = meta.get("training") or {}
    path = tr.get("data")
    if not isinstance(path, str) or not Path(path).is_file() or sha256_file(path) != tr.get("data_sha256"):
        return None
    from .data.dataset import load_dataset

    return path if (load_dataset(path).split == "test").any() else None
