"""The monitor loop: source → (resample) → sliding windows → sample checks → model → health state →
JSON lines (one per window, one per state change) → alerts; a stalled source raises `no data`.

Lines (one JSON object each, `type` says which):
  start    source, model, runner, rates, window, hop, thresholds
  window   i, t (stream seconds at the window's last sample), time (unix), class, p, state, quality
  state    a state change: state (label), name, fault, reason, from, i, t, time, counters
  input    new input problems (garbage lines, incomplete float32 samples), at most once a second
  warning  something the operator should know (e.g. the alert queue is full)
  summary  at the end: counters, windows/s, latency percentiles, alert delivery
"""

from __future__ import annotations

import json
import math
import queue
import signal
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import DeviceError, InputError
from .health import HealthConfig, HealthMachine, Step
from .stream import SampleChecks, StreamResampler, Windower, check_windows

MAX_LATENCIES = 200_000


@dataclass
class MonitorOptions:
    source: str
    model: str | None = None
    guard: bool = True  # the model's domain guard turns windows unlike its training data into `unknown` votes
    out: str | None = None
    fs: float | None = None
    hop: int | None = None
    realtime: bool = False
    resample: bool = False
    fmt: str = "auto"
    channel: str | None = None  # the sensor of a CWRU .mat file (None: DE, the drive end)
    column: str | None = None
    health: HealthConfig = field(default_factory=HealthConfig)
    checks: SampleChecks = field(default_factory=SampleChecks)
    stall_timeout: float = 5.0
    mqtt: str | None = None
    mqtt_config: str | None = None
    alert_queue: str | None = None
    queue_max: int | None = None  # None: DEFAULT_QUEUE_MAX
    max_windows: int | None = None
    batch: int = 64
    lines: bool = True  # write JSON lines (to `out`, else stdout)


DEFAULT_QUEUE_MAX = 10_000


