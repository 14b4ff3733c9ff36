"""The live terminal view (rich) shown when stdout is a terminal: state, last class and probabilities,
throughput, input problems and the latest state changes."""

from __future__ import annotations

import time
from collections import deque

STYLE = {"healthy": "green", "fault": "bold red", "sensor": "yellow", "unknown": "magenta", "no data": "yellow",
         "starting": "cyan"}


class LiveView:
    def __init__(self, console, refresh_s: float = 0.25):
        from rich.live import Live

        self.console, self.refresh_s = console, refresh_s
        self.changes: deque = deque(maxlen=6)
        self._live = Live(console=console, auto_refresh=False, transient=False)
        self._last = 0.0
        self._t0 = time.monotonic()
        self._seen_windows = 0

    def __enter__(self):
        self._live.__enter__()
        return self

    def __exit__(self, *exc):
        self._live.__exit__(*exc)

    def update(self, loop, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.refresh_s:
            return
        self._last = now
        self._live.update(self._render(loop), refresh=True)

    def note_change(self, line: dict) -> None:
        self.changes.append(f"{time.strftime('%H:%M:%S')}  {line['from']} → {line['state']}")

    def _render(self, loop):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        state = loop.machine.state
        head = Text.assemble(("state  ", "bold"), (state.label, STYLE.get(state.name, "")))
        if state.reason:
            head.append(f"  ({state.reason})")
        c = loop.counters
        rate = c["windows"] / max(1e-9, time.monotonic() - self._t0)
        stats = Table.grid(padding=(0, 2))
        stats.add_row("windows", str(c["windows"]), "windows/s", f"{rate:.1f}")
        stats.add_row("sensor windows", str(c["sensor_windows"]), "bad lines", str(c["bad_lines"]))
        stats.add_row("stalls", str(c["stalls"]), "alerts waiting",
                      str(loop.alerts.pending) if loop.alerts is not None else "–")
        probs = Table(title="last window", title_justify="left", show_header=False, box=None)
        last = loop.last_probs
        if last is not None:
            for name, p in sorted(zip(loop.model.class_names, last), key=lambda t: -t[1])[:4]:
                probs.add_row(name, f"{p:6.3f}", "█" * int(round(20 * p)))
        return Group(head, stats, probs, Text("\n".join(self.changes) or "no state changes yet"))
