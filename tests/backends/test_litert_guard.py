"""The domain guard of a LiteRT build: the int8 .tflite carries the guard's taps after the logits, the sidecar a
guard adapted to LiteRT's own int8 tap features, the runner scores every window from its tap outputs (found by
tensor index), and check reports the out-of-domain share measured on the artifact. The `host` backend's LiteRT
and ONNX Runtime candidates carry it too."""

from __future__ import annotations

import json

import numpy as np
import pytest

from drsn_edge.bundle import load_bundle

from ..conftest import assert_guard_follows_float, run_cli

pytest.importorskip("litert_torch", reason="the tflite extra (litert-torch) is not installed")

PROFILE = 'name = "lr-host"\nfamily = "host"\nbackend = "litert"\n[hardware]\ncpu = "host CPU"\n'


@pytest.fixture(scope="module")
def litert_build(tiny_model, tiny_calib, tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("litert")
    (root / "p").mkdir()
    (root / "p" / "lr-host.toml").write_text(PROFILE)
    out = root / "b"
    r = run_cli("build", tiny_model, "--target", "lr-host", "--targets-dir", root / "p", "--calib", tiny_calib,
                "--data", tiny_data, "-o", out, "--max-drop", "100", "--max-cell-drop", "100", "--json", timeout=900)
    assert r.returncode == 0, r.stderr
    return root, out


def test_the_tflite_carries_the_taps_and_the_sidecar_a_guard_adapted_to_litert(litert_build, tiny_model):
    from drsn_edge.backends import load_build
    from drsn_edge.backends.tflite import check_integer_only, op_table

    b, build = load_bundle(tiny_model), load_build(litert_build[1])
    q = build.artifact.read_bytes()
    graph = check_integer_only(q)
    assert graph["output"]["shape"] == [1, len(b.class_names)]  # the logits stay the first output
    assert [o["shape"][-1] for o in graph["extra_outputs"]] == b.meta["guard"]["tap_dims"]
    guard = build.sidecar["guard"]
    assert guard["adapted_to"] == "litert" and guard["taps"] == b.meta["guard"]["taps"]
    assert guard["info"]["adapted_to_artifact"]["windows"] == 40  # every calibration window
    assert [o["name"] for o in guard["outputs"]] == [o["name"] for o in graph["extra_outputs"]]
    # the profiler's layer names line up with the ops, the guard's own ops included
    modules = build.sidecar["op_modules"]
    assert len(modules) == len(op_table(q)) and "guard" in modules


def test_the_runner_finds_logits_and_taps_by_tensor_index(litert_build, guard_windows):
    from drsn_edge.backends import load_build
    from drsn_edge.backends.tflite import litert_outputs_raw, litert_run, read_model
    from drsn_edge.guard import Guard
    from drsn_edge.guard_export import tflite_tap_features

    build = load_build(litert_build[1])
    q, x = build.artifact.read_bytes(), guard_windows[:6]
    runner = build.runner()
    outputs = [int(i) for i in read_model(q).subgraphs[0].outputs]
    assert runner.out["index"] == outputs[0] and runner._taps == outputs[1:]
    logits = runner.infer(x)
    np.testing.assert_array_equal(logits, litert_run(q, x))
    raw = litert_outputs_raw(q, x)
    np.testing.assert_array_equal(runner.last_raw, raw[0])
    # each window's score: the sidecar's guard on that window's dequantized taps (same float64 arithmetic)
    ref = Guard.from_json(build.sidecar["guard"]).score(tflite_tap_features(raw[1:], build.sidecar["guard"]["outputs"]))
    np.testing.assert_allclose(runner.last_guard, ref, rtol=1e-12)


def test_litert_guard_follows_the_float_guard(litert_build, tiny_model, guard_windows):
    from drsn_edge.backends import load_build

    assert_guard_follows_float(load_build(litert_build[1]).runner(), load_bundle(tiny_model), guard_windows)


def test_check_reports_the_share_measured_on_the_litert_artifact(litert_build, tiny_data):
    root, out = litert_build
    r = run_cli("check", out, "--target", "lr-host", "--targets-dir", root / "p", "--data", tiny_data, "--json",
                timeout=900)
    res = json.loads(r.stdout)
    assert r.returncode == (0 if res["passed"] else 1), r.stderr  # exit code = the verdict (its thresholds are not tested here)
    dom = res["domain"]
    assert (dom["measured_on"], dom["runtime"]) == ("artifact", "litert (int8)") and dom["n"] == res["n"]
    assert dom["float_guard"]["flag_agreement_far_from_threshold"] >= 0.95, dom
    assert dom["float_guard"]["flag_agreement"] >= 0.9, dom


def test_profile_rows_keep_the_guards_layer(litert_build):
    from drsn_edge.backends import load_build

    runner = load_build(litert_build[1]).runner()
    rows = runner.profile_ops(np.zeros((1, 1, 2048), np.float32), repeats=3, warmup=1)["rows"]
    assert [r["module"] for r in rows] == runner.op_modules


@pytest.mark.slow
def test_host_int8_candidates_carry_the_guard_and_check_reads_it(tiny_model, tiny_calib, tiny_data, tmp_path):
    """--precision int8 leaves the LiteRT and ONNX Runtime int8 candidates: whichever wins, its runner reports
    the artifact's guard."""
    out = tmp_path / "host"
    r = run_cli("build", tiny_model, "--target", "host", "--precision", "int8", "--calib", tiny_calib, "--data",
                tiny_data, "-o", out, "--max-drop", "100", "--max-cell-drop", "100", "--json", timeout=900)
    assert r.returncode == 0, r.stderr
    choice = json.loads((out / "build.json").read_text())["choice"]
    assert {c["candidate"] for c in choice["candidates"]} == {"litert int8", "onnxruntime int8 QDQ"}
    r = run_cli("check", out, "--target", "host", "--data", tiny_data, "--json", timeout=900)
    res = json.loads(r.stdout)
    assert r.returncode == (0 if res["passed"] else 1), r.stderr  # exit code = the verdict (its thresholds are not tested here)
    dom = res["domain"]
    assert dom["measured_on"] == "artifact" and dom["runtime"].startswith(choice["runtime"])
    assert dom["float_guard"]["flag_agreement_far_from_threshold"] >= 0.95, dom
