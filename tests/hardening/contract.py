"""The CLI contract every bad input must keep, checked on a real subprocess run of `python -m drsn_edge`:
exactly one JSON object on stdout (with --json), the exit code class, one line on stderr, no traceback,
no new or changed files outside the intended outputs, every input byte-identical afterwards, and no
temporaries left in TMPDIR."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# Caches that libraries keep in TMPDIR across runs by design (not temporaries of one run): PyTorch's
# compiled-kernel cache.
LIBRARY_CACHES = ("torchinductor_",)
EXIT = {"ok": 0, "check": 1, "input": 2, "dependency": 3, "device": 4, "interrupted": 130}


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    obj: dict | None


def snapshot(*roots) -> dict[str, str]:
    """sha256 of every file (hidden ones and links included) under the roots, or of the root files."""
    out = {}
    for root in roots:
        root = Path(root)
        paths = [root] if root.is_file() else sorted(root.rglob("*")) if root.exists() else []
        for p in paths:
            if p.is_symlink():
                out[str(p)] = "link:" + os.readlink(p)
            elif p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
            elif p.is_dir():
                out[str(p)] = "dir"
    return out


def cli_env(tmp_root: Path, **extra) -> dict:
    env = dict(os.environ)
    env.update({"DRSN_EDGE_NO_PROGRESS": "1", "TMPDIR": str(tmp_root), "PYTHONWARNINGS": "ignore",
                "OMP_NUM_THREADS": "1", "COLUMNS": "200"})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_cli(args, cwd, env: dict | None = None, timeout: float = 600, prefix=()) -> Run:
    cmd = [*prefix, sys.executable, "-m", "drsn_edge", *[str(a) for a in args]]
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    obj = None
    lines = p.stdout.strip().splitlines()
    if len(lines) == 1:
        try:
            obj = json.loads(lines[0])
        except ValueError:
            obj = None
    return Run(p.returncode, p.stdout, p.stderr, obj)


def assert_contract(run: Run, exit_class: str, *, json_out: bool = True) -> None:
    """One JSON object, the exit code, one line on stderr on error, no traceback."""
    want = EXIT[exit_class]
    ctx = f"rc={run.rc}\nstdout={run.stdout[-2000:]}\nstderr={run.stderr[-3000:]}"
    assert "Traceback (most recent call last)" not in run.stderr + run.stdout, ctx
    assert run.rc == want, ctx
    if json_out:
        assert len(run.stdout.strip().splitlines()) == 1 and isinstance(run.obj, dict), ctx
        if want:
            assert run.obj.get("exit_code") == want and run.obj.get("error"), ctx
    if want:
        lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("drsn-edge: error: "), ctx


def expect(args, cwd, exit_class: str = "input", *, outputs=(), inputs=(), env_extra: dict | None = None,
           contains: str | None = None, timeout: float = 600, prefix=(), json_out: bool = True) -> Run:
    """Run `drsn-edge ARGS --json` in `cwd` and assert the whole contract. `outputs`: paths (relative to
    cwd) the command may create or change; `inputs`: extra files outside cwd that must stay identical."""
    cwd = Path(cwd)
    tmp_root = cwd.parent / (cwd.name + ".tmpdir")
    tmp_root.mkdir(exist_ok=True)
    before = snapshot(cwd, *inputs)
    run = run_cli([*args, "--json"] if json_out else args, cwd, cli_env(tmp_root, **(env_extra or {})), timeout, prefix)
    assert_contract(run, exit_class, json_out=json_out)
    if contains is not None:
        text = run.obj["error"] if (json_out and run.rc) else run.stderr + run.stdout
        assert contains.lower() in text.lower(), text
    after = snapshot(cwd, *inputs)
    allowed = {str(cwd / o) for o in outputs}

    def ok(p: str) -> bool:
        return any(p == a or p.startswith(a + os.sep) for a in allowed)

    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p) and not ok(p))
    assert not changed, f"files created, changed or removed outside the outputs: {changed}\n{run.stderr}"
    left = sorted(str(p) for p in tmp_root.iterdir() if not p.name.startswith(LIBRARY_CACHES))
    assert not left, f"temporaries left in TMPDIR: {left}"
    return run
