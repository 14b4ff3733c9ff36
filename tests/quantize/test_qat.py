"""Quantization-aware fine-tuning: the fake quantizers by hand, where they sit, calibration, and what
fine-tuning does to a model whose calibration clips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from drsn_edge.bundle import load_bundle
from drsn_edge.data.dataset import load_dataset, normalize
from drsn_edge.models.deploy import DeployNet
from drsn_edge.quantize.qat import ActFakeQuant, QConv2d, QLinear, _weight_fq, calibrate, cosine_lr, finetune, prepare, strip


def test_activation_fake_quant_by_hand():
    fq = ActFakeQuant()
    x = torch.tensor([0.4, 0.6, -1.6, 200.0, -300.0])
    assert torch.equal(fq(x), x)  # not calibrated (amax 0): passes through
    fq.amax = torch.tensor(127.5)  # scale = amax / 127.5 = 1
    assert fq(x).tolist() == [0.0, 1.0, -2.0, 127.0, -128.0]
    fq.amax = torch.tensor(12.75)  # scale 0.1
    assert fq(torch.tensor([0.26, -0.34, 50.0])).tolist() == pytest.approx([0.3, -0.3, 12.7], abs=1e-6)
    fq.amax = torch.tensor(0.51)  # a range under 1 is quantized too: scale 0.004
    assert fq(torch.tensor([0.0061, 1.0])).tolist() == pytest.approx([0.008, 0.508], abs=1e-6)


def test_calibrating_records_the_running_max_and_passes_values_through():
    fq = ActFakeQuant()
    fq.calibrating = True
    a, b = torch.tensor([1.0, -3.0]), torch.tensor([2.5, 0.5])
    assert torch.equal(fq(a), a) and torch.equal(fq(b), b)
    assert float(fq.amax) == 3.0


def test_weight_fake_quant_is_symmetric_per_output_channel():
    w = torch.tensor([[1.0, -0.25], [0.01, -0.03]]).view(2, 1, 1, 2)
    got = _weight_fq(w).view(2, 2)
    # channel 0: scale 1/127 → 127, −31.75 → −32; channel 1: scale 0.03/127 → 42.33 → 42, −127
    want = torch.tensor([[1.0, -32 / 127], [42 * 0.03 / 127, -0.03]])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-7)  # float32 rounding of the scales


def test_cosine_schedule():
    assert [cosine_lr(1e-3, e, 4) for e in range(4)] == pytest.approx([1e-3, 0.5 * (1 + np.cos(np.pi / 4)) * 1e-3,
                                                                        0.5e-3, 0.5 * (1 - np.cos(np.pi / 4)) * 1e-3])
    assert cosine_lr(0.1, 0, 1) == 0.1


def _deploy(four):
    return DeployNet(load_bundle(four["model"]).model, 4, 2048)


def test_fake_quantizers_sit_at_every_conv_gemm_and_residual_add(four):
    """depth 1: stem + 3 units × (BN1 affine, conv1+BN2, conv2, 2 threshold FCs) + head affine = 17 convs,
    each with an input and an output quantizer; the final Gemm's input; 3 residual adds × (two inputs, sum)."""
    d = prepare(_deploy(four))
    assert sum(isinstance(m, ActFakeQuant) for m in d.modules()) == 17 * 2 + 1 + 3 * 3
    wrapped = {id(c) for m in d.modules() if isinstance(m, (QConv2d, QLinear)) for c in m.children()}
    layers = [m for m in d.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 18 and all(id(m) in wrapped for m in layers)
    assert all(len(u.add_fq) == 3 for u in d.units)


def test_strip_gives_back_the_plain_network_and_calibration_reads_the_input_range(four):
    x = normalize(load_dataset(four["calib"]).x[:4], "zscore")
    ref = _deploy(four)
    d = prepare(_deploy(four))
    calibrate(d, x, batch=2)
    assert float(d.stem.fq_in.amax) == pytest.approx(float(np.abs(x).max()), rel=1e-6)
    assert all(float(m.amax) > 0 for m in d.modules() if isinstance(m, ActFakeQuant))
    with torch.no_grad():
        fq_out = d(torch.from_numpy(x))
        plain = strip(d)(torch.from_numpy(x))
        assert torch.equal(plain, ref(torch.from_numpy(x)))
    assert not torch.equal(fq_out, plain)  # the fake quantizers did act
    assert not any(isinstance(m, ActFakeQuant) for m in d.modules())


def test_finetune_without_steps_changes_nothing(four):
    """Zero epochs, or a zero learning rate: the returned network is the teacher, weight for weight."""
    b = load_bundle(four["model"])
    ds = load_dataset(four["data"]).select_split("train")
    cx = normalize(load_dataset(four["calib"]).x, "zscore")
    ref = DeployNet(b.model, 1, b.window).state_dict()
    seen = []
    for epochs, lr in ((0, 1e-3), (1, 0.0)):
        got = finetune(b.model, b.window, cx, ds.x[:32], ds.y[:32], epochs, lr=lr, batch=16,
                       progress=lambda e, n, loss: seen.append((e, n))).state_dict()
        assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)
    assert seen == [(1, 1)]


