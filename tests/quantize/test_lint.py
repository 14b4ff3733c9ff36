"""TensorRT Q/DQ lint: a real quantized DRSN is clean; each rule fires on a mutated copy, naming the node."""

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from drsn_edge.errors import EXIT_BAD_INPUT, InputError
from drsn_edge.quantize.lint import (TENSORRT_SUPPORTED_OPS, LintError, Violation, check, format_violations,
                                     lint_model)


@pytest.fixture(scope="module")
def float_bytes() -> bytes:
    import torch

    from drsn_edge.export import to_onnx_bytes
    from drsn_edge.models import create_model

    torch.manual_seed(0)
    m = create_model("drsn-cw", classes=10, depth=1).eval()
    return to_onnx_bytes(m, 1, 2048)


@pytest.fixture(scope="module")
def qdq_bytes(float_bytes) -> bytes:
    from drsn_edge.quantize.ptq import quantize_onnx

    calib = np.random.default_rng(0).standard_normal((8, 1, 2048)).astype("float32")
    return quantize_onnx(float_bytes, calib, 1, "minmax")


@pytest.fixture
def q(qdq_bytes) -> onnx.ModelProto:
    """A fresh, mutable copy of the quantized model."""
    return onnx.load_from_string(qdq_bytes)


def node(m, name):
    return next(n for n in m.graph.node if n.name == name)


def set_init(m, name, array):
    for i, init in enumerate(m.graph.initializer):
        if init.name == name:
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.asarray(array), name))
            return
    raise KeyError(name)


def init(m, name) -> np.ndarray:
    return numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == name))


def set_attr(n, name, value):
    for a in list(n.attribute):
        if a.name == name:
            n.attribute.remove(a)
    n.attribute.append(helper.make_attribute(name, value))


def hits(m, rule, **kw):
    return {v.node for v in lint_model(m, **kw) if v.rule == rule}


# --- clean model --------------------------------------------------------------------------------------------

def test_quantized_drsn_is_clean(qdq_bytes, q, tmp_path):
    assert lint_model(qdq_bytes) == []
    assert lint_model(q) == []
    p = tmp_path / "m.onnx"
    p.write_bytes(qdq_bytes)
    assert lint_model(p) == [] and lint_model(str(p)) == []
    check(q)  # no raise


def test_deploy_graph_ops_are_tensorrt_supported(q, float_bytes):
    from drsn_edge.quantize.ptq import OP_TYPES

    ops = {n.op_type for n in q.graph.node} | {n.op_type for n in onnx.load_from_string(float_bytes).graph.node}
    assert ops | set(OP_TYPES) <= TENSORRT_SUPPORTED_OPS
    # marked "N" in onnx-tensorrt's operators.md
    for op in ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "Unique"):
        assert op not in TENSORRT_SUPPORTED_OPS
    # a transcription typo would show up as a name ONNX does not know (three are deprecated/experimental ops)
    unknown = {op for op in TENSORRT_SUPPORTED_OPS if not onnx.defs.has(op)}
    assert unknown <= {"ImageScaler", "ParametricSoftplus", "ScaledTanh"}


# --- zero point / scale / dtype ------------------------------------------------------------------------------

def test_nonzero_zero_point(q):
    set_init(q, "/Unsqueeze_output_0_zero_point", np.int8(3))
    vs = [v for v in lint_model(q) if v.rule == "zero-point"]
    assert {v.node for v in vs} == {"/Unsqueeze_output_0_QuantizeLinear", "/Unsqueeze_output_0_DequantizeLinear"}
    assert "holds 3" in vs[0].message


def test_nonzero_per_channel_zero_point(q):
    zp = init(q, "stem.weight_zero_point").copy()
    zp[2] = -1
    set_init(q, "stem.weight_zero_point", zp)
    assert hits(q, "zero-point") == {"stem.weight_DequantizeLinear"}


