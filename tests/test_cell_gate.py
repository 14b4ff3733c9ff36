"""The --max-cell-drop gate of quantize and build at its exact tie and one window beside it.

The evaluation set is the 4-class fixture's 50 test windows, clean and once with Gaussian noise at 0 dB, so
each cell holds 50 windows and every cell drop is a whole number of windows × 2 pp. The gate judges the worst
SNR level (the noisy level's drop, a mean over its one noise type, and the clean cell's), so a limit of
exactly 2 pp × (windows lost in the worst cell) is the tie. The overall --max-drop gate is left open (100)."""

from __future__ import annotations

import json

import pytest

from drsn_edge.errors import CheckFailedError

from .conftest import run_cli


def _spec(four):
    from drsn_edge.evalspec import EvalSpec

    return EvalSpec(data=str(four["test50"]), noise=("gaussian",), snrs=(0.0,))


def _worst_windows(cells: dict) -> int:
    """Windows lost in the worst cell, from the reported per-cell accuracies (each a count of 50)."""
    lost = [round(50 * c["float"]) - round(50 * c["int8"]) for c in (cells["none"]["clean"], cells["gaussian"]["0"])]
    return max(0, *lost)


def _message(worst: float, limit: float) -> str:
    return (f"INT8 loses {worst:.2f} pp at its worst SNR level, above --max-cell-drop {limit:g} pp; "
            "try --method auto, --auto-mixed, more evaluation windows, or raise --max-cell-drop")


# ---------------------------------------------------------------- quantize


def _quantize(four, out, limit):
    from drsn_edge.quantize.run import quantize_model

    return quantize_model(four["model"], four["calib1"], out, method="minmax", spec=_spec(four), max_drop=100.0,
                          max_cell_drop=limit)  # a QuantizeResult


@pytest.fixture(scope="module")
def q_open(four, tmp_path_factory):
    s = _quantize(four, tmp_path_factory.mktemp("cell") / "open.onnx", 100.0).to_json()
    k = _worst_windows(s["per_snr"])
    assert k >= 1, "the clipping calibration must lose at least one window in some cell"
    # the noisy level's drop is 100·(mean float − mean int8) in floats: equal to 2k up to rounding
    assert s["worst_snr_drop_pp"] == pytest.approx(2.0 * k, abs=1e-9)
    return s, k


def test_quantize_passes_a_cell_drop_equal_to_max_cell_drop(four, q_open, tmp_path):
    _, k = q_open
    out = tmp_path / "tie.onnx"
    res = _quantize(four, out, 2.0 * k)
    assert (res.passed, res.error, res.artifact) == (True, None, str(out)) and out.exists()
    assert res.to_json()["passed"] is True


def test_quantize_fails_one_window_over_max_cell_drop(four, q_open, tmp_path):
    from drsn_edge.quantize.run import raise_if_failed

    s0, k = q_open
    out = tmp_path / "over.onnx"
    res = _quantize(four, out, 2.0 * (k - 1))
    assert (res.passed, res.artifact) == (False, None) and not out.exists() and not out.with_suffix(".json").exists()
    assert res.error == _message(s0["worst_snr_drop_pp"], 2.0 * (k - 1)) and res.to_json()["passed"] is False
    with pytest.raises(CheckFailedError) as ei:
        raise_if_failed(res)
    assert ei.value.exit_code == 1 and str(ei.value) == res.error


@pytest.mark.slow
def test_quantize_cli_exit_codes_at_the_cell_tie(four, q_open, tmp_path):
    s0, k = q_open
    base = ["quantize", four["model"], "--calib", four["calib1"], "--data", four["test50"], "--noise", "gaussian",
            "--snr", "0", "--method", "minmax", "--max-drop", "100", "--json"]
    r = run_cli(*base, "-o", tmp_path / "tie.onnx", "--max-cell-drop", f"{2 * k}")
    res = json.loads(r.stdout)
    assert (r.returncode, res["passed"], res["error"]) == (0, True, None) and (tmp_path / "tie.onnx").exists()
    r = run_cli(*base, "-o", tmp_path / "over.onnx", "--max-cell-drop", f"{2 * (k - 1)}")
    res = json.loads(r.stdout)
    assert (r.returncode, res["passed"]) == (1, False) and not (tmp_path / "over.onnx").exists()
    assert res["error"] == _message(s0["worst_snr_drop_pp"], 2.0 * (k - 1))


