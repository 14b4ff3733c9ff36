"""Console output: rich tables and progress for people, one JSON object for machines, one-line errors."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager

from .errors import DrsnEdgeError
from .fileio import jsonable


_emitted = {"json": False}


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


@contextmanager
def fail_cleanly(as_json: bool):
    """Turn DrsnEdgeError into one line on stderr (and a JSON error object with --json) + its exit code."""
    try:
        yield
    except DrsnEdgeError as exc:
        if as_json and not _emitted["json"]:
            emit_json({"error": str(exc), "exit_code": exc.exit_code})
        sys.stderr.write(f"drsn-edge: error: {exc}\n")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("drsn-edge: interrupted\n")
        sys.exit(130)


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
