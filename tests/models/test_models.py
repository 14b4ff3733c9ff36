"""Model registry, sizes, the soft threshold (fused vs deploy op form), tracing/export and the baselines."""

from __future__ import annotations

import collections
import io
import re

import pytest
import torch

from drsn_edge.errors import InputError
from drsn_edge.models import ARCHITECTURES, CONFIG_KEYS, count_macs, count_parameters, create_model
from drsn_edge.models import blocks
from drsn_edge.models.blocks import (
    ThresholdNet,
    abs_int8_friendly,
    deploy_ops,
    soft_threshold,
    soft_threshold_ops,
)

ARCHS = ["drsn-cw", "drsn-cs", "resnet", "convnet"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _small(arch, classes=4, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(classes=classes, width=1, depth=1)
    cfg.update(kw)
    return create_model(arch, **cfg)


def _warm_bn(model, length=256, seed=1):
    """Give the BatchNorm layers non-trivial running statistics, then switch to eval."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 1, length, generator=g) * 2 + 0.5)
    return model.eval()


def _ops(graph_str):
    return collections.Counter(re.findall(r"aten::\w+", graph_str))


# ---------------------------------------------------------------- registry


def test_registry_lists_the_four_architectures():
    assert set(ARCHITECTURES) == set(ARCHS)


@pytest.mark.parametrize("arch", ARCHS)
def test_registry_creates_model_with_output_shape(arch):
    m = _small(arch, classes=5).eval()
    assert m.arch == arch
    assert m.config == {"classes": 5, "width": 1, "depth": 1}
    with torch.no_grad():
        out = m(torch.randn(3, 1, 512))
    assert out.shape == (3, 5)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_shrinkage_units_only_in_drsn(arch):
    m = _small(arch)
    thr = [u.threshold for u in m.units]
    if arch.startswith("drsn"):
        assert all(isinstance(t, ThresholdNet) for t in thr)
        assert all(t.channel_wise == (arch == "drsn-cw") for t in thr)
    else:
        assert all(t is None for t in thr)
    assert all(u.residual == (arch != "convnet") for u in m.units)


def test_unknown_name_and_option_are_input_errors():
    with pytest.raises(InputError, match="unknown architecture 'drsn-xx'"):
        create_model("drsn-xx")
    with pytest.raises(InputError, match=r"unknown model option\(s\) \['dropout'\]"):
        create_model("drsn-cw", dropout=0.5)
    # the fixed options of an architecture cannot be overridden through config
    with pytest.raises(InputError):
        create_model("resnet", shrink="cw")


@pytest.mark.parametrize("cfg", [dict(classes=1), dict(depth=0), dict(stages=0), dict(width="wide")])
def test_bad_config_values_are_input_errors(cfg):
    with pytest.raises(InputError, match="bad model config"):
        create_model("drsn-cw", **cfg)


# ---------------------------------------------------------------- size


def test_paper_size_drsn_cw_for_8_classes():
    m = create_model("drsn-cw", classes=8)
    p = count_parameters(m)
    assert 10_000 < p < 12_500
    assert p == 11_324
    macs = count_macs(m)
    assert macs == pytest.approx(1.32e6, rel=0.03)
    # MACs scale with the window length
    assert count_macs(m, length=1024) == pytest.approx(macs / 2, rel=0.02)


def _expected_params(arch, classes, width, depth, stages=3, base=4, kernel=3):
    """Parameter count from the paper's skeleton, written out by hand."""
    c = max(1, int(round(base * width)))
    total = 1 * c * kernel  # stem, no bias
    c_in = c
    for s in range(stages):
        c_out = c * 2**s
        for _ in range(depth):
            total += 2 * c_in + c_in * c_out * kernel + 2 * c_out + c_out * c_out * kernel
            if arch == "drsn-cw":
                total += (c_out * c_out + c_out) + 2 * c_out + (c_out * c_out + c_out)
            elif arch == "drsn-cs":
                total += (c_out * c_out + c_out) + 2 * c_out + (c_out + 1)
            c_in = c_out
    return total + 2 * c_in + c_in * classes + classes


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("width, depth", [(1, 1), (2, 1), (1, 2), (0.5, 1), (1, 4), (1.5, 3)])
def test_width_and_depth_change_parameter_count_as_expected(arch, width, depth):
    m = create_model(arch, classes=8, width=width, depth=depth)
    assert count_parameters(m) == _expected_params(arch, 8, width, depth)


def test_parameter_count_ordering():
    p = {a: count_parameters(create_model(a, classes=8)) for a in ARCHS}
    assert p["drsn-cw"] > p["drsn-cs"] > p["resnet"] == p["convnet"]
    p1 = count_parameters(create_model("drsn-cw", classes=8, width=1, depth=1))
    p2 = count_parameters(create_model("drsn-cw", classes=8, width=2, depth=1))
    # convolutions and FCs are ~quadratic in width
    assert 3.0 < p2 / p1 < 4.0


# ---------------------------------------------------------------- soft threshold


def _ref(x, tau):
    return torch.sign(x) * torch.clamp(torch.abs(x) - tau, min=0)


def _grads(fn, x0, t0, g):
    x = x0.clone().requires_grad_(True)
    t = t0.clone().requires_grad_(True)
    out = fn(x, t)
    (out * g).sum().backward()
    return out.detach(), x.grad, t.grad


def _data(tau_shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 6, 50, generator=gen, dtype=torch.float64) * 2
    tau = torch.rand(*tau_shape, generator=gen, dtype=torch.float64) * 1.5
    g = torch.randn(4, 6, 50, generator=gen, dtype=torch.float64)
    # keep away from the kinks |x| == tau and x == 0
    assert ((x.abs() - tau).abs() > 1e-9).all() and (x != 0).all()
    return x, tau, g


@pytest.mark.parametrize("tau_shape", [(4, 6, 1), (4, 1, 1)], ids=["channel-wise", "channel-shared"])
def test_soft_threshold_ops_equals_reference_with_gradients(tau_shape):
    x, tau, g = _data(tau_shape)
    ref = _grads(_ref, x, tau, g)
    ops = _grads(soft_threshold_ops, x, tau, g)
    for r, o, name in zip(ref, ops, ("value", "dx", "dtau")):
        assert r.shape == o.shape, name
        torch.testing.assert_close(o, r, rtol=0, atol=1e-12, msg=name)
    # it really thresholds: a fair share of the values is zeroed, the rest shrinks toward 0
    assert 0.1 < (ref[0] == 0).double().mean() < 0.9
    assert (ref[0].abs() <= x.abs()).all()


@pytest.mark.parametrize("tau_shape", [(4, 6, 1), (4, 1, 1)], ids=["channel-wise", "channel-shared"])
def test_fused_soft_threshold_equals_reference_with_gradients(tau_shape):
    assert not blocks._deploy()
    x, tau, g = _data(tau_shape, seed=1)
    ref = _grads(_ref, x, tau, g)
    fused = _grads(soft_threshold, x, tau, g)
    for r, f, name in zip(ref, fused, ("value", "dx", "dtau")):
        assert r.shape == f.shape, name
        torch.testing.assert_close(f, r, rtol=0, atol=1e-12, msg=name)
    # the fused path is the custom autograd Function, not the op form
    x1 = x.clone().requires_grad_(True)
    assert type(soft_threshold(x1, tau).grad_fn).__name__.startswith("_SoftThreshold")


def test_fused_soft_threshold_float32_and_gradcheck():
    x, tau, g = _data((4, 6, 1), seed=2)
    torch.autograd.gradcheck(soft_threshold, (x[:2, :3, :8].clone().requires_grad_(True),
                                              tau[:2, :3].clone().requires_grad_(True)))
    xf, tf = x.float(), tau.float()
    torch.testing.assert_close(soft_threshold(xf, tf), soft_threshold_ops(xf, tf), rtol=0, atol=1e-6)


def test_deploy_soft_threshold_uses_op_form():
    x, tau, _ = _data((4, 6, 1))
    with deploy_ops():
        assert blocks._deploy()
        out = soft_threshold(x.clone().requires_grad_(True), tau)
    assert not blocks._deploy()
    assert "Sub" in type(out.grad_fn).__name__  # relu(x−τ) − relu(−x−τ)
    torch.testing.assert_close(out.detach(), _ref(x, tau), rtol=0, atol=1e-12)


def test_fused_soft_threshold_gradient_with_lower_rank_tau():
    x, _, g = _data((4, 6, 1))
    tau = torch.rand(6, 1, dtype=torch.float64)
    ref = _grads(_ref, x, tau, g)
    fused = _grads(soft_threshold, x, tau, g)
    for r, f in zip(ref, fused):
        torch.testing.assert_close(f, r)


def test_abs_int8_friendly_equals_abs_with_gradient():
    gen = torch.Generator().manual_seed(3)
    x0 = torch.randn(5, 7, 11, generator=gen, dtype=torch.float64)
    x0 = torch.where(x0.abs() < 1e-6, torch.full_like(x0, 0.5), x0)
    g = torch.randn(5, 7, 11, generator=gen, dtype=torch.float64)
    a = x0.clone().requires_grad_(True)
    b = x0.clone().requires_grad_(True)
    ya, yb = abs_int8_friendly(a), torch.abs(b)
    torch.testing.assert_close(ya, yb, rtol=0, atol=0)
    (ya * g).sum().backward()
    (yb * g).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)
    assert blocks.absolute(x0).equal(torch.abs(x0))
    with deploy_ops():
        assert blocks.absolute(x0).equal(torch.abs(x0))


def test_deploy_ops_restores_state_and_nests():
    assert not blocks._deploy()
    with deploy_ops():
        with deploy_ops():
            assert blocks._deploy()
        assert blocks._deploy()
    assert not blocks._deploy()
    with pytest.raises(RuntimeError):
        with deploy_ops():
            raise RuntimeError("boom")
    assert not blocks._deploy()


# ---------------------------------------------------------------- deploy form of whole models


@pytest.mark.parametrize("arch", ARCHS)
def test_model_output_same_inside_and_outside_deploy_ops(arch):
    m = _warm_bn(_small(arch, classes=6, depth=2))
    x = torch.randn(5, 1, 256, generator=torch.Generator().manual_seed(9)) * 3
    with torch.no_grad():
        a = m(x)
        with deploy_ops():
            b = m(x)
    assert (a - b).abs().max().item() < 1e-5
    assert a.std() > 0  # not a constant output


@pytest.mark.parametrize("arch", ["drsn-cw", "drsn-cs"])
def test_traced_graph_has_no_sign_or_abs(arch):
    m = _warm_bn(_small(arch, depth=2))
    x = torch.randn(2, 1, 256)
    with deploy_ops(), torch.no_grad():
        traced = torch.jit.trace(m, x)
    ops = _ops(str(traced.inlined_graph))
    assert ops["aten::sign"] == 0 and ops["aten::abs"] == 0
    # the shrinkage is there in op form: one maximum(x, −x) per unit, relus for the threshold
    n_units = len(m.units)
    assert ops["aten::maximum"] == n_units
    assert ops["aten::sigmoid"] == n_units
    # the detector itself works: a traced abs shows up as aten::abs
    assert _ops(str(torch.jit.trace(torch.abs, (x,)).inlined_graph))["aten::abs"] == 1
    with torch.no_grad():
        torch.testing.assert_close(traced(x), m(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ["drsn-cw", "drsn-cs"])
def test_onnx_export_has_no_sign_or_abs(arch):
    onnx = pytest.importorskip("onnx")
    m = _warm_bn(_small(arch))
    buf = io.BytesIO()
    with deploy_ops(), torch.no_grad():
        torch.onnx.export(m, (torch.randn(1, 1, 256),), buf, dynamo=False, opset_version=17)
    ops = collections.Counter(n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node)
    assert ops["Sign"] == 0 and ops["Abs"] == 0
    assert ops["Max"] == len(m.units) and ops["Relu"] > 0


# ---------------------------------------------------------------- baselines and the threshold net


def test_convnet_has_no_shortcut():
    res = _warm_bn(_small("resnet", seed=5))
    conv = _small("convnet", seed=6)
    conv.load_state_dict(res.state_dict())
    conv.eval()
    x = torch.randn(3, 1, 256)
    with torch.no_grad():
        assert (res(x) - conv(x)).abs().max() > 1e-3
        # unit by unit: convnet output == resnet output minus the shortcut
        h = res.stem(x)
        for ur, uc in zip(res.units, conv.units):
            torch.testing.assert_close(uc(h), ur(h) - ur.shortcut(h), rtol=1e-5, atol=1e-6)
            h = ur(h)


def test_shortcut_subsamples_and_zero_pads():
    u = blocks.ResidualUnit(2, 4, stride=2, shrink=None)
    x = torch.arange(2 * 8, dtype=torch.float32).reshape(1, 2, 8)
    s = u.shortcut(x)
    assert s.shape == (1, 4, 4)
    torch.testing.assert_close(s[:, :2], x[..., ::2])
    assert (s[:, 2:] == 0).all()
    with pytest.raises(ValueError):
        blocks.ResidualUnit(4, 2, stride=1, shrink=None)


@pytest.mark.parametrize("cw", [True, False], ids=["cw", "cs"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_threshold_shapes_and_bounds(cw, train):
    torch.manual_seed(0)
    net = ThresholdNet(8, channel_wise=cw).train(train)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 2.0)  # push the sigmoid toward its ends
    x = torch.randn(16, 8, 100) * torch.linspace(0.1, 5, 8)[None, :, None]
    with torch.no_grad():
        tau = net(x)
    assert tau.shape == ((16, 8, 1) if cw else (16, 1, 1))
    mean_abs = x.abs().mean(dim=-1, keepdim=True)  # [N, C, 1]
    if not cw:
        mean_abs = mean_abs.mean(dim=1, keepdim=True)  # [N, 1, 1]
    assert (tau >= 0).all()
    assert (tau <= mean_abs + 1e-6).all()
    assert tau.std() > 0


@pytest.mark.parametrize("arch, shape", [("drsn-cw", (2, 4, 1)), ("drsn-cs", (2, 1, 1))])
def test_thresholds_inside_a_model(arch, shape):
    m = _small(arch).eval()
    taus = []
    hooks = [u.threshold.register_forward_hook(lambda mod, i, o: taus.append((i[0], o))) for u in m.units]
    with torch.no_grad():
        m(torch.randn(2, 1, 256))
    for h in hooks:
        h.remove()
    assert len(taus) == len(m.units)
    r, tau = taus[0]
    assert tau.shape == shape
    assert (tau >= 0).all()
    bound = r.abs().mean(-1, keepdim=True)
    if arch == "drsn-cs":
        bound = bound.mean(1, keepdim=True)
    assert (tau <= bound + 1e-6).all()


def test_config_keys_documented():
    assert set(CONFIG_KEYS) >= {"classes", "width", "depth"}
