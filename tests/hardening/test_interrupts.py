"""Root cause 9: SIGTERM unwinds like Ctrl-C (the Click group): the staging folder of a build and the
temporaries of a quantization (ours and ONNX Runtime's, kept in a hidden folder beside the output) are
removed, the JSON error object is printed, exit 130; temporaries of runs killed outright are removed by
the next run."""

import os
import signal
import subprocess
import sys
import time

from pathlib import Path

import pytest

from .contract import Run, assert_contract, cli_env, snapshot


def _interrupt(cwd, args, sig, ready, timeout=240, keep=()):
    tmp = cwd.parent / "tmpdir"
    tmp.mkdir(exist_ok=True)
    before = snapshot(cwd)
    p = subprocess.Popen([sys.executable, "-m", "drsn_edge", *args, "--json"], cwd=cwd, env=cli_env(tmp),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not ready() and p.poll() is None and time.time() - t0 < timeout:
        time.sleep(0.05)
    assert p.poll() is None, p.communicate()
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    run = Run(p.returncode, out, err, None)
    import json

    run.obj = json.loads(out) if out.strip() and len(out.strip().splitlines()) == 1 else None
    assert_contract(run, "interrupted")
    assert "interrupted" in run.obj["error"]
    after = {k: v for k, v in snapshot(cwd).items() if Path(k).name not in keep}
    assert after == before, "files left behind or changed"
    from .contract import LIBRARY_CACHES

    assert not [p for p in tmp.iterdir() if not p.name.startswith(LIBRARY_CACHES)], "temporaries left in TMPDIR"


def _hidden(cwd, prefix):
    return lambda: any(p.name.startswith(prefix) for p in cwd.iterdir())


@pytest.mark.slow  # intermittent: the signal sometimes lands after the build's last step (then rc 0); open
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_build_leaves_no_staging(work, sig):
    # a QDQ ONNX target: the .tflite targets import the TensorFlow/JAX converter stack, whose native signal
    # handling can swallow or abort on a signal delivered during conversion (open: see the hardening notes)
    cwd = work("m.drsn", "cal.npz")
    _interrupt(cwd, ["build", "m.drsn", "--calib", "cal.npz", "--target", "jetson-orin-nano", "--method", "minmax",
                     "-o", "out"], sig, _hidden(cwd, ".out."))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_quantize_leaves_no_temporaries(work, sig):
    cwd = work("m.drsn", "cal.npz")

    def quantizing():  # ONNX Runtime's calibration folder exists inside our hidden temporary folder
        return any(any(True for _ in p.iterdir()) for p in cwd.iterdir() if p.name.startswith(".q.onnx.") and p.is_dir())

    _interrupt(cwd, ["quantize", "m.drsn", "--calib", "cal.npz", "-o", "q.onnx"], sig, quantizing)


def test_interrupted_training_prints_the_json_object(work):
    cwd = work("d.npz")
    marker = cwd / "d.json"
    start = time.time()
    # the checkpoint of the last finished epoch stays (complete, written atomically): --resume continues there
    _interrupt(cwd, ["train", "--data", "d.npz", "-o", "t.drsn", "--epochs", "500", "--batch", "8"], signal.SIGINT,
               lambda: time.time() - start > 6 and marker.exists(), keep=("t.resume.pt",))


def _dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1


def test_next_run_removes_temporaries_of_killed_runs(work):
    from .contract import expect

    cwd = work.cwd
    dead = _dead_pid()
    (cwd / f".x.npz.{dead}.abcd.npz").write_bytes(b"half written")
    (cwd / f".x.npz.{os.getppid()}.live.npz").write_bytes(b"a live run's")  # a live pid: kept
    (cwd / f".other.npz.{dead}.abcd.npz").write_bytes(b"not ours")
    expect(["data", "synth", "-o", "x.npz", "--windows-per-class", "15"], cwd, "ok",
           outputs=["x.npz", "x.json", f".x.npz.{dead}.abcd.npz"])
    names = sorted(p.name for p in cwd.iterdir())
    assert f".x.npz.{dead}.abcd.npz" not in names
    assert f".x.npz.{os.getppid()}.live.npz" in names and f".other.npz.{dead}.abcd.npz" in names


def test_stale_build_staging_folder_is_removed(tmp_path):
    from drsn_edge.build import clean_stale_staging

    dead = _dead_pid()
    (tmp_path / f".out.{dead}.k3j2").mkdir()
    (tmp_path / f".out.{dead}.k3j2" / "model.tflite").write_bytes(b"x")
    (tmp_path / f".out.old.{dead}.zz").mkdir()
    (tmp_path / "out").mkdir()
    clean_stale_staging(tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
