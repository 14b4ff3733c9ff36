"""On-machine fault monitoring: a live vibration stream → health state, JSON lines and MQTT alerts.

health.py  the pure state machine      sources.py  file / stdin / tcp / serial readers
stream.py  decoders, resampling,        alerts.py   MQTT with an on-disk queue
           windows, sample checks       run.py      the loop; live.py the terminal view
"""

from __future__ import annotations

import contextlib
import sys

from .run import MonitorOptions  # noqa: F401  (re-exported for callers)


def monitor(opts: "MonitorOptions", live: bool = False, summary_only: bool = False, warn=None) -> dict:
    """Run the monitor. JSON lines go to `opts.out`, else to stdout unless the live view (`live`) or
    `summary_only` (--json: only the summary object is printed, by the caller) owns stdout."""
    from .run import run

    warn = warn or (lambda text: sys.stderr.write(f"drsn-edge: warning: {text}\n"))
    refuse_options_that_do_not_apply(opts)
    guard_outputs(opts)
    with contextlib.ExitStack() as stack:
        if opts.out:
            write = _writer(stack.enter_context(_LazyAppend(opts.out)))
        elif live or summary_only:
            write, opts.lines = (lambda text: None), False
        else:
            write = _writer(sys.stdout)
        view = None
        if live:
            from ..ui import console
            from .live import LiveView

            view = stack.enter_context(LiveView(console()))
        summary = run(opts, write, warn, view)
        if opts.out or not (live or summary_only):
            write(_dumps(summary) + "\n")
    return summary


def refuse_options_that_do_not_apply(opts) -> None:
    """An option that would be silently ignored for this source or without --mqtt is refused instead."""
    from ..errors import InputError

    src = str(opts.source)
    stream = src == "-" or "://" in src
    if stream and opts.realtime:
        raise InputError(f"--realtime replays a file at its real rate; {src} is a live stream already")
    if not stream and opts.fmt != "auto":
        raise InputError(f"--format {opts.fmt} applies to '-', tcp:// and serial:// streams; a file is read by its "
                         "extension")
    if opts.channel is not None and (stream or not src.lower().endswith(".mat")):
        raise InputError(f"--channel {opts.channel} picks the sensor of a CWRU .mat file; '{src}' is not one "
                         "(use --column for a column of a CSV, NPZ or WAV file)")
    for flag, value in (("--mqtt-config", opts.mqtt_config), ("--alert-queue", opts.alert_queue),
                        ("--queue-max", opts.queue_max)):
        if value and not opts.mqtt:
            raise InputError(f"{flag} applies to MQTT alerts: pass --mqtt mqtt://HOST[:PORT]/TOPIC too")


def guard_outputs(opts) -> None:
    """--out and --alert-queue are appended to: never an input (the recording replayed, the model, its MQTT
    config) nor each other, writable, and not a file of the user's (an existing one must be what monitor
    writes there: its JSON lines, an alert queue)."""
    from ..outputs import guard_append
    from .alerts import is_journal

    def files(*paths):
        return [p for p in paths if p and "://" not in str(p) and p != "-"]

    if opts.out:
        guard_append(opts.out, files(opts.source, opts.model, opts.mqtt_config, opts.alert_queue), "--out",
                     is_ours=holds_monitor_lines)
    if opts.alert_queue and opts.mqtt:
        guard_append(opts.alert_queue, files(opts.source, opts.model, opts.mqtt_config, opts.out), "--alert-queue",
                     is_ours=is_journal)


def holds_monitor_lines(path) -> bool:
    """Whether the last line of a file is one of monitor's JSON lines (a window, event or summary object)."""
    import json
    import os

    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - 65536))
        lines = f.read().splitlines()
    try:
        last = json.loads(lines[-1]) if lines else None
    except ValueError:
        return False
    return isinstance(last, dict) and "type" in last


class _LazyAppend:
    """A file opened for appending at the first line written: a run that fails before its first line
    creates no file. Each line is one write() and a flush, so a kill never leaves half a line."""

    def __init__(self, path):
        self.path, self.f = path, None

    def write(self, text: str) -> None:
        if self.f is None:
            try:
                self.f = open(self.path, "a", encoding="utf-8")
            except OSError as exc:
                from ..errors import InputError

                raise InputError(f"cannot write --out '{self.path}' ({exc.strerror})") from None
        self.f.write(text)

    def flush(self) -> None:
        if self.f is not None:
            self.f.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.f is not None:
            self.f.close()


def _writer(f):
    def write(text: str) -> None:
        try:
            f.write(text)
            f.flush()
        except BrokenPipeError:  # the reader went away: nothing more to say
            raise SystemExit(0) from None

    return write


def _dumps(obj) -> str:
    import json

    from ..fileio import jsonable

    return json.dumps(jsonable(obj), separators=(",", ":"))
