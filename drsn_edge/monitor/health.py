"""Health state from per-window class probabilities: smoothing plus K-of-N / M hysteresis.

Pure and deterministic: no I/O, no clock. Each window casts one vote:
  healthy          the smoothed probabilities' top class is the healthy class
  fault            the top class is a fault class (the vote carries the class)
  sensor           the window's samples were unusable (NaN/Inf, clipped, flat-lined); not classified
  unknown          the window was outside the model's domain (`in_domain=False`); its class is ignored
  (none)           the top smoothed probability is below `min_confidence`

States: starting → healthy | fault | sensor | unknown, and `no data` while the source is stalled.
- Enter fault / sensor / unknown when at least K of the last N votes are of that kind (for fault, any
  fault class counts; the state names the fault class voted most often among those N windows).
- Clear to healthy after M healthy votes in a row; the older votes are then forgotten, so they cannot
  bring the fault straight back.
- `no data` is entered by `stalled()` and left by the next window, back to the state held before it.
A change of the fault class while in the fault state is a state change too.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from ..errors import InputError

STARTING, HEALTHY, FAULT, SENSOR, UNKNOWN, NO_DATA = "starting", "healthy", "fault", "sensor", "unknown", "no data"
STATES = (STARTING, HEALTHY, FAULT, SENSOR, UNKNOWN, NO_DATA)
LATCHING = (FAULT, SENSOR, UNKNOWN)  # entered by K of N votes


@dataclass(frozen=True)
class HealthConfig:
    k: int = 4                   # enter fault/sensor/unknown after K of the last N windows
    n: int = 6
    m: int = 6                   # clear to healthy after M healthy windows in a row
    smoothing: float = 0.5       # EMA weight of the newest window's probabilities (1 = no smoothing)
    min_confidence: float = 0.5  # a smoothed top probability below this casts no vote
    healthy_class: str = "normal"

    def validate(self, class_names) -> int:
        """Check the thresholds against the model's classes; returns the healthy class index."""
        if not 1 <= self.k <= self.n:
            raise InputError(f"hysteresis needs 1 ≤ K ≤ N, got K={self.k}, N={self.n}")
        if self.m < 1:
            raise InputError(f"M (healthy windows to clear) must be at least 1, got {self.m}")
        if not 0.0 < self.smoothing <= 1.0:
            raise InputError(f"smoothing must be in (0, 1], got {self.smoothing}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise InputError(f"min confidence must be in [0, 1], got {self.min_confidence}")
        names = list(class_names)
        if self.healthy_class not in names:
            raise InputError(f"healthy class '{self.healthy_class}' is not one of the model's classes "
                             f"({', '.join(names)}); name it with --healthy-class")
        return names.index(self.healthy_class)


def parse_enter(text: str) -> tuple[int, int]:
    """'K/N' → (K, N)."""
    k, sep, n = str(text).partition("/")
    if not (sep and k.strip().isdigit() and n.strip().isdigit()):
        raise InputError(f"--enter takes K/N such as 4/6, got '{text}'")
    return int(k), int(n)


@dataclass(frozen=True)
class State:
    name: str
    fault: str | None = None   # the fault class, in the fault state
    reason: str | None = None  # what was wrong with the samples, in the sensor state (not part of identity)

    @property
    def label(self) -> str:
        return f"{self.name}:{self.fault}" if self.fault else self.name

    def same(self, other: "State") -> bool:
        return (self.name, self.fault) == (other.name, other.fault)


@dataclass(frozen=True)
class Vote:
    kind: str | None           # healthy | fault | sensor | unknown | None (not confident)
    detail: str | None = None  # fault class or sensor reason


@dataclass
class Step:
    state: State
    vote: Vote
    smoothed: list[float] | None
    previous: State | None = None  # set when this step changed the state

    @property
    def changed(self) -> bool:
        return self.previous is not None


class HealthMachine:
    """Feed one window at a time with `update`; call `stalled` when the source stops delivering."""

    def __init__(self, class_names, config: HealthConfig | None = None):
        self.config = config or HealthConfig()
        self.class_names = list(class_names)
        self.healthy_index = self.config.validate(self.class_names)
        self.state = State(STARTING)
        self._held = self.state           # the state to return to when data resumes after `no data`
        self._votes: deque[Vote] = deque(maxlen=self.config.n)
        self._healthy_run = 0
        self._ema: list[float] | None = None

    def update(self, probs=None, *, in_domain: bool = True, sensor: str | None = None) -> Step:
        """One window: its class probabilities (None when `sensor` names what was wrong with its samples)."""
        previous = self.state
        if self.state.name == NO_DATA:
            self.state = self._held
        vote, smoothed = self._vote(probs, in_domain, sensor)
        self._votes.append(vote)
        self._healthy_run = self._healthy_run + 1 if vote.kind == HEALTHY else 0
        self.state = self._decide()
        return Step(self.state, vote, smoothed, None if previous.same(self.state) else previous)

    def stalled(self) -> Step:
        """The source delivered nothing for the stall timeout: enter `no data` (once)."""
        previous = self.state
        if previous.name != NO_DATA:
            self._held = previous
            self.state = State(NO_DATA)
        return Step(self.state, Vote(None), None, None if previous.same(self.state) else previous)

    def _vote(self, probs, in_domain: bool, sensor: str | None) -> tuple[Vote, list | None]:
        if sensor is not None:
            return Vote(SENSOR, sensor), None
        if probs is None:
            raise ValueError("a window without a sensor problem needs its class probabilities")
        p = [float(v) for v in probs]  # plain floats: ten of them are faster than numpy per window
        if len(p) != len(self.class_names):
            raise ValueError(f"expected {len(self.class_names)} probabilities, got {len(p)}")
        if not in_domain:
            return Vote(UNKNOWN), None
        a = self.config.smoothing
        ema = p if self._ema is None else [a * x + (1.0 - a) * e for x, e in zip(p, self._ema)]
        self._ema = ema
        top = max(range(len(ema)), key=ema.__getitem__)
        if ema[top] < self.config.min_confidence:
            return Vote(None), ema
        if top == self.healthy_index:
            return Vote(HEALTHY), ema
        return Vote(FAULT, self.class_names[top]), ema

    def _decide(self) -> State:
        cfg = self.config
        if self._healthy_run >= cfg.m:  # M healthy in a row outweigh the older votes: forget them
            kept = [v for v in self._votes if v.kind == HEALTHY]
            self._votes.clear()
            self._votes.extend(kept)
            return State(HEALTHY)
        counts = Counter(v.kind for v in self._votes if v.kind in LATCHING)
        latched = [kind for kind, c in counts.items() if c >= cfg.k]
        if latched:
            best = max(counts[kind] for kind in latched)
            tied = [kind for kind in latched if counts[kind] == best]
            kind = self.state.name if self.state.name in tied else self._most_recent(tied)
            return self._state_of(kind)
        return self.state

    def _most_recent(self, kinds: list[str]) -> str:
        for v in reversed(self._votes):
            if v.kind in kinds:
                return v.kind
        return kinds[0]

    def _state_of(self, kind: str) -> State:
        if kind == UNKNOWN:
            return State(UNKNOWN)
        details = [v.detail for v in self._votes if v.kind == kind]
        if kind == FAULT:
            return State(FAULT, fault=_plurality(details, prefer=self.state.fault))
        return State(SENSOR, reason=_plurality(details, prefer=self.state.reason))


def _plurality(items: list[str], prefer: str | None = None) -> str:
    """The most frequent item; ties go to `prefer` when it is among them, else to the most recent."""
    counts = Counter(items)
    best = max(counts.values())
    tied = [it for it in counts if counts[it] == best]
    if prefer in tied:
        return prefer
    for it in reversed(items):
        if it in tied:
            return it
    return tied[0]