class Counters(dict):
    KEYS = ("windows", "classified", "sensor_windows", "nan_windows", "flat_windows", "clipped_windows",
            "nonfinite_samples", "bad_lines", "short_bytes", "stalls", "reconnects", "alerts_dropped")

    def __init__(self):
        super().__init__({k: 0 for k in self.KEYS})


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Loop:
    """State of one monitor run; `feed` takes chunks, `stall` a stalled source."""

    def __init__(self, model, opts: MonitorOptions, fs_in: float, write, alerts=None, live=None):
        self.model, self.opts, self.write, self.alerts, self.live = model, opts, write, alerts, live
        self.hop = opts.hop or model.window
        self.resampler = StreamResampler(fs_in, model.fs)
        self.windower = Windower(model.window, self.hop)
        self.machine = HealthMachine(model.class_names, opts.health)
        self.counters = Counters()
        self.latencies: list[float] = []
        self.infer_s = 0.0
        self._last_input_line = 0.0
        self._reported_input = (0, 0)
        self.last_probs: list | None = None

    def feed(self, chunks: list) -> None:
        wins, ends, arrived = [], [], []
        for ch in chunks:
            self.counters["bad_lines"] += ch.bad_lines
            self.counters["short_bytes"] += ch.short_bytes
            self.counters["reconnects"] += ch.reconnects
            w, e = self.windower.push(self.resampler.push(ch.samples))
            if len(w):
                wins.append(w)
                ends.append(e)
                arrived.append(np.full(len(w), ch.arrived))
        lines = self._input_lines()
        if wins:
            lines += self._windows(np.concatenate(wins), np.concatenate(ends), np.concatenate(arrived))
        self._emit(lines)

    def stall(self) -> None:
        step = self.machine.stalled()
        if step.changed:
            self.counters["stalls"] += 1
            self._emit([self._state_line(step, self.counters["windows"], None)])

    def _input_lines(self) -> list[dict]:
        now = time.monotonic()
        cur = (self.counters["bad_lines"], self.counters["short_bytes"])
        if cur == self._reported_input or now - self._last_input_line < 1.0:
            return []
        self._last_input_line, self._reported_input = now, cur
        return [{"type": "input", "time": time.time(), "bad_lines": cur[0], "short_bytes": cur[1]}]

    def _windows(self, wins: np.ndarray, ends: np.ndarray, arrived: np.ndarray) -> list:
        quality, nonfinite = check_windows(wins, self.opts.checks)
        self.counters["nonfinite_samples"] += nonfinite
        probs, domain = self._classify(wins, quality)
        lines, names, fs = [], self.model.class_names, self.model.fs
        c = self.counters
        for i, q in enumerate(quality):
            n = c["windows"]
            c["windows"] += 1
            p = probs[i]
            if q is None:
                c["classified"] += 1
                if not domain[i]:
                    c["out_of_domain_windows"] = c.get("out_of_domain_windows", 0) + 1
                step = self.machine.update(p, in_domain=bool(domain[i]))
            else:
                c["sensor_windows"] += 1
                c[f"{q}_windows"] += 1
                step = self.machine.update(sensor=q)
            t = round(float(ends[i]) / fs, 6)
            if self.opts.lines:
                cls = None if p is None else names[max(range(len(p)), key=p.__getitem__)]
                lines.append(_window_json(n, t, cls, p, step.state.label, q or "ok"))
            if step.changed:
                lines.append(self._state_line(step, n, t))
            lines.append(("arrived", arrived[i]))
        good = [p for p in probs if p is not None]
        if good:
            self.last_probs = good[-1]
        return lines

    def _classify(self, wins: np.ndarray, quality: list) -> list:
        """Probabilities (5 decimals, plain lists) of the windows fit to classify (None for the others), and
        whether the model's domain guard takes each window as in domain."""
        from ..data.dataset import normalize
        from ..guard import window_level

        good = [i for i, q in enumerate(quality) if q is None]
        out: list = [None] * len(quality)
        domain = [True] * len(quality)
        if not good:
            return out, domain
        t0 = time.perf_counter()
        raw = (wins if len(good) == len(wins) else wins[good])[:, None, :]
        x = normalize(raw, self.model.normalization)
        logits = np.concatenate([self.model.infer(x[s:s + self.opts.batch])
                                 for s in range(0, len(x), self.opts.batch)])
        if self.model.in_domain is not None:
            for i, ok in zip(good, self.model.in_domain(x, window_level(raw))):
                domain[i] = bool(ok)
        self.infer_s += time.perf_counter() - t0
        for i, p in zip(good, np.round(softmax(logits), 5).tolist()):
            out[i] = p
        return out, domain

    def _state_line(self, step: Step, n: int, t: float | None) -> dict:
        s = step.state
        line = {"type": "state", "state": s.label, "name": s.name, "fault": s.fault, "reason": s.reason,
                "from": step.previous.label, "i": n, "t": t,
                "time": round(time.time(), 6), "counters": dict(self.counters)}
        if self.live is not None:
            self.live.note_change(line)
        if self.alerts is not None:
            alert = {k: line[k] for k in ("state", "name", "fault", "reason", "from", "i", "t", "time")}
            if self.alerts.send(alert) is None:
                self.counters["alerts_dropped"] += 1
        return line

    def _emit(self, lines: list) -> None:
        """Write the lines at once, then record each window's latency (last sample → line written)."""
        text = [x if isinstance(x, str) else json.dumps(x, separators=(",", ":")) for x in lines
                if not isinstance(x, tuple)]
        if text:
            self.write("\n".join(text) + "\n")
        now = time.monotonic()
        for x in lines:
            if isinstance(x, tuple) and len(self.latencies) < MAX_LATENCIES:
                self.latencies.append(now - x[1])
        if self.live is not None:
            self.live.update(self)

    def warning(self, text: str) -> None:
        self._emit([{"type": "warning", "time": time.time(), "message": text}])


def _window_json(n: int, t: float, cls, p, state: str, quality: str) -> str:
    """A window line, formatted directly (json.dumps of the same dict costs several times more; the
    strings are class and state names, JSON-escaped by json.dumps)."""
    probs = "null" if p is None else "[" + ",".join(map(repr, p)) + "]"
    return (f'{{"type":"window","i":{n},"t":{t!r},"time":{round(time.time(), 6)!r},"class":{json.dumps(cls)},'
            f'"p":{probs},"state":{json.dumps(state)},"quality":"{quality}"}}')


def resolve_rate(model, source, fs: float | None, resample: bool) -> float:
    """The source's sample rate (stored, --fs, or the model's), refused or resampled when it differs."""
    rate = source.fs or fs or model.fs
    if not (rate > 0 and math.isfinite(rate)):
        raise InputError(f"sample rate must be a positive number of Hz, got {rate}")
    if abs(rate - model.fs) > 1e-9 * model.fs and not resample:
        raise InputError(f"{source.description} is at {rate:g} Hz but the model expects {model.fs:g} Hz; "
                         "pass --resample to convert it, or feed data at the model's rate")
    return rate


