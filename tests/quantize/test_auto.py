"""--method auto: the method with the smallest worst-SNR drop wins; --max-drop and --max-cell-drop both gate."""

from __future__ import annotations

import json

import pytest

from drsn_edge.quantize.auto import AUTO_METHODS, choose, select, worst_snr_drop_pp
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
