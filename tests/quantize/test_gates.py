"""The quantize drop gate on both sides of its boundary, the exact tie included, and the reported figures
recomputed from the written artifact.

The evaluation set has exactly 50 windows, so every drop is a whole number of windows × 2 pp and the
thresholds below are exact. A one-window calibration set clips the activations of every other window, so
int8 must lose accuracy (the test checks that it does before using it)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from drsn_edge.errors import CheckFailedError
from drsn_edge.quantize.run import quantize_model, raise_if_failed

from ..conftest import run_cli


def _q(four, out, calib="calib1", as_result=False, **kw):
    kw.setdefault("method", "minmax")
    kw.setdefault("max_cell_drop", 100.0)  # the overall drop gate alone (the clean cell's drop is the same figure)
    r = quantize_model(four["model"], four[calib], out, data=str(four["test50"]), noise_kinds=[], snrs=[], **kw)
    return r if as_result else r.to_json()


def _right(logits, y):
    return int((logits.argmax(1) == y).sum())


def _recount(four, artifact):
    """(float right, int8 right) of 50, by running the bundle in torch and the artifact in ONNX Runtime."""
    from drsn_edge.bundle import load_bundle
    from drsn_edge.data.dataset import load_dataset, normalize
    from drsn_edge.evaluate import predict_logits
    from drsn_edge.export import ort_session, run_ort

    b = load_bundle(four["model"])
    ds = load_dataset(four["test50"])
    x = normalize(ds.x, b.normalization)
    q = run_ort(ort_session(artifact.read_bytes()), x, 1)
    return _right(predict_logits(b.model, x), ds.y), _right(q, ds.y)


@pytest.fixture(scope="module")
def clipped(four, tmp_path_factory):
    """The one-window calibration's run, with no gate: its drop, in whole windows of 50."""
    out = tmp_path_factory.mktemp("probe") / "probe.onnx"
    s = _q(four, out, max_drop=100)
    kf, kq = _recount(four, out)
    assert kf - kq >= 2, "the clipping calibration must cost at least two windows for the gate tests"
    return s, kf, kq


def test_reported_figures_match_a_recount_from_the_artifact(clipped):
    s, kf, kq = clipped
    assert s["n"] == 50 and s["float_accuracy"] == kf / 50 and s["int8_accuracy"] == kq / 50
    assert s["accuracy_drop_pp"] == 2.0 * (kf - kq)  # exact: 100·k/50
    assert s["per_snr"] == {"none": {"clean": {"float": kf / 50, "int8": kq / 50, "drop_pp": 2.0 * (kf - kq)}}}
    assert s["max_cell_drop_pp"] == 2.0 * (kf - kq)
    assert s["grid_drop_pp"] is None  # no noisy cells were asked for


def test_a_drop_equal_to_max_drop_passes(four, clipped, tmp_path):
    _, kf, kq = clipped
    out = tmp_path / "tie.onnx"
    result = _q(four, out, max_drop=2.0 * (kf - kq), as_result=True)
    s = result.to_json()
    assert s["passed"] is True and s["artifact"] == str(out) and out.exists() and s.get("error") is None
    assert json.loads(out.with_suffix(".json").read_text())["accuracy"]["accuracy_drop_pp"] == 2.0 * (kf - kq)
    raise_if_failed(result)  # no exception


@pytest.mark.parametrize("below", [2.0, 0.01])
def test_a_drop_over_max_drop_fails_and_writes_nothing(four, clipped, tmp_path, below):
    _, kf, kq = clipped
    limit = 2.0 * (kf - kq) - below
    out = tmp_path / "over.onnx"
    result = _q(four, out, max_drop=limit, as_result=True)
    s = result.to_json()
    assert s["passed"] is False and s["artifact"] is None
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert s["error"] == (f"INT8 accuracy drop {2.0 * (kf - kq):.2f} pp exceeds --max-drop {limit:g} pp; "
                          "try --method auto, --auto-mixed or --sensitivity")
    with pytest.raises(CheckFailedError, match="exceeds --max-drop"):
        raise_if_failed(result)


