import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from drsn_edge.data.dataset import Dataset, load_dataset, save_dataset
from drsn_edge.errors import InputError
from drsn_edge.quantize.lint import lint_model
from drsn_edge.quantize.ptq import mse_ranges
from drsn_edge.quantize.run import quantize_model
from drsn_edge.quantize.sensitivity import auto_mixed

from ..conftest import run_cli


def _q(tiny_model, tiny_calib, tiny_data, out, **kw):
    kw.setdefault("noise_kinds", ["gaussian"])
    kw.setdefault("snrs", [0.0])
    kw.setdefault("max_cell_drop", 100)
    return quantize_model(tiny_model, tiny_calib, out, data=str(tiny_data), **kw).to_json()


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
    # every test window once clean and once in the one gaussian cell
    n_test = int((load_dataset(tiny_data).split == "test").sum())
    assert s["n"] == 2 * n_test and set(s["per_snr"]) == {"none", "gaussian"}
    assert set(s["per_snr"]["gaussian"]) == {"0"}


def test_compare_figures_by_hand():
    """4 windows, 3 classes; int8 changes only window 2's logits (from class 2 to class 0)."""
    from drsn_edge.quantize.report import compare

    f = np.array([[0, 3, 0], [3, 0, 0], [0, 0, 3], [3, 0, 0]], dtype=np.float32)
    q = np.array([[0, 3, 0], [3, 0, 0], [1, 0, 0], [3, 0, 0]], dtype=np.float32)
    y = np.array([1, 0, 2, 1])
    noise = np.array(["none", "none", "gaussian", "gaussian"])
    snr = np.array([np.nan, np.nan, 0.0, 0.0], dtype=np.float32)
    r = compare(f, q, y, noise, snr, ["a", "b", "c"])
    assert (r["float_accuracy"], r["int8_accuracy"], r["accuracy_drop_pp"], r["n"]) == (0.75, 0.5, 25.0, 4)
    assert r["agreement"] == 0.75 and r["max_abs_diff"] == 3.0
    # signal: mean of f² = 4·9/12; error: window 2 is off by (1, 0, −3), so mean error² = 10/12
    assert r["sqnr_db"] == pytest.approx(10 * np.log10(36 / 10), abs=1e-12)
    assert r["per_snr"] == {"none": {"clean": {"float": 1.0, "int8": 1.0, "drop_pp": 0.0}},
                            "gaussian": {"0": {"float": 0.5, "int8": 0.0, "drop_pp": 50.0}}}
    assert r["max_cell_drop_pp"] == 50.0
    assert r["snr_curve"] == {"0": {"float": 0.5, "int8": 0.0, "drop_pp": 50.0}}
    assert (r["grid_float_accuracy"], r["grid_int8_accuracy"], r["grid_drop_pp"]) == (0.5, 0.0, 50.0)
    assert r["per_class"] == {"a": {"float": 1.0, "int8": 1.0}, "b": {"float": 0.5, "int8": 0.5},
                              "c": {"float": 1.0, "int8": 0.0}}


def test_compare_curve_averages_noise_types_per_snr():
    """gaussian at 5 and 10 dB, pink at 5 dB only: the 10 dB point averages gaussian alone; SNRs in order."""
    from drsn_edge.quantize.report import compare

    eye = np.eye(2, dtype=np.float32)
    y = np.array([0, 0, 0, 0])
    f = eye[[0, 0, 0, 1]]  # right, right, right, wrong
    q = eye[[0, 1, 1, 1]]  # right, wrong, wrong, wrong
    noise = np.array(["gaussian", "pink", "gaussian", "pink"])
    snr = np.array([5.0, 5.0, 10.0, 5.0], dtype=np.float32)
    r = compare(f, q, y, noise, snr, ["a", "b"])
    assert list(r["snr_curve"]) == ["5", "10"]
    # each noise type weighs the same at an SNR: 5 dB is (gaussian 1.0 + pink 0.5) / 2 in float, (1.0 + 0) / 2 in int8
    assert r["snr_curve"] == {"5": {"float": 0.75, "int8": 0.5, "drop_pp": 25.0},
                              "10": {"float": 1.0, "int8": 0.0, "drop_pp": 100.0}}
    assert r["max_cell_drop_pp"] == 100.0  # gaussian at 10 dB: right in float, wrong in int8
    # grid: the three cells weigh the same: float (1 + 1 + 0.5) / 3, int8 (1 + 0 + 0) / 3
    assert r["grid_drop_pp"] == pytest.approx(100 * (2.5 - 1) / 3, abs=1e-12)


def test_compare_without_any_loss():
    """Identical outputs: no drop anywhere (0, not a made-up floor), infinite SQNR, full agreement."""
    from drsn_edge.comparison import compare, output_stats

    f = np.array([[1, 0], [0, 1], [1, 0]], dtype=np.float32)
    c = compare(f, f.copy(), np.array([0, 0, 0]), np.array(["none", "gaussian", "gaussian"]),
                np.array([np.nan, 0.0, 0.0], dtype=np.float32), ["a", "b"])
    assert (c.drop_pp, c.max_cell_drop_pp, c.grid_drop_pp, c.agreement, c.sqnr_db, c.max_abs_diff) == (
        0.0, 0.0, 0.0, 1.0, float("inf"), 0.0)
    assert output_stats(f, f) == {"max_abs_diff": 0.0, "top1_agreement": 1.0, "sqnr_db": float("inf"), "n": 3}
    empty = np.zeros((0, 2), dtype=np.float32)
    assert output_stats(empty, empty) == {"max_abs_diff": 0.0, "top1_agreement": 1.0, "sqnr_db": float("inf"), "n": 0}


