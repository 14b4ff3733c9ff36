"""The domain guard inside the exported artifacts: the float ONNX computes the bundle's score, the int8 QDQ ONNX
its own (from its int8 activations), check and monitor read the artifact's guard, a bundle without a guard
exports the logits alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from drsn_edge.bundle import load_bundle, save_bundle
from tests.conftest import assert_guard_follows_float, run_cli


def test_adapt_moves_the_means_by_the_bias_and_widens_the_covariance_by_the_noise():
    from drsn_edge.guard import fit
    from drsn_edge.guard_export import adapt

    train = np.array([[1, 0], [-1, 0], [0, 1], [0, -1], [11, 0], [9, 0], [10, 1], [10, -1]], dtype=float)
    g = fit(train, np.array([0, 0, 0, 0, 1, 1, 1, 1]), train, quantile=1.0)
    f = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [3.0, 1.0]])
    err = np.array([[0.5, -1.0], [0.7, -1.0], [0.5, -1.0], [0.7, -1.0]])  # bias (0.6, −1); x-noise var 1/75
    a = adapt(g, f, f + err)
    np.testing.assert_allclose(a.means, g.means + [0.6, -1.0], atol=1e-12)
    # Σ = (2/3) I (test_guard: hand-computed); cov of the error: x variance 0.04/3 (n−1 = 3), y none
    np.testing.assert_allclose(np.linalg.inv(a.precision), np.diag([2 / 3 + 0.04 / 3, 2 / 3]), rtol=1e-5)
    assert a.threshold == g.threshold and a.info["adapted_to_artifact"]["windows"] == 4


def test_float_export_carries_the_bundles_guard(tiny_model, tmp_path):
    from drsn_edge.export import GUARD_RTOL, ort_session, run_ort_guard
    from drsn_edge.guard import guard_scores

    out = tmp_path / "m.onnx"
    r = run_cli("export", tiny_model, "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    s = ort_session(out.read_bytes())
    assert [o.name for o in s.get_outputs()] == ["logits", "guard_features", "guard_score"]
    b = load_bundle(tiny_model)
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["guard"]["threshold"] == b.meta["guard"]["threshold"] and side["guard"]["dim"] == b.meta["guard"]["dim"]
    x = np.random.default_rng(1).standard_normal((6, 1, b.window)).astype(np.float32)
    got, ref = run_ort_guard(s, x, 1), guard_scores(b, x)[0]
    np.testing.assert_allclose(got, ref, rtol=GUARD_RTOL)  # float32 graph vs float64 NumPy: rounding only


@pytest.fixture(scope="module")
def unguarded_model(tiny_model, tmp_path_factory):
    b = load_bundle(tiny_model)
    out = tmp_path_factory.mktemp("noguard") / "plain.drsn"
    save_bundle(b.model, {k: v for k, v in b.meta.items() if k != "guard"}, out)
    return out


def test_a_bundle_without_guard_exports_and_quantizes_with_the_logits_alone(unguarded_model, tiny_calib, tiny_data,
                                                                            tmp_path):
    from drsn_edge.backends.onnxrt import OrtRunner

    for args, name in ((("export", unguarded_model), "f.onnx"),
                       (("quantize", unguarded_model, "--calib", tiny_calib, "--data", tiny_data, "--method", "minmax",
                         "--max-drop", "100", "--max-cell-drop", "100"), "q.onnx")):
        r = run_cli(*args, "-o", tmp_path / name, "--json")
        assert r.returncode == 0, r.stderr
        runner = OrtRunner(tmp_path / name)
        assert [o.name for o in runner.session.get_outputs()] == ["logits"] and runner.guard_meta is None
        assert json.loads((tmp_path / name).with_suffix(".json").read_text())["guard"] is None


def test_int8_guard_follows_the_float_guard(int8_onnx, tiny_model, guard_windows):
    from drsn_edge.backends.onnxrt import OrtRunner

    side = json.loads(int8_onnx.with_suffix(".json").read_text())
    assert side["guard"]["outputs"] == ["guard_features", "guard_score"]
    assert side["guard"]["adapted_to_artifact"]["windows"] == 40  # every calibration window
    assert_guard_follows_float(OrtRunner(int8_onnx), load_bundle(tiny_model), guard_windows)


@pytest.mark.slow
def test_check_and_monitor_use_the_artifacts_guard(int8_onnx, tiny_model, tiny_data, tmp_path):
    from drsn_edge.monitor.model import load_model

    r = run_cli("build", tiny_model, "--target", "jetson-orin-nano", "--calib",
                json.loads(int8_onnx.with_suffix(".json").read_text())["calibration"]["path"], "--data", tiny_data,
                "--method", "minmax", "-o", tmp_path / "b", "--max-drop", "100", "--max-cell-drop", "100", "--json",
                timeout=900)
    assert r.returncode == 0, r.stderr
    r = run_cli("check", tmp_path / "b", "--target", "jetson-orin-nano", "--device", "local",
                "--data", tiny_data, "--json")
    res = json.loads(r.stdout)
    assert r.returncode == (0 if res["passed"] else 1), r.stderr  # exit code = the verdict (its thresholds are not tested here)
    dom = res["domain"]
    assert dom["measured_on"] == "artifact" and dom["n"] == res["n"]
    assert dom["float_guard"]["flag_agreement"] >= 0.9
    m = load_model(str(tmp_path / "b"))
    from drsn_edge.data.dataset import load_dataset, normalize

    x = normalize(load_dataset(tiny_data).x[:40])
    m.infer(x)  # 32 on the batch-32 variant + 8 on batch 1: the flags of both come back
    flags = m.in_domain(x)
    assert flags.shape == (40,) and flags.dtype == bool
    m.close()


@pytest.mark.slow
def test_tflm_build_outputs_the_taps_and_check_reads_its_guard(tiny_model, tiny_calib, tiny_data, tmp_path):
    """The TFLite Micro build: int8 tap outputs after the logits; the runner scores their dequantized values with
    the sidecar's guard (adapted to TFLM's features); check reports the share measured on the artifact."""
    from drsn_edge.backends import load_build
    from drsn_edge.backends.tflite import check_integer_only

    out = tmp_path / "mcu"
    r = run_cli("build", tiny_model, "--target", "stm32h743", "--engine", "tflm", "--calib", tiny_calib, "-o", out,
                "--max-drop", "100", "--max-cell-drop", "100", "--json", timeout=900)
    assert r.returncode == 0, r.stderr
    b, build = load_bundle(tiny_model), load_build(out)
    graph = check_integer_only(build.artifact.read_bytes())
    assert [o["shape"][-1] for o in graph["extra_outputs"]] == b.meta["guard"]["tap_dims"]
    assert all(o["dtype"] == "int8" for o in graph["extra_outputs"])
    assert build.sidecar["guard"]["taps"] == b.meta["guard"]["taps"]
    r = run_cli("check", out, "--target", "stm32h743", "--device", "local", "--data", tiny_data, "--json", timeout=900)
    res = json.loads(r.stdout)
    assert r.returncode == (0 if res["passed"] else 1), r.stderr  # exit code = the verdict (its thresholds are not tested here)
    dom = res["domain"]
    assert dom["measured_on"] == "artifact"
    assert dom["float_guard"]["flag_agreement_far_from_threshold"] >= 0.95, dom  # see test_int8_guard_follows...


def test_runner_flags_take_the_raw_levels_against_the_artifacts_level_range():
    """RunnerBase.guard_result: score within the threshold, not flat/clipped, and (when the raw windows' levels
    are given) a level inside the guard metadata's range; without levels the range is not checked."""
    from drsn_edge.backends.base import RunnerBase

    class Scores(RunnerBase):
        name, batch = "scores", 1
        guard_meta = {"threshold": 1.0, "level": {"lo": 0.5, "hi": 2.0}}

        def _infer_one(self, x):
            self._guard = np.array([float(np.abs(x).max()) / 10])  # 0.25 … 0.4 for the windows below: in
            return np.zeros((1, 2), np.float32)

    x = np.random.default_rng(0).standard_normal((4, 1, 64)).astype(np.float32)
    r = Scores()
    score, ok = r.infer_guard(x, np.array([1e-3, 0.5, 2.0, 2.5]))
    assert (score <= 1.0).all() and ok.tolist() == [False, True, True, False]
    assert r.infer_guard(x)[1].tolist() == [True] * 4
    with pytest.raises(Exception, match="4 windows"):
        r.infer_guard(x, np.ones(3))


def test_the_check_report_says_where_the_share_was_measured():
    from drsn_edge.report import domain_lines

    art = {"out_of_domain_share": 0.05, "measured_on": "artifact", "runtime": "litert (int8)",
           "float_guard": {"flag_agreement": 0.9733, "flag_agreement_far_from_threshold": 1.0}}
    assert domain_lines(art)[3:] == ["- out of domain: 5.00 % of the windows, measured on the artifact (litert (int8))",
                                     "- flags equal to the float model's guard: 97.33 % (100.00 % away from the threshold)"]
    host = {"out_of_domain_share": 0.125, "measured_on": "float model (host)"}
    assert domain_lines(host)[3:] == ["- out of domain: 12.50 % of the windows, measured by the float model's guard "
                                      "on the host (the artifact carries none)"]
