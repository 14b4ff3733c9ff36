"""Root cause 7: a model trained on the user's own recordings (classes the simulator lacks) is measured on
--data, else on the test split of the training data its bundle records, else on the calibration set —
always saying which; only when none is at hand is it refused, naming --data."""

import shutil

import pytest

from .contract import expect

FAST = ["--noise", "none"]


def _calib_of_real_classes(cwd):
    expect(["calibration", "make", "--data", "real.npz", "-o", "rcal.npz", "--n", "40", "--noise", "none"], cwd,
           "ok", outputs=["rcal.npz", "rcal.json"])


def test_evalspec_picks_the_recorded_test_split_then_the_calibration_set(assets, tmp_path):
    from drsn_edge.bundle import read_meta
    from drsn_edge.evalspec import EvalSpec

    meta = read_meta(assets / "real.drsn")
    kind, path, words = EvalSpec(noise=()).source(meta)
    assert (kind, path) == ("recorded", str(assets / "real.npz")) and "test split" in words
    ev = EvalSpec(noise=()).windows(meta)
    assert len(ev) == 30 and "recorded in the model" in ev.description  # 10 classes × 1 test recording × 3 windows
    gone = dict(meta, training=dict(meta["training"], data=str(tmp_path / "moved.npz")))
    kind, path, words = EvalSpec(noise=(), calibration="c.npz").source(gone)
    assert (kind, path) == ("calibration", "c.npz") and "optimistic" in words
    from drsn_edge.errors import InputError

    with pytest.raises(InputError, match="pass --data"):
        EvalSpec(noise=()).source(gone)


@pytest.mark.slow
def test_build_a_model_of_real_classes_without_data_uses_its_recorded_test_split(work):
    cwd = work("real.drsn", "real.npz")
    _calib_of_real_classes(cwd)
    run = expect(["build", "real.drsn", "--calib", "rcal.npz", "--target", "host", "-o", "b", "--max-drop", "100",
                  *FAST], cwd, "ok", outputs=["b"], timeout=900)
    assert "test split of" in run.obj["evaluation"]["description"]


@pytest.mark.slow
def test_quantize_a_model_of_real_classes_falls_back_to_the_calibration_set(work, assets):
    cwd = work("gone.drsn", "real.npz")  # its training data is not at hand: the calibration set, said so
    _calib_of_real_classes(cwd)
    run = expect(["quantize", "gone.drsn", "--calib", "rcal.npz", "-o", "q.onnx", "--max-drop", "100", *FAST], cwd,
                 "ok", outputs=["q.onnx", "q.json"], timeout=900)
    assert run.obj["evaluation"].startswith("calibration set rcal.npz") and "optimistic" in run.obj["evaluation"]


def test_build_with_data_of_other_classes_is_refused(work):
    cwd = work("real.drsn", "d.npz", "cal.npz")
    expect(["build", "real.drsn", "--calib", "cal.npz", "--target", "host", "--data", "d.npz", "-o", "b"], cwd,
           "input", contains="classes")


@pytest.mark.parametrize("cmd,key", [(["evaluate", "real.drsn", "--noise", "none"], "data"),
                                     (["export", "real.drsn", "-o", "r.onnx"], "validation")])
def test_evaluate_and_export_a_model_of_real_classes_use_its_recorded_test_split(work, assets, cmd, key):
    cwd = work("real.drsn")
    outs = ["r.onnx", "r.json"]
    run = expect(cmd, cwd, "ok", outputs=outs, inputs=[assets / "real.npz"], timeout=600)
    assert "real.npz" in str(run.obj[key])
