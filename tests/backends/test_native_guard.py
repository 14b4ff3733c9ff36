"""The domain guard of the native float C engine: the engine outputs the guard's taps after the logits, the
sidecar holds the float guard itself, the runner scores every window's taps with it, and check reports the
out-of-domain share measured on the artifact. A bundle without a guard builds the logits alone."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from drsn_edge.bundle import load_bundle, save_bundle

from ..conftest import CLIPPED, run_cli

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="the engine is compiled by gcc")

PROFILE = 'name = "nat-host"\nfamily = "host"\nbackend = "native"\n[hardware]\ncpu = "host CPU"\n'


def _build(model, data, root):
    (root / "p").mkdir(exist_ok=True)
    (root / "p" / "nat-host.toml").write_text(PROFILE)
    out = root / "b"
    r = run_cli("build", model, "--target", "nat-host", "--targets-dir", root / "p", "--data", data, "-o", out,
                "--max-drop", "100", "--max-cell-drop", "100", "--json", timeout=900)
    assert r.returncode == 0, r.stderr
    return out


def _check(root, out, data):
    r = run_cli("check", out, "--target", "nat-host", "--targets-dir", root / "p", "--data", data, "--json",
                timeout=900)
    res = json.loads(r.stdout)
    assert r.returncode == (0 if res["passed"] else 1), r.stderr  # exit code = the verdict (its thresholds are not tested here)
    return res


@pytest.fixture(scope="module")
def native_build(tiny_model, tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("native")
    return root, _build(tiny_model, tiny_data, root)


def test_the_engines_taps_are_the_float_models_and_the_runner_scores_them(native_build, tiny_model, guard_windows):
    from drsn_edge.backends import load_build
    from drsn_edge.backends.native import TAP_REL_TOL
    from drsn_edge.guard import Guard, guard_features, guard_scores

    b, build = load_bundle(tiny_model), load_build(native_build[1])
    side = build.sidecar["guard"]
    # the float guard itself, not adapted: the engine's taps are the float model's in float32
    assert side["means"] == b.meta["guard"]["means"] and side["threshold"] == b.meta["guard"]["threshold"]
    assert side["level"] == b.meta["guard"]["level"] and side["taps"] == b.meta["guard"]["taps"]
    assert [o["size"] for o in side["outputs"]] == b.meta["guard"]["tap_dims"]
    assert build.sidecar["engine"]["taps_size"] == sum(b.meta["guard"]["tap_dims"])
    assert 0 <= build.sidecar["engine"]["max_rel_tap_diff"] <= TAP_REL_TOL
    runner = build.runner()
    x = guard_windows
    runner.infer(x)
    ref = guard_features(Guard.from_json(b.meta["guard"]), b.model, x)
    # same float32 arithmetic in another order (as for the logits): ~100 ulps of the largest tap at most
    assert np.abs(runner.last_taps - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
    np.testing.assert_array_equal(runner.last_guard, Guard.from_json(side).score(runner.last_taps))
    score, ok = runner.guard_result(x)
    ref_score, ref_ok = guard_scores(b, x)
    np.testing.assert_allclose(score, ref_score, rtol=1e-4)  # float32 taps: rounding only
    assert not ok[-CLIPPED:].any()  # clipped windows are out whatever their score
    # a flag could differ only for a score within 1e-4 of the threshold: none of these windows is
    assert not (np.abs(ref_score / b.meta["guard"]["threshold"] - 1) < 1e-4).any()
    np.testing.assert_array_equal(ok, ref_ok)


def test_check_reports_the_share_measured_on_the_native_artifact(native_build, tiny_data):
    root, out = native_build
    res = _check(root, out, tiny_data)
    dom = res["domain"]
    assert (dom["measured_on"], dom["runtime"]) == ("artifact", "native c engine (fp32)") and dom["n"] == res["n"]
    assert dom["float_guard"]["flag_agreement"] == 1.0, dom  # float taps: the same flags as the float model
    assert dom["float_guard"]["median_rel_score_diff"] < 1e-4, dom
    assert dom["out_of_domain_share"] == dom["float_guard"]["out_of_domain_share"]
    lvl = load_bundle(json.loads((out / "build.json").read_text())["source_model"]).meta["guard"]["level"]
    # the test split's raw windows all lie inside the range the guard was fitted with
    assert dom["level_range"] == [lvl["lo"], lvl["hi"]] and dom["outside_level_range_share"] == 0.0


def test_a_bundle_without_guard_builds_the_logits_alone(tiny_model, tiny_data, tmp_path):
    from drsn_edge.backends import load_build

    b = load_bundle(tiny_model)
    plain = tmp_path / "plain.drsn"
    save_bundle(b.model, {k: v for k, v in b.meta.items() if k != "guard"}, plain)
    out = _build(plain, tiny_data, tmp_path)
    build = load_build(out)
    assert "guard" not in build.sidecar and build.sidecar["engine"]["taps_size"] == 0
    assert "max_rel_tap_diff" not in build.sidecar["engine"]
    assert "drsn_f32_taps_size" not in (out / "native" / "drsn_f32_model.c").read_text()
    runner = build.runner()
    runner.infer(np.zeros((2, 1, b.window), np.float32))
    assert runner.guard_meta is None and runner.last_guard is None and runner.guard_result(np.zeros((2, 1, 1))) is None
    assert _check(tmp_path, out, tiny_data)["domain"] is None  # no guard anywhere: nothing to report


@pytest.mark.slow
def test_a_host_build_that_keeps_the_native_engine_reports_its_guard(tiny_model, tiny_calib, tiny_data, tmp_path):
    """--precision fp32: LiteRT fp32, ONNX Runtime fp32 and the native engine; on the tiny model the engine is
    several times faster than the others, so it is kept, and check reads its guard."""
    out = tmp_path / "host"
    r = run_cli("build", tiny_model, "--target", "host", "--precision", "fp32", "--calib", tiny_calib, "--data",
                tiny_data, "-o", out, "--max-drop", "100", "--max-cell-drop", "100", "--json", timeout=900)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "build.json").read_text())
    native = [c for c in manifest["choice"]["candidates"] if c["runtime"] == "native"]
    assert len(native) == 1 and "failed" not in native[0], native
    assert manifest["choice"]["runtime"] == "native", manifest["choice"]["reason"]
    r = run_cli("check", out, "--target", "host", "--data", tiny_data, "--json", timeout=900)
    res = json.loads(r.stdout)
    assert r.returncode == (0 if res["passed"] else 1), r.stderr  # exit code = the verdict (its thresholds are not tested here)
    dom = res["domain"]
    assert (dom["measured_on"], dom["runtime"]) == ("artifact", "native c engine (fp32)")
    assert dom["float_guard"]["flag_agreement"] == 1.0, dom
