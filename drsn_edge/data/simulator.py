"""Rolling-bearing vibration simulator (CWRU-like: drive-end SKF 6205, 12 kHz, 10 classes).

Physics (see Randall & Antoni 2011; McFadden & Smith 1984; Sawalhi & Randall 2011):
  x(t) = Σk Ak·q(tk)·[entry(t−tk) + exit(t−tk−Δt)] + Σm am·cos(2π·m·fr·t + φm)
         + fault-order harmonics/sidebands + background noise
- Impacts repeat at the fault's characteristic frequency (BPFI, BPFO or 2·BSF) with random slip.
- Each impact is two events: the rolling element enters the spall (a low-frequency unloading response)
  and strikes its far edge (an impulse that rings the structural resonance fn with damping ζ).
  Their spacing Δt = spall length / relative rolling speed, so severity changes the waveform shape,
  not only its amplitude; the entry drop grows with depth ∝ L², the impact with L.
- Inner-race impacts are modulated by the load zone at the shaft rate; ball impacts by the cage (FTF)
  and alternate between the two races; outer-race impacts are stationary.
- Every recording draws its own speed, load, resonance, damping, harmonics and background level.

Severity is named like CWRU's defect diameters (7, 14, 21 mils).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .dataset import Dataset

FS = 12_000.0
WINDOW = 2048

# SKF 6205-2RS drive-end bearing (inches): n balls, ball diameter d, pitch diameter D, contact angle 0
N_BALLS = 9
BALL_D_IN = 0.3126
PITCH_D_IN = 1.537
INCH = 0.0254

CLASS_NAMES = ("normal", "IR007", "IR014", "IR021", "B007", "B014", "B021", "OR007", "OR014", "OR021")
SEVERITY_MILS = {"007": 7, "014": 14, "021": 21}

# Operating-condition ranges. "shifted" lies outside "nominal" on speed, resonance, damping and load.
CONDITIONS = {
    "nominal": {
        "rpm": [(1720.0, 1800.0)],
        "fn": [(2500.0, 4500.0)],
        "zeta": [(0.04, 0.09)],
        "load_mod": [(0.3, 0.8)],
    },
    "shifted": {
        "rpm": [(1450.0, 1650.0), (1870.0, 2050.0)],
        "fn": [(1700.0, 2300.0), (4700.0, 5500.0)],
        "zeta": [(0.025, 0.04), (0.09, 0.12)],
        "load_mod": [(0.1, 0.3), (0.8, 0.95)],
    },
}


def bearing_orders() -> dict:
    """Fault frequencies as multiples of the shaft rate fr."""
    r = BALL_D_IN / PITCH_D_IN
    return {
        "BPFO": N_BALLS / 2 * (1 - r),
        "BPFI": N_BALLS / 2 * (1 + r),
        "FTF": 0.5 * (1 - r),
        "BSF": PITCH_D_IN / (2 * BALL_D_IN) * (1 - r * r),
    }


def _uniform_from(ranges, rng) -> float:
    lo, hi = ranges[rng.integers(len(ranges))]
    return float(rng.uniform(lo, hi))


@dataclass
class RecordingParams:
    label: int
    rpm: float
    fn: float
    zeta: float
    load_mod: float
    slip: float
    amp: float
    harmonics: np.ndarray
    harm_phase: np.ndarray
    background: float
    bg_color: float
    low_fn: float


def _draw_params(label: int, condition: str, rng: np.random.Generator) -> RecordingParams:
    ranges = CONDITIONS[condition]
    name = CLASS_NAMES[label]
    sev = SEVERITY_MILS.get(name[-3:], 0) if label else 0
    # Impact amplitude (g) depends on the fault location (transmission path: an outer-race defect sits in
    # the load zone next to the sensor, ball defects strike weakly), grows only mildly with spall size
    # and varies a lot between recordings, so severity cannot be read off amplitude alone.
    base = {"IR": 0.9, "B": 0.45, "OR": 1.2}.get(name[:-3], 0.0)
    amp = base * (sev / 14.0) ** 0.4 * float(rng.lognormal(0.0, 0.4)) if label else 0.0
    nh = 6
    harmonics = 0.06 * rng.lognormal(0.0, 0.5) / np.arange(1, nh + 1) ** rng.uniform(0.6, 1.4)
    harmonics[1] *= rng.uniform(0.5, 2.5)  # misalignment shows at 2×
    return RecordingParams(
        label=label,
        rpm=_uniform_from(ranges["rpm"], rng),
        fn=_uniform_from(ranges["fn"], rng),
        zeta=_uniform_from(ranges["zeta"], rng),
        load_mod=_uniform_from(ranges["load_mod"], rng),
        slip=float(rng.uniform(0.01, 0.02)),
        amp=amp,
        harmonics=harmonics,
        harm_phase=rng.uniform(0, 2 * np.pi, nh),
        background=float(rng.uniform(0.03, 0.09)),
        bg_color=float(rng.uniform(0.0, 0.6)),
        low_fn=float(rng.uniform(500.0, 1300.0)),
    )


def _ringdown(tau: np.ndarray, fn: float, zeta: float) -> np.ndarray:
    wn = 2 * np.pi * fn
    out = np.exp(-zeta * wn * tau) * np.sin(wn * np.sqrt(1 - zeta * zeta) * tau)
    return np.where(tau >= 0, out, 0.0)


def _add_events(sig: np.ndarray, times: np.ndarray, amps: np.ndarray, fn: float, zeta: float, fs: float) -> None:
    """Add amps[k]·ringdown(t − times[k]) for every event, evaluated at exact (sub-sample) times."""
    if times.size == 0:
        return
    k_len = int(min(len(sig), math.ceil(8.0 / (zeta * 2 * np.pi * fn) * fs)))
    n0 = np.ceil(times * fs).astype(np.int64)
    idx = n0[:, None] + np.arange(k_len)[None, :]
    tau = idx / fs - times[:, None]
    vals = amps[:, None] * _ringdown(tau, fn, zeta)
    ok = (idx >= 0) & (idx < len(sig))
    np.add.at(sig, idx[ok], vals[ok])


def _colored_noise(n: int, color: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise with power ∝ 1/f^color (0 = white)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    w = np.fft.irfft(spec / f ** (color / 2), n=n)
    return w / (w.std() + 1e-12)


def simulate_recording(p: RecordingParams, n_samples: int, fs: float, rng: np.random.Generator,
                       severity_mils: float | None = None) -> np.ndarray:
    """One recording; `severity_mils` overrides the spall size its class names (a fault that grows)."""
    t = np.arange(n_samples) / fs
    fr = p.rpm / 60.0
    orders = bearing_orders()
    sig = np.zeros(n_samples)
    # shaft harmonics
    for m, (a, ph) in enumerate(zip(p.harmonics, p.harm_phase), start=1):
        sig += a * np.cos(2 * np.pi * m * fr * t + ph)
    # background: structure-borne broadband noise plus sensor noise
    sig += p.background * _colored_noise(n_samples, p.bg_color, rng)

    name = CLASS_NAMES[p.label]
    if p.label == 0:
        # healthy bearings still see sporadic, non-periodic knocks (rubbing, debris, other machines)
        n_knocks = rng.poisson(8 * n_samples / fs)
        times = np.sort(rng.uniform(0, n_samples / fs, n_knocks))
        amps = 0.1 * rng.lognormal(0, 0.5, n_knocks) * rng.choice([-1, 1], n_knocks)
        _add_events(sig, times, amps, p.fn, p.zeta, fs)
        return sig

    kind = name[:-3]
    sev_mils = SEVERITY_MILS[name[-3:]] if severity_mils is None else float(severity_mils)
    if kind == "IR":
        f_fault = orders["BPFI"] * fr
    elif kind == "OR":
        f_fault = orders["BPFO"] * fr
    else:  # ball defect strikes both races each spin revolution
        f_fault = 2 * orders["BSF"] * fr
    period = 1.0 / f_fault
    n_ev = int(n_samples / fs / period) + 3
    start = rng.uniform(-period, 0)
    steps = period * (1 + p.slip * rng.standard_normal(n_ev))
    times = start + np.cumsum(steps)
    times = times[times < n_samples / fs]
    # modulation by load zone / cage
    if kind == "IR":
        phi = rng.uniform(0, 2 * np.pi)
        q = 1 + p.load_mod * np.cos(2 * np.pi * fr * times + phi)
    elif kind == "B":
        phi = rng.uniform(0, 2 * np.pi)
        q = 1 + p.load_mod * np.cos(2 * np.pi * orders["FTF"] * fr * times + phi)
        q = q * np.where(np.arange(times.size) % 2 == 0, 1.0, rng.uniform(0.3, 0.7))
    else:
        q = np.full(times.shape, 1.0)
    a = p.amp * q * (1 + 0.1 * rng.uniform(-1, 1, times.size))
    # spall geometry: entry (unloading, low frequency, opposite sign) then exit impact after Δt
    d_m = (PITCH_D_IN + BALL_D_IN) * INCH
    v_rel = np.pi * d_m * orders["FTF"] * fr  # surface speed of the element relative to the race
    spall = sev_mils * 1e-3 * INCH * rng.uniform(0.8, 1.25)
    dt = spall / v_rel
    depth_ratio = (sev_mils / 14.0) ** 2
    _add_events(sig, times, -0.5 * a * depth_ratio, p.low_fn, 0.15, fs)
    _add_events(sig, times + dt, a, p.fn, p.zeta, fs)
    # fault-order harmonics and shaft-rate sidebands grow with the defect
    h_amp = 0.012 * (sev_mils / 14.0) * rng.lognormal(0, 0.4)
    for k in (1, 2, 3):
        ph = rng.uniform(0, 2 * np.pi)
        sig += h_amp / k * np.cos(2 * np.pi * k * f_fault * t + ph)
        if kind != "OR":
            side = fr if kind == "IR" else orders["FTF"] * fr
            sig += 0.5 * h_amp / k * np.cos(2 * np.pi * (k * f_fault + side) * t + ph)
            sig += 0.5 * h_amp / k * np.cos(2 * np.pi * (k * f_fault - side) * t + ph)
    return sig


def split_counts(n: int, fractions, what: str = "") -> tuple[int, ...]:
    """Share n recordings among splits by largest remainder; every split with a non-zero fraction gets one.

    Raises InputError when n is smaller than the number of non-zero splits (splits are by recording).
    """
    fr = np.asarray(fractions, dtype=np.float64)
    need = int((fr > 0).sum())
    if n < need:
        raise InputError(
            f"{what + ': ' if what else ''}{n} recording(s) cannot fill {need} splits {tuple(fractions)}; "
            "splits are by recording, never by window: add recordings or use a split like 1,0,0"
        )
    counts = (fr > 0).astype(np.int64)
    rest = n - need
    if rest:
        ideal = fr / fr.sum() * n - counts
        ideal = np.clip(ideal, 0, None)
        base = np.floor(ideal / max(ideal.sum(), 1e-12) * rest).astype(np.int64) if ideal.sum() > 0 else np.zeros_like(counts)
        counts += base
        left = n - counts.sum()
        order = np.argsort(-(ideal - base + (fr > 0) * 1e-9), kind="stable")
        for i in order[:left]:
            counts[i] += 1
    return tuple(int(c) for c in counts)


def synthesize(
    windows_per_class: int = 500,
    recordings_per_class: int | None = None,
    classes: list[str] | None = None,
    seed: int = 0,
    fs: float = FS,
    window: int = WINDOW,
    condition: str = "nominal",
    split: tuple[float, float, float] = (0.7, 0.15, 0.15),
    progress=None,
) -> Dataset:
    """Simulate a clean dataset; splits are assigned per recording, stratified by class."""
    classes = list(classes) if classes else list(CLASS_NAMES)
    unknown = [c for c in classes if c not in CLASS_NAMES]
    if unknown:
        raise InputError(f"unknown class(es) {unknown}; the simulator knows {', '.join(CLASS_NAMES)}")
    if condition not in CONDITIONS:
        raise InputError(f"unknown condition '{condition}'; use {', '.join(CONDITIONS)}")
    if windows_per_class < 1:
        raise InputError("windows per class must be at least 1")
    if window < 64:
        raise InputError(f"window must be at least 64 points, got {window}")
    if len(split) != 3 or abs(sum(split) - 1.0) > 1e-6 or min(split) < 0:
        raise InputError(f"split takes three fractions (train, val, test) ≥ 0 that sum to 1, got {split}")
    if recordings_per_class is not None and recordings_per_class < 1:
        raise InputError(f"recordings per class must be at least 1, got {recordings_per_class}")
    r = recordings_per_class or max(3, windows_per_class // 5)
    r = min(r, windows_per_class)
    rng = np.random.default_rng(seed)
    xs, ys, recs, splits = [], [], [], []
    split_names = ("train", "val", "test")
    for ci, cname in enumerate(classes):
        label = CLASS_NAMES.index(cname)
        per_rec = np.full(r, windows_per_class // r)
        per_rec[: windows_per_class % r] += 1
        counts = split_counts(r, split, what=f"class {cname}")
        rec_split = np.repeat(np.arange(3), counts)
        rec_split = rec_split[rng.permutation(r)]
        for ri in range(r):
            p = _draw_params(label, condition, rng)
            nw = int(per_rec[ri])
            sig = simulate_recording(p, nw * window, fs, rng)
            xs.append(sig.reshape(nw, 1, window).astype(np.float32))
            ys += [ci] * nw
            rid = f"{condition[:3]}-{seed}-{cname}-{ri:04d}"
            recs += [rid] * nw
            splits += [split_names[rec_split[ri]]] * nw
        if progress:
            progress(ci + 1, len(classes))
    n = len(ys)
    return Dataset(
        x=np.concatenate(xs), y=np.array(ys), class_names=classes, fs=fs, window=window,
        noise=np.full(n, "none"), snr_db=np.full(n, np.nan, dtype=np.float32),
        recording=np.array(recs), split=np.array(splits), normalization="zscore",
        source="simulator",
        params={
            "seed": seed, "windows_per_class": windows_per_class, "recordings_per_class": r,
            "condition": condition, "split": list(split), "ranges": CONDITIONS[condition],
            "bearing": {"n": N_BALLS, "d_in": BALL_D_IN, "D_in": PITCH_D_IN, "orders": bearing_orders()},
        },
    )


def long_recording(class_name: str, seconds: float, seed: int = 0, condition: str = "nominal",
                   fs: float = FS) -> np.ndarray:
    """One continuous recording of a class (float64, in g), e.g. to write as a file that `data import` reads."""
    if class_name not in CLASS_NAMES:
        raise InputError(f"unknown class '{class_name}'; the simulator makes {', '.join(CLASS_NAMES)}")
    if condition not in CONDITIONS:
        raise InputError(f"unknown condition '{condition}'; use {', '.join(CONDITIONS)}")
    rng = np.random.default_rng([seed, CLASS_NAMES.index(class_name)])
    p = _draw_params(CLASS_NAMES.index(class_name), condition, rng)
    return simulate_recording(p, int(round(seconds * fs)), fs, rng)