# ---------------------------------------------------------------- build
# Two host backends: onnxruntime builds through quantize (its gate, the message as quantize words it), LiteRT
# converts on its own and build measures the artifact and gates it (the message names target and backend).

BACKENDS = {"onnxruntime": "", "litert": "cell-host (litert): "}


def _profile_dir(folder, backend):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cell-host.toml").write_text(f'name = "cell-host"\nfamily = "host"\nbackend = "{backend}"\n'
                                           '[hardware]\ncpu = "host CPU"\n')
    return folder


def _build(four, tmp_path, backend, limit):
    from drsn_edge.build import build

    return build("cell-host", four["model"], [_profile_dir(tmp_path / "p", backend)], out_dir=tmp_path / "b",
                 spec=_spec(four), calib=str(four["calib1x32"]), max_drop=100.0, max_cell_drop=limit,
                 **({"method": "minmax"} if backend == "onnxruntime" else {}))  # LiteRT's converter has its own


@pytest.fixture(scope="module", params=list(BACKENDS))
def b_open(request, four, tmp_path_factory):
    from drsn_edge.quantize.auto import worst_snr_drop_pp

    res = _build(four, tmp_path_factory.mktemp("bcell"), request.param, 100.0)
    k = _worst_windows(res.accuracy["per_snr"])
    assert k >= 1, "the clipping calibration must lose at least one window in some cell"
    assert worst_snr_drop_pp(res.accuracy) == pytest.approx(2.0 * k, abs=1e-9)  # float mean over noise types
    return request.param, worst_snr_drop_pp(res.accuracy), k


def test_build_passes_a_cell_drop_equal_to_max_cell_drop(four, b_open, tmp_path):
    backend, _, k = b_open
    res = _build(four, tmp_path, backend, 2.0 * k)
    manifest = json.loads((tmp_path / "b" / "build.json").read_text())
    assert (manifest["backend"], manifest["options"]["max_cell_drop"]) == (backend, 2.0 * k)
    assert res.out_dir == str(tmp_path / "b") and _worst_windows(res.accuracy["per_snr"]) == k


def test_build_fails_one_window_over_max_cell_drop(four, b_open, tmp_path):
    backend, worst, k = b_open
    with pytest.raises(CheckFailedError) as ei:
        _build(four, tmp_path, backend, 2.0 * (k - 1))
    assert ei.value.exit_code == 1
    assert str(ei.value) == BACKENDS[backend] + _message(worst, 2.0 * (k - 1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]  # nothing written, no staging folder left


@pytest.mark.slow
def test_build_cli_exit_codes_at_the_cell_tie(four, b_open, tmp_path):
    backend, worst, k = b_open
    base = ["build", four["model"], "--target", "cell-host", "--targets-dir", _profile_dir(tmp_path / "p", backend),
            "--calib", four["calib1x32"], "--data", four["test50"], "--noise", "gaussian", "--snr", "0",
            "--max-drop", "100", "--json", *(["--method", "minmax"] if backend == "onnxruntime" else [])]
    r = run_cli(*base, "--max-cell-drop", f"{2 * k}", "-o", tmp_path / "tie")
    assert r.returncode == 0 and json.loads(r.stdout)["target"] == "cell-host" and (tmp_path / "tie").is_dir()
    r = run_cli(*base, "--max-cell-drop", f"{2 * (k - 1)}", "-o", tmp_path / "over")
    assert (r.returncode, json.loads(r.stdout)) == (1, {"error": BACKENDS[backend] + _message(worst, 2.0 * (k - 1)),
                                                        "exit_code": 1})
    assert not (tmp_path / "over").exists()


def test_a_float_build_is_neither_measured_nor_gated(four, tmp_path):
    """--precision fp32 on ONNX Runtime: the artifact is the float model itself, so build reports no accuracy
    figure and no gate applies, even with both limits at 0."""
    from drsn_edge.build import build

    res = build("cell-host", four["model"], [_profile_dir(tmp_path / "p", "onnxruntime")], out_dir=tmp_path / "b",
                spec=_spec(four), calib=str(four["calib1x32"]), precision="fp32", max_drop=0.0, max_cell_drop=0.0)
    assert res.accuracy is None and res.precision == "fp32"
    assert "accuracy" not in json.loads((tmp_path / "b" / "build.json").read_text())
