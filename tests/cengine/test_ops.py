"""Op by op: single-op (or few-op) int8 models crafted with the flatbuffer API, run by TFLite Micro's
interpreter and by the generated C engine (plain C and the SIMD path with portable intrinsics):
outputs must be identical on every element. Inputs cover every int8 value and the saturating
extremes; quantization parameters include multipliers above one (left shifts), rounding ties and
clamped outputs."""

from __future__ import annotations

import numpy as np
import pytest

from drsn_edge.cengine import HostEngine, generate
from drsn_edge.errors import InputError

from .tflbuild import Builder, all_int8, tflm_raw

W, C = 64, 4  # 256 values per window: every int8 value once


def windows(n_values: int, count: int = 3) -> np.ndarray:
    rows = [all_int8(n_values, seed=s) for s in range(count)]
    rows += [np.full(n_values, -128, np.int8), np.full(n_values, 127, np.int8)]
    return np.stack(rows)


def assert_bit_exact(q: bytes, tmp_path, x: np.ndarray | None = None) -> dict:
    from drsn_edge.backends.tflite import model_io

    inp, _ = model_io(q)
    x = windows(int(np.prod(inp["shape"]))) if x is None else x
    ref = tflm_raw(q, x)
    info = None
    for dsp in (False, True):
        info = generate(q, tmp_path / f"c_{dsp}", dsp=dsp)
        out = HostEngine(tmp_path / f"c_{dsp}").run_raw(x)
        assert out.shape == ref.shape
        bad = np.argwhere(out != ref)
        assert len(bad) == 0, f"dsp={dsp}: {len(bad)} values differ, first at {bad[0]}: {out[tuple(bad[0])]} vs {ref[tuple(bad[0])]}"
    return info


def _x(b: Builder, scale=0.05, zp=3, shape=(1, 1, W, C)) -> int:
    return b.tensor(shape, scale=scale, zp=zp)


def _conv_weights(rng, cout, k, cin):
    w = rng.integers(-127, 128, size=(cout, 1, k, cin)).astype(np.int8)
    w[0, 0, 0, 0] = -127
    return w


@pytest.mark.parametrize("k,stride,padding,cin,cout,act,out_scale", [
    (3, 1, 0, 4, 6, 1, 0.05),     # SAME, fused RELU
    (3, 2, 0, 4, 4, 0, 0.3),      # stride 2 SAME: asymmetric padding
    (3, 1, 1, 3, 5, 3, 0.02),     # VALID, 9-tap window (SIMD tail), RELU6
    (1, 1, 0, 4, 8, 0, 0.0005),   # 1x1, multipliers > 1 (left shifts), saturation
])
def test_conv(tmp_path, k, stride, padding, cin, cout, act, out_scale):
    rng = np.random.default_rng(k * 10 + cin)
    b = Builder()
    x = _x(b, shape=(1, 1, W, cin))
    ws = rng.uniform(0.001, 0.01, cout)
    w = b.tensor((cout, 1, k, cin), scale=ws, zp=np.zeros(cout, int), data=_conv_weights(rng, cout, k, cin))
    bias = b.tensor((cout,), "INT32", scale=0.05 * ws, zp=np.zeros(cout, int), data=rng.integers(-3000, 3000, cout))
    out_w = (W + stride - 1) // stride if padding == 0 else (W - k) // stride + 1
    y = b.tensor((1, 1, out_w, cout), scale=out_scale, zp=-5)
    b.op("CONV_2D", [x, w, bias], [y], "Conv2DOptions", padding=padding, strideW=stride, strideH=1,
         fusedActivationFunction=act, dilationWFactor=1, dilationHFactor=1)
    assert_bit_exact(b.build([x], [y]), tmp_path, windows(W * cin))


