"""Multi-process training: relaunch the same command under torchrun (DDP over gloo on CPU)."""

from __future__ import annotations

import os
import subprocess
import sys


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """The torchrun command that runs `drsn-edge <argv>` (without --nproc) in `nproc` processes."""
    args, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        args.append(a)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "drsn_edge", *args]


def relaunch_with_torchrun(nproc: int, argv: list[str]) -> int:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return subprocess.call(torchrun_command(nproc, argv), env=env)
