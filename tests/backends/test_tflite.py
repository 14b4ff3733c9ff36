"""TFLite / TFLite Micro backend: float conversion, full-integer int8 quantization, integer-only
checks, LiteRT vs TFLM, tensor-arena bisection.

The toolchain is optional (extra `tflite`): tests that need a package skip with a reason when it is
not installed. Everything is built from a small randomly initialised DRSN-CW (depth 1) with a window
of 512 samples and a handful of calibration windows, to stay fast.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drsn_edge.errors import CheckFailedError, InputError
from drsn_edge.models import create_model

from ..conftest import randomize_bn

WINDOW = 512
NEED = "install with: pip install 'drsn-edge[tflite]'"




def _windows(n: int, seed: int) -> np.ndarray:
    """Random-ish vibration-like windows: a few tones, impulses and noise, z-score normalized."""
    from drsn_edge.data.dataset import normalize

    rng = np.random.default_rng(seed)
    t = np.arange(WINDOW) / 12_000.0
    x = np.zeros((n, 1, WINDOW), np.float32)
    for i in range(n):
        for _ in range(3):
            x[i, 0] += rng.uniform(0.2, 1.0) * np.sin(2 * np.pi * rng.uniform(50, 3000) * t + rng.uniform(0, 6.3))
        period = int(rng.integers(40, 200))
        x[i, 0, rng.integers(0, period)::period] += rng.uniform(1, 4)
        x[i, 0] += rng.normal(0, rng.uniform(0.1, 1.0), WINDOW)
    return normalize(x)


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return randomize_bn(create_model("drsn-cw", classes=10, depth=1), mean_span=0.4, bias_span=0.4)


@pytest.fixture(scope="module")
def tfl():
    pytest.importorskip("ai_edge_litert", reason=f"ai-edge-litert is not installed; {NEED}")
    pytest.importorskip("litert_torch", reason=f"litert-torch is not installed; {NEED}")
    from drsn_edge.backends import tflite

    return tflite


@pytest.fixture(scope="module")
def float_model(tfl, small_model) -> bytes:
    return tfl.float_tflite(small_model, WINDOW)


@pytest.fixture(scope="module")
def int8_model(tfl, float_model) -> bytes:
    pytest.importorskip("ai_edge_quantizer", reason=f"ai-edge-quantizer is not installed; {NEED}")
    return tfl.quantize_int8(float_model, _windows(24, seed=1))


@pytest.fixture(scope="module")
def tflm():
    pytest.importorskip("tflite_micro", reason=f"tflite-micro is not installed; {NEED}")
    from drsn_edge.backends import tflm

    return tflm


# ---------------------------------------------------------------------------------------------
# torch only


def test_tflite_deploy_form_equals_deploy_net_and_model(small_model):
    from drsn_edge.backends.tflite import tflite_deploy_module
    from drsn_edge.models.blocks import deploy_ops
    from drsn_edge.models.deploy import DeployNet

    x = torch.from_numpy(_windows(3, seed=2))
    with deploy_ops(), torch.no_grad():
        ref = DeployNet(small_model, 3, WINDOW)(x)
        ours = tflite_deploy_module(small_model, WINDOW, batch=3)(x)
        trained = small_model(x)
    assert torch.allclose(ours, ref, atol=1e-5)
    assert torch.allclose(ours, trained, atol=1e-4)


def test_parse_allocations():
    from drsn_edge.backends.tflm import parse_allocations

    text = ("[RecordingMicroAllocator] Arena allocation total 55536 bytes\n"
            "[RecordingMicroAllocator] Arena allocation head 14352 bytes\n"
            "[RecordingMicroAllocator] Arena allocation tail 41184 bytes\n"
            "[RecordingMicroAllocator] 'NodeAndRegistration struct' used 13376 bytes with alignment overhead "
            "(requested 13376 bytes for 209 NodeAndRegistration structs)\n")
    rep = parse_allocations(text)
    assert (rep["total"], rep["head"], rep["tail"]) == (55536, 14352, 41184)
    assert rep["items"]["NodeAndRegistration struct"] == {"used": 13376, "requested": 13376, "count": 209}


# ---------------------------------------------------------------------------------------------
# LiteRT toolchain


def test_not_a_tflite_model_is_input_error(tfl):
    with pytest.raises(InputError, match="not a TFLite model"):
        tfl.check_integer_only(b"definitely not a flatbuffer")


def test_float_tflite_has_no_float_only_ops_and_matches_torch(tfl, small_model, float_model):
    ops = tfl.graph_ops(float_model)
    assert not {"SIGN", "NEG", "ABS", "DEQUANTIZE"} & set(ops), ops
    x = _windows(4, seed=3)
    with torch.no_grad():
        ref = small_model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(tfl.litert_run(float_model, x), ref, atol=1e-4, rtol=1e-4)


def test_check_integer_only_rejects_float_model(tfl, float_model):
    with pytest.raises(CheckFailedError, match="float32"):
        tfl.check_integer_only(float_model)


def test_int8_model_is_integer_only(tfl, int8_model):
    rep = tfl.check_integer_only(int8_model)
    assert rep["input"]["dtype"] == "int8" and rep["output"]["dtype"] == "int8"
    assert rep["input"]["shape"] == [1, 1, WINDOW] and rep["output"]["shape"] == [1, 10]
    assert isinstance(rep["input"]["scale"], float) and isinstance(rep["output"]["zero_point"], int)
    assert not {"SIGN", "NEG", "ABS", "DEQUANTIZE"} & set(rep["ops"])
    assert "MAXIMUM" not in rep["ops"]  # |x| as relu + relu: no requantize pairs per shrinkage block
    assert rep["op_counts"].get("QUANTIZE", 0) == rep["requantize_ops"]
    assert sum(rep["op_counts"].values()) == len(rep["ops"]) and rep["tensors"] > len(rep["ops"])


def test_int8_agrees_with_float(tfl, float_model, int8_model):
    x = _windows(40, seed=4)
    f = tfl.litert_run(float_model, x)
    q = tfl.litert_run(int8_model, x)
    assert q.shape == f.shape == (40, 10) and q.dtype == np.float32
    sqnr = 10 * np.log10((f ** 2).sum() / ((f - q) ** 2).sum())
    # one int8 tensor of crest factor 3–5 has SQNR 6.02·8 + 4.77 − 20·log10(crest) ≈ 39–43 dB; about 15
    # quantized tensors add their noise powers (−12 dB): ≈ 27–31 dB at the logits, so 20 dB leaves room
    assert sqnr > 20, sqnr
    # a window whose float top-2 margin exceeds twice the largest logit error cannot change class
    top2 = np.sort(f, axis=1)[:, -2:]
    safe = top2[:, 1] - top2[:, 0] > 2 * np.abs(f - q).max()
    assert safe.any() and (f.argmax(1) == q.argmax(1))[safe].all()
    raw = tfl.litert_run(int8_model, x, raw=True)
    assert raw.dtype == np.int8


def test_quantize_rejects_bad_calibration(tfl, float_model):
    pytest.importorskip("ai_edge_quantizer", reason=f"ai-edge-quantizer is not installed; {NEED}")
    with pytest.raises(InputError, match="do not fit"):
        tfl.quantize_int8(float_model, np.zeros((2, 1, WINDOW + 1), np.float32))
    with pytest.raises(InputError, match="no calibration"):
        tfl.quantize_int8(float_model, np.zeros((0, 1, WINDOW), np.float32))
    bad = _windows(2, seed=5)
    bad[0, 0, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        tfl.quantize_int8(float_model, bad)


def _with_float_interface(tfl, int8_bytes: bytes) -> bytes:
    """The int8 model with a float32 interface: QUANTIZE after the input, DEQUANTIZE before the output
    (what a converter that keeps float I/O produces)."""
    import copy

    s = tfl._schema()
    model = tfl.read_model(int8_bytes)
    sg = model.subgraphs[0]

    def opcode(builtin):
        for i, c in enumerate(model.operatorCodes):
            if max(c.builtinCode, c.deprecatedBuiltinCode) == builtin:
                return i
        c = s.OperatorCodeT()
        c.builtinCode, c.deprecatedBuiltinCode, c.version = builtin, min(builtin, 127), 1
        model.operatorCodes.append(c)
        return len(model.operatorCodes) - 1

    def float_twin(idx, name):
        t = copy.deepcopy(sg.tensors[idx])
        t.type, t.quantization, t.name = s.TensorType.FLOAT32, None, name
        b = s.BufferT()
        model.buffers.append(b)
        t.buffer = len(model.buffers) - 1
        sg.tensors.append(t)
        return len(sg.tensors) - 1

    qin, qout = int(sg.inputs[0]), int(sg.outputs[0])
    fin, fout = float_twin(qin, b"float_input"), float_twin(qout, b"float_output")
    q = s.OperatorT()
    q.opcodeIndex, q.inputs, q.outputs = opcode(s.BuiltinOperator.QUANTIZE), [fin], [qin]
    dq = s.OperatorT()
    dq.opcodeIndex, dq.inputs, dq.outputs = opcode(s.BuiltinOperator.DEQUANTIZE), [qout], [fout]
    sg.operators = [q] + list(sg.operators) + [dq]
    sg.inputs, sg.outputs = np.array([fin], np.int32), np.array([fout], np.int32)
    for sig in model.signatureDefs or []:
        sig.inputs[0].tensorIndex, sig.outputs[0].tensorIndex = fin, fout
    return tfl.write_model(model)


def test_int8_io_removes_boundary_quantize_dequantize(tfl, int8_model):
    float_io = _with_float_interface(tfl, int8_model)
    assert tfl.graph_ops(float_io)[0] == "QUANTIZE" and tfl.graph_ops(float_io)[-1] == "DEQUANTIZE"
    with pytest.raises(CheckFailedError, match="not int8"):
        tfl.check_integer_only(float_io)
    x = _windows(6, seed=6)
    np.testing.assert_allclose(tfl.litert_run(float_io, x), tfl.litert_run(int8_model, x), atol=1e-6)
    fixed = tfl.int8_io(float_io)
    assert tfl.check_integer_only(fixed)["ops"] == tfl.check_integer_only(int8_model)["ops"]
    np.testing.assert_array_equal(tfl.litert_run(fixed, x, raw=True), tfl.litert_run(int8_model, x, raw=True))
    assert tfl.int8_io(int8_model) == bytes(int8_model)


def test_check_integer_only_names_dequantize(tfl, int8_model):
    float_io = _with_float_interface(tfl, int8_model)
    model = tfl.read_model(float_io)
    sg = model.subgraphs[0]
    # keep the int8 output as the interface: the DEQUANTIZE is now inside the graph
    sg.outputs = np.array([sg.operators[-1].inputs[0]], np.int32)
    sg.inputs = np.array([sg.operators[0].outputs[0]], np.int32)
    sg.operators = sg.operators[1:]
    with pytest.raises(CheckFailedError, match="DEQUANTIZE"):
        tfl.check_integer_only(tfl.write_model(model))


def test_strip_names_keeps_results(tfl, int8_model):
    stripped = tfl.strip_names(int8_model)
    assert len(stripped) < len(int8_model)
    x = _windows(5, seed=7)
    np.testing.assert_array_equal(tfl.litert_run(stripped, x, raw=True), tfl.litert_run(int8_model, x, raw=True))
    assert tfl.check_integer_only(stripped)["input"]["name"] == tfl.check_integer_only(int8_model)["input"]["name"]


def test_percentile_calibration(tfl, float_model):
    pytest.importorskip("ai_edge_quantizer", reason=f"ai-edge-quantizer is not installed; {NEED}")
    x = _windows(16, seed=8)
    q = tfl.quantize_int8(float_model, x, percentile=99.0)
    tfl.check_integer_only(q)
    f, y = tfl.litert_run(float_model, x), tfl.litert_run(q, x)
    assert 10 * np.log10((f ** 2).sum() / ((f - y) ** 2).sum()) > 15
    with pytest.raises(InputError, match="percentile"):
        tfl.quantize_int8(float_model, x, percentile=30)


# ---------------------------------------------------------------------------------------------
# TFLite Micro


def test_ops_supported_by_tflm(tfl, tflm, int8_model):
    ops = tflm.check_ops_supported(int8_model)
    assert ops == tflm.ops_used(int8_model) == sorted(set(tfl.graph_ops(int8_model)))
    assert set(ops) <= tflm.TFLM_SUPPORTED_INT8_OPS


def test_check_ops_supported_names_missing_op(tfl, tflm, int8_model, float_model):
    s = tfl._schema()
    model = tfl.read_model(int8_model)
    first_mul = next(op for op in model.subgraphs[0].operators if tfl._op_name(model, op) == "MUL")
    code = model.operatorCodes[first_mul.opcodeIndex]
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.NEG
    with pytest.raises(InputError, match="NEG"):
        tflm.check_ops_supported(tfl.write_model(model))
    with pytest.raises(InputError, match="float32"):
        tflm.check_ops_supported(float_model)


def test_litert_and_tflm_agree(tfl, tflm, small_model, int8_model):
    x = _windows(30, seed=9)
    lr = tfl.litert_run(int8_model, x, raw=True)
    mc = tflm.tflm_run(int8_model, x, raw=True)
    assert mc.dtype == np.int8 and mc.shape == (30, 10)
    # Never bit-identical (kernels round differently), but two int8 implementations of one graph differ only
    # in a few rounding choices, while their error against float includes every tensor's quantization: the
    # runtimes must be closer to each other than LiteRT is to the float model (output grid, in LSB).
    f = tfl.litert_run(tfl.float_tflite(small_model, WINDOW), x)
    out = tfl.check_integer_only(int8_model)["output"]
    to_float = np.abs(lr.astype(int) - (np.round(f / out["scale"]) + out["zero_point"])).max()
    between = np.abs(lr.astype(int) - mc.astype(int))
    assert between.max() <= to_float
    # and a window whose LiteRT top-2 margin exceeds twice their largest difference keeps its class
    top2 = np.sort(lr.astype(int), axis=1)[:, -2:]
    safe = top2[:, 1] - top2[:, 0] > 2 * between.max()
    assert safe.any() and (lr.argmax(1) == mc.argmax(1))[safe].all()
    f = tflm.tflm_run(int8_model, x)
    assert f.dtype == np.float32


@pytest.mark.slow  # a dozen child processes
def test_min_arena_works_and_1kb_less_fails(tflm, int8_model):
    details = {}
    arena = tflm.min_arena_bytes(int8_model, details=details)
    assert 1024 < arena < 10 * len(int8_model)
    assert details["largest_failing"] < arena <= details["largest_failing"] + details["resolution"]
    assert details["allocations"]["total"] <= arena
    x = _windows(2, seed=10)
    assert tflm.tflm_run(int8_model, x, arena_size=arena).shape == (2, 10)
    with pytest.raises(InputError, match="too small"):
        tflm.tflm_run(int8_model, x, arena_size=arena - 1024)
