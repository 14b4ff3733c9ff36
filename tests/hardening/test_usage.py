"""Root cause 1: usage errors honour --json and the one-line rule (handled once, in the Click group)."""

import pytest

from .contract import expect

CASES = [
    (["data", "synth"], "missing option"),
    (["quantize", "-o", "q.onnx", "--method", "bogus"], "--method"),
    (["data", "synth", "-o", "x.npz", "--windows-per-class", "ten"], "--windows-per-class"),
    (["calibration", "make", "--data", "d.npz", "-o", "c.npz", "--n", "1.5"], "--n"),
    (["data", "info"], "missing argument"),
    (["lint"], "missing argument"),
    (["data", "info", "folder"], "folder"),
    (["evaluate", "folder"], "folder"),
    (["data", "import", "nothere.csv", "-o", "x.npz"], "nothere.csv"),
    (["data", "synth", "-o", "x.npz", "--bogus-option"], "--bogus-option"),
    (["no-such-command"], "no-such-command"),
    (["build"], "--target"),
    (["check", "--target", "host", "--noise-mode", "x"], "--noise-mode"),
    (["export", "m.drsn", "-o", "x.onnx", "--batch"], "--batch"),
    (["train", "--data", "d.npz", "-o", "m.drsn", "--epochs"], "--epochs"),
]


@pytest.mark.parametrize("args,needle", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_usage_error_is_one_json_object_and_one_line(work, args, needle):
    cwd = work("d.npz")
    (cwd / "folder").mkdir()
    expect(args, cwd, "input", contains=needle)


def test_help_is_not_an_error(work):
    from .contract import cli_env, run_cli

    run = run_cli(["data", "synth", "--help"], work.cwd, cli_env(work.cwd))
    assert run.rc == 0 and "--windows-per-class" in run.stdout and not run.stderr
