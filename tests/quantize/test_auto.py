"""--method auto: the method with the smallest worst-SNR drop wins; --max-drop and --max-cell-drop both gate."""

from __future__ import annotations

import json

import pytest

from drsn_edge.quantize.auto import AUTO_METHODS, choose, row, select, worst_snr_drop_pp
from drsn_edge.quantize.ptq import METHODS
from drsn_edge.quantize.run import gate_error, quantize_model

from ..conftest import run_cli


def _rep(curve: dict, clean: float, cell: float, drop: float) -> dict:
    return {"snr_curve": {s: {"drop_pp": d} for s, d in curve.items()},
            "per_snr": {"none": {"clean": {"drop_pp": clean}}}, "max_cell_drop_pp": cell, "accuracy_drop_pp": drop,
            "int8_accuracy": 0.9, "float_accuracy": 0.91}


def test_worst_snr_drop_includes_the_clean_cell_and_never_goes_below_zero():
    assert worst_snr_drop_pp(_rep({"-5": 2.0, "0": -1.0}, 0.3, 0, 0)) == 2.0
    assert worst_snr_drop_pp(_rep({"-5": 0.1}, 0.7, 0, 0)) == 0.7
    assert worst_snr_drop_pp(_rep({"-5": -0.4}, -0.1, 0, 0)) == 0.0


def test_auto_picks_the_smallest_worst_snr_drop_on_a_stubbed_table():
    # the real-recordings case: percentile is best overall but loses 2.0 pp at -4 dB; minmax loses 0.1 pp
    reps = {"minmax": _rep({"-4": 0.1, "0": 0.3}, 0.0, 1.0, 0.3), "percentile": _rep({"-4": 2.0, "0": 0.0}, 0.0, 3.0, 0.2),
            "entropy": _rep({"-4": 0.6, "0": 0.6}, 0.0, 1.0, 0.6), "mse": _rep({"-4": 0.4, "0": 0.1}, 0.0, 1.0, 0.2)}
    method, table = choose(METHODS, lambda m: reps[m])
    # worst SNR drops: minmax 0.3 (0 dB), percentile 2.0 (-4 dB), entropy 0.6, mse 0.4
    assert method == "minmax"
    assert [r["worst_snr_drop_pp"] for r in table] == [0.3, 2.0, 0.6, 0.4]
    assert [r["chosen"] for r in table] == [True, False, False, False]


def test_ties_go_to_the_worst_cell_then_the_overall_drop_then_the_method_order():
    rows = [{"method": "minmax", "worst_snr_drop_pp": 0.5, "max_cell_drop_pp": 2.0, "drop_pp": 0.1},
            {"method": "percentile", "worst_snr_drop_pp": 0.5, "max_cell_drop_pp": 1.0, "drop_pp": 0.3},
            {"method": "entropy", "worst_snr_drop_pp": 0.5, "max_cell_drop_pp": 1.0, "drop_pp": 0.2},
            {"method": "mse", "worst_snr_drop_pp": 0.5, "max_cell_drop_pp": 1.0, "drop_pp": 0.2}]
    assert select(rows, METHODS)["method"] == "entropy"


def test_gate_error_checks_the_overall_drop_and_the_worst_snr_level():
    assert gate_error(1.0, 0.5, 1.0, 0.5) is None  # exact ties pass
    assert "--max-drop 1 pp" in gate_error(1.01, 0.0, 1.0, 0.5)
    assert "worst SNR level, above --max-cell-drop 0.5 pp" in gate_error(0.2, 0.67, 1.0, 0.5)


def test_auto_is_the_default_and_reports_its_table(tiny_model, tiny_calib, tiny_data, tmp_path):
    s = quantize_model(tiny_model, tiny_calib, tmp_path / "m.onnx", data=str(tiny_data), noise_kinds=["gaussian"],
                       snrs=[0.0], max_drop=100, max_cell_drop=100).to_json()
    sel = s["method_selection"]
    assert s["method_requested"] == "auto" and [r["method"] for r in sel["table"]] == list(AUTO_METHODS)
    assert s["method"] == sel["chosen"] == select(sel["table"], METHODS)["method"]
    assert sel["windows"].startswith(f"val split of {tiny_data}")  # chosen on val, reported on test
    side = json.loads((tmp_path / "m.json").read_text())
    assert side["calibration"]["method"] == s["method"]


