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
                   seed=int(d.get("seed", 0)))

    def describe(self) -> str:
        src = self.data or f"simulated recordings ({self.windows_per_class} windows/class, seed {self.seed})"
        grid = (f"clean + {','.join(self.noise)} at {','.join(f'{s:g}' for s in self.snrs)} dB"
                if self.noise and self.snrs else "clean")
        return f"{src}; {grid}"

    def describe_for(self, meta: dict) -> str:
        """What the test windows for this model are, without loading them (for reports and manifests)."""
        from .evaluate import simulated_classes

        if self.data is not None or simulated_classes(meta):
            return self.describe()
        tr = meta.get("training") or {}
        return (f"test split of {tr.get('data')} recorded in the model ({len(tr.get('test_recordings') or [])} "
                f"recording(s)); {self.describe().split('; ', 1)[1]}")

    def windows(self, meta: dict, split: str = "test") -> "EvalWindows":
        """The evaluation windows for a model (its metadata: classes, fs, window, normalization).

        split "val": windows for choosing among candidates (e.g. calibration methods), disjoint from the
        test windows: the val split of the data (or of the model's recorded training data), or simulated
        recordings with another seed."""
        from .data.dataset import normalize
        from .data.noise import noise_sweep

        ds, description = self._source(meta, split)
        if len(ds) == 0:
            raise InputError(f"no evaluation windows in {self.data or 'the simulated set'}")
        if self.noise and self.snrs:
            ds = noise_sweep(ds, list(self.noise), list(self.snrs), seed=self.seed + 1)
        x = normalize(ds.x, meta["normalization"])
        return EvalWindows(x=x, y=ds.y, noise=ds.noise, snr_db=ds.snr_db, description=description)

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
        # not the simulator's classes: never simulated windows of other classes, the recorded test split
        ds, src = recorded_test_windows(meta)
        return ds, f"{src}; {grid}"


@dataclass
class EvalWindows:
    x: np.ndarray  # normalized float32 [N, 1, L]
    y: np.ndarray
    noise: np.ndarray
    snr_db: np.ndarray
    description: str = ""
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(len(self.x))
