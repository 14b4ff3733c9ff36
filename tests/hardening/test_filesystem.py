"""Root cause 2: outputs that cannot be written (permission, read-only or full filesystem, name too long,
parent is a file) are refused before the work (outputs.check_writable) with one line and exit 2; an
OSError during a write is one line too (the Click group) and leaves nothing behind."""

import shutil
import subprocess

import pytest

from .contract import expect

WRITERS = [
    ["data", "synth", "-o", "{o}.npz", "--windows-per-class", "5"],
    ["calibration", "make", "--data", "d.npz", "-o", "{o}.npz"],
    ["export", "m.drsn", "-o", "{o}.onnx"],
    ["quantize", "m.drsn", "--calib", "cal.npz", "-o", "{o}.onnx"],
    ["build", "m.drsn", "--calib", "cal.npz", "--target", "host", "-o", "{o}"],
    ["evaluate", "m.drsn", "--data", "d.npz", "--plot", "{o}.png"],
    ["check", "--target", "host", "--report", "{o}"],
    ["train", "--data", "d.npz", "-o", "{o}.drsn", "--epochs", "1"],
    ["import", "m.drsn", "-o", "{o}.drsn"],
    ["data", "import", "d.npz", "-o", "{o}.npz"],
    ["data", "merge", "d.npz", "cal.npz", "-o", "{o}.npz"],
    ["guard", "fit", "m.drsn", "--data", "d.npz", "-o", "{o}.drsn"],
    ["monitor", "m.drsn", "--source", "missing.npy", "-o", "{o}.jsonl"],
    ["benchmark", "m.drsn", "--format", "pytorch fp32", "--work", "{o}"],
    ["benchmark", "m.drsn", "--format", "pytorch fp32", "--work", "w", "--report", "{o}"],
]
IDS = [" ".join(w[:2]) for w in WRITERS]


@pytest.mark.parametrize("where,needle", [
    ("/sys/drsn-edge-out", "permission"),                      # not writable, even for root
    ("x" * 300, "shorter"),                               # longer than NAME_MAX
    ("afile/out", "is a file"),                                # a parent that is a file
    ("deep/" + "y" * 260 + "/out", "shorter"),
])
@pytest.mark.parametrize("args", WRITERS, ids=IDS)
def test_unwritable_output_refused_before_work(work, args, where, needle):
    cwd = work("d.npz", "m.drsn", "cal.npz")
    (cwd / "afile").write_text("x")
    expect([a.format(o=where) for a in args], cwd, "input", contains=needle, timeout=300)


def _can_unshare() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-mr", "true"], capture_output=True).returncode == 0


MOUNT = ["unshare", "-mr", "sh", "-c", 'mount -t tmpfs -o "$0" tmpfs mnt && exec "$@"']


@pytest.mark.skipif(not _can_unshare(), reason="needs user + mount namespaces (unshare -mr) to mount a tmpfs")
@pytest.mark.parametrize("args", WRITERS[:4] + WRITERS[5:6] + WRITERS[8:], ids=IDS[:4] + IDS[5:6] + IDS[8:])
def test_read_only_filesystem_refused_before_work(work, args):
    cwd = work("d.npz", "m.drsn", "cal.npz")
    (cwd / "mnt").mkdir()
    expect([a.format(o="mnt/out") for a in args], cwd, "input", contains="read-only", prefix=[*MOUNT, "ro,size=64k"],
           timeout=300)


@pytest.mark.skipif(not _can_unshare(), reason="needs user + mount namespaces (unshare -mr) to mount a tmpfs")
@pytest.mark.parametrize("args", [WRITERS[0], WRITERS[1], WRITERS[2]], ids=[IDS[0], IDS[1], IDS[2]])
def test_full_filesystem_is_one_line(work, args):
    """The write itself fails (ENOSPC): one line, exit 2, and the temporary beside the output is gone."""
    cwd = work("d.npz", "m.drsn", "cal.npz")
    (cwd / "mnt").mkdir()
    argv = [a.format(o="mnt/out") for a in args] + ["--json"]
    from .contract import assert_contract, cli_env, run_cli

    tmp = cwd.parent / "tmpdir"
    tmp.mkdir()
    check = ["sh", "-c", '"$@"; rc=$?; ls -A mnt >&2; exit $rc', "sh"]
    run = run_cli(argv, cwd, cli_env(tmp), prefix=[*MOUNT, "size=8k", *check])
    # stderr holds the error line and then the listing of the mount (nothing may be left there)
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert run.rc == 2 and lines[:1] and "no space" in lines[0].lower() and len(lines) == 1, run.stderr
    run.stderr = lines[0] + "\n"
    assert_contract(run, "input")
