"""The verdicts `build` and `check` give, on both sides of every boundary and at the exact tie: the check
thresholds, the build drop gate, the microcontroller memory fit, and the build folder that a build
replaces (or, failing, leaves alone).

End to end on a host target built with ONNX Runtime from the 4-class model with the one-window (clipping)
calibration (minmax ranges of one window), evaluated on exactly 50 windows: accuracy and drop are whole windows (2 pp each), so the
thresholds below sit exactly on, or one window beside, the measured figures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from drsn_edge.errors import CheckFailedError

from .conftest import run_cli

PROFILE = """name = "pin-host"
family = "host"
backend = "onnxruntime"
description = "a host profile whose thresholds the test sets"
[hardware]
cpu = "host CPU"
[device]
transport = "local"
[check]
{check}
"""


def _profile(folder: Path, **check) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = "\n".join(f"{k} = {float(v)!r}" for k, v in check.items())
    (folder / "pin-host.toml").write_text(PROFILE.format(check=lines))
    return folder


def _spec(four):
    from drsn_edge.evalspec import EvalSpec

    return EvalSpec(data=str(four["test50"]), noise=())


@pytest.fixture(scope="module")
def built(four, tmp_path_factory):
    """One build (gate open) and its figures: int8 accuracy A, float accuracy R, drop D (pp), all of 50."""
    from drsn_edge.build import build

    root = tmp_path_factory.mktemp("verdicts")
    dirs = _profile(root / "profiles", max_latency_ms=1e6)
    out = root / "build"
    res = build("pin-host", four["model"], [dirs], out_dir=out, spec=_spec(four), calib=str(four["calib1x32"]),
                method="minmax", max_drop=100.0, max_cell_drop=100.0)
    acc = res.accuracy
    assert acc["n"] == 50 and acc["drop_pp"] >= 4.0, "the clipping calibration must cost at least two windows"
    return {"root": root, "out": out, "A": acc["accuracy"], "R": acc["reference_accuracy"], "D": acc["drop_pp"]}


def _check(four, built, tmp_path, **check):
    from drsn_edge.check import check as run_check

    check.setdefault("max_latency_ms", 1e6)
    return run_check("pin-host", built["out"], spec=_spec(four), targets_dirs=[_profile(tmp_path / "p", **check)],
                     warmup=0)


# ---------------------------------------------------------------- check: the thresholds


def test_check_figures_are_the_build_figures(four, built, tmp_path):
    r = _check(four, built, tmp_path)
    assert (r.n, r.accuracy, r.reference_accuracy, r.accuracy_drop_pp) == (50, built["A"], built["R"], built["D"])
    assert r.accuracy_drop_pp == 100 * (round(50 * built["R"]) - round(50 * built["A"])) / 50


def test_check_passes_with_every_figure_exactly_on_its_threshold(four, built, tmp_path):
    r = _check(four, built, tmp_path, min_accuracy=built["A"], max_drop_pp=built["D"])
    assert r.passed is True and r.failures == []
    assert r.thresholds == {"min_accuracy": built["A"], "max_drop_pp": built["D"], "max_latency_ms": 1e6}


def test_check_fails_one_window_below_min_accuracy(four, built, tmp_path):
    need = built["A"] + 0.02
    r = _check(four, built, tmp_path, min_accuracy=need, max_drop_pp=100)
    assert r.passed is False
    assert r.failures == [f"accuracy {100 * built['A']:.2f} % < {100 * need:.1f} %"]


def test_check_fails_one_window_over_max_drop(four, built, tmp_path):
    limit = built["D"] - 2.0
    r = _check(four, built, tmp_path, min_accuracy=0, max_drop_pp=limit)
    assert r.passed is False and r.failures == [f"drop {built['D']:.2f} pp > {limit:g} pp"]


def test_check_fails_on_latency_and_lists_every_failure_in_order(four, built, tmp_path):
    r = _check(four, built, tmp_path, min_accuracy=1.0, max_drop_pp=0, max_latency_ms=1e-6)
    assert r.passed is False and len(r.failures) == 3
    assert r.failures[0].startswith("accuracy ") and r.failures[1].startswith("drop ")
    assert r.failures[2] == f"p99 latency {r.latency_ms['p99']:.2f} ms > 1e-06 ms"
    from drsn_edge.check import raise_if_failed

    with pytest.raises(CheckFailedError) as ei:
        raise_if_failed(r)
    assert str(ei.value) == "check failed: " + "; ".join(r.failures)


@pytest.mark.slow
def test_check_exit_codes(four, built, tmp_path):
    base = ["check", built["out"], "--target", "pin-host", "--data", four["test50"], "--noise", "none", "--json"]
    ok = _profile(tmp_path / "ok", min_accuracy=built["A"], max_drop_pp=built["D"], max_latency_ms=1e6)
    r = run_cli(*base, "--targets-dir", ok)
    res = json.loads(r.stdout)
    assert (r.returncode, res["passed"], res["failures"]) == (0, True, [])
    bad = _profile(tmp_path / "bad", min_accuracy=0, max_drop_pp=built["D"] - 2.0, max_latency_ms=1e6)
    r = run_cli(*base, "--targets-dir", bad)
    res = json.loads(r.stdout)
    assert (r.returncode, res["passed"]) == (1, False)
    assert res["failures"] == [f"drop {built['D']:.2f} pp > {built['D'] - 2.0:g} pp"]


def test_verdict_by_hand():
    from drsn_edge.check import Thresholds, verdict

    th = Thresholds(min_accuracy=0.9, max_drop_pp=1.0, max_latency_ms=2.0)
    assert verdict(0.9, 1.0, 2.0, th) == []  # every figure on its threshold
    # the figures as check computes them, from counts: 90 of 100 right, 1 window of 100 lost
    assert verdict(90 / 100, 100 * (91 - 90) / 100, 2.0, th) == []
    assert verdict(89 / 100, 100 * (91 - 89) / 100, 2.0, th) == ["accuracy 89.00 % < 90.0 %", "drop 2.00 pp > 1 pp"]
    assert verdict(0.93, -3.0, None, th) == []  # no latency measured: not judged
    assert verdict(0.88, 1.0, 2.0, th) == ["accuracy 88.00 % < 90.0 %"]
    assert verdict(0.9, 1.2, 2.0, th) == ["drop 1.20 pp > 1 pp"]
    assert verdict(0.9, 1.0, 2.01, th) == ["p99 latency 2.01 ms > 2 ms"]
    assert verdict(0.5, 40.0, 9.0, th) == ["accuracy 50.00 % < 90.0 %", "drop 40.00 pp > 1 pp",
                                           "p99 latency 9.00 ms > 2 ms"]


def test_thresholds_of_a_profile(tmp_path):
    from drsn_edge.check import Thresholds
    from drsn_edge.targets import load_target_file

    t = load_target_file(_profile(tmp_path / "a", min_accuracy=0.8, max_drop_pp=2.5, max_latency_ms=3) / "pin-host.toml")
    assert Thresholds.of(t) == Thresholds(0.8, 2.5, 3.0)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "pin-host.toml").write_text(PROFILE.format(check=""))
    t = load_target_file(tmp_path / "b" / "pin-host.toml")
    assert Thresholds.of(t) == Thresholds(0.9, 1.0, float("inf"))  # the profile defaults; no latency limit


def test_thresholds_of_a_target_made_in_code():
    """A Target built in code has no [check] validation of its own: Thresholds.of fills and checks it."""
    from drsn_edge.check import Thresholds
    from drsn_edge.errors import InputError
    from drsn_edge.targets import Target

    def th(**check):
        return Thresholds.of(Target(name="t", family="host", backend="onnxruntime", description="", check=check))

    assert th() == Thresholds(0.9, 1.0, float("inf"))
    assert th(min_accuracy=0, max_drop_pp=100, max_latency_ms=5) == Thresholds(0.0, 100.0, 5.0)
    assert th(min_accuracy=1, max_drop_pp=0) == Thresholds(1.0, 0.0, float("inf"))
    for check, message in [({"min_accuracy": 1.01}, "check.min_accuracy must be ≤ 1, got 1.01"),
                           ({"min_accuracy": -0.01}, "check.min_accuracy must be ≥ 0, got -0.01"),
                           ({"max_drop_pp": 100.5}, "check.max_drop_pp must be ≤ 100, got 100.5"),
                           ({"max_drop_pp": -1}, "check.max_drop_pp must be ≥ 0, got -1")]:
        with pytest.raises(InputError) as ei:
            th(**check)
        assert str(ei.value) == message


# ---------------------------------------------------------------- build: the drop gate and the folder


def test_build_gate_passes_a_tie_and_replaces_the_previous_build(four, built, tmp_path):
    from drsn_edge.build import build

    out = tmp_path / "b"
    out.mkdir()
    (out / "build.json").write_text("{}")  # an earlier build
    (out / "stale.txt").write_text("from the earlier build")
    res = build("pin-host", four["model"], [_profile(tmp_path / "p")], out_dir=out, spec=_spec(four),
                calib=str(four["calib1x32"]), method="minmax", max_drop=built["D"], max_cell_drop=100.0)
    assert res.accuracy["drop_pp"] == built["D"]
    assert not (out / "stale.txt").exists() and json.loads((out / "build.json").read_text())["target"] == "pin-host"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "p"]  # no staging or .b.old.* folder left


def test_build_gate_fails_one_window_over_and_keeps_the_previous_build(four, built, tmp_path):
    from drsn_edge.build import build

    out = tmp_path / "b"
    out.mkdir()
    (out / "build.json").write_text("{}")
    (out / "keep.txt").write_text("the previous build")
    limit = built["D"] - 2.0
    with pytest.raises(CheckFailedError) as ei:
        build("pin-host", four["model"], [_profile(tmp_path / "p")], out_dir=out, spec=_spec(four),
              calib=str(four["calib1x32"]), method="minmax", max_drop=limit, max_cell_drop=100.0)
    assert str(ei.value) == (f"INT8 accuracy drop {built['D']:.2f} pp exceeds --max-drop {limit:g} pp; "
                             "try --method auto, --auto-mixed or --sensitivity")
    assert sorted(p.name for p in out.iterdir()) == ["build.json", "keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "p"]


@pytest.mark.slow
def test_build_gate_exit_code(four, built, tmp_path):
    out = tmp_path / "b"
    r = run_cli("build", four["model"], "--target", "pin-host", "--targets-dir", _profile(tmp_path / "p"),
                "--calib", four["calib1x32"], "--data", four["test50"], "--noise", "none", "--method", "minmax",
                "--max-cell-drop", "100", "--max-drop", f"{built['D'] - 2.0:g}", "-o", out, "--json")
    assert r.returncode == 1 and "exceeds --max-drop" in r.stderr and not out.exists()


def test_staged_output_replaces_only_on_success(tmp_path):
    from drsn_edge.build import staged_output

    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_output(out) as tmp:
            (tmp / "new.txt").write_text("new")
            raise RuntimeError("the build failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and [p.name for p in out.iterdir()] == ["old.txt"]
    with staged_output(out) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(f".out.{os.getpid()}.")
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    with staged_output(tmp_path / "fresh") as tmp:
        (tmp / "a").write_text("a")
    assert (tmp_path / "fresh" / "a").read_text() == "a"


def test_stale_staging_of_dead_runs_is_cleaned_and_live_ones_are_kept(tmp_path):
    import subprocess
    import sys

    from drsn_edge.build import clean_stale_staging

    dead = 2 ** 22 + 12345  # above the default pid_max: no process has it
    while True:
        try:
            os.kill(dead, 0)
            dead += 1
        except ProcessLookupError:
            break
        except PermissionError:
            dead += 1
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # another running build
    try:
        names = [f".out.{dead}.abc", f".out.old.{dead}.def", f".out.old.{dead}", f".out.{os.getpid()}.mine",
                 f".out.{live.pid}.running", f".out.old.{live.pid}.running", ".out.notapid.x", ".out.old",
                 ".other.123.x"]
        for n in names:
            (tmp_path / n).mkdir()
        (tmp_path / f".out.{dead}.file").write_text("not a folder")
        clean_stale_staging(tmp_path / "out")
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == sorted([f".out.{os.getpid()}.mine", f".out.{live.pid}.running", f".out.old.{live.pid}.running",
                               ".out.notapid.x", ".out.old", ".other.123.x"])  # a dead run's temporary file goes too
        with pytest.raises(subprocess.TimeoutExpired):  # probing a process must not signal it (signal 0)
            live.wait(timeout=1)
    finally:
        live.kill()
        live.wait()
    clean_stale_staging(tmp_path / "missing" / "out")  # no parent folder: nothing to do


# ---------------------------------------------------------------- microcontrollers: memory fit


def _board(tmp_path, extra=""):
    from drsn_edge.targets import load_target_file

    p = tmp_path / "board.toml"
    p.write_text('name = "board"\nfamily = "mcu"\nbackend = "tflm"\n[hardware]\ncpu = "cortex-m4"\nclock_mhz = 64\n'
                 f'flash_kb = 100\nram_kb = 64\nram_share = 0.5\n{extra}\n')
    return load_target_file(p)


# flash budget 100 KiB = 102400 B, of which runtime code 50 KiB; RAM budget 64 KiB × 0.5 = 32768 B, of
# which I/O buffers 2·(2048 + 16) + 10 = 4138 B and the stack 8192 B: the arena may use 20438 B
@pytest.mark.parametrize("model,arena,fits", [
    (51200, 20438, True),    # both exactly full
    (51201, 20438, False),   # flash one byte over, RAM full
    (51200, 20439, False),   # RAM one byte over, flash full
    (51201, 20439, False),
    (1000, 1000, True),
])
def test_memory_fit_needs_flash_and_ram_both(tmp_path, model, arena, fits):
    from drsn_edge.backends.tflm import memory_fit

    m = memory_fit(_board(tmp_path, "runtime_code_kb = 50"), model, arena, 2048, 10)
    assert m["fits"] is fits
    assert (m["flash_bytes"], m["flash_budget_bytes"]) == (model + 51200, 102400)
    assert (m["ram_bytes"], m["ram_budget_bytes"]) == (arena + 4138 + 8192, 32768)
    assert (m["model_bytes"], m["arena_bytes"], m["runtime_code_bytes"], m["ram_share"]) == (model, arena, 51200, 0.5)


@pytest.mark.parametrize("model,arena,fits", [(51200 - 104, 20438 - 4, True), (51200 - 103, 20438 - 4, False),
                                               (51200 - 104, 20438 - 3, False)])
def test_memory_fit_counts_the_domain_guard(tmp_path, model, arena, fits):
    """A guard of 4 values and 2 classes: 4 B × (2·4 scale and zero point + 10 packed W + 8 means) = 104 B of
    flash, and a 4-byte tap buffer in RAM (the board above, exactly full with both)."""
    from drsn_edge.backends.tflm import memory_fit
    from drsn_edge.guard_export import guard_const_bytes

    assert guard_const_bytes(4, 2) == 104 and guard_const_bytes(0, 10) == 0
    m = memory_fit(_board(tmp_path, "runtime_code_kb = 50"), model, arena, 2048, 10, guard_bytes=104, guard_dim=4)
    assert m["fits"] is fits and m["guard_bytes"] == 104
    assert (m["flash_bytes"], m["ram_bytes"]) == (model + 51200 + 104, arena + 4138 + 4 + 8192)


def test_memory_fit_without_a_runtime_figure_assumes_200_kib(tmp_path):
    from drsn_edge.backends.tflm import memory_fit

    m = memory_fit(_board(tmp_path), 10, 10, 2048, 10)
    assert m["runtime_code_bytes"] == 200 * 1024 and m["flash_bytes"] == 200 * 1024 + 10 and m["fits"] is False


def test_arena_margin_is_ten_percent_rounded_up_to_16_bytes():
    from drsn_edge.firmware.bundle import arena_with_margin

    assert arena_with_margin(1000) == 1104  # 1100 → 1104
    assert arena_with_margin(1600) == 1760  # 1760 is already a multiple of 16
    assert arena_with_margin(65_536) == 72_096  # 72089.6 → 72096
    assert arena_with_margin(0) == 0
