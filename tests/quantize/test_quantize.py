import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from drsn_edge.data.dataset import Dataset, load_dataset, save_dataset
from drsn_edge.quantize.lint import lint_model
from drsn_edge.quantize.ptq import mse_ranges
from drsn_edge.quantize.run import quantize_model
from drsn_edge.quantize.sensitivity import auto_mixed

from ..conftest import run_cli


def _q(tiny_model, tiny_calib, tiny_data, out, **kw):
    kw.setdefault("noise_kinds", ["gaussian"])
    kw.setdefault("snrs", [0.0])
    kw.setdefault("max_cell_drop", 100)
    return quantize_model(tiny_model, tiny_calib, out, data=str(tiny_data), **kw)


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy", "mse"])
def test_each_method_gives_lint_clean_qdq_onnx(tiny_model, tiny_calib, tiny_data, tmp_path, method):
    out = tmp_path / f"{method}.onnx"
    s = _q(tiny_model, tiny_calib, tiny_data, out, method=method, max_drop=100)
    assert s["passed"] and out.exists()
    m = onnx.load(out)
    producer = {o: n for n in m.graph.node for o in n.output}
    # TensorRT placement: every Conv/Gemm input and weight, and both residual Add inputs, come from DQ
    for n in m.graph.node:
        if n.op_type in ("Conv", "Gemm", "Add"):
            for i in n.input[:2]:
                assert producer[i].op_type == "DequantizeLinear", (n.name, i)
    assert lint_model(m) == []
    # TensorRT rules: symmetric activations and weights
    for init in m.graph.initializer:
        if init.name.endswith("zero_point"):
            assert not onnx.numpy_helper.to_array(init).any()
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["calibration"]["method"] == method and side["input"]["quantization"]["scale"] > 0
    assert 0 <= s["agreement"] <= 1 and s["n"] == 2 * s["per_snr"]["none"]["clean"]["float"] * 0 + s["n"]
    assert set(s["per_snr"]) == {"none", "gaussian"}


def test_report_numbers_are_consistent(tiny_model, tiny_calib, tiny_data, tmp_path):
    s = _q(tiny_model, tiny_calib, tiny_data, tmp_path / "m.onnx", max_drop=100)
    assert s["accuracy_drop_pp"] == pytest.approx(100 * (s["float_accuracy"] - s["int8_accuracy"]))
    cell = s["per_snr"]["gaussian"]["0"]
    assert cell["drop_pp"] == pytest.approx(100 * (cell["float"] - cell["int8"]))
    assert s["sqnr_db"] > 10  # int8 logits track float ones


def test_max_drop_exceeded_exits_1_and_writes_nothing(tiny_model, tiny_calib, tiny_data, tmp_path):
    out = tmp_path / "m.onnx"
    r = run_cli("quantize", tiny_model, "--calib", tiny_calib, "--data", tiny_data, "--noise", "none",
                "--method", "percentile", "-o", out, "--max-drop", "-0", "--json")
    res = json.loads(r.stdout)
    if res["accuracy_drop_pp"] > 0:
        assert r.returncode == 1 and not res["passed"] and not out.exists()
    else:
        assert r.returncode == 0 and out.exists()


def test_sensitivity_and_auto_mixed(tiny_model, tiny_calib, tiny_data, tmp_path):
    s = _q(tiny_model, tiny_calib, tiny_data, tmp_path / "m.onnx", max_drop=100, sensitivity=True)
    groups = {r["group"] for r in s["sensitivity"]}
    assert groups == {"stem", "head"} | {f"unit{i}" for i in range(3)}
    for r in s["sensitivity"]:
        assert r["gain_if_float_pp"] == pytest.approx(s["sensitivity"][0]["gain_if_float_pp"] * 0 + r["gain_if_float_pp"])


def test_auto_mixed_search_stops_when_target_met():
    ranked = [{"group": "a", "gain_if_float_pp": 2.0, "only_this_int8_drop_pp": 2.0},
              {"group": "b", "gain_if_float_pp": 0.5, "only_this_int8_drop_pp": 0.5},
              {"group": "c", "gain_if_float_pp": 0.1, "only_this_int8_drop_pp": 0.1}]
    drops = {(): 3.0, ("a",): 0.9, ("a", "b"): 0.2}
    res = auto_mixed(ranked, lambda fg: drops[tuple(fg)], max_drop_pp=1.0)
    assert res["float_groups"] == ["a"] and res["met"] and res["drop_pp"] == 0.9
    res = auto_mixed(ranked, lambda fg: drops[tuple(fg)], max_drop_pp=0.3)
    assert res["float_groups"] == ["a", "b"]


def test_mse_range_search_beats_minmax_on_heavy_tails():
    vals = np.random.default_rng(0).laplace(0, 1, 200_000)
    amax = np.abs(vals).max()
    hist, edges = np.histogram(np.abs(vals), bins=2048, range=(0, amax))
    t = mse_ranges({"x": (hist, edges)})["x"]

    def mse(th):
        s = th / 127
        return np.mean((vals - np.clip(np.round(vals / s), -127, 127) * s) ** 2)

    assert t < 0.8 * amax  # clips the tail
    assert mse(t) < 0.8 * mse(amax)  # and lowers the error of the min/max range
    assert mse(t) <= min(mse(f * t) for f in (0.7, 0.85, 1.15, 1.3)) * 1.01


@pytest.mark.parametrize("case", ["nan", "empty", "rank", "window"])
def test_bad_calibration_data_exit_2_no_artifact(tiny_model, tiny_calib, tmp_path, case):
    cal = load_dataset(tiny_calib)
    bad = tmp_path / "bad.npz"
    if case == "nan":
        x = cal.x.copy()
        x[0, 0, 5] = np.nan
        np.savez(bad, x=x, y=cal.y, manifest_json=np.array(json.dumps(cal.manifest())))
        needle = "NaN"
    elif case == "empty":
        save_dataset(cal.subset(np.zeros(len(cal), bool)), bad)
        needle = "empty"
    elif case == "rank":
        np.savez(bad, x=cal.x[:, 0, :], y=cal.y, manifest_json=np.array(json.dumps(cal.manifest())))
        needle = "shape [N, 1, L]"
    else:
        small = Dataset(x=cal.x[:, :, :1024], y=cal.y, class_names=cal.class_names, fs=cal.fs, window=1024,
                        noise=cal.noise, snr_db=cal.snr_db, recording=cal.recording, split=cal.split)
        save_dataset(small, bad)
        needle = "window 1024"
    out = tmp_path / "q.onnx"
    r = subprocess.run([sys.executable, "-m", "drsn_edge", "quantize", str(tiny_model), "--calib", str(bad),
                        "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_lint_cli_on_corrupt_and_float_models(tiny_model, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage-not-onnx")
    r = run_cli("lint", bad)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    f = tmp_path / "f.onnx"
    run_cli("export", tiny_model, "-o", f)
    r = run_cli("lint", f, "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["violations"][0]["rule"] == "not-quantized"