def test_uint8_zero_point(q):
    set_init(q, "/stem/Conv_output_0_zero_point", np.uint8(0))
    found = hits(q, "dtype")
    assert "/stem/Conv_output_0_QuantizeLinear" in found
    assert "/stem/Conv_output_0_DequantizeLinear" in found
    assert hits(q, "zero-point") == set()  # the value is still 0


def test_quantize_without_zero_point_is_uint8(q):
    n = node(q, "/Unsqueeze_output_0_QuantizeLinear")
    del n.input[2]
    assert "/Unsqueeze_output_0_QuantizeLinear" in hits(q, "dtype")


@pytest.mark.parametrize("value", [0.0, -0.01, float("nan"), float("inf")])
def test_bad_per_tensor_scale(q, value):
    set_init(q, "/units/units.0/Relu_output_0_scale", np.float32(value))
    assert hits(q, "scale") == {"/units/units.0/Relu_output_0_QuantizeLinear",
                                "/units/units.0/Relu_output_0_DequantizeLinear"}


def test_nan_in_per_channel_scale(q):
    s = init(q, "units.0.conv2.weight_scale").copy()
    s[1] = np.nan
    set_init(q, "units.0.conv2.weight_scale", s)
    vs = [v for v in lint_model(q) if v.rule == "scale"]
    assert [v.node for v in vs] == ["units.0.conv2.weight_DequantizeLinear"]
    assert "element 1" in vs[0].message


def test_scale_not_constant(q):
    n = node(q, "/Unsqueeze_output_0_DequantizeLinear")
    n.input[1] = "vibration"  # a runtime tensor
    assert "/Unsqueeze_output_0_DequantizeLinear" in hits(q, "scale")


def test_int32_bias_dequantize(q):
    bias = init(q, "fc.bias")
    x_scale = init(q, "/ReduceMean_output_0_scale")
    w_scale = init(q, "fc.weight_scale")
    bias_scale = np.float32(x_scale * w_scale.max())
    q.graph.initializer.extend([
        numpy_helper.from_array(np.round(bias / bias_scale).astype(np.int32), "fc.bias_quantized"),
        numpy_helper.from_array(bias_scale, "fc.bias_quantized_scale"),
        numpy_helper.from_array(np.int32(0), "fc.bias_quantized_zero_point"),
    ])
    dq = helper.make_node("DequantizeLinear", ["fc.bias_quantized", "fc.bias_quantized_scale",
                                               "fc.bias_quantized_zero_point"], ["fc.bias_dq"],
                          name="fc.bias_DequantizeLinear")
    gemm = node(q, "/fc/Gemm")
    gemm.input[2] = "fc.bias_dq"
    idx = list(q.graph.node).index(gemm)
    q.graph.node.insert(idx, dq)
    vs = [v for v in lint_model(q) if v.rule == "dtype"]
    assert {v.node for v in vs} == {"fc.bias_DequantizeLinear"}
    assert any("input 'fc.bias_quantized' is int32" in v.message for v in vs)
    assert any("zero point 'fc.bias_quantized_zero_point' is int32" in v.message for v in vs)


# --- per-axis ------------------------------------------------------------------------------------------------

def test_per_channel_axis_1_on_conv_weight(q):
    set_attr(node(q, "stem.weight_DequantizeLinear"), "axis", 1)
    vs = [v for v in lint_model(q) if v.rule == "axis"]
    assert {v.node for v in vs} == {"stem.weight_DequantizeLinear"}
    assert any("output-channel axis of the weight it feeds is 0" in v.message for v in vs)
    # stem.weight is [4, 1, 3]: 4 scales do not match dim 1 either
    assert any("has 1 along axis 1" in v.message for v in vs)


def test_per_channel_default_axis_is_1(q):
    n = node(q, "units.0.conv2.weight_DequantizeLinear")
    for a in list(n.attribute):
        n.attribute.remove(a)
    assert hits(q, "axis") == {"units.0.conv2.weight_DequantizeLinear"}