def test_cli_exits_1_when_the_worst_snr_level_drops_too_much(tiny_model, tiny_calib, tiny_data, tmp_path):
    out = tmp_path / "m.onnx"
    r = run_cli("quantize", tiny_model, "--calib", tiny_calib, "--data", tiny_data, "--noise", "gaussian", "--snr", "-5",
                "--method", "minmax", "-o", out, "--max-drop", "100", "--max-cell-drop", "0", "--json")
    res = json.loads(r.stdout)
    if res["worst_snr_drop_pp"] > 0:
        assert r.returncode == 1 and "--max-cell-drop 0 pp" in res["error"] and not out.exists()
    else:
        assert r.returncode == 0 and out.exists()


DROP_MSG = "INT8 accuracy drop {d:.2f} pp exceeds --max-drop {m:g} pp; try --method auto, --auto-mixed or --sensitivity"
CELL_MSG = ("INT8 loses {d:.2f} pp at its worst SNR level, above --max-cell-drop {m:g} pp; "
            "try --method auto, --auto-mixed, more evaluation windows, or raise --max-cell-drop")


def test_gate_error_at_and_beside_each_limit_by_hand():
    # the overall drop is exact (window counts): the tie passes, the next representable figure fails
    assert gate_error(2.0, 0.0, 2.0, 100.0) is None
    assert gate_error(0.0, 0.0, 0.0, 0.0) is None
    assert gate_error(2.0000000000000004, 0.0, 2.0, 100.0) == DROP_MSG.format(d=2.0000000000000004, m=2.0)
    assert gate_error(-3.0, -1.0, 0.0, 0.0) is None  # int8 better than float
    # the worst SNR level is a float mean: 100·(0.90 − 0.86) = 4.0000000000000036 ties a limit of 4 …
    assert gate_error(0.0, 100 * (0.9 - 0.86), 100.0, 4.0) is None
    # … and one window of 50 more (6 pp) fails, as does anything a rounding error cannot explain
    assert gate_error(0.0, 6.0, 100.0, 4.0) == CELL_MSG.format(d=6.0, m=4.0)
    assert gate_error(0.0, 4.00001, 100.0, 4.0) == CELL_MSG.format(d=4.00001, m=4.0)
    assert gate_error(0.0, 1.5, 100.0, 0.0) == CELL_MSG.format(d=1.5, m=0.0)
    # both over: the overall drop is named first
    assert gate_error(3.0, 9.0, 2.0, 4.0) == DROP_MSG.format(d=3.0, m=2.0)


def test_raise_if_failed_raises_the_summary_error_with_exit_code_1():
    from drsn_edge.errors import CheckFailedError
    from drsn_edge.quantize.run import raise_if_failed

    from types import SimpleNamespace

    raise_if_failed(SimpleNamespace(passed=True, error=None))  # a QuantizeResult's verdict fields
    with pytest.raises(CheckFailedError) as ei:
        raise_if_failed(SimpleNamespace(passed=False, error="the reason"))
    assert (str(ei.value), ei.value.exit_code) == ("the reason", 1)


def test_row_copies_the_figures_and_select_breaks_every_tie_in_order():
    r = row("mse", _rep({"-5": 1.25}, 0.5, 3.0, 0.75))
    assert r == {"method": "mse", "worst_snr_drop_pp": 1.25, "max_cell_drop_pp": 3.0, "drop_pp": 0.75,
                 "int8_accuracy": 0.9, "float_accuracy": 0.91}

    def rows(*figs):
        return [{"method": m, "worst_snr_drop_pp": w, "max_cell_drop_pp": c, "drop_pp": d}
                for m, (w, c, d) in zip(("minmax", "percentile", "mse"), figs)]

    order = ("minmax", "percentile", "mse")
    assert select(rows((1.0, 0, 0), (0.5, 9, 9), (0.75, 0, 0)), order)["method"] == "percentile"  # worst SNR first
    assert select(rows((0.5, 2, 0), (0.5, 1, 9), (0.5, 3, 0)), order)["method"] == "percentile"  # then worst cell
    assert select(rows((0.5, 1.4, 0.1), (0.5, 1.2, 0.3)), order)["method"] == "percentile"  # not rounded to whole pp
    assert select(rows((0.5, 1, 0.3), (0.5, 1, 0.1)), order)["method"] == "percentile"  # overall drop, fractional
    assert select(rows((0.5, 1, 0.3), (0.5, 1, 0.2), (0.5, 1, 0.4)), order)["method"] == "percentile"  # overall
    assert select(rows((0.5, 1, 0.2), (0.5, 1, 0.2), (0.5, 1, 0.2)), order)["method"] == "minmax"  # method order
    assert select(rows((0.5, 1, 0.2), (0.5, 1, 0.2)), ("percentile", "minmax"))["method"] == "percentile"
    # figures equal but for float rounding (100·(0.90 − 0.86) against 4.0) tie, so the next key decides
    assert select(rows((100 * (0.9 - 0.86), 1, 0.2), (4.0, 1, 0.1)), order)["method"] == "percentile"
    with pytest.raises(ValueError, match="^no candidate methods$"):
        select([], order)


