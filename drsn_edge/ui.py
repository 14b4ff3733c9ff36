"""Console output: rich tables and progress for people, one JSON object for machines, one-line errors."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager

from .errors import DrsnEdgeError
from .fileio import jsonable


_emitted = {"json": False}
_failed = {"code": None}


def emit_json(obj: dict) -> None:
    """Print the command's one JSON object (a later error then goes to stderr only)."""
    _emitted["json"] = True
    sys.stdout.write(json.dumps(jsonable(obj), sort_keys=False) + "\n")
    sys.stdout.flush()


def console(stderr: bool = False):
    """A rich console; when output is not a terminal, wide enough for the 10-class confusion matrix."""
    import os

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or os.environ.get("COLUMNS") else 140
    return Console(stderr=stderr, highlight=False, width=width)


def table(title: str, columns: list[str], rows: list[list], caption: str | None = None):
    from rich.table import Table

    t = Table(title=title, caption=caption, title_justify="left")
    for i, c in enumerate(columns):
        numeric = all(_numeric(r[i]) for r in rows if i < len(r))
        t.add_column(c, justify="right" if i and numeric else "left")
    for r in rows:
        t.add_row(*[fmt(v) for v in r])
    return t


def _numeric(v) -> bool:
    if v is None or isinstance(v, (int, float)):
        return True
    try:
        float(str(v).replace(",", ""))
        return True
    except ValueError:
        return str(v) in ("–", "")


def fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


def pct(v) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def fail(exc_text: str, exit_code: int, as_json: bool) -> None:
    """The one way a command ends in error: one line on stderr, the JSON error object on stdout with --json
    (unless the command already printed its object), and the exit code of the contract."""
    import os

    from . import interrupts

    interrupts.ending()
    _failed["code"] = exit_code
    line = " ".join(str(exc_text).split())
    status = os.environ.get("DRSN_EDGE_STATUS_FILE")
    if int(os.environ.get("RANK", "0") or 0) != 0:
        sys.exit(exit_code)  # only rank 0 of a multi-process run speaks
    if status:
        with open(status, "w") as f:
            f.write(str(exit_code))
    if as_json and not _emitted["json"]:
        emit_json({"error": line, "exit_code": exit_code})
    sys.stderr.write(f"drsn-edge: error: {line}\n")
    sys.stderr.flush()
    if exit_code == 130 and _own_process():
        # interrupted: every `finally` has already removed what was staged; end now, before the interpreter's
        # finalization, where the native libraries' exit hooks run (and may restore a signal's default action,
        # so that a late Ctrl-C would end the process by the signal instead of with exit 130)
        sys.stdout.flush()
        os._exit(130)
    sys.exit(exit_code)


def _own_process() -> bool:
    """drsn-edge is this process's program (`drsn-edge …` or `python -m drsn_edge …`), not a library call."""
    from pathlib import Path

    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return (spec is not None and spec.name == "drsn_edge.__main__") or Path(sys.argv[0]).name == "drsn-edge"


def os_error_line(exc: OSError) -> tuple[str, int]:
    """An OSError as one line and its exit class: a path the user named (missing, read-only, full, name too
    long, not permitted) is bad input (2); anything else is a device or transport failure (4)."""
    import errno

    what = exc.strerror or str(exc)
    name = exc.filename
    text = f"cannot use '{name}': {what}" if name else f"system error: {what}"
    hints = {errno.ENOSPC: "free some space or choose another output folder",
             errno.EROFS: "choose an output on a writable filesystem",
             errno.EACCES: "check the permissions or choose another path",
             errno.EPERM: "check the permissions or choose another path",
             errno.ENAMETOOLONG: "use a shorter file name",
             errno.ENOENT: "check the path", errno.EISDIR: "name a file, not a folder",
             errno.ENOTDIR: "a part of the path is a file, not a folder"}
    if exc.errno in hints:
        return f"{text}; {hints[exc.errno]}", 2
    return text, 4


def _wants_json(args: list[str]) -> bool:
    return "--json" in args


def cli_group_class():
    """The Click group class every command runs under: it handles errors once for all commands — usage
    errors, drsn-edge errors, filesystem errors, Ctrl-C and SIGTERM — with one line, the exit code of the
    contract and, with --json, exactly one JSON object on stdout."""
    import click

    class Cli(click.Group):
        def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
            args = list(sys.argv[1:] if args is None else args)
            as_json = _wants_json(args)
            from . import interrupts

            interrupts.reset()
            interrupts.install()
            _failed["code"] = None
            _quiet_native_logs()
            try:
                try:
                    rv = super().main(args=args, prog_name=prog_name or "drsn-edge", complete_var=complete_var,
                                      standalone_mode=False, **extra)
                except click.exceptions.NoArgsIsHelpError as exc:
                    sys.stdout.write(exc.ctx.get_help() + "\n")
                    sys.exit(0)
                except Exception as exc:
                    _fail_from(exc, as_json)
                except (click.Abort, KeyboardInterrupt):
                    fail(INTERRUPTED_LINE, 130, as_json)
            except KeyboardInterrupt:  # one raised while the error was being reported: the exit is still 130
                if _failed["code"] is None:
                    fail(INTERRUPTED_LINE, 130, as_json)
                sys.exit(130)
            sys.exit(rv if isinstance(rv, int) else 0)

    return Cli


INTERRUPTED_LINE = "interrupted; nothing half-written was left behind"


def _fail_from(exc: Exception, as_json: bool) -> None:
    """The one line and exit code of an error. After SIGINT/SIGTERM, any error is the interrupt's: a library
    that catches the KeyboardInterrupt and raises its own error (safetensors, ONNX Runtime) must not turn
    Ctrl-C into 'unreadable file' or 'missing dependency'."""
    import click

    from . import interrupts
    from .errors import EXIT_BAD_INPUT

    if interrupts.interrupted():
        fail(INTERRUPTED_LINE, 130, as_json)
    try:
        raise exc
    except click.UsageError as err:
        cmd = err.ctx.command_path if err.ctx else "drsn-edge"
        fail(f"{err.format_message()} (see '{cmd} --help')", EXIT_BAD_INPUT, as_json)
    except click.ClickException as err:
        fail(err.format_message(), EXIT_BAD_INPUT, as_json)
    except DrsnEdgeError as err:
        fail(str(err), err.exit_code, as_json)
    except OSError as err:
        fail(*os_error_line(err), as_json)
    except MemoryError:
        fail("out of memory; use smaller inputs or sizes", EXIT_BAD_INPUT, as_json)


def _quiet_native_logs() -> None:
    """Native libraries (TensorFlow Lite's converter, absl, oneDNN) log to stderr at import; keep their
    informational lines off stderr, which holds only our one line (a user's own setting wins)."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GLOG_minloglevel", "2")


@contextmanager
def progress_bar(enabled: bool, description: str, total: int | None = None):
    """Yield `advance(completed, total=None, **fields)`; a no-op when disabled (--json, quiet, no TTY)."""
    if not enabled:
        yield lambda *a, **k: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*cols, console=console(stderr=True), transient=False) as prog:
        task = prog.add_task(description, total=total, info="")

        def advance(completed, total=None, info: str = ""):
            prog.update(task, completed=completed, total=total if total is not None else prog.tasks[0].total, info=info)

        yield advance