def test_scale_length_mismatch(q):
    for suffix in ("scale", "zero_point"):
        name = f"units.0.conv2.weight_{suffix}"
        set_init(q, name, init(q, name)[:3])
    vs = [v for v in lint_model(q) if v.rule == "axis"]
    assert [v.node for v in vs] == ["units.0.conv2.weight_DequantizeLinear"]
    assert "3 elements" in vs[0].message and "has 4 along axis 0" in vs[0].message


def test_gemm_axis_follows_transB(q):
    assert hits(q, "axis") == set()  # fc weight [10, 16], transB=1, axis 0
    set_attr(node(q, "/fc/Gemm"), "transB", 0)
    assert hits(q, "axis") == {"fc.weight_DequantizeLinear"}


def test_per_channel_feeding_a_non_weight_input(q):
    n = node(q, "/units/units.0/Neg")
    n.input[0] = "units.0.conv2.weight_DequantizeLinear_Output"
    vs = [v for v in lint_model(q) if v.rule == "axis"]
    assert [v.node for v in vs] == ["units.0.conv2.weight_DequantizeLinear"]
    assert "Neg" in vs[0].message


# --- weights, opset, ops, shapes -----------------------------------------------------------------------------

def test_weight_with_minus_128(q):
    w = init(q, "stem.weight_quantized").copy()
    w[0, 0, 0] = -128
    set_init(q, "stem.weight_quantized", w)
    vs = lint_model(q)
    assert [(v.rule, v.node) for v in vs] == [("weight-range", "stem.weight_quantized")]


def test_opset_12(q):
    for op in q.opset_import:
        if op.domain in ("", "ai.onnx"):
            op.version = 12
    assert [v.rule for v in lint_model(q)] == ["opset"]


@pytest.mark.parametrize("op_type,domain", [("FancyShrink", ""), ("QLinearConv", ""), ("Gelu", "com.microsoft")])
def test_unsupported_op(q, op_type, domain):
    extra = helper.make_node(op_type, ["logits"], ["extra"], name="odd_node", domain=domain)
    q.graph.node.append(extra)
    if domain:
        q.opset_import.append(helper.make_opsetid(domain, 1))
    vs = [v for v in lint_model(q) if v.rule == "unsupported-op"]
    assert [v.node for v in vs] == ["odd_node"]
    assert op_type in vs[0].message


def test_dynamic_batch(q):
    q.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    vs = [v for v in lint_model(q) if v.rule == "dynamic-shape"]
    assert vs and vs[0].node == "vibration"
    assert "'batch'" in vs[0].message


def test_float_model_is_not_quantized(float_bytes):
    vs = lint_model(float_bytes)
    assert [v.rule for v in vs] == ["not-quantized"]
    assert lint_model(float_bytes, require_qdq=False) == []


# --- output and errors ---------------------------------------------------------------------------------------

def test_format_violations():
    vs = [Violation("scale", "a", "bad"), Violation("axis", "b", "worse")]
    assert format_violations(vs) == "scale: a: bad\naxis: b: worse"
    assert format_violations([]) == ""


def test_check_raises_with_count(q):
    set_init(q, "/Unsqueeze_output_0_zero_point", np.int8(3))
    set_attr(node(q, "stem.weight_DequantizeLinear"), "axis", 1)
    vs = lint_model(q)
    n = len(vs)
    assert n >= 3
    with pytest.raises(LintError) as ei:
        check(q)
    msg = str(ei.value)
    assert "\n" not in msg
    assert f"{n} violations" in msg and f"first: {vs[0]}" in msg
    assert isinstance(ei.value, InputError) and ei.value.exit_code == EXIT_BAD_INPUT
    assert len(ei.value.violations) == n


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        lint_model(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(InputError):
        lint_model(bad)
    with pytest.raises(InputError, match="expected an ONNX ModelProto"):
        lint_model(42)