def test_drop_is_exact_so_a_tie_with_the_threshold_passes():
    """93 → 92 right of 100 windows is a drop of exactly 1 pp (0.93 − 0.92 in floats is 0.010000000000000009)."""
    from drsn_edge.evaluate import drop_pp
    from drsn_edge.quantize.report import compare

    y = np.zeros(100, dtype=int)
    eye = np.eye(2, dtype=np.float32)
    f, q = eye[(np.arange(100) >= 93).astype(int)], eye[(np.arange(100) >= 92).astype(int)]
    none = np.full(100, "none")
    assert compare(f, q, y, none, np.full(100, np.nan), ["a", "b"])["accuracy_drop_pp"] == 1.0
    assert drop_pp(y, f.argmax(1), q.argmax(1)) == 1.0 and drop_pp(y, q.argmax(1), f.argmax(1)) == -1.0
    with pytest.raises(InputError, match="^no windows to compare$"):
        drop_pp(y[:0], y[:0], y[:0])


def test_analyse_ranks_groups_by_a_known_additive_drop():
    """Each int8 group costs a fixed number of pp, independently: a 3, b 1, c 0 (drop = sum over int8 groups)."""
    from drsn_edge.quantize.sensitivity import analyse

    cost = {"a": 3.0, "b": 1.0, "c": 0.0}
    groups = {"c": ["n1"], "a": ["n2", "n3"], "b": ["n4"]}
    calls = []

    def drop(float_groups):
        calls.append(sorted(float_groups))
        return sum(v for g, v in cost.items() if g not in float_groups)

    seen = []
    rows = analyse(groups, drop, progress=lambda i, n: seen.append((i, n)))
    assert rows == [
        {"group": "a", "nodes": 2, "only_this_int8_drop_pp": 3.0, "all_but_this_int8_drop_pp": 1.0,
         "gain_if_float_pp": 3.0},
        {"group": "b", "nodes": 1, "only_this_int8_drop_pp": 1.0, "all_but_this_int8_drop_pp": 3.0,
         "gain_if_float_pp": 1.0},
        {"group": "c", "nodes": 1, "only_this_int8_drop_pp": 0.0, "all_but_this_int8_drop_pp": 4.0,
         "gain_if_float_pp": 0.0},
    ]
    assert seen == [(1, 3), (2, 3), (3, 3)] and [] in calls


def test_analyse_ranks_by_own_cost_then_by_gain():
    """Drops by the set of groups kept in float (interacting groups, not additive): z costs 2 pp alone, x and
    y cost nothing alone but leaving x in float saves 4 pp and y only 1 pp."""
    from drsn_edge.quantize.sensitivity import analyse

    table = {(): 5.0, ("y", "z"): 0.0, ("x", "z"): 0.0, ("x", "y"): 2.0, ("x",): 1.0, ("y",): 4.0, ("z",): 3.0}
    rows = analyse({"x": ["a"], "y": ["b"], "z": ["c"]}, lambda fg: table[tuple(sorted(fg))])
    assert [(r["group"], r["only_this_int8_drop_pp"], r["gain_if_float_pp"]) for r in rows] == [
        ("z", 2.0, 2.0), ("x", 0.0, 4.0), ("y", 0.0, 1.0)]


def test_auto_mixed_search_stops_when_target_met():
    ranked = [{"group": "a", "gain_if_float_pp": 2.0, "only_this_int8_drop_pp": 2.0},
              {"group": "b", "gain_if_float_pp": 0.5, "only_this_int8_drop_pp": 0.5},
              {"group": "c", "gain_if_float_pp": 0.1, "only_this_int8_drop_pp": 0.1}]
    drops = {(): 3.0, ("a",): 0.9, ("a", "b"): 0.2}
    res = auto_mixed(ranked, lambda fg: drops[tuple(fg)], max_drop_pp=1.0)
    assert res["float_groups"] == ["a"] and res["met"] and res["drop_pp"] == 0.9
    res = auto_mixed(ranked, lambda fg: drops[tuple(fg)], max_drop_pp=0.3)
    assert res["float_groups"] == ["a", "b"]
    assert res["trail"] == [{"float_groups": [], "drop_pp": 3.0}, {"float_groups": ["a"], "drop_pp": 0.9},
                            {"float_groups": ["a", "b"], "drop_pp": 0.2}]


def test_auto_mixed_tie_stops_and_unmet_target_is_reported():
    ranked = [{"group": "a", "gain_if_float_pp": 1.0, "only_this_int8_drop_pp": 0.0},
              {"group": "b", "gain_if_float_pp": 0.0, "only_this_int8_drop_pp": 2.0}]
    drops = {(): 3.0, ("b",): 1.0, ("b", "a"): 0.5}
    # order by max(gain, only-this): b (2.0) before a (1.0); a drop equal to the target meets it
    res = auto_mixed(ranked, lambda fg: drops[tuple(fg)], max_drop_pp=1.0)
    assert (res["float_groups"], res["drop_pp"], res["met"]) == (["b"], 1.0, True)
    res = auto_mixed(ranked, lambda fg: drops[tuple(fg)], max_drop_pp=0.1)
    assert (res["float_groups"], res["drop_pp"], res["met"]) == (["b", "a"], 0.5, False)
    assert auto_mixed(ranked, lambda fg: drops[tuple(fg)], max_drop_pp=3.0)["float_groups"] == []


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
    elif case == "empty":  # save_dataset refuses to write one: write the arrays by hand
        np.savez(bad, x=cal.x[:0], y=cal.y[:0], manifest_json=np.array(json.dumps(cal.manifest())))
        needle = "no windows"
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
