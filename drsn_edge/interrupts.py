"""Ctrl-C and SIGTERM, owned by the command's own process.

Both signals unwind the command like Ctrl-C (KeyboardInterrupt), so that every `finally` removes its
staging folder or temporary file on the way out. Three rules make that reliable:

- `deferred()` marks a section a signal must not cut in two (creating a temporary and remembering its
  name; replacing an output folder; removing a temporary): a signal that arrives there is held and
  raised when the section ends.
- Native code that runs for long or installs its own handlers (the TFLite converter stack) runs in a
  child process (drsn_edge.isolate); this process only waits, so a signal is handled at once.
- A library that catches the KeyboardInterrupt and raises its own error instead is not believed: once a
  signal arrived, the command ends as interrupted (`interrupted()`, `reraise_if_interrupted()`).
- A signal that arrives after the command's output was committed (`final_commit()` around the work,
  `committed()` right after the replacing rename) no longer interrupts: the output is complete, the
  command reports it and exits 0. Before that point, the output is left as it was and the exit is 130.
"""

from __future__ import annotations

import contextlib
import signal
import threading

from .errors import INTERRUPTED

_STATE = {"defer": 0, "pending": None, "final": False, "done": False}


def _handler(signum, frame) -> None:
    INTERRUPTED["signal"] = signum
    if _STATE["done"]:
        return  # the command's output is committed: it finishes and reports it
    if _STATE["defer"]:
        _STATE["pending"] = signum
        return
    raise KeyboardInterrupt


def install() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread (and are recorded in INTERRUPTED)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _handler)


def reset() -> None:
    """Forget the state of an earlier command run in this process (tests run several)."""
    _STATE.update(defer=0, pending=None, final=False, done=False)
    INTERRUPTED["signal"] = None


def interrupted() -> bool:
    """A signal arrived and the command's output is not committed yet."""
    return INTERRUPTED["signal"] is not None and not _STATE["done"]


def reraise_if_interrupted() -> None:
    """For a handler that catches Exception broadly (a failed format is a row of a table): a library may have
    caught our KeyboardInterrupt and raised its own error (safetensors does); then raise the interrupt."""
    if interrupted():
        raise KeyboardInterrupt


def ending() -> None:
    """The command is ending (its one line is being printed): further signals change nothing."""
    _STATE["done"] = True
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


def is_done() -> bool:
    return _STATE["done"]


@contextlib.contextmanager
def deferred():
    """Hold SIGINT/SIGTERM until the block ends, then raise the interrupt (unless the block raised)."""
    _STATE["defer"] += 1
    try:
        yield
    except BaseException:
        if _STATE["defer"] == 1:
            _STATE["pending"] = None  # the block's own error ends the command: one signal, one interrupt
        raise
    finally:
        _STATE["defer"] -= 1
    if not _STATE["defer"] and _STATE["pending"] is not None:
        _STATE["pending"] = None
        if not _STATE["done"]:
            raise KeyboardInterrupt


@contextlib.contextmanager
def final_commit():
    """The block's first committed output ends the command: a signal after it does not interrupt."""
    _STATE["final"] = True
    try:
        yield
    finally:
        _STATE["final"] = False


def committed() -> None:
    """Called right after an output was put in place (inside `deferred()`)."""
    if _STATE["final"]:
        _STATE["done"] = True
