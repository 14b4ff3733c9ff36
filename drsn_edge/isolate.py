"""Run a function in a child process (multiprocessing, spawn) while this process owns the signals.

For native work that cannot be interrupted cleanly in-process: the TFLite converter stack (litert-torch,
TensorFlow's MLIR converter, JAX) and ai-edge-quantizer run C++ for seconds at a time, call back into
Python from native threads and pools, where a KeyboardInterrupt is swallowed ("Exception ignored") or
ends in std::terminate (abort). Here the parent only waits on a pipe, so SIGINT/SIGTERM are handled at
once: the child is killed and waited for, and the caller's `finally` removes what it staged. The child
ignores SIGINT (a Ctrl-C on the terminal reaches the whole process group; the parent decides) and dies
with its parent, even when the parent is killed outright (Linux parent-death signal). Its temporaries go
where the parent's TMPDIR points when it starts (drsn_edge.fileio.private_tmpdir)."""

from __future__ import annotations

import os
import signal

from .errors import CheckFailedError, DrsnEdgeError

_POLL_S = 0.2


def run_isolated(func, *args, what: str = "the child process"):
    """`func(*args)` in a spawned child; its result, or its drsn-edge error raised here. `func` and the
    arguments must be picklable (a module-level function; arrays, bytes, plain data)."""
    import multiprocessing as mp

    from .interrupts import deferred

    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = None
    try:
        with deferred():  # started and known, or not started
            proc = ctx.Process(target=_child, args=(send, os.getpid(), func, args), daemon=True)
            proc.start()
        send.close()
        msg = _wait(proc, recv, what)
    finally:
        with deferred():
            if proc is not None and proc.is_alive():
                proc.kill()
            if proc is not None and proc.pid is not None:
                proc.join()
            recv.close()
    kind, payload = msg
    if kind == "ok":
        return payload
    if kind == "error":
        cls, text = payload
        raise _ERRORS.get(cls, DrsnEdgeError)(text)
    raise CheckFailedError(f"{what} failed: {payload}")


def _wait(proc, recv, what: str):
    while True:
        if recv.poll(_POLL_S):
            try:
                return recv.recv()
            except EOFError:
                pass
        if not proc.is_alive() and not recv.poll(0):
            proc.join()
            code = proc.exitcode
            how = f"signal {signal.Signals(-code).name}" if code and code < 0 else f"exit code {code}"
            raise CheckFailedError(f"{what} stopped with {how} without a result (out of memory or a crash in "
                                   "native code); set DRSN_EDGE_VERBOSE=1 to see its log")


def _error_classes() -> dict:
    from . import errors

    return {c.__name__: c for c in vars(errors).values()
            if isinstance(c, type) and issubclass(c, DrsnEdgeError)}


_ERRORS = _error_classes()


def _child(send, parent_pid: int, func, args) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    try:
        msg = ("ok", func(*args))
    except DrsnEdgeError as exc:
        msg = ("error", (type(exc).__name__, str(exc)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent as one line
        msg = ("crash", " ".join(f"{type(exc).__name__}: {exc}".split())[:2000])
    send.send(msg)
    send.close()


def _die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to kill this process when its parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before the request: nobody waits for the result
        os._exit(1)