def test_pad_folded_into_valid_conv(tmp_path):
    rng = np.random.default_rng(1)
    b = Builder()
    x = _x(b)
    pads = b.tensor((4, 2), "INT32", data=[[0, 0], [0, 0], [1, 1], [0, 0]])
    xp = b.tensor((1, 1, W + 2, C), scale=0.05, zp=3)
    b.op("PAD", [x, pads], [xp], "PadOptions")
    ws = rng.uniform(0.002, 0.01, 4)
    w = b.tensor((4, 1, 3, C), scale=ws, zp=np.zeros(4, int), data=_conv_weights(rng, 4, 3, C))
    bias = b.tensor((4,), "INT32", scale=0.05 * ws, zp=np.zeros(4, int), data=[5, -7, 100, 0])
    y = b.tensor((1, 1, W // 2, 4), scale=0.1, zp=-128)
    b.op("CONV_2D", [xp, w, bias], [y], "Conv2DOptions", padding=1, strideW=2, strideH=1,
         fusedActivationFunction=1, dilationWFactor=1, dilationHFactor=1)
    info = assert_bit_exact(b.build([x], [y]), tmp_path)
    assert info["kernel_kinds"] == ["conv"]  # the PAD became the convolution's padding


@pytest.mark.parametrize("k,mult,act", [(3, 2, 0), (1, 1, 1), (3, 1, 3)])
def test_depthwise(tmp_path, k, mult, act):
    rng = np.random.default_rng(k + mult)
    b = Builder()
    x = _x(b)
    cout = C * mult
    ws = rng.uniform(0.001, 0.05, cout)
    w = b.tensor((1, 1, k, cout), scale=ws, zp=np.zeros(cout, int), axis=3,
                 data=rng.integers(-127, 128, (1, 1, k, cout)))
    bias = b.tensor((cout,), "INT32", scale=0.05 * ws, zp=np.zeros(cout, int), data=rng.integers(-500, 500, cout))
    y = b.tensor((1, 1, W, cout), scale=0.04, zp=-128 if act else 7)
    b.op("DEPTHWISE_CONV_2D", [x, w, bias], [y], "DepthwiseConv2DOptions", padding=0, strideW=1, strideH=1,
         depthMultiplier=mult, fusedActivationFunction=act, dilationWFactor=1, dilationHFactor=1)
    assert_bit_exact(b.build([x], [y]), tmp_path)


@pytest.mark.parametrize("per_channel", [False, True])
def test_fully_connected(tmp_path, per_channel):
    rng = np.random.default_rng(3)
    b = Builder()
    x = b.tensor((1, 32), scale=0.03, zp=-128)
    ws = rng.uniform(0.002, 0.02, 10) if per_channel else 0.01
    w = b.tensor((10, 32), scale=ws, zp=np.zeros(10 if per_channel else 1, int), data=rng.integers(-127, 128, (10, 32)))
    bias = b.tensor((10,), "INT32", scale=0.03 * np.atleast_1d(ws), zp=np.zeros(10 if per_channel else 1, int),
                    data=rng.integers(-2000, 2000, 10))
    y = b.tensor((1, 10), scale=0.15, zp=2)
    b.op("FULLY_CONNECTED", [x, w, bias], [y], "FullyConnectedOptions", fusedActivationFunction=0)
    assert_bit_exact(b.build([x], [y]), tmp_path, windows(32, count=8))


@pytest.mark.parametrize("kind", ["ADD", "SUB"])
@pytest.mark.parametrize("form,s_other,act", [
    ("full", 0.02, 0), ("full", 0.2, 1), ("chan", 0.0071, 1), ("scalar", 0.5, 0), ("chan_first", 0.013, 0),
    ("small", 0.037, 0),
])
def test_add_sub(tmp_path, kind, form, s_other, act):
    rng = np.random.default_rng(7)
    # 1024 elements: the kernel builds operand tables; "small" (64 elements) scales each value
    shape = (1, 1, 16, C) if form == "small" else (1, 1, 4 * W, C)
    n = int(np.prod(shape))
    b = Builder()
    x = b.tensor(shape, scale=0.0513, zp=-7)
    cshape = {"full": shape, "small": shape, "chan": (1, 1, 1, C), "chan_first": (1, 1, 1, C), "scalar": ()}[form]
    cdata = rng.integers(-128, 128, int(np.prod(cshape)) if cshape else 1).reshape(cshape or ())
    c = b.tensor(cshape, scale=s_other, zp=11, data=cdata)
    y = b.tensor(shape, scale=0.0697, zp=4)
    ins = [c, x] if form == "chan_first" else [x, c]
    b.op(kind, ins, [y], f"{kind.capitalize()}Options", fusedActivationFunction=act)
    assert_bit_exact(b.build([x], [y]), tmp_path, windows(n))


def test_same_source_chain_folds_to_a_table(tmp_path):
    """|x| written as relu(x) + relu(x * -1), the way the DRSN threshold branch does it, then a MEAN."""
    b = Builder()
    x = _x(b, scale=0.13, zp=-58)
    m1 = b.tensor((), scale=0.00392, zp=127, data=np.array(-128))  # -1.0 after dequantization... close to it
    neg = b.tensor((1, 1, W, C), scale=0.13, zp=57)
    b.op("MUL", [x, m1], [neg], "MulOptions", fusedActivationFunction=0)
    r1 = b.tensor((1, 1, W, C), scale=0.0944, zp=-128)
    r2 = b.tensor((1, 1, W, C), scale=0.0357, zp=-128)
    b.op("RELU", [x], [r1])
    b.op("RELU", [neg], [r2])
    ab = b.tensor((1, 1, W, C), scale=0.0944, zp=-128)
    b.op("ADD", [r1, r2], [ab], "AddOptions", fusedActivationFunction=0)
    axis = b.tensor((1,), "INT32", data=[2])
    mean = b.tensor((1, 1, 1, C), scale=0.0174, zp=-128)
    b.op("MEAN", [ab, axis], [mean], "ReducerOptions", keepDims=True)
    info = assert_bit_exact(b.build([x], [mean]), tmp_path)
    assert info["kernel_kinds"] == ["mean"]


@pytest.mark.parametrize("form", ["scalar", "chan", "same"])
def test_mul(tmp_path, form):
    rng = np.random.default_rng(11)
    b = Builder()
    x = _x(b, scale=0.07, zp=-20)
    y = b.tensor((1, 1, W, C), scale=0.09, zp=1)
    if form == "same":
        b.op("MUL", [x, x], [y], "MulOptions", fusedActivationFunction=1)
    else:
        shape = () if form == "scalar" else (1, 1, 1, C)
        c = b.tensor(shape, scale=0.011, zp=-3, data=rng.integers(-128, 128, int(np.prod(shape)) if shape else 1)
                     .reshape(shape))
        b.op("MUL", [x, c], [y], "MulOptions", fusedActivationFunction=0)
    assert_bit_exact(b.build([x], [y]), tmp_path)


@pytest.mark.parametrize("s_out,zp_out", [(0.02, -128), (0.05, 7), (0.5, -3)])
def test_relu_and_quantize(tmp_path, s_out, zp_out):
    b = Builder()
    x = _x(b, scale=0.0817, zp=-19)
    r = b.tensor((1, 1, W, C), scale=s_out, zp=zp_out)
    b.op("RELU", [x], [r])
    y = b.tensor((1, 1, W, C), scale=s_out * 0.97, zp=zp_out + 1)
    b.op("QUANTIZE", [r], [y])
    assert_bit_exact(b.build([x], [y]), tmp_path)


@pytest.mark.parametrize("s_in,zp_in", [(0.0136, 46), (0.0346, 31), (0.0021, -5), (0.11, 0)])
def test_logistic(tmp_path, s_in, zp_in):
    b = Builder()
    x = b.tensor((1, 1, W, C), scale=s_in, zp=zp_in)
    y = b.tensor((1, 1, W, C), scale=1 / 256, zp=-128)
    b.op("LOGISTIC", [x], [y])
    assert_bit_exact(b.build([x], [y]), tmp_path)


def test_transpose_then_mean_and_fc(tmp_path):
    """The model's head: TRANSPOSE -> MEAN over the (moved) width -> FULLY_CONNECTED."""
    rng = np.random.default_rng(5)
    b = Builder()
    x = b.tensor((1, 1, W, C), scale=0.0866, zp=-128)
    perm = b.tensor((4,), "INT32", data=[0, 3, 1, 2])
    t = b.tensor((1, C, 1, W), scale=0.0866, zp=-128)
    b.op("TRANSPOSE", [x, perm], [t], "TransposeOptions")
    axes = b.tensor((2,), "INT32", data=[2, 3])
    m = b.tensor((1, C), scale=0.0299, zp=-128)
    b.op("MEAN", [t, axes], [m], "ReducerOptions", keepDims=False)
    w = b.tensor((10, C), scale=rng.uniform(0.005, 0.02, 10), zp=np.zeros(10, int),
                 data=rng.integers(-127, 128, (10, C)))
    y = b.tensor((1, 10), scale=0.189, zp=1)
    b.op("FULLY_CONNECTED", [m, w, -1], [y], "FullyConnectedOptions", fusedActivationFunction=0)
    info = assert_bit_exact(b.build([x], [y]), tmp_path)
    assert "transpose" not in info["kernel_kinds"]


def test_transpose_kernel_and_reshape(tmp_path):
    b = Builder()
    x = b.tensor((1, 1, W, C), scale=0.05, zp=1)
    perm = b.tensor((4,), "INT32", data=[0, 3, 1, 2])
    t = b.tensor((1, C, 1, W), scale=0.05, zp=1)
    b.op("TRANSPOSE", [x, perm], [t], "TransposeOptions")
    shape = b.tensor((2,), "INT32", data=[1, C * W])
    y = b.tensor((1, C * W), scale=0.05, zp=1)
    b.op("RESHAPE", [t, shape], [y], "ReshapeOptions", newShape=[1, C * W])
    info = assert_bit_exact(b.build([x], [y]), tmp_path)
    assert info["kernel_kinds"] == ["transpose"]


@pytest.mark.parametrize("k,stride,padding", [(1, 2, 1), (2, 2, 0), (3, 2, 0)])
def test_average_pool(tmp_path, k, stride, padding):
    b = Builder()
    x = _x(b)
    out_w = (W + stride - 1) // stride if padding == 0 else (W - k) // stride + 1
    y = b.tensor((1, 1, out_w, C), scale=0.05, zp=3)
    b.op("AVERAGE_POOL_2D", [x], [y], "Pool2DOptions", padding=padding, strideW=stride, strideH=1,
         filterWidth=k, filterHeight=1, fusedActivationFunction=0)
    assert_bit_exact(b.build([x], [y]), tmp_path)


def test_concatenation_with_constants_and_pad(tmp_path):
    rng = np.random.default_rng(2)
    b = Builder()
    x = _x(b, scale=0.2, zp=-56)
    zeros = b.tensor((1, 1, W, C), scale=0.2, zp=-56, data=np.full((1, 1, W, C), -56))
    other = b.tensor((1, 1, W, 2), scale=0.2, zp=-56, data=rng.integers(-128, 128, (1, 1, W, 2)))
    cat = b.tensor((1, 1, W, 2 * C + 2), scale=0.2, zp=-56)
    b.op("CONCATENATION", [x, zeros, other], [cat], "ConcatenationOptions", axis=3, fusedActivationFunction=0)
    pads = b.tensor((4, 2), "INT32", data=[[0, 0], [0, 0], [2, 1], [0, 0]])
    y = b.tensor((1, 1, W + 3, 2 * C + 2), scale=0.2, zp=-56)
    b.op("PAD", [cat, pads], [y], "PadOptions")
    info = assert_bit_exact(b.build([x], [y]), tmp_path)
    assert info["kernel_kinds"] == ["concat", "pad"]


def test_unsupported_op_is_refused_by_name(tmp_path):
    b = Builder()
    x = _x(b)
    y = b.tensor((1, 1, W, C), scale=1 / 128, zp=0)
    b.op("TANH", [x], [y])
    with pytest.raises(InputError, match=r"op TANH \(#0, output tensor 't1'\) is not supported by the C engine"):
        generate(b.build([x], [y]), tmp_path / "c")
    assert not (tmp_path / "c" / "drsn_model.c").exists()


def test_unsupported_parameter_is_refused_by_name(tmp_path):
    rng = np.random.default_rng(0)
    b = Builder()
    x = b.tensor((1, 4, W, C), scale=0.05, zp=0)
    w = b.tensor((2, 3, 3, C), scale=[0.01, 0.01], zp=[0, 0], data=rng.integers(-127, 128, (2, 3, 3, C)))
    y = b.tensor((1, 4, W, 2), scale=0.1, zp=0)
    b.op("CONV_2D", [x, w, -1], [y], "Conv2DOptions", padding=0, strideW=1, strideH=1, dilationWFactor=1,
         dilationHFactor=1)
    with pytest.raises(InputError, match=r"op CONV_2D \(#0, tensor 't1'\): unsupported filter height 3"):
        generate(b.build([x], [y]), tmp_path / "c")


@pytest.mark.parametrize("kind", ["ADD", "SUB"])
def test_add_sub_multipliers_are_derived_like_tflm(tmp_path, kind):
    """Scales for which deriving the input/output multipliers in float32 or in double gives different
    outputs (ADD at x = -33, SUB at x = 17, with the constant operand -38). The tflite-micro wheel
    derives both in double."""
    b = Builder()
    x = b.tensor((1, 1, W, C), scale=0.29886165261268616, zp=-8)
    c = b.tensor((1, 1, W, C), scale=0.0767485648393631, zp=-18, data=np.full((1, 1, W, C), -38))
    y = b.tensor((1, 1, W, C), scale=0.0807759016752243, zp=15)
    b.op(kind, [x, c], [y], f"{kind.capitalize()}Options", fusedActivationFunction=0)
    assert_bit_exact(b.build([x], [y]), tmp_path)
