"""Run a function in a child Python process while this process owns the signals.

For native work that cannot be interrupted cleanly in-process: the TFLite converter stack (litert-torch,
TensorFlow's MLIR converter, JAX) and ai-edge-quantizer run C++ for seconds at a time and call back into
Python from native code and thread pools, where a KeyboardInterrupt is swallowed ("Exception ignored") or
ends in std::terminate (abort). Here the parent only waits on a pipe, so SIGINT/SIGTERM are handled at
once: the child is killed and waited for, and the caller's `finally` removes what it staged. The child
ignores SIGINT (a Ctrl-C on the terminal reaches the whole process group; the parent decides) and dies
with its parent, even when the parent is killed outright (Linux parent-death signal). Its temporaries go
where the parent's TMPDIR points when it starts (drsn_edge.fileio.private_tmpdir).

A plain subprocess rather than multiprocessing: spawn and forkserver start a resource-tracker process
that outlives the call and warns on stderr about semaphores the converter stack leaves registered; fork
is unsafe in a process that runs threads (PyTorch, ONNX Runtime). The call and its result travel as
pickles over pipes between this process and the child it started (never from a file)."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys

from .errors import CheckFailedError, DrsnEdgeError

_POLL_S = 0.2


def run_isolated(func, *args, what: str = "the child process"):
    """`func(*args)` in a child process; its result, or its drsn-edge error raised here. `func` must be a
    module-level function; arguments and result plain data (arrays, bytes, dicts)."""
    from .interrupts import deferred

    call = pickle.dumps((func.__module__, func.__qualname__, args), protocol=pickle.HIGHEST_PROTOCOL)
    r, w = os.pipe()
    proc = None
    try:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        with deferred():  # started and known, or not started
            proc = subprocess.Popen([sys.executable, "-c", f"from drsn_edge.isolate import _main; _main({w})"],
                                    stdin=subprocess.PIPE, stdout=sys.stderr.fileno(), pass_fds=(w,), env=env)
        os.close(w)
        w = None
        proc.stdin.write(call)
        proc.stdin.close()
        with os.fdopen(r, "rb") as result:
            r = None
            data = result.read()  # EOF when the child exits, whatever the way
        proc.wait()
    finally:
        with deferred():
            for fd in (r, w):
                if fd is not None:
                    os.close(fd)
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    return _unpack(data, proc.returncode, what)


def _unpack(data: bytes, code: int, what: str):
    if not data:
        how = f"signal {signal.Signals(-code).name}" if code and code < 0 else f"exit code {code}"
        raise CheckFailedError(f"{what} stopped with {how} without a result (out of memory or a crash in native "
                               "code); set DRSN_EDGE_VERBOSE=1 to see its log")
    kind, payload = pickle.loads(data)
    if kind == "ok":
        return payload
    if kind == "error":
        cls, text = payload
        raise _error_classes().get(cls, DrsnEdgeError)(text)
    raise CheckFailedError(f"{what} failed: {payload}")


def _error_classes() -> dict:
    from . import errors

    return {c.__name__: c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, DrsnEdgeError)}


def _main(result_fd: int) -> None:
    """The child: read the call from stdin, write ("ok", result) / ("error", (class, text)) / ("crash", text)."""
    import importlib

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    module, name, args = pickle.loads(sys.stdin.buffer.read())
    try:
        msg = ("ok", getattr(importlib.import_module(module), name)(*args))
    except DrsnEdgeError as exc:
        msg = ("error", (type(exc).__name__, str(exc)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent as one line
        msg = ("crash", " ".join(f"{type(exc).__name__}: {exc}".split())[:2000])
    with os.fdopen(result_fd, "wb") as f:
        f.write(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))
        f.flush()
    os._exit(0)  # no interpreter teardown: the converter stack's atexit hooks and threads are not ours


def _die_with_parent() -> None:
    """Ask the kernel to kill this process when its parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    parent = os.getppid()
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent or parent == 1:  # the parent died before the request
        os._exit(1)
