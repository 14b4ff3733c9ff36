"""Streaming signal helpers for the monitor: byte decoders (text lines, little-endian float32), a
stateful polyphase resampler, sliding windows with a hop, and per-window sample checks."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..data.windowing import resample_ratio

# ---------------------------------------------------------------------------------------------- decoders


class TextDecoder:
    """One number per line. Blank lines are skipped; lines that are not a number are counted as bad."""

    def __init__(self):
        self._rest = b""
        self.bad_lines = 0

    def feed(self, data: bytes) -> np.ndarray:
        data = self._rest + data
        cut = data.rfind(b"\n")
        if cut < 0:
            self._rest = data
            return np.empty(0)
        self._rest = data[cut + 1:]
        return self._parse(data[:cut].split(b"\n"))

    def finish(self) -> np.ndarray:
        rest, self._rest = self._rest, b""
        return self._parse([rest])

    def _parse(self, lines: list[bytes]) -> np.ndarray:
        lines = [ln.strip() for ln in lines]
        lines = [ln for ln in lines if ln]
        if not lines:
            return np.empty(0)
        try:  # fast path: every line is a number
            return np.array(lines).astype(np.float64)
        except ValueError:
            pass
        out = []
        for ln in lines:
            try:
                out.append(float(ln))
            except ValueError:
                self.bad_lines += 1
        return np.asarray(out, dtype=np.float64)


class F32Decoder:
    """Raw little-endian float32; a partial sample is kept for the next read (and counted if it never
    completes)."""

    def __init__(self):
        self._rest = b""
        self.short_bytes = 0

    def feed(self, data: bytes) -> np.ndarray:
        data = self._rest + data
        n = len(data) // 4 * 4
        self._rest = data[n:]
        with np.errstate(all="ignore"):  # garbage bytes may be signalling NaNs: the window checks count them
            return np.frombuffer(data[:n], dtype="<f4").astype(np.float64)

    def finish(self) -> np.ndarray:
        self.short_bytes += len(self._rest)
        self._rest = b""
        return np.empty(0)


FORMATS = ("auto", "text", "f32")


def sniff_format(head: bytes) -> str:
    """'text' when the first bytes are printable ASCII (digits, signs, letters of nan/inf, whitespace),
    else 'f32'."""
    allowed = set(b"0123456789+-.eEnNaAiIfFtTyY \t\r\n,")
    return "text" if head and all(c in allowed for c in head) else "f32"


def make_decoder(fmt: str):
    return TextDecoder() if fmt == "text" else F32Decoder()


# ---------------------------------------------------------------------------------------------- resampler


class StreamResampler:
    """Polyphase resampling of an unbounded stream, sample for sample equal to scipy's
    `resample_poly(x, up, down)` (same Kaiser FIR, zero padding before the start) on the outputs it has
    emitted: output j = Σ_n x[n]·h[j·down + half − n·up], emitted once its last input has arrived."""

    def __init__(self, src_fs: float, dst_fs: float):
        from scipy.signal import firwin

        self.up, self.down = resample_ratio(src_fs, dst_fs)
        self.identity = self.up == self.down
        if self.identity:
            return
        rate = max(self.up, self.down)
        self.half = 10 * rate
        h = firwin(2 * self.half + 1, 1.0 / rate, window=("kaiser", 5.0)) * self.up
        self.taps = math.ceil(h.size / self.up)
        phases = np.zeros((self.up, self.taps))
        for r in range(self.up):
            sel = h[r::self.up]
            phases[r, : sel.size] = sel
        self.phases = phases
        self._buf = np.empty(0)
        self._base = 0   # absolute index of _buf[0]
        self._count = 0  # inputs seen
        self._j = 0      # next output index

    def push(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.identity:
            return x
        self._buf = np.concatenate([self._buf, x])
        self._count += x.size
        j_end = -(-(self._count * self.up - self.half) // self.down)  # ceil
        if j_end <= self._j:
            return np.empty(0)
        js = np.arange(self._j, j_end)
        pos = js * self.down + self.half
        n_hi, r = pos // self.up, pos % self.up
        idx = n_hi[:, None] - np.arange(self.taps)[None, :] - self._base
        vals = np.where(idx >= 0, self._buf[np.clip(idx, 0, None)], 0.0)
        y = (vals * self.phases[r]).sum(axis=1)
        self._j = j_end
        keep_from = max(0, (j_end * self.down + self.half) // self.up - self.taps + 1)
        if keep_from > self._base:
            self._buf = self._buf[keep_from - self._base:]
            self._base = keep_from
        return y


# ---------------------------------------------------------------------------------------------- windows


class Windower:
    """Sliding windows of `window` samples every `hop` samples over a stream; `end` is the absolute
    index (+1) of each window's last sample."""

    def __init__(self, window: int, hop: int):
        self.window, self.hop = int(window), int(hop)
        self._buf = np.empty(0, dtype=np.float32)
        self._start = 0  # absolute index of the next window's first sample
        self._base = 0   # absolute index of _buf[0]

    def push(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._buf = np.concatenate([self._buf, np.asarray(x, dtype=np.float32)])
        off = self._start - self._base
        avail = self._buf.size - off
        if avail < self.window:
            return np.empty((0, self.window), np.float32), np.empty(0, np.int64)
        n = (avail - self.window) // self.hop + 1
        if self.hop == self.window:  # back to back: a view of the buffer (a new buffer is made next push)
            wins = self._buf[off:off + n * self.window].reshape(n, self.window)
        else:
            view = np.lib.stride_tricks.sliding_window_view(self._buf[off:], self.window)[:: self.hop][:n]
            wins = np.array(view, dtype=np.float32)
        ends = self._start + np.arange(n) * self.hop + self.window
        self._start += n * self.hop
        drop = min(self._start, self._base + self._buf.size) - self._base
        self._buf = self._buf[drop:]
        self._base += drop
        return wins, ends.astype(np.int64)

    @property
    def pending(self) -> int:
        """Samples received that no window has used yet."""
        return max(0, self._base + self._buf.size - self._start)


# ---------------------------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class SampleChecks:
    """When a window's samples are not fit to classify (a `sensor` vote instead)."""

    clip_level: float | None = None  # |x| at which the sensor saturates; None: detect repeated extremes
    clip_fraction: float = 0.01      # share of samples at the rails that makes a window clipped
    flat_fraction: float = 0.5       # share of consecutive repeats that makes a window flat-lined


def check_windows(w: np.ndarray, checks: SampleChecks) -> tuple[list[str | None], int]:
    """Per window [k, L]: None (fine) or 'nan' | 'flat' | 'clipped'; and the count of non-finite samples."""
    with np.errstate(all="ignore"):
        return _check_windows(w, checks)


def _check_windows(w: np.ndarray, checks: SampleChecks) -> tuple[list[str | None], int]:
    k, length = w.shape
    bad = ~np.isfinite(w.sum(axis=1))  # a sum is finite iff every sample is (or it overflowed: checked below)
    nonfinite = 0
    if bad.any():
        finite = np.isfinite(w[bad])
        nonfinite = int(finite.size - finite.sum())
        bad[np.flatnonzero(bad)[finite.all(axis=1)]] = False  # overflowed sums of finite samples
        w = np.where(np.isfinite(w), w, 0)
    flat = (w[:, 1:] == w[:, :-1]).sum(axis=1) >= checks.flat_fraction * (length - 1)
    limit = max(2.0, checks.clip_fraction * length)
    if checks.clip_level is not None:
        at_rail = (np.abs(w) >= checks.clip_level).sum(axis=1)
    else:
        hi, lo = w.max(axis=1, keepdims=True), w.min(axis=1, keepdims=True)
        at_rail = np.maximum((w == hi).sum(axis=1), (w == lo).sum(axis=1))
    clipped = at_rail >= limit
    if not (bad.any() or flat.any() or clipped.any()):
        return [None] * k, 0
    return ["nan" if b else "flat" if f else "clipped" if c else None
            for b, f, c in zip(bad.tolist(), flat.tolist(), clipped.tolist())], nonfinite
