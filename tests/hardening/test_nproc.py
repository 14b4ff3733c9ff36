"""Root cause 11: multi-process training validates before launching workers (train.preflight) and
only rank 0 speaks: one JSON object, one line, the real exit code."""

import pytest

from .contract import expect


@pytest.mark.parametrize("args,needle", [
    (["--data", "missing.npz", "-o", "m.drsn"], "does not exist"),
    (["--data", "empty.npz", "-o", "m.drsn"], "no windows"),
    (["--data", "d.npz", "-o", "m.onnx"], ".drsn"),
    (["--data", "d.npz", "-o", "d.npz"], ".drsn"),
    (["--data", "d.npz", "-o", "m.drsn", "--arch", "nope"], "nope"),
    (["--data", "d.npz", "-o", "m.drsn", "--resume"], "no checkpoint"),
    (["--data", "d.npz", "-o", "/sys/m.drsn"], "permission"),
])
def test_nproc_error_is_said_once(work, args, needle):
    expect(["train", "--nproc", "2", *args], work("d.npz", "empty.npz"), "input", contains=needle, timeout=300)


@pytest.mark.slow
def test_nproc_worker_error_is_said_once_by_rank_0(work):
    """An error inside the workers (after preflight): rank 0's line and exit code, no torchrun traceback."""
    cwd = work("d.npz")
    expect(["train", "--nproc", "2", "--data", "d.npz", "-o", "m.drsn", "--batch", "65536", "--epochs", "1"], cwd,
           "input", contains="batch", timeout=600)