def test_no_drop_passes_a_zero_limit(four, tmp_path):
    """The exact tie: a limit equal to the artifact's own drop (counted window by window, 2 pp each) passes,
    a limit one window below it fails — whatever this test run's fixture model loses."""
    out = tmp_path / "zero.onnx"
    s = _q(four, out, calib="calib", max_drop=100)
    kf, kq = _recount(four, out)
    assert (kf, kq) == (round(s["float_accuracy"] * 50), round(s["int8_accuracy"] * 50))
    drop = 2.0 * (kf - kq)
    assert s["accuracy_drop_pp"] == drop
    tie = _q(four, tmp_path / "tie.onnx", calib="calib", max_drop=max(drop, 0.0))
    assert tie["passed"] is True and (tmp_path / "tie.onnx").exists()
    if drop >= 2.0:
        below = _q(four, tmp_path / "below.onnx", calib="calib", max_drop=drop - 2.0)
        assert below["passed"] is False and not (tmp_path / "below.onnx").exists()
    # Output SQNR with ranges calibrated on representative windows: one int8 tensor of crest factor c has
    # SQNR 6.02·8 + 4.77 − 20·log10(c) ≈ 39–43 dB for c = 3–5; about 15 quantized tensors add their noise
    # powers (−12 dB), leaving ≈ 27–31 dB at the logits. 15 dB leaves room for crest factors up to ~17
    # (the 4-class fixture's calibration set is small, so its ranges vary from one training run to the next).
    assert s["sqnr_db"] > 15


@pytest.mark.slow
def test_cli_exit_codes_on_both_sides_of_the_gate(four, clipped, tmp_path):
    _, kf, kq = clipped
    drop = 2.0 * (kf - kq)
    base = ["quantize", four["model"], "--calib", four["calib1"], "--data", four["test50"], "--noise", "none",
            "--method", "minmax", "--max-cell-drop", "100", "--json"]
    out = tmp_path / "fail.onnx"
    r = run_cli(*base, "-o", out, "--max-drop", f"{drop - 2:g}")
    res = json.loads(r.stdout)
    assert (r.returncode, res["passed"], res["accuracy_drop_pp"]) == (1, False, drop) and not out.exists()
    assert "exceeds --max-drop" in res["error"]
    out = tmp_path / "pass.onnx"
    r = run_cli(*base, "-o", out, "--max-drop", f"{drop:g}")
    assert (r.returncode, json.loads(r.stdout)["passed"]) == (0, True) and out.exists()


def test_sensitivity_rows_add_up_to_the_full_drop(four, clipped, tmp_path):
    """gain_if_float = (drop with every group int8) − (drop with this group float); the first term is the
    run's own drop (same 50 windows, same int8 model), so gain + all_but_this == accuracy_drop_pp."""
    s0, kf, kq = clipped
    s = _q(four, tmp_path / "s.onnx", max_drop=100, sensitivity=True)
    assert {r["group"] for r in s["sensitivity"]} == {"stem", "unit0", "unit1", "unit2", "head"}
    for r in s["sensitivity"]:
        assert r["gain_if_float_pp"] + r["all_but_this_int8_drop_pp"] == pytest.approx(2.0 * (kf - kq), abs=1e-12)
        for k in ("only_this_int8_drop_pp", "all_but_this_int8_drop_pp"):
            assert r[k] / 2.0 == round(r[k] / 2.0)  # whole windows of 50
    only = [r["only_this_int8_drop_pp"] for r in s["sensitivity"]]
    assert only == sorted(only, reverse=True)  # ranked, most sensitive first
    assert s["accuracy_drop_pp"] == s0["accuracy_drop_pp"] and s["float_groups"] == []  # analysis changes nothing


def test_auto_mixed_meets_a_zero_limit_by_keeping_groups_float(four, clipped, tmp_path):
    """With every group in float the model is the float model, so a limit of 0 can always be met."""
    _, kf, kq = clipped
    out = tmp_path / "mixed.onnx"
    s = _q(four, out, max_drop=0, auto_mixed=True)
    m = s["mixed"]
    assert m["trail"][0] == {"float_groups": [], "drop_pp": 2.0 * (kf - kq)}
    assert m["met"] and m["drop_pp"] <= 0.0 and m["float_groups"] and s["float_groups"] == m["float_groups"]
    assert all(t["drop_pp"] > 0 for t in m["trail"][:-1])  # it stopped at the first float set that met it
    assert s["passed"] and s["accuracy_drop_pp"] == m["drop_pp"]
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["precision"] == "int8+fp16" and side["float_groups"] == m["float_groups"]
    def dq_count(path):
        return sum(n.op_type == "DequantizeLinear" for n in onnx.load(path).graph.node)

    assert 0 < dq_count(out) < dq_count(clipped[0]["artifact"])  # the float groups lost their Q/DQ pairs
