"""`benchmark`: one row per format, built through `build` into a work folder and run on the same windows."""

import json

import pytest

from drsn_edge.benchmark import FORMATS, Format, benchmark
from drsn_edge.errors import InputError
from drsn_edge.evalspec import EvalSpec

from .conftest import run_cli


def _small_spec():
    return EvalSpec(windows_per_class=2, noise=())


def test_rows_say_ok_failed_or_skipped_with_the_reason(tiny_model, monkeypatch, one_torch_thread):
    import drsn_edge.benchmark as bm

    def broken(b):
        raise InputError("no artifact for this format; build it first")

    torch_fmt = next(f for f in FORMATS if f.label == "pytorch fp32")
    monkeypatch.setattr(bm, "FORMATS", [torch_fmt, Format("broken", broken), Format("absent", broken, lambda: "not here")])
    res = benchmark(str(tiny_model), work_dir=None, spec=_small_spec())
    ok, failed, skipped = res.rows
    assert (ok.status, failed.status, skipped.status) == ("ok", "failed", "skipped")
    assert failed.reason == "no artifact for this format; build it first" and skipped.reason == "not here"
    # the float model against itself: every window agrees, the accuracy is the reference's
    assert ok.agreement == 1.0 and ok.drop_pp == 0.0 and ok.runtime == "pytorch eager (fp32, 1 thread)"
    assert ok.p50_us > 0 and ok.p99_us >= ok.p50_us and ok.artifact_bytes == tiny_model.stat().st_size
    assert res.windows == 20  # 2 windows × 10 classes, clean


def test_unknown_format_is_refused(tiny_model):
    with pytest.raises(InputError, match="unknown format"):
        benchmark(str(tiny_model), formats=["onnx fp64"], spec=_small_spec())


def test_missing_runtimes_are_skipped_with_the_reason():
    import importlib.util

    reasons = {f.label: f.needs() for f in FORMATS}
    if importlib.util.find_spec("tensorrt") is None:
        assert reasons["tensorrt"] == "TensorRT is not installed here (it runs on a Jetson or an NVIDIA GPU)"
    assert reasons["pytorch fp32"] is None and reasons["onnx fp32"] is None


@pytest.mark.slow
def test_benchmark_command_builds_runs_and_reuses(tiny_model, tiny_calib, tmp_path):
    args = ["benchmark", tiny_model, "--work", tmp_path / "w", "--format", "pytorch fp32", "--format", "onnx fp32",
            "--format", "tensorrt", "--windows-per-class", "2", "--noise", "none", "--json"]
    r = run_cli(*args, "--report", tmp_path / "rep")
    assert r.returncode == 0, r.stderr
    rows = {row["format"]: row for row in json.loads(r.stdout)["rows"]}
    assert rows["pytorch fp32"]["status"] == "ok" and rows["onnx fp32"]["status"] == "ok"
    # float ONNX against the float model: only float rounding differs, so the top-1 labels agree
    assert rows["onnx fp32"]["agreement"] == 1.0 and rows["onnx fp32"]["build_s"] > 0
    assert rows["onnx fp32"]["artifact"].endswith("model.onnx")
    assert rows["tensorrt"]["status"] in ("skipped", "ok")
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["benchmark.json", "benchmark.md", "benchmark.png"]
    again = json.loads(run_cli(*args).stdout)
    assert {row["format"]: row["build_s"] for row in again["rows"]}["onnx fp32"] is None  # reused, not rebuilt