def test_choose_measures_each_method_once_in_order_and_reports_progress():
    calls, steps = [], []
    reps = {"minmax": _rep({"0": 1.0}, 0.0, 1.0, 0.5), "mse": _rep({"0": 0.25}, 0.0, 1.0, 0.5)}

    def measure(m):
        calls.append(m)
        return reps[m]

    method, table = choose(("minmax", "mse"), measure, step=lambda *a: steps.append(a))
    assert (method, calls) == ("mse", ["minmax", "mse"])
    assert steps == [("method auto: minmax", 1, 2), ("method auto: mse", 2, 2)]
    assert [(r["method"], r["chosen"]) for r in table] == [("minmax", False), ("mse", True)]


def test_worst_snr_drop_without_a_curve_or_a_clean_cell():
    assert worst_snr_drop_pp({}) == 0.0
    assert worst_snr_drop_pp({"snr_curve": {"0": {"drop_pp": 3.0}}}) == 3.0  # noise only, no clean cell
    assert worst_snr_drop_pp({"per_snr": {"none": {"clean": {"drop_pp": 2.0}}}}) == 2.0
    assert worst_snr_drop_pp({"snr_curve": None, "per_snr": {"gaussian": {}}}) == 0.0


@pytest.mark.parametrize("kw,message", [
    ({"max_drop": -0.01}, "--max-drop must be ≥ 0, got -0.01"),
    ({"max_drop": 100.01}, "--max-drop must be ≤ 100, got 100.01"),
    ({"max_cell_drop": -0.01}, "--max-cell-drop must be ≥ 0, got -0.01"),
    ({"max_cell_drop": 100.01}, "--max-cell-drop must be ≤ 100, got 100.01"),
    ({"batch": 0}, "--batch must be ≥ 1, got 0"),
    ({"batch": 4097}, "--batch must be ≤ 4096, got 4097"),
    ({"qat_epochs": -1}, "--qat must be ≥ 0, got -1"),
    ({"qat_epochs": 1001}, "--qat must be ≤ 1000, got 1001"),
    ({"method": "kmeans"}, "unknown method 'kmeans'; choose one of auto, " + ", ".join(METHODS)),
    ({"out": "m.tflite"}, "ONNX files end in .onnx, got 'm.tflite'"),
])
def test_quantize_options_are_checked_on_both_sides_of_each_bound(kw, message, tmp_path):
    from drsn_edge.errors import InputError
    from drsn_edge.quantize.run import _validate

    args = {"out": tmp_path / "m.onnx", "method": "auto", "batch": 1, "max_drop": 1.0, "qat_epochs": 0,
            "max_cell_drop": 0.5}
    for edge in ({"max_drop": 0.0, "max_cell_drop": 0.0, "batch": 1, "qat_epochs": 0},
                 {"max_drop": 100.0, "max_cell_drop": 100.0, "batch": 4096, "qat_epochs": 1000}):
        assert _validate(**{**args, **edge}) == tmp_path / "m.onnx"  # every bound itself is allowed
    for m in ("auto", *METHODS):
        assert _validate(**{**args, "method": m}) == tmp_path / "m.onnx"
    with pytest.raises(InputError) as ei:
        _validate(**{**args, **kw})
    assert str(ei.value) == message