@pytest.mark.slow
def test_qat_recovers_accuracy_lost_to_a_clipping_calibration(four, tmp_path):
    """The one-window calibration clips most windows' activations; fine-tuning with those ranges fixed
    teaches the weights to live within them, so int8 accuracy must rise above plain PTQ's. Eight epochs: at
    the fine-tuning LR (1e-3) on 180 windows three epochs barely move this model's weights (int8 accuracy
    unchanged), six bring it back to float's, ten beyond."""
    from drsn_edge.quantize.run import quantize_model

    def q(name, calib=four["calib1"], **kw):
        return quantize_model(four["model"], calib, tmp_path / f"{name}.onnx", method="minmax",
                              data=str(four["test50"]), noise_kinds=[], snrs=[], max_drop=100, max_cell_drop=100, **kw).to_json()

    ptq = q("ptq")
    qat = q("qat", qat_epochs=8, qat_data=str(four["data"]))
    assert qat["int8_accuracy"] > ptq["int8_accuracy"]
    assert qat["qat"]["epochs"] == 8 and qat["qat"]["windows"] == 180  # train + val windows, never test
    side = json.loads((tmp_path / "qat.onnx").with_suffix(".json").read_text())
    assert side["qat"]["data"] == str(four["data"])
    # the guard is fitted again to the fine-tuned weights (train split; threshold on the val split) and exported
    assert side["qat"]["guard"]["refitted"] and side["guard"]["threshold"] == qat["qat"]["guard"]["threshold"]
    assert (side["qat"]["guard"]["train_windows"], side["qat"]["guard"]["held_out_windows"]) == (120, 60)
    from drsn_edge.export import ort_session, run_ort_guard

    # with a calibration that does not clip, the int8 guard keeps held-out windows of the training distribution
    # in domain (the one-window calibration above clips the taps too: half of them score out of domain)
    q("qat40", qat_epochs=8, qat_data=str(four["data"]), calib=four["calib"])
    x = normalize(load_dataset(four["test50"]).x, "zscore")
    thr = json.loads((tmp_path / "qat40.json").read_text())["guard"]["threshold"]
    score = run_ort_guard(ort_session((tmp_path / "qat40.onnx").read_bytes()), x, 1)
    assert score.shape == (50,) and float((score > thr).mean()) <= 0.1


def test_deploy_taps_are_the_bundles_taps_and_a_fit_on_them_is_the_bundle_models(four):
    """The deploy form's tap outputs (what a fine-tuned network exports) equal the bundle model's taps on the
    same weights (BN folded: float rounding only), so a guard fitted on them (as after fine-tuning) has the
    class means and threshold of one fitted on the bundle's model."""
    from drsn_edge.guard import deploy_tap_features, fit_on_data, from_meta, guard_features

    b = load_bundle(four["model"])
    g = from_meta(b.meta)
    ds = load_dataset(four["data"])
    x = normalize(ds.select_split("val").x, "zscore")
    deploy = DeployNet(b.model, 7, b.window)  # 7: the last chunk is padded
    got, dims = deploy_tap_features(deploy, x, g.taps)
    np.testing.assert_allclose(got, guard_features(g, b.model, x), rtol=1e-4, atol=1e-5)
    assert dims == g.tap_dims
    args = (ds.select_split("train"), ds.select_split("val"), ())
    ref = fit_on_data(b.model, *args, taps=g.taps)
    g2 = fit_on_data(None, *args, taps=g.taps, features=lambda v, taps: deploy_tap_features(deploy, v, taps))
    np.testing.assert_allclose(g2.means, ref.means, rtol=1e-4, atol=1e-5)
    assert g2.threshold == pytest.approx(ref.threshold, rel=1e-3) and (g2.taps, g2.tap_dims) == (g.taps, g.tap_dims)
