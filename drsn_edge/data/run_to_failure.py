"""A simulated run to failure: one machine that runs healthy, then grows a bearing fault from a small
spall to a severe one, as one continuous signal (for the monitor).

The machine (speed, resonance, damping, shaft harmonics, background) is drawn once and kept. The signal
is simulated in segments: healthy segments first, then fault segments whose spall size grows linearly
from `severity[0]` to `severity[1]` mils (CWRU's 7, 14, 21 mils are the named classes); the impact
amplitude grows with it as the simulator's class recipe does. Shaft-harmonic phases run on across
segment boundaries. Noise is added per block of `block` samples at the exact SNR, like the datasets.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import InputError
from .simulator import CLASS_NAMES, FS, WINDOW, _draw_params, simulate_recording

FAULT_KINDS = {"IR": 0.9, "B": 0.45, "OR": 1.2}  # impact amplitude at 14 mils, as in the simulator
SEGMENT_S = 10.0


@dataclass(frozen=True)
class RunToFailure:
    healthy_s: float = 3600.0
    fault_s: float = 600.0
    fault: str = "IR"
    severity: tuple[float, float] = (7.0, 21.0)
    noise: str | None = "gaussian"
    snr_db: float | None = 0.0
    seed: int = 0
    fs: float = FS
    block: int = WINDOW

    def validate(self) -> None:
        if self.fault not in FAULT_KINDS:
            raise InputError(f"unknown fault '{self.fault}'; use {', '.join(FAULT_KINDS)}")
        if self.healthy_s < 0 or self.fault_s < 0 or self.healthy_s + self.fault_s <= 0:
            raise InputError("--healthy-s and --fault-s must be ≥ 0 seconds and not both 0")
        lo, hi = self.severity
        if not 0 < lo <= hi <= 40:
            raise InputError(f"severity takes START:END mils with 0 < START ≤ END ≤ 40, got {lo:g}:{hi:g}")
        if (self.noise is None) != (self.snr_db is None):
            raise InputError("a run to failure takes one noise type and one SNR (e.g. --noise gaussian --snr 0)")

    @property
    def onset_sample(self) -> int:
        return int(round(self.healthy_s * self.fs))

    @property
    def n_samples(self) -> int:
        n = int(round((self.healthy_s + self.fault_s) * self.fs))
        return n - n % self.block

    def severity_at(self, sample: int) -> float | None:
        """Spall size in mils at a sample (None while healthy)."""
        if sample < self.onset_sample:
            return None
        frac = (sample - self.onset_sample) / max(1.0, self.fault_s * self.fs)
        lo, hi = self.severity
        return lo + (hi - lo) * min(1.0, frac)

    def info(self) -> dict:
        return {"kind": "run to failure", **dataclasses.asdict(self), "onset_sample": self.onset_sample,
                "onset_s": self.onset_sample / self.fs, "n_samples": self.n_samples,
                "classes_by_severity": {f"{self.fault}{m:03d}": m for m in (7, 14, 21)}}


def segments(spec: RunToFailure, segment_s: float = SEGMENT_S) -> Iterator[np.ndarray]:
    """The signal, float32, in segments of about `segment_s` seconds (whole noise blocks)."""
    from .noise import add_noise

    spec.validate()
    rng = np.random.default_rng(spec.seed)
    noise_rng = np.random.default_rng([spec.seed, 1])  # its own stream: the clean signal is the same at any SNR
    healthy = _draw_params(0, "nominal", rng)
    faulty = _draw_params(CLASS_NAMES.index(f"{spec.fault}014"), "nominal", rng)
    gain = faulty.amp / (FAULT_KINDS[spec.fault])  # this machine's transmission path, kept over the run
    fr = healthy.rpm / 60.0
    seg = max(spec.block, int(segment_s * spec.fs) // spec.block * spec.block)
    start = 0
    while start < spec.n_samples:
        n = min(seg, spec.n_samples - start)
        n_h = min(n, max(0, spec.onset_sample - start))
        parts = []
        if n_h:
            parts.append(_piece(healthy, start, n_h, spec, rng, fr, None, gain))
        if n - n_h:
            mid = start + n_h + (n - n_h) // 2
            parts.append(_piece(faulty, start + n_h, n - n_h, spec, rng, fr, spec.severity_at(mid), gain))
        x = np.concatenate(parts)
        if spec.noise is not None:
            x = add_noise(x.reshape(-1, spec.block), spec.noise, spec.snr_db, noise_rng).reshape(-1)
        yield x.astype(np.float32)
        start += n


def _piece(p, start: int, n: int, spec: RunToFailure, rng, fr: float, severity: float | None, gain: float):
    m = np.arange(1, p.harmonics.size + 1)
    p = dataclasses.replace(p, harm_phase=p.harm_phase + 2 * np.pi * m * fr * start / spec.fs)  # phases run on
    if severity is not None:
        p = dataclasses.replace(p, amp=FAULT_KINDS[spec.fault] * (severity / 14.0) ** 0.4 * gain)
    return simulate_recording(p, n, spec.fs, rng, severity_mils=severity)


def write_run_to_failure(out, spec: RunToFailure) -> dict:
    """Write the signal as a float32 WAV (carries its rate) or .npy, and `<out>.json` describing it."""
    from scipy.io import wavfile

    from ..fileio import atomic_path, write_json

    out = Path(out)
    if out.suffix not in (".wav", ".npy"):
        raise InputError(f"a run to failure is written as .wav or .npy, got '{out.name}'")
    spec.validate()
    x = np.concatenate(list(segments(spec)))
    with atomic_path(out) as tmp:
        if out.suffix == ".wav":
            wavfile.write(tmp, int(round(spec.fs)), x)
        else:
            np.save(tmp, x)
    info = {"out": str(out), **spec.info(),
            "generator": "drsn-edge " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else ""}
    write_json(out.with_suffix(".json"), info)
    return info


def synth(out, *, healthy_s: float, fault_s: float, fault: str, severity: str, noise: list[str],
          snr: list[float] | None, seed: int) -> dict:
    """`data synth --run-to-failure`: the options as the command line gives them."""
    lo, sep, hi = severity.partition(":")
    try:
        sev = (float(lo), float(hi if sep else lo))
    except ValueError:
        raise InputError(f"--severity takes START:END in mils such as 7:21, got '{severity}'") from None
    if len(noise) > 1 or (snr is not None and len(snr) > 1):
        raise InputError("a run to failure takes one noise type and one SNR (e.g. --noise gaussian --snr 0)")
    if noise and snr is None:
        raise InputError("--noise needs --snr (one value in dB)")
    spec = RunToFailure(healthy_s=healthy_s, fault_s=fault_s, fault=fault, severity=sev,
                        noise=noise[0] if noise else None, snr_db=snr[0] if noise else None, seed=seed)
    return write_run_to_failure(out, spec)
