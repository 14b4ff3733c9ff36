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


STATUS_ENV = "DRSN_EDGE_STATUS_FILE"  # rank 0 writes its exit code here (torchrun itself only says 0 or 1)


def relaunch_with_torchrun(nproc: int, argv: list[str]) -> int:
    """Run the workers under torchrun and speak once for all of them: rank 0's JSON object (stdout passes
    through), its one-line error or progress on stderr, and its exit code; torchrun's own failure report
    (a ChildFailedError traceback) is not shown."""
    import shutil
    import tempfile

    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    tmp = tempfile.mkdtemp(prefix="drsn-edge-torchrun.")  # torchrun's logs and ours, removed afterwards
    status = os.path.join(tmp, "status")
    env[STATUS_ENV] = status
    env["TMPDIR"] = tmp
    try:
        proc = subprocess.Popen(torchrun_command(nproc, argv), env=env, stderr=subprocess.PIPE, text=True,
                                errors="replace")
        try:
            for line in proc.stderr:
                _relay(line)
            rc = proc.wait()
        except KeyboardInterrupt:  # the workers got the signal too; rank 0 reports it
            for line in proc.communicate()[1].splitlines(keepends=True):
                _relay(line)
            rc = proc.returncode
        return _rank0_code(status, rc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _relay(line: str) -> None:
    if line.startswith(("drsn-edge:", "epoch ")):
        sys.stderr.write(line)
        sys.stderr.flush()


def _rank0_code(status: str, rc: int) -> int:
    try:
        text = open(status).read().strip()
    except OSError:
        text = ""
    if text.isdigit():
        return int(text)
    if rc:
        sys.stderr.write("drsn-edge: error: the training workers failed without a message (see torchrun)\n")
        return 4
    return 0
