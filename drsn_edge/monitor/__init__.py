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
    with contextlib.ExitStack() as stack:
        if opts.out:
            from ..outputs import check_overlap

            # appended to, never an input: not the recording replayed, the model, its config or alert queue
            inputs = [p for p in (opts.source, opts.model, opts.mqtt_config, opts.alert_queue)
                      if p and "://" not in str(p) and p != "-"]
            check_overlap([opts.out], inputs, "--out")
            try:
                f = stack.enter_context(open(opts.out, "a", encoding="utf-8"))
            except OSError as exc:
                from ..errors import InputError

                raise InputError(f"cannot write --out '{opts.out}' ({exc.strerror})") from None
            write = _writer(f)
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
