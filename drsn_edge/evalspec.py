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


@dataclass(frozen=True)
class EvalSpec:
    """Where the evaluation windows come from and which noise grid they are swept over.

    data: a labelled dataset (.npz; its test split when it has one) or None for fresh simulated
    recordings of the model's classes. Every window is kept clean and copied once per (noise, SNR) cell."""

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

    def windows(self, meta: dict) -> "EvalWindows":
        """The evaluation windows for a model (its metadata: classes, fs, window, normalization)."""
        from .data.dataset import normalize
        from .data.noise import noise_sweep
        from .evaluate import fresh_test_set, load_test_windows

        if self.data is not None:
            ds, _ = load_test_windows(meta, self.data)
        else:
            ds = fresh_test_set(meta, self.windows_per_class, seed=SIMULATED_SEED_OFFSET + self.seed)
        if len(ds) == 0:
            raise InputError(f"no evaluation windows in {self.data or 'the simulated set'}")
        if self.noise and self.snrs:
            ds = noise_sweep(ds, list(self.noise), list(self.snrs), seed=self.seed + 1)
        x = normalize(ds.x, meta["normalization"])
        return EvalWindows(x=x, y=ds.y, noise=ds.noise, snr_db=ds.snr_db, description=self.describe())


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