def _stop_on_signals(stop: threading.Event):
    """SIGINT/SIGTERM set `stop`; returns a function that restores the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, lambda *_: stop.set())
    return lambda: [signal.signal(s, h) for s, h in old.items()]


def run(opts: MonitorOptions, write, warn, live=None, stop: threading.Event | None = None, model=None,
        source=None) -> dict:
    """Monitor until the source ends, `max_windows` windows, `stop`, or SIGINT/SIGTERM; returns the summary.
    `model` / `source` may be given already loaded / opened (else `opts.model` / `opts.source` are)."""
    from .model import load_model
    from .sources import End, open_source

    if opts.hop is not None and opts.hop < 1:
        raise InputError(f"--hop must be at least 1 sample, got {opts.hop}")
    if opts.stall_timeout <= 0:
        raise InputError(f"--stall-timeout must be positive, got {opts.stall_timeout}")
    own_model = model is None
    model = model or load_model(opts.model, guard=opts.guard)
    hop = opts.hop or model.window
    chunk = max(1, min(hop, int(model.fs // 100))) if opts.realtime else hop * opts.batch
    source = source or open_source(opts.source, opts.fs, opts.fmt, opts.realtime, chunk,
                                  opts.channel or "DE", opts.column)
    rate = resolve_rate(model, source, opts.fs, opts.resample)
    if rate != model.fs:  # a chunk of the source becomes chunk × fs_model / fs_source samples at once
        from ..limits import check_alloc

        check_alloc(f"resampling chunks of {chunk:,} samples from {rate:g} Hz to {model.fs:g} Hz",
                    chunk * model.fs / rate * 8.0 * 4, "feed the data at a rate nearer the model's")
    alerts = _open_alerts(opts, warn)
    loop = Loop(model, opts, rate, write, alerts, live)
    if alerts is not None:
        alerts.warn = lambda text: (warn(text), loop.warning(text))
    stop = stop or threading.Event()
    restore = _stop_on_signals(stop)
    q: queue.Queue = queue.Queue(maxsize=64)
    try:
        loop._emit([_start_line(opts, model, source, rate, hop, alerts)])
        source.start(q, stop, rate)
        _consume(loop, q, stop, opts, End)
        if live is not None:
            live.update(loop, force=True)  # the final state, whatever the refresh interval
    finally:
        restore()
        stop.set()
        alert_summary = alerts.close() if alerts is not None else None
        if own_model:
            model.close()
    return _summary(loop, model, alert_summary)


def _open_alerts(opts: MonitorOptions, warn):
    if not opts.mqtt:
        return None
    from .alerts import MqttAlerts, load_config

    alerts = MqttAlerts(opts.mqtt, opts.alert_queue, load_config(opts.mqtt_config, warn=warn),
                          opts.queue_max or DEFAULT_QUEUE_MAX, warn)
    alerts.start()
    return alerts


def _consume(loop: Loop, q: queue.Queue, stop: threading.Event, opts: MonitorOptions, End) -> None:
    last_data = time.monotonic()
    while not stop.is_set():
        try:
            item = q.get(timeout=min(0.2, opts.stall_timeout))
        except queue.Empty:
            if time.monotonic() - last_data >= opts.stall_timeout:
                loop.stall()
            continue
        items = [item]
        while len(items) < 32 and not isinstance(items[-1], End):
            try:
                items.append(q.get_nowait())
            except queue.Empty:
                break
        chunks = [c for c in items if not isinstance(c, End)]
        if any(c.samples.size for c in chunks):
            last_data = time.monotonic()
        if chunks:
            loop.feed(chunks)
        if isinstance(items[-1], End):
            if items[-1].error is not None:
                err = items[-1].error
                raise err if isinstance(err, (InputError, DeviceError)) else DeviceError(f"source failed: {err}")
            return
        if opts.max_windows and loop.counters["windows"] >= opts.max_windows:
            return


def _start_line(opts, model, source, rate, hop, alerts) -> dict:
    h = opts.health
    return {"type": "start", "time": time.time(), "source": source.description, "source_fs": rate,
            "resampled": abs(rate - model.fs) > 1e-9 * model.fs, "model": model.source, "runner": model.name,
            "fs": model.fs, "window": model.window, "hop": hop, "classes": model.class_names,
            "health": {"k": h.k, "n": h.n, "m": h.m, "smoothing": h.smoothing, "min_confidence": h.min_confidence,
                       "healthy_class": h.healthy_class}, "stall_timeout_s": opts.stall_timeout,
            "alerts": None if alerts is None else {"broker": f"{alerts.broker.host}:{alerts.broker.port}",
                                                   "topic": alerts.broker.topic, "queue": str(alerts.journal.path),
                                                   "resumed": alerts.resumed}}


def _summary(loop: Loop, model, alerts: dict | None) -> dict:
    lat = np.asarray(loop.latencies) * 1000.0
    pct = (lambda q: float(np.percentile(lat, q)) if lat.size else None)
    c = loop.counters
    return {"type": "summary", "time": time.time(), "runner": model.name, "state": loop.machine.state.label,
            "counters": dict(c), "inference_s": loop.infer_s,
            "windows_per_s_inference": c["classified"] / loop.infer_s if loop.infer_s else None,
            "latency_ms": {"p50": pct(50), "p99": pct(99), "max": float(lat.max()) if lat.size else None},
            "alerts": alerts}
